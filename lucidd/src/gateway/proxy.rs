//! Forwarding to the upstream model server and auditing what comes back.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::surface::{self, Endpoint};
use super::{blocked, error, openai, record, stream, GatewayState, Prepared};
use crate::audit::{Outcome, Stage, Subject};

fn upstream_request(gw: &GatewayState, p: &Prepared, path: &str) -> reqwest::RequestBuilder {
    let upstream = &p.route.agent.upstream;
    let mut req = gw
        .client
        .post(format!("{}/{path}", upstream.url.0))
        .timeout(Duration::from_secs(upstream.timeout_seconds))
        .header("x-request-id", &p.info.request_id)
        .json(&p.body);
    if let Some(key) = upstream.api_key_env.as_ref().and_then(|v| std::env::var(v).ok()) {
        req = req.bearer_auth(key);
    }
    req
}

/// Maps an upstream failure to an OpenAI-style error.
fn upstream_error(e: &reqwest::Error) -> Response {
    if e.is_timeout() {
        error(StatusCode::GATEWAY_TIMEOUT, "the model server did not answer in time", "server_error", "upstream_timeout")
    } else {
        error(StatusCode::BAD_GATEWAY, &format!("the model server could not be reached: {e}"), "server_error", "upstream_unavailable")
    }
}

/// Passes an upstream error response through (it is the model server's own words).
async fn passthrough(resp: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    match resp.bytes().await {
        Ok(bytes) => (status, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => upstream_error(&e),
    }
}

/// Forwards a chat, completions or responses request; streams when the client asked to.
pub async fn forward(gw: Arc<GatewayState>, p: Prepared, endpoint: Endpoint, canary: Option<String>) -> Response {
    let path = match endpoint {
        Endpoint::Chat => "chat/completions",
        Endpoint::Completions => "completions",
        Endpoint::Responses => "responses",
        Endpoint::Embeddings => "embeddings",
    };
    let streaming = p.body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let resp = match upstream_request(&gw, &p, path).send().await {
        Ok(r) => r,
        Err(e) => return upstream_error(&e),
    };
    if !resp.status().is_success() {
        return passthrough(resp).await;
    }
    if streaming {
        return stream::relay(gw, p, resp, endpoint, canary);
    }
    let mut body: Value = match resp.json().await {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_GATEWAY, &format!("the model server sent a bad body: {e}"), "server_error", "upstream_bad_body"),
    };
    let found = surface::response(endpoint, &body);
    let slots: Vec<_> = found.iter().map(|(s, ..)| s.clone()).collect();
    let originals: Vec<String> = found.iter().map(|(_, _, t)| t.clone()).collect();
    let subject = Subject::new(found.into_iter().map(|(_, r, t)| (r, t)));
    let (mut decisions, subject) = super::run_chain(&p.route, Stage::PostResponse, subject).await;
    if let Some(d) = canary.as_deref().and_then(|c| stream::canary_decision(&subject, c)) {
        decisions.push(d);
    }
    if let Err(r) = record(&gw.app, &p.info, &decisions, p.route.chain.log_all).await {
        return r;
    }
    if let Some(denied) = decisions.iter().find(|d| d.verdict.outcome == Outcome::Deny) {
        return blocked(&p.info, denied);
    }
    let redacted = subject.segments.iter().zip(&originals).any(|(s, o)| s.original != *o);
    if let Err(why) = openai::write_back(&mut body, &slots, &subject, &originals, None) {
        tracing::error!(error = %why, request = %p.info.request_id, "a redaction of the answer could not be applied; the answer is withheld");
        return error(StatusCode::INTERNAL_SERVER_ERROR, "lucid could not apply a redaction to the answer, so it withholds it (fail closed)", "server_error", "lucid_redaction_failed");
    }
    if redacted {
        surface::drop_token_detail(&mut body);
    }
    let mut response = Json(body).into_response();
    if let Ok(v) = p.info.request_id.parse() {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Forwards a request whose response carries no text to audit (embeddings).
pub async fn forward_plain(gw: Arc<GatewayState>, p: Prepared, path: &str) -> Response {
    match upstream_request(&gw, &p, path).send().await {
        Ok(r) => passthrough(r).await,
        Err(e) => upstream_error(&e),
    }
}
