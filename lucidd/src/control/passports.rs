//! Passports and the TPM over the control API: list, fetch and issue passports (they
//! live in the ledger), and what a verifier needs to enrol this host's AK.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use lucid_common::api::{LogQuery, PassportSummary};
use lucid_common::record::{Kind, Record};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::daemon::state::AppState;
use crate::passport::{is_passport, summary_of};

/// `GET /v1/passports` query: a period (ns since the epoch) the passports overlap.
#[derive(Debug, Default, Deserialize)]
pub struct Period {
    from_ns: Option<u64>,
    to_ns: Option<u64>,
}

fn passports(state: &AppState) -> Result<Vec<Record>, ApiError> {
    let q = LogQuery { kind: Some(Kind::Attestation), ..Default::default() };
    Ok(state.ledger.query(&q, 0)?.into_iter().filter(is_passport).collect())
}

/// `GET /v1/passports`: summaries, oldest first.
pub async fn list(State(state): State<Arc<AppState>>, Query(p): Query<Period>) -> Result<Json<Vec<PassportSummary>>, ApiError> {
    let s = state.clone();
    let records = tokio::task::spawn_blocking(move || passports(&s))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(Json(
        records
            .iter()
            .filter_map(summary_of)
            .filter(|s| p.from_ns.is_none_or(|f| s.to_ns > f) && p.to_ns.is_none_or(|t| s.from_ns < t))
            .collect(),
    ))
}

/// `GET /v1/passports/{number}`: the record holding it (summary fields and the envelope).
pub async fn show(State(state): State<Arc<AppState>>, Path(number): Path<u64>) -> Result<Json<Value>, ApiError> {
    let s = state.clone();
    let record = tokio::task::spawn_blocking(move || s.ledger.last_matching(|r| is_passport(r) && r.body.get("number").and_then(Value::as_u64) == Some(number)))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    let record = record.ok_or_else(|| ApiError::not_found(format!("no passport number {number}")))?;
    Ok(Json(json!({ "record_seq": record.seq, "time_ns": record.time_ns, "passport": record.body })))
}

/// `POST /v1/passports`: issue one now.
pub async fn issue(State(state): State<Arc<AppState>>) -> Result<Json<PassportSummary>, ApiError> {
    crate::passport::issue(&state, "on demand").await.map(Json).map_err(|e| match e {
        crate::passport::IssueError::Ledger(l) => l.into(),
        other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "passport_failed", other.to_string()),
    })
}

/// `GET /v1/attest`: the TPM's state and the public parts a verifier enrols.
pub async fn attest(State(state): State<Arc<AppState>>) -> Json<Value> {
    let status = state.attest.status();
    let identity = state.attest.identity();
    Json(json!({
        "status": status,
        "ek_public": identity.as_ref().map(|i| B64.encode(&i.ek_public)),
        "ek_certificate": identity.as_ref().and_then(|i| i.ek_certificate.as_ref()).map(|c| B64.encode(c)),
        "ak_public": identity.as_ref().map(|i| B64.encode(&i.ak_public)),
        "ledger_key": state.ledger.verifier_key().to_string(),
    }))
}

/// `POST /v1/attest/activate` body: a verifier's challenge (base64).
#[derive(Debug, Deserialize)]
pub struct Challenge {
    credential_blob: String,
    encrypted_secret: String,
}

/// `POST /v1/attest/activate`: TPM2_ActivateCredential on a verifier's challenge; the
/// answer goes back to the verifier, who pins the AK if it matches. Recorded.
pub async fn activate(State(state): State<Arc<AppState>>, body: Result<Json<Challenge>, axum::extract::rejection::JsonRejection>) -> Result<Json<Value>, ApiError> {
    let Json(c) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (Some(blob), Some(secret)) = (lucid_common::dsse::b64(&c.credential_blob), lucid_common::dsse::b64(&c.encrypted_secret)) else {
        return Err(ApiError::bad_request("credential_blob and encrypted_secret must be base64"));
    };
    let a = state.attest.clone();
    let answer = tokio::task::spawn_blocking(move || a.activate(&blob, &secret))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "activation_failed", format!("this TPM could not activate the credential (a challenge for another EK or AK?): {e}")))?;
    let entry = lucid_common::record::Entry {
        kind: Kind::Attestation,
        source: "lucidctl".into(),
        controls: vec!["CC6.1".into()],
        severity: lucid_common::record::Severity::Notice,
        subject: "tpm.enrolment".into(),
        body: json!({ "ak_name": state.attest.status().ak_name, "answered": true }),
    };
    state.ledger.append(entry).await?;
    Ok(Json(json!({ "secret": B64.encode(answer) })))
}
