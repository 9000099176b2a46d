//! Control API handlers. Each is small: parse, call the ledger or the state, map
//! errors to [`ApiError`]. Blocking ledger reads run on `spawn_blocking`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lucid_common::api::{ApplyRequest, AppendReceipt, LogQuery, NoteRequest};
use lucid_common::record::{Entry, Kind, Severity};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::auth::PeerCred;
use super::error::ApiError;
use crate::daemon::retention;
use crate::daemon::state::{Actor, AppState, Mode};
use crate::ledger::{now_ns, LedgerError};

/// Longest note accepted.
const MAX_NOTE: usize = 16 * 1024;
/// Records read per step while streaming logs.
const LOG_STEP: u64 = 4096;

pub(super) fn actor(peer: &PeerCred) -> Actor {
    Actor::Peer { uid: peer.uid, gid: peer.gid, pid: peer.pid.unwrap_or(-1) }
}

pub(super) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v).map_err(|e| ApiError::bad_request(e.body_text()))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|e| ApiError::bad_request(e.body_text()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("reader task failed: {e}")))?
        .map_err(ApiError::from)
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see `lucidctl --help`")
}

pub async fn status(State(state): State<Arc<AppState>>) -> Response {
    let s = state.clone();
    match tokio::task::spawn_blocking(move || s.status()).await {
        Ok(status) => Json(status).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()).into_response(),
    }
}

pub async fn note(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    body: Result<Json<NoteRequest>, JsonRejection>,
) -> Result<Json<AppendReceipt>, ApiError> {
    let req = json_body(body)?;
    if req.message.trim().is_empty() {
        return Err(ApiError::bad_request("the note is empty"));
    }
    if req.message.len() > MAX_NOTE {
        return Err(ApiError::bad_request(format!("the note is longer than {MAX_NOTE} bytes")));
    }
    let receipt = state
        .ledger
        .append(Entry {
            kind: Kind::Note,
            source: "lucidctl".into(),
            controls: vec!["CC8.1".into()],
            severity: Severity::Notice,
            subject: req.ticket.clone().unwrap_or_else(|| "operator note".into()),
            body: json!({ "message": req.message, "ticket": req.ticket, "actor": actor(&peer).to_json() }),
        })
        .await?;
    Ok(Json(AppendReceipt {
        seq: receipt.seq,
        time_ns: receipt.time_ns,
        leaf_hash: lucid_common::hex::encode(&receipt.leaf_hash),
    }))
}

pub async fn apply(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    body: Result<Json<ApplyRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = json_body(body)?;
    let result = state.apply(&req.yaml, &req.file, actor(&peer)).await?;
    Ok(Json(result).into_response())
}

pub async fn reload(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(Json(state.reload().await?).into_response())
}

pub async fn checkpoint(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let l = state.ledger.clone();
    match blocking(move || l.latest_checkpoint()).await? {
        Some(cp) => Ok(Json(cp).into_response()),
        None => Err(ApiError::not_found("no checkpoint has been signed yet")),
    }
}

pub async fn sign_checkpoint(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    state.ledger.checkpoint().await?;
    checkpoint(State(state)).await
}

#[derive(Deserialize)]
pub struct ProveQuery {
    seq: u64,
}

pub async fn prove(
    State(state): State<Arc<AppState>>,
    q: Result<Query<ProveQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let seq = query(q)?.seq;
    let head = state.ledger.head();
    if seq >= head.next_seq {
        return Err(ApiError::not_found(format!("record {seq} does not exist; the ledger has {} records", head.next_seq)));
    }
    if head.checkpoint.as_ref().is_none_or(|(size, _)| seq >= *size) {
        // Sign now rather than make the caller wait for the next timed checkpoint.
        state.ledger.checkpoint().await?;
    }
    let l = state.ledger.clone();
    Ok(Json(blocking(move || l.prove(seq)).await?).into_response())
}

#[derive(Deserialize)]
pub struct ConsistencyQuery {
    old: u64,
    new: u64,
}

pub async fn consistency(
    State(state): State<Arc<AppState>>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let l = state.ledger.clone();
    Ok(Json(blocking(move || l.consistency(q.old, q.new)).await?).into_response())
}

#[derive(Deserialize)]
pub struct ExportQuery {
    #[serde(default)]
    from: u64,
}

/// Streams the verification frames; the reader runs on a blocking thread and stops
/// when the client goes away.
pub async fn export(
    State(state): State<Arc<AppState>>,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let from = query(q)?.from;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(8);
    let l = state.ledger.clone();
    tokio::task::spawn_blocking(move || {
        let result = l.export(from, |chunk| tx.blocking_send(Ok(Bytes::from(chunk))).is_ok());
        if let Err(e) = result {
            let mut frame = Vec::new();
            lucid_common::export::write_frame(&mut frame, lucid_common::export::tag::ERROR, e.to_string().as_bytes());
            let _ = tx.blocking_send(Ok(Bytes::from(frame)));
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Body::from_stream(ReceiverStream::new(rx))).into_response())
}

#[derive(Deserialize)]
pub struct RetentionRequest {
    #[serde(default)]
    as_of_ns: Option<u64>,
}

pub async fn retention(
    State(state): State<Arc<AppState>>,
    body: Result<Json<RetentionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = json_body(body)?;
    if req.as_of_ns.is_some() && state.run.mode != Mode::Dev {
        return Err(ApiError::forbidden("as_of (a retention drill) is only accepted by a daemon in dev mode"));
    }
    let days = state.config().env.retention_days();
    let outcome = retention::run_once(&state, req.as_of_ns.unwrap_or_else(now_ns)).await?;
    Ok(Json(json!({
        "retention_days": days,
        "pruned": outcome.map(|o| json!({ "from": o.from, "to": o.to, "record_seq": o.record_seq })),
    }))
    .into_response())
}

/// Streams matching records as NDJSON; with `follow`, keeps going as the head moves.
pub async fn logs(
    State(state): State<Arc<AppState>>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    // Everything before the head as it is now comes from the query; the follower
    // picks up from exactly there, so no record is shown twice or missed.
    let mut cursor = state.ledger.head().next_seq;
    let l = state.ledger.clone();
    let q2 = q.clone();
    let mut initial = blocking(move || l.query(&q2, 0)).await?;
    initial.retain(|r| r.seq < cursor);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let lines = ndjson(&initial);
    let follow = q.follow;
    let ledger = state.ledger.clone();
    tokio::spawn(async move {
        if tx.send(Ok(lines)).await.is_err() || !follow {
            return;
        }
        let mut head = ledger.subscribe();
        let mut q = q;
        q.limit = None;
        loop {
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
            let next = head.borrow_and_update().next_seq;
            while cursor < next {
                let (l, q2, from) = (ledger.clone(), q.clone(), cursor);
                let to = (from + LOG_STEP).min(next);
                let batch = tokio::task::spawn_blocking(move || {
                    l.records(from, to).map(|recs| recs.into_iter().filter(|r| crate::ledger::read::matches(&q2, r)).collect::<Vec<_>>())
                })
                .await;
                let Ok(Ok(records)) = batch else { return };
                cursor = to;
                if !records.is_empty() && tx.send(Ok(ndjson(&records))).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

fn ndjson(records: &[lucid_common::record::Record]) -> Bytes {
    let mut out = Vec::new();
    for r in records {
        if serde_json::to_writer(&mut out, r).is_ok() {
            out.push(b'\n');
        }
    }
    Bytes::from(out)
}

#[derive(Deserialize)]
pub struct CreateKey {
    name: String,
    #[serde(default)]
    agents: Vec<String>,
    #[serde(default)]
    rate_per_minute: u32,
}

pub async fn list_keys(State(state): State<Arc<AppState>>) -> Response {
    Json(state.keys.list()).into_response()
}

pub async fn create_key(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = json_body(body)?;
    if req.name.trim().is_empty() {
        return Err(ApiError::bad_request("a key needs a name"));
    }
    let known: Vec<String> = state.config().env.spec.agents.iter().map(|a| a.name.clone()).collect();
    if let Some(unknown) = req.agents.iter().find(|a| !known.contains(a)) {
        return Err(ApiError::bad_request(format!("no agent named {unknown:?}; agents: {}", known.join(", "))));
    }
    let (key, secret) = state
        .keys
        .create(&req.name, req.agents, req.rate_per_minute, now_ns())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    if let Err(e) = state.ledger.append(crate::daemon::state::access_entry("key.create", &key, &actor(&peer))).await {
        // A key the ledger does not know about must not work: withdraw it.
        let _ = state.keys.revoke(&key.id, now_ns());
        return Err(e.into());
    }
    Ok(Json(json!({ "key": key, "secret": secret })).into_response())
}

pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let key = state.keys.revoke(&id, now_ns()).map_err(|e| match e {
        crate::access::StoreError::NotFound(_) => ApiError::not_found(e.to_string()),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string()),
    })?;
    state.ledger.append(crate::daemon::state::access_entry("key.revoke", &key, &actor(&peer))).await?;
    Ok(Json(key).into_response())
}

pub async fn audit(State(state): State<Arc<AppState>>, body: Result<Json<serde_json::Value>, JsonRejection>) -> Response {
    match json_body(body) {
        Ok(b) => crate::gateway::run_audit(&state, &b, crate::gateway::Caller::Control).await,
        Err(e) => e.into_response(),
    }
}
