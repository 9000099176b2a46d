//! `/v1/models`: approving a model (hash, sign, record), listing approvals, and
//! verifying a model against its approval. Hashing runs on the blocking pool.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio_stream::wrappers::ReceiverStream;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::Json;
use lucid_common::api::{ImportRequest, ModelRequest, ModelStatus};
use lucid_common::manifest::{Manifest, Method, DEFAULT_SHARD_SIZE};
use lucid_common::record::{Entry, Kind, Severity};
use serde_json::json;

use super::auth::PeerCred;
use super::error::ApiError;
use super::handlers::{actor, json_body};
use crate::daemon::state::AppState;

use crate::integrity::approvals::{id_of, Approval, Verification};
use crate::integrity::hash::{files, hash_model, DEFAULT_IGNORED};
use crate::integrity::verify::{attrs_of, check};

fn method_name(m: Method) -> String {
    match m {
        Method::Files => "files".into(),
        Method::FilesBlake3 => "blake3".into(),
        Method::Shards { size } => format!("shards:{size}"),
    }
}

fn status_of(a: &Approval) -> ModelStatus {
    ModelStatus {
        id: a.id.clone(),
        path: a.path.display().to_string(),
        name: a.manifest.name.clone(),
        method: method_name(a.manifest.method),
        resources: a.manifest.resources.len(),
        digest: lucid_common::hex::encode(&a.manifest.subject_digest()),
        approved_ns: a.approved_ns,
        note: a.note.clone(),
        record_seq: a.record_seq,
        state: a.last.state.clone(),
        verified_ns: a.last.time_ns,
        changed: a.last.changed.clone(),
        missing: a.last.missing.clone(),
        added: a.last.added.clone(),
        attributes: a.last.attributes.clone(),
        last_change: a.last_change.clone(),
        record: None,
    }
}

fn default_ignored() -> Vec<String> {
    DEFAULT_IGNORED.iter().map(|s| s.to_string()).collect()
}

/// Hashes `path` on the blocking pool, counting bytes in `done` (for progress).
async fn hash(path: PathBuf, method: Method, ignored: Vec<String>, done: Arc<AtomicU64>) -> Result<Manifest, ApiError> {
    tokio::task::spawn_blocking(move || hash_model(&path, method, &ignored, &done, None))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "hash_failed", e.to_string()))?
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn canonical(path: &str) -> Result<PathBuf, ApiError> {
    std::fs::canonicalize(path).map_err(|e| ApiError::bad_request(format!("{path}: {e}")))
}

/// `POST /v1/models/approve`.
pub async fn approve(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    body: Result<Json<ModelRequest>, JsonRejection>,
) -> Result<Json<ModelStatus>, ApiError> {
    let req = json_body(body)?;
    let method = method_of(&req)?;
    let path = canonical(&req.path)?;
    let manifest = hash(path.clone(), method, default_ignored(), Arc::default()).await?;
    let status = commit(&state, path, manifest, req.note, actor(&peer).to_json(), None).await?;
    Ok(Json(status))
}

fn method_of(req: &ModelRequest) -> Result<Method, ApiError> {
    let unknown = |m: &str| ApiError::bad_request(format!("unknown method {m:?}: shards, shards:BYTES, files or blake3"));
    match req.method.as_deref().unwrap_or("shards") {
        "shards" => Ok(Method::Shards { size: DEFAULT_SHARD_SIZE }),
        "files" => Ok(Method::Files),
        "blake3" => Ok(Method::FilesBlake3),
        other => match other.strip_prefix("shards:").map(str::parse::<u64>) {
            Some(Ok(size)) if size >= 4096 => Ok(Method::Shards { size }),
            _ => Err(unknown(other)),
        },
    }
}

/// `POST /v1/models/approve/stream`: [`approve`], answering in NDJSON: a
/// `{"done": bytes, "total": bytes}` line every 200 ms while hashing (for a progress
/// bar), then `{"result": ModelStatus}` or `{"error": {"code", "message"}}`.
pub async fn approve_stream(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    body: Result<Json<ModelRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = json_body(body)?;
    let method = method_of(&req)?;
    let path = canonical(&req.path)?;
    let ignored = default_ignored();
    let total: u64 = files(&path, &ignored).map_err(|e| ApiError::bad_request(e.to_string()))?.iter().map(|(_, _, len)| len).sum();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
    let line = |v: serde_json::Value| Ok(Bytes::from(format!("{v}\n")));
    tokio::spawn(async move {
        let done = Arc::new(AtomicU64::new(0));
        let hashing = hash(path.clone(), method, ignored, done.clone());
        tokio::pin!(hashing);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        let hashed = loop {
            tokio::select! {
                r = &mut hashing => break r,
                _ = tick.tick() => {
                    let _ = tx.send(line(json!({ "done": done.load(Ordering::Relaxed), "total": total }))).await;
                }
            }
        };
        let _ = tx.send(line(json!({ "done": done.load(Ordering::Relaxed), "total": total }))).await;
        let outcome = match hashed {
            Err(e) => Err(e),
            Ok(manifest) => commit(&state, path, manifest, req.note, actor(&peer).to_json(), None).await,
        };
        let last = match outcome {
            Ok(status) => json!({ "result": status }),
            Err(e) => json!({ "error": e.body() }),
        };
        let _ = tx.send(line(last)).await;
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(ReceiverStream::new(rx))).into_response())
}

/// Signs `manifest` (just hashed from `path`) with the host key, records the approval
/// (documenting what changed since a previous one, DOCUMENT_MODEL_CHANGES) and starts
/// watching it. `imported` describes where an imported manifest came from.
async fn commit(
    state: &AppState,
    path: PathBuf,
    manifest: Manifest,
    note: Option<String>,
    actor: serde_json::Value,
    imported: Option<serde_json::Value>,
) -> Result<ModelStatus, ApiError> {
    let attrs = attrs_of(&path, &manifest.ignore_paths).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let envelope = state.models.sign(&manifest);
    let digest = lucid_common::hex::encode(&manifest.subject_digest());
    let previous = state.models.get(&path);
    let documented = match &previous {
        Some(prev) if state.config().watch.document_changes => {
            let (changed, missing, added) = prev.manifest.diff(&manifest);
            json!({
                "previous_digest": lucid_common::hex::encode(&prev.manifest.subject_digest()),
                "previous_record": prev.record_seq,
                "previous_note": prev.note,
                "changed": changed,
                "missing": missing,
                "added": added,
                "last_change": prev.last_change,
            })
        }
        _ => serde_json::Value::Null,
    };
    let event = match (&imported, &previous) {
        (Some(_), _) => "imported",
        (None, Some(_)) => "change_approved",
        (None, None) => "approved",
    };
    let receipt = state
        .ledger
        .append(Entry {
            kind: Kind::Integrity,
            source: "lucidctl".into(),
            controls: vec!["CC8.1".into()],
            severity: Severity::Notice,
            subject: path.display().to_string(),
            body: json!({
                "event": event,
                "previous": documented,
                "imported": imported,
                "path": path.display().to_string(),
                "name": manifest.name,
                "method": method_name(manifest.method),
                "resources": manifest.resources.len(),
                "digest": digest,
                "note": note,
                "actor": actor,
            }),
        })
        .await?;
    let now = receipt.time_ns;
    let approval = Approval {
        id: id_of(&path),
        path,
        note,
        approved_ns: now,
        record_seq: receipt.seq,
        envelope,
        manifest,
        last: Verification { state: "verified".into(), time_ns: now, ..Default::default() },
        attrs,
        last_change: previous.and_then(|p| p.last_change),
    };
    state.models.commit(approval.clone()).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", e.to_string()))?;
    state.watch.refresh();
    state.measure(&format!("model:{}", approval.id), approval.manifest.subject_digest()).await;
    Ok(status_of(&approval))
}

/// `POST /v1/models/import`: a model_signing signature made elsewhere (sigstore bundle
/// or DSSE envelope), checked (its Statement, its signature where a public key is
/// given) and compared with a fresh hash of the files by the manifest's own method and
/// ignore list; when they match, it becomes this host's approval.
pub async fn import(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    body: Result<Json<ImportRequest>, JsonRejection>,
) -> Result<Json<ModelStatus>, ApiError> {
    let req = json_body(body)?;
    let imported = crate::integrity::import::parse(&req.signature, req.public_key.as_deref()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let path = canonical(&req.path)?;
    let now = hash(path.clone(), imported.manifest.method, imported.manifest.ignore_paths.clone(), Arc::default()).await?;
    let (changed, missing, added) = imported.manifest.diff(&now);
    let source = json!({
        "signature": imported.signature,
        "subject_digest": imported.subject,
        "method": method_name(imported.manifest.method),
        "ignore_paths": imported.manifest.ignore_paths,
    });
    if !(changed.is_empty() && missing.is_empty() && added.is_empty()) {
        let body = json!({
            "event": "import_refused",
            "path": path.display().to_string(),
            "imported": source,
            "changed": changed,
            "missing": missing,
            "added": added,
            "actor": actor(&peer).to_json(),
        });
        state
            .ledger
            .append(Entry { kind: Kind::Anomaly, source: "lucidctl".into(), controls: vec!["CC8.1".into()], severity: Severity::Warning, subject: path.display().to_string(), body })
            .await?;
        let mut names: Vec<String> = changed.iter().map(|n| format!("changed {n}")).collect();
        names.extend(missing.iter().map(|n| format!("missing {n}")));
        names.extend(added.iter().map(|n| format!("not in the manifest {n}")));
        return Err(ApiError::new(StatusCode::CONFLICT, "manifest_mismatch", format!("the files do not match the imported manifest: {}", names.join(", "))));
    }
    let status = commit(&state, path, now, req.note, actor(&peer).to_json(), Some(source)).await?;
    Ok(Json(status))
}

/// `GET /v1/models`.
pub async fn list(State(state): State<Arc<AppState>>) -> Json<Vec<ModelStatus>> {
    Json(state.models.all().iter().map(status_of).collect())
}

/// `POST /v1/models/verify`: re-hashes the model by its approval's method and records
/// the verdict; a modified or missing model is also an anomaly.
pub async fn verify(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    body: Result<Json<ModelRequest>, JsonRejection>,
) -> Result<Json<ModelStatus>, ApiError> {
    let req = json_body(body)?;
    let wanted = std::fs::canonicalize(&req.path).unwrap_or_else(|_| PathBuf::from(&req.path));
    let approval = state.models.get(&wanted).ok_or_else(|| ApiError::not_found(format!("{} is not an approved model", req.path)))?;
    let a = approval.clone();
    let last = tokio::task::spawn_blocking(move || check(&a, None, &AtomicU64::new(0)))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "hash_failed", e.to_string()))?;
    let ok = last.state == "verified";
    let body = json!({
        "event": "verified",
        "path": approval.path.display().to_string(),
        "verdict": last.state,
        "approved_digest": lucid_common::hex::encode(&approval.manifest.subject_digest()),
        "approval_record": approval.record_seq,
        "changed": last.changed,
        "missing": last.missing,
        "added": last.added,
        "attributes": last.attributes,
        "actor": actor(&peer).to_json(),
    });
    let entry = |kind| Entry {
        kind,
        source: "integrity".into(),
        controls: vec!["CC8.1".into()],
        severity: if ok { Severity::Info } else { Severity::Warning },
        subject: approval.path.display().to_string(),
        body: body.clone(),
    };
    let receipt = state.ledger.append(entry(Kind::Integrity)).await?;
    if !ok {
        state.ledger.append(entry(Kind::Anomaly)).await?;
    }
    state.models.set_last(&approval.id, last.clone());
    let mut status = status_of(&Approval { last, ..approval });
    status.record = Some(receipt.seq);
    Ok(Json(status))
}
