//! The OpenAI-compatible gateway: lucidd in front of the model server.
//!
//! Each request is routed by its `model` to an agent, its texts run through the agent's
//! `preRequest` chain, every decision is recorded in the ledger (durably, before the
//! upstream sees anything: fail closed), and only then is the (possibly redacted)
//! request forwarded. Responses run through `postResponse`; streamed responses are
//! held back in a sliding window ([`stream`]) so a deny or redaction lands before the
//! client receives the offending text.
// Handlers return early with ready responses; boxing them would only add noise.
#![allow(clippy::result_large_err)]

pub mod openai;
mod proxy;
pub mod routes;
mod stream;
pub mod surface;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::audit::chain::{decision_entry, Decision, RequestInfo};
use crate::audit::{Outcome, Stage, Subject};
use crate::daemon::state::AppState;
use openai::{error_body, Slot};
use surface::Endpoint;
pub use routes::{AgentRoute, Routes};

/// What the gateway's handlers share.
pub struct GatewayState {
    /// The daemon (ledger, configuration).
    pub app: Arc<AppState>,
    /// Upstream HTTP client.
    pub client: reqwest::Client,
}

/// The gateway's routes.
pub fn app(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/responses", post(responses))
        .route("/v1/models", get(models))
        .route("/v1/audit", post(audit))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint", "invalid_request_error", "not_found") })
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(state.clone(), body_limit))
        .layer(axum::middleware::from_fn(trace))
        .with_state(state)
}

/// Refuses bodies over `spec.gateway.maxBodyBytes` as the configuration in force says
/// it now (read per request, so `apply` changes it at once): 413 with an OpenAI-style
/// error for a declared length over it, and for a body that grows past it as it is read.
async fn body_limit(State(gw): State<Arc<GatewayState>>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let limit = gw.app.config().env.spec.gateway.max_body_bytes;
    let declared = request.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit);
    }
    let (parts, body) = request.into_parts();
    let limited = axum::body::Body::new(http_body_util::Limited::new(body, limit));
    let response = next.run(axum::extract::Request::from_parts(parts, limited)).await;
    // A body cut by the limit reaches the handler as axum's plain-text 413 (an upstream's
    // own 413 is JSON and passes as it is).
    let plain = response.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/plain"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && plain {
        return too_large(limit);
    }
    response
}

fn too_large(limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is larger than spec.gateway.maxBodyBytes ({limit} bytes)"),
        "invalid_request_error",
        "request_too_large",
    )
}

/// Wraps each gateway request in a tracing span and logs its status and latency.
async fn trace(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let span = tracing::info_span!("gateway", method = %request.method(), path = %request.uri().path());
    async move {
        let started = std::time::Instant::now();
        let response = next.run(request).await;
        let request_id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
        tracing::debug!(status = response.status().as_u16(), request_id, elapsed_us = started.elapsed().as_micros() as u64, "gateway request");
        response
    }
    .instrument(span)
    .await
}

/// Serves the gateway on a bound listener until `shutdown`.
pub async fn serve(
    app_state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| std::io::Error::other(format!("HTTP client: {e}")))?;
    let state = Arc::new(GatewayState { app: app_state, client });
    let listen: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?listen, "gateway listening");
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await
}

/// An OpenAI-style error response.
pub fn error(status: StatusCode, message: &str, kind: &str, code: &str) -> Response {
    (status, Json(error_body(message, kind, code, None))).into_response()
}

fn request_id() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::getrandom(&mut b);
    format!("lucid-{}", lucid_common::hex::encode(&b))
}

/// Texts larger than this are audited on a blocking thread, so a burst of large prompts
/// does not stall the runtime's workers.
const INLINE_AUDIT_BYTES: usize = 16 * 1024;

/// Runs a stage of an agent's chain, inline for small subjects, on a blocking thread
/// for large ones and for chains that wait on a classifier.
pub(crate) async fn run_chain(route: &Arc<AgentRoute>, stage: Stage, subject: Subject) -> (Vec<Decision>, Subject) {
    if subject.len() <= INLINE_AUDIT_BYTES && !route.chain.blocks {
        let mut subject = subject;
        let decisions = route.chain.run(stage, &mut subject);
        return (decisions, subject);
    }
    // The subject goes to the blocking thread through a shared slot rather than a copy,
    // so it is still here if the blocking pool refuses the job (at shutdown).
    let slot = Arc::new(std::sync::Mutex::new(Some(subject)));
    let (r, s) = (route.clone(), slot.clone());
    let job = tokio::task::spawn_blocking(move || {
        let mut guard = s.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_mut().map(|subject| r.chain.run(stage, subject))
    });
    let decisions = job.await.ok().flatten();
    let taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    let mut subject = taken.unwrap_or_else(|| Subject::new([]));
    let decisions = match decisions {
        Some(d) => d,
        // Not run on the blocking pool: judge inline rather than skip the audit.
        None => route.chain.run(stage, &mut subject),
    };
    (decisions, subject)
}

/// Records decisions; all are appended concurrently so they share one fsync.
/// Proceeds are recorded only with `LOG_ALL_EVENTS`; what must be evidenced whatever
/// it says is recorded always: a late verdict (PI1.3), a fail policy applied (PI1.5), and
/// a request with an exempted system prompt.
async fn record(app: &AppState, info: &RequestInfo, decisions: &[Decision], log_all: bool) -> Result<(), Response> {
    let notable = |d: &Decision| {
        d.verdict.outcome != Outcome::Proceed || d.late_us.is_some() || d.failure.is_some() || info.exempt_system_prompts > 0 || !info.unaudited.is_empty()
    };
    let appends = decisions.iter().filter(|d| log_all || notable(d)).map(|d| app.ledger.append(decision_entry(info, d)));
    for result in futures_util::future::join_all(appends).await {
        if let Err(e) = result {
            tracing::error!(error = %e, request = %info.request_id, "decision could not be recorded; refusing the request");
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "lucid cannot record evidence right now, so it does not forward requests (fail closed)",
                "server_error",
                "lucid_ledger_unavailable",
            ));
        }
    }
    Ok(())
}

/// The OpenAI-style error body of a denial: which auditor and control, never the
/// offending text. Plain responses carry it with 403; streams send it as an event.
pub(crate) fn blocked_body(info: &RequestInfo, d: &Decision) -> Value {
    let message = format!(
        "{} blocked by {} ({}): {}",
        if d.stage == Stage::PreRequest { "request" } else { "response" },
        d.auditor.as_str(),
        d.controls.join(", "),
        d.verdict.reason.as_deref().unwrap_or("policy")
    );
    let extra = json!({ "auditor": d.auditor, "controls": d.controls, "stage": d.stage, "request_id": info.request_id });
    error_body(&message, "invalid_request_error", "lucid_blocked", Some(extra))
}

/// The deny response.
fn blocked(info: &RequestInfo, d: &Decision) -> Response {
    let mut response = (StatusCode::FORBIDDEN, Json(blocked_body(info, d))).into_response();
    if let Ok(v) = info.request_id.parse() {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

fn parse_body(body: &[u8]) -> Result<Value, Response> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        error(StatusCode::BAD_REQUEST, &format!("the body is not valid JSON: {e}"), "invalid_request_error", "invalid_json")
    })?;
    if !value.is_object() {
        return Err(error(StatusCode::BAD_REQUEST, "the body must be a JSON object", "invalid_request_error", "invalid_json"));
    }
    Ok(value)
}

/// Everything needed to run a request through an agent.
struct Prepared {
    route: Arc<AgentRoute>,
    info: RequestInfo,
    body: Value,
}

/// The name of an endpoint in decision records.
fn endpoint_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Chat => "chat.completions",
        Endpoint::Completions => "completions",
        Endpoint::Embeddings => "embeddings",
        Endpoint::Responses => "responses",
    }
}

/// Routes by model, checks the key, reads the request by the endpoint's schema (refusing
/// what cannot be read), runs `preRequest`, records the decisions, writes redactions back.
async fn prepare(gw: &GatewayState, headers: &HeaderMap, raw: &[u8], kind: Endpoint) -> Result<Prepared, Response> {
    let endpoint = endpoint_name(kind);
    let mut body = parse_body(raw)?;
    let Some(model) = body.get("model").and_then(Value::as_str).map(str::to_string) else {
        return Err(error(StatusCode::BAD_REQUEST, "`model` is required", "invalid_request_error", "missing_model"));
    };
    let routes = gw.app.routes.get(&gw.app).map_err(|e| {
        tracing::error!(error = %e, "building the audit chains failed");
        error(StatusCode::INTERNAL_SERVER_ERROR, "the audit chain could not be built", "server_error", "lucid_chain")
    })?;
    let Some(route) = routes.by_model.get(&model).cloned() else {
        // Which models are served is not told to a caller without a key where keys are
        // required.
        require_some_key(gw, &routes, headers, endpoint).await?;
        return Err(error(
            StatusCode::NOT_FOUND,
            &format!("the model `{model}` is not served here"),
            "invalid_request_error",
            "model_not_found",
        ));
    };
    let mut info = RequestInfo {
        request_id: request_id(),
        agent: route.agent.name.clone(),
        model,
        key_id: None,
        endpoint: endpoint.into(),
        exempt_system_prompts: 0,
        unaudited: Vec::new(),
    };
    if route.access_control {
        match gw.app.keys.authorize(bearer(headers), &route.agent.name) {
            Ok(key) => info.key_id = Some(key.id),
            Err(refusal) => return Err(refuse(gw, &info, refusal).await),
        }
    }
    let read = match surface::request(kind, &body, &route.agent.gateway, route.tokenizer.as_deref()) {
        Ok(r) => r,
        Err(refused) => return Err(refuse_surface(gw, &info, refused).await),
    };
    info.unaudited = read.unaudited;
    let (found, exempt) = exempt_prompts(&route, read.texts);
    info.exempt_system_prompts = exempt;
    let slots: Vec<Slot> = found.iter().map(|(s, ..)| s.clone()).collect();
    let originals: Vec<String> = found.iter().map(|(_, _, t)| t.clone()).collect();
    let subject = Subject::new(found.into_iter().map(|(_, role, text)| (role, text)));
    let (decisions, subject) = run_chain(&route, Stage::PreRequest, subject).await;
    record(&gw.app, &info, &decisions, route.chain.log_all).await?;
    if let Some(denied) = decisions.iter().find(|d| d.verdict.outcome == Outcome::Deny) {
        return Err(blocked(&info, denied));
    }
    if let Err(why) = openai::write_back(&mut body, &slots, &subject, &originals, route.tokenizer.as_deref()) {
        tracing::error!(error = %why, request = %info.request_id, "a redaction could not be applied; the request is refused");
        return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "lucid could not apply a redaction, so it does not forward the request (fail closed)", "server_error", "lucid_redaction_failed"));
    }
    Ok(Prepared { route, info, body })
}

/// Records and answers a request whose surface the gateway refuses (400 naming the
/// field): nothing of it reaches the model.
async fn refuse_surface(gw: &GatewayState, info: &RequestInfo, refused: surface::Refused) -> Response {
    let mut verdict = crate::audit::Verdict::proceed();
    verdict.outcome = Outcome::Deny;
    verdict.reason = Some(refused.message.clone());
    let decision = Decision {
        auditor: crate::config::auditors::AuditorId::Guardrails,
        name: Some("request surface".into()),
        stage: Stage::PreRequest,
        controls: vec!["CC6.6".into()],
        verdict,
        latency_us: 0,
        late_us: None,
        failure: None,
    };
    if let Err(r) = record(&gw.app, info, &[decision], true).await {
        return r;
    }
    let mut body = error_body(&refused.message, "invalid_request_error", refused.code, Some(json!({ "request_id": info.request_id })));
    body["error"]["param"] = json!(refused.field);
    let mut response = (StatusCode::BAD_REQUEST, Json(body)).into_response();
    if let Ok(v) = info.request_id.parse() {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Takes out the system and developer messages whose text has a digest the agent's
/// `exemptSystemPrompts` lists (exact matches only); returns the rest and how many were
/// taken out.
fn exempt_prompts(route: &AgentRoute, found: openai::Texts) -> (openai::Texts, usize) {
    let exempt = &route.agent.audit_chain.exempt_system_prompts;
    if exempt.is_empty() {
        return (found, 0);
    }
    let before = found.len();
    let kept: openai::Texts = found
        .into_iter()
        .filter(|(slot, role, text)| {
            let prompt = matches!(slot, Slot::Pointer(p) if openai::is_message_content(p)) && matches!(role.as_deref(), Some("system" | "developer"));
            !(prompt && exempt.contains(&lucid_common::hex::encode(&sha2::Sha256::digest(text.as_bytes()))))
        })
        .collect();
    let n = before - kept.len();
    (kept, n)
}

/// For a request that names no agent served here: where some agent requires a key, the
/// caller must present a valid one (else 401, recorded), so that an anonymous caller
/// cannot list models or agents by probing.
async fn require_some_key(gw: &GatewayState, routes: &Routes, headers: &HeaderMap, endpoint: &str) -> Result<(), Response> {
    if !routes.by_model.values().any(|r| r.access_control) {
        return Ok(());
    }
    match gw.app.keys.authenticate(bearer(headers)) {
        Ok(_) => Ok(()),
        Err(refusal) => {
            let info = RequestInfo {
                request_id: request_id(),
                agent: "*".into(),
                model: "*".into(),
                key_id: None,
                endpoint: endpoint.into(),
                exempt_system_prompts: 0,
                unaudited: Vec::new(),
            };
            Err(refuse(gw, &info, refusal).await)
        }
    }
}

/// Records and answers a refused API key (401 unknown or revoked, 403 out of scope,
/// 429 over its rate).
async fn refuse(gw: &GatewayState, info: &RequestInfo, refusal: crate::access::Refusal) -> Response {
    use crate::access::Refusal;
    let (status, code, reason, key_id) = match refusal {
        Refusal::Unknown => (StatusCode::UNAUTHORIZED, "invalid_api_key", "no valid API key".to_string(), None),
        Refusal::Revoked(id) => (StatusCode::UNAUTHORIZED, "invalid_api_key", format!("API key {id} is revoked"), Some(id)),
        Refusal::OutOfScope(id) => {
            (StatusCode::FORBIDDEN, "lucid_key_scope", format!("API key {id} may not use agent {}", info.agent), Some(id))
        }
        Refusal::RateLimited(id) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", format!("API key {id} is over its rate"), Some(id)),
    };
    let mut verdict = crate::audit::Verdict::proceed();
    verdict.outcome = Outcome::Deny;
    verdict.reason = Some(reason.clone());
    let decision = Decision {
        auditor: crate::config::auditors::AuditorId::PiiCompliance,
        name: Some("access control".into()),
        stage: Stage::PreRequest,
        controls: vec!["CC6.1".into(), "CC6.3".into()],
        verdict,
        latency_us: 0,
        late_us: None,
        failure: None,
    };
    let info = RequestInfo { key_id, ..info.clone() };
    if let Err(r) = record(&gw.app, &info, &[decision], true).await {
        return r;
    }
    let kind = if status == StatusCode::TOO_MANY_REQUESTS { "requests" } else { "invalid_request_error" };
    error(status, &reason, kind, code)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Audits and forwards one generation request; conversations (chat and Responses) carry
/// a canary in their system prompt, plain completions have nowhere to put one.
async fn generate(gw: Arc<GatewayState>, headers: &HeaderMap, raw: &[u8], endpoint: Endpoint) -> Response {
    let mut p = match prepare(&gw, headers, raw, endpoint).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let canary = match endpoint {
        Endpoint::Completions => None,
        _ => p.route.add_canary(&mut p.body),
    };
    proxy::forward(gw, p, endpoint, canary).await
}

async fn chat_completions(State(gw): State<Arc<GatewayState>>, headers: HeaderMap, raw: axum::body::Bytes) -> Response {
    generate(gw, &headers, &raw, Endpoint::Chat).await
}

async fn completions(State(gw): State<Arc<GatewayState>>, headers: HeaderMap, raw: axum::body::Bytes) -> Response {
    generate(gw, &headers, &raw, Endpoint::Completions).await
}

/// `POST /v1/responses` (the Responses API): audited as chat is, answers and streamed
/// events included.
async fn responses(State(gw): State<Arc<GatewayState>>, headers: HeaderMap, raw: axum::body::Bytes) -> Response {
    generate(gw, &headers, &raw, Endpoint::Responses).await
}

async fn embeddings(State(gw): State<Arc<GatewayState>>, headers: HeaderMap, raw: axum::body::Bytes) -> Response {
    match prepare(&gw, &headers, &raw, Endpoint::Embeddings).await {
        Ok(p) => proxy::forward_plain(gw, p, "embeddings").await,
        Err(r) => r,
    }
}

/// `GET /v1/models`: the agents a caller may use. Where every agent requires a key, a
/// caller without a valid one is refused (401, recorded); otherwise it sees the agents
/// that need none, and a valid key adds those it is scoped to.
async fn models(State(gw): State<Arc<GatewayState>>, headers: HeaderMap) -> Response {
    let routes = match gw.app.routes.get(&gw.app) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e, "server_error", "lucid_chain"),
    };
    let guarded = routes.by_model.values().filter(|r| r.access_control).count();
    let presented = bearer(&headers);
    let key = if guarded > 0 && (presented.is_some() || guarded == routes.by_model.len()) {
        match gw.app.keys.authenticate(presented) {
            Ok(key) => Some(key),
            Err(refusal) => {
                let info = RequestInfo {
                    request_id: request_id(),
                    agent: "*".into(),
                    model: "*".into(),
                    key_id: None,
                    endpoint: "models".into(),
                    exempt_system_prompts: 0,
                    unaudited: Vec::new(),
                };
                return refuse(&gw, &info, refusal).await;
            }
        }
    } else {
        None
    };
    let mut visible: Vec<&Arc<AgentRoute>> =
        routes.by_model.values().filter(|r| !r.access_control || key.as_ref().is_some_and(|k| k.may_use(&r.agent.name))).collect();
    visible.sort_by(|a, b| a.agent.name.cmp(&b.agent.name));
    let data: Vec<Value> = visible
        .iter()
        .map(|r| json!({ "id": r.agent.model.id, "object": "model", "created": 0, "owned_by": format!("lucid:{}", r.agent.name) }))
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

/// `POST /v1/audit`: run a chain without an upstream and return the decisions. The
/// chosen agent's access control applies, as on every other endpoint.
async fn audit(State(gw): State<Arc<GatewayState>>, headers: HeaderMap, raw: axum::body::Bytes) -> Response {
    match parse_body(&raw) {
        Ok(body) => run_audit(&gw.app, &body, Caller::Gateway { gw: &gw, headers: &headers }).await,
        Err(r) => r,
    }
}

/// Who asked for `/v1/audit`: a gateway client (whose key is checked where the agent
/// requires one) or `lucidctl` on the control socket (checked by peer credentials).
pub enum Caller<'a> {
    /// Over the gateway's TCP listener.
    Gateway {
        /// The gateway.
        gw: &'a GatewayState,
        /// The request's headers (the key).
        headers: &'a HeaderMap,
    },
    /// Over the control socket.
    Control,
}

/// Runs an agent's chain on `{stage, agent?, text | messages}` and answers with the
/// decisions and the (redacted) texts. Served by the gateway and the control socket
/// (`lucidctl audit`), for applications that do not route through the proxy.
pub async fn run_audit(app: &AppState, body: &Value, caller: Caller<'_>) -> Response {
    let routes = match app.routes.get(app) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e, "server_error", "lucid_chain"),
    };
    let route = match body.get("agent").and_then(Value::as_str) {
        Some(name) => routes.by_model.values().find(|r| r.agent.name == name).cloned(),
        None => routes.by_model.values().min_by(|a, b| a.agent.name.cmp(&b.agent.name)).cloned(),
    };
    let Some(route) = route else {
        if let Caller::Gateway { gw, headers } = &caller {
            if let Err(r) = require_some_key(gw, &routes, headers, "audit").await {
                return r;
            }
        }
        return error(StatusCode::NOT_FOUND, "no such agent", "invalid_request_error", "agent_not_found");
    };
    let mut info = RequestInfo {
        request_id: request_id(),
        agent: route.agent.name.clone(),
        model: route.agent.model.id.clone(),
        key_id: None,
        endpoint: "audit".into(),
        exempt_system_prompts: 0,
        unaudited: Vec::new(),
    };
    // The key first: nothing about the body is answered to a caller without one.
    if let (Caller::Gateway { gw, headers }, true) = (&caller, route.access_control) {
        match gw.app.keys.authorize(bearer(headers), &route.agent.name) {
            Ok(key) => info.key_id = Some(key.id),
            Err(refusal) => return refuse(gw, &info, refusal).await,
        }
    }
    let stage = match body.get("stage").and_then(Value::as_str).unwrap_or("pre") {
        "pre" | "preRequest" => Stage::PreRequest,
        "post" | "postResponse" => Stage::PostResponse,
        other => {
            return error(StatusCode::BAD_REQUEST, &format!("unknown stage `{other}`: pre or post"), "invalid_request_error", "bad_stage")
        }
    };
    let texts = if let Some(messages) = body.get("messages") {
        // The messages as the chat endpoint reads them (every role, part and field).
        match surface::request(Endpoint::Chat, &json!({ "messages": messages }), &route.agent.gateway, None) {
            Ok(read) => {
                info.unaudited = read.unaudited;
                read.texts
            }
            Err(refused) => return error(StatusCode::BAD_REQUEST, &refused.message, "invalid_request_error", refused.code),
        }
    } else if let Some(t) = body.get("text").and_then(Value::as_str) {
        vec![(Slot::Pointer("/text".into()), Some(if stage == Stage::PreRequest { "user" } else { "assistant" }.into()), t.to_string())]
    } else {
        return error(StatusCode::BAD_REQUEST, "give `text` or `messages`", "invalid_request_error", "missing_text");
    };
    let (texts, exempt) = exempt_prompts(&route, texts);
    let info = RequestInfo { exempt_system_prompts: exempt, ..info };
    // Where each text returned sits in the request (exempted prompts are not returned).
    let pointers: Vec<String> = texts
        .iter()
        .map(|(slot, ..)| match slot {
            Slot::Pointer(p) | Slot::TokenIds(p) => p.clone(),
            Slot::Key(object, key) => format!("{object} (key {key:?})"),
        })
        .collect();
    let subject = Subject::new(texts.into_iter().map(|(_, r, t)| (r, t)));
    let (decisions, mut subject) = run_chain(&route, stage, subject).await;
    if let Err(r) = record(app, &info, &decisions, route.chain.log_all).await {
        return r;
    }
    let outcome = decisions.iter().map(|d| d.verdict.outcome).max().unwrap_or(Outcome::Proceed);
    if let Some(denied) = decisions.iter().find(|d| d.verdict.outcome == Outcome::Deny) {
        // Never echo what was denied: hand back the text with the findings replaced.
        subject.apply(&denied.verdict.redactions);
    }
    let texts: Vec<&str> = subject.segments.iter().map(|s| s.original.as_str()).collect();
    Json(json!({
        "request_id": info.request_id,
        "agent": info.agent,
        "stage": stage,
        "outcome": outcome,
        "decisions": decisions,
        "texts": texts,
        "pointers": pointers,
        "unaudited": info.unaudited,
    }))
    .into_response()
}
