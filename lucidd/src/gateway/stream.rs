//! Streamed responses: a sliding window per choice.
//!
//! Text from the upstream is held back until more than [`HOLD_BACK`] bytes follow it,
//! and the held text is audited on every chunk. Any match shorter than the window is
//! therefore complete inside the held text before any of it is released, so a deny
//! stops the stream (an error event) and a redaction rewrites the held text before the
//! client sees it. A PEM private-key header holds everything after it until the key
//! ends, since a key is longer than the window.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{blocked_body, openai::error_body, record, GatewayState, Prepared};
use crate::audit::chain::Decision;
use crate::audit::{Finding, Outcome, Stage, Subject, Verdict};
use crate::config::auditors::AuditorId;

/// Bytes held back behind the newest text.
pub const HOLD_BACK: usize = 512;

/// A decision for a response that repeats the system-prompt canary.
pub fn canary_decision(subject: &Subject, canary: &str) -> Option<Decision> {
    let (i, at) = subject.segments.iter().enumerate().find_map(|(i, s)| s.view.text.find(canary).map(|at| (i, at)))?;
    let (a, b) = subject.segments[i].view.original_span(at, at + canary.len());
    let mut verdict = Verdict::proceed();
    verdict.outcome = Outcome::Deny;
    verdict.reason = Some("the response repeats the system prompt's canary: system prompt leakage".into());
    verdict.findings.push(Finding { kind: "system_prompt_leak".into(), segment: i, start: a, end: b, score: 1.0, encoding: None, hash: None });
    Some(Decision {
        auditor: AuditorId::Guardrails,
        name: None,
        stage: Stage::PostResponse,
        controls: vec!["CC6.6".into(), "C1.1".into()],
        verdict,
        latency_us: 0,
        late_us: None,
        failure: None,
    })
}

#[derive(Default)]
struct Window {
    held: String,
    released: usize,
    /// The last `CONTEXT_BYTES` released, normalised: what classifiers read before the
    /// held text, so a response is rescored as it grows.
    tail: String,
}

/// Released text a classifier reads again with each new part of a stream (about 300
/// tokens).
const CONTEXT_BYTES: usize = 1536;

impl Window {
    /// How much of `held` may go out now (all of it when `final_`).
    fn safe_len(&self, final_: bool) -> usize {
        if final_ {
            return self.held.len();
        }
        let mut end = self.held.len().saturating_sub(HOLD_BACK);
        if let Some(pem) = open_pem(&self.held) {
            end = end.min(pem);
        }
        while !self.held.is_char_boundary(end) {
            end -= 1;
        }
        end
    }
}

/// Start of a PEM block in `text` whose `-----END ...-----` line has not arrived yet.
/// Finished blocks (a certificate, a key already audited whole) hold nothing back.
fn open_pem(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = text[from..].find("-----BEGIN").map(|i| from + i) {
        let Some(end_line) = text[at..].find("-----END").map(|e| at + e + "-----END".len()) else { return Some(at) };
        let Some(close) = text[end_line..].find("-----") else { return Some(at) };
        from = end_line + close + "-----".len();
    }
    None
}

struct Relay {
    gw: Arc<GatewayState>,
    p: Prepared,
    chat: bool,
    canary: Option<String>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    windows: BTreeMap<u64, Window>,
    template: Value,
    seen: HashSet<(AuditorId, String, usize)>,
    flagged: HashSet<AuditorId>,
}

/// Relays an upstream SSE stream through the post-response chain.
pub fn relay(gw: Arc<GatewayState>, p: Prepared, resp: reqwest::Response, chat: bool, canary: Option<String>) -> Response {
    let (tx, rx) = mpsc::channel(32);
    let request_id = p.info.request_id.clone();
    let relay = Relay {
        gw,
        p,
        chat,
        canary,
        tx,
        windows: BTreeMap::new(),
        template: json!({}),
        seen: HashSet::new(),
        flagged: HashSet::new(),
    };
    tokio::spawn(relay.run(resp));
    let mut response = (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream"), (axum::http::header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response();
    if let Ok(v) = request_id.parse() {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

impl Relay {
    async fn send(&self, data: &str) -> bool {
        self.tx.send(Ok(Bytes::from(format!("data: {data}\n\n")))).await.is_ok()
    }

    async fn run(mut self, resp: reqwest::Response) {
        let mut upstream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = upstream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let err = error_body(&format!("the model server's stream broke: {e}"), "server_error", "upstream_stream", None);
                    self.send(&err.to_string()).await;
                    return;
                }
            };
            buf.extend_from_slice(&chunk);
            while let Some(end) = find_event_end(&buf) {
                let event: Vec<u8> = buf.drain(..end).collect();
                let text = String::from_utf8_lossy(&event);
                for line in text.lines() {
                    let Some(data) = line.strip_prefix("data:").map(str::trim_start) else { continue };
                    if data == "[DONE]" {
                        if self.flush_all().await {
                            self.finish().await;
                            self.send("[DONE]").await;
                        }
                        return;
                    }
                    if !self.on_data(data).await {
                        return;
                    }
                }
            }
        }
        if self.flush_all().await {
            self.finish().await;
        }
    }

    /// One upstream event; false when the stream must stop.
    async fn on_data(&mut self, data: &str) -> bool {
        let Ok(mut chunk) = serde_json::from_str::<Value>(data) else {
            return self.send(data).await;
        };
        let mut finishing = Vec::new();
        if let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) {
            for c in choices.iter_mut() {
                let idx = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                let slot = if self.chat { c.pointer_mut("/delta/content") } else { c.get_mut("text") };
                if let Some(t) = slot.and_then(|v| v.as_str().map(str::to_string)) {
                    self.windows.entry(idx).or_default().held.push_str(&t);
                    if let Some(v) = if self.chat { c.pointer_mut("/delta/content") } else { c.get_mut("text") } {
                        *v = Value::String(String::new());
                    }
                }
                if c.get("finish_reason").is_some_and(|f| !f.is_null()) {
                    finishing.push(idx);
                }
            }
        }
        if let Some(obj) = chunk.as_object() {
            self.template = Value::Object(obj.iter().filter(|(k, _)| k.as_str() != "choices").map(|(k, v)| (k.clone(), v.clone())).collect());
        }
        let indices: Vec<u64> = self.windows.keys().copied().collect();
        for idx in indices {
            if !self.audit_and_release(idx, finishing.contains(&idx)).await {
                return false;
            }
        }
        // Pass the rest of the chunk (role, tool calls, finish_reason, usage) through
        // once its text has been taken out.
        if carries_more_than_text(&chunk, self.chat) {
            return self.send(&chunk.to_string()).await;
        }
        true
    }

    /// Audits a choice's held text and releases what is safe; false on deny.
    async fn audit_and_release(&mut self, idx: u64, final_: bool) -> bool {
        let Some(window) = self.windows.get_mut(&idx) else { return true };
        if window.held.is_empty() {
            return true;
        }
        let base = window.released;
        // The held text moves into the subject and back (possibly redacted) below.
        let mut subject = Subject::new([(Some("assistant".to_string()), std::mem::take(&mut window.held))]);
        if let Some(seg) = subject.segments.first_mut() {
            seg.context = window.tail.clone();
        }
        let (mut decisions, mut subject) = super::run_chain(&self.p.route, Stage::PostResponse, subject).await;
        if let Some(d) = self.canary.as_deref().and_then(|c| canary_decision(&subject, c)) {
            decisions.push(d);
        }
        let fresh: Vec<Decision> = decisions
            .into_iter()
            .filter(|d| d.verdict.outcome != Outcome::Proceed)
            .filter(|d| {
                let keys: Vec<_> = d.verdict.findings.iter().map(|f| (d.auditor, f.kind.clone(), base + f.start)).collect();
                let new = keys.is_empty() || keys.iter().any(|k| !self.seen.contains(k));
                self.seen.extend(keys);
                new
            })
            .collect();
        if !fresh.is_empty() {
            self.flagged.extend(fresh.iter().map(|d| d.auditor));
            if record(&self.gw.app, &self.p.info, &fresh, true).await.is_err() {
                let err = error_body("lucid cannot record evidence; the stream stops (fail closed)", "server_error", "lucid_ledger_unavailable", None);
                self.send(&err.to_string()).await;
                return false;
            }
            if let Some(d) = fresh.iter().find(|d| d.verdict.outcome == Outcome::Deny) {
                self.send(&blocked_body(&self.p.info, d).to_string()).await;
                return false;
            }
        }
        let Some(window) = self.windows.get_mut(&idx) else { return true };
        window.held = subject.segments.pop().map(|s| s.original).unwrap_or_default();
        let n = window.safe_len(final_);
        if n == 0 {
            return true;
        }
        let out: String = window.held.drain(..n).collect();
        window.released += n;
        // Kept only for chains with a classifier: rule auditors need no context.
        if self.p.route.chain.blocks {
            window.tail.push_str(&crate::audit::normalize::View::new(&out).text);
        }
        if window.tail.len() > CONTEXT_BYTES {
            let mut cut = window.tail.len() - CONTEXT_BYTES;
            while !window.tail.is_char_boundary(cut) {
                cut += 1;
            }
            window.tail.drain(..cut);
        }
        let mut chunk = self.template.clone();
        let choice = if self.chat {
            json!({ "index": idx, "delta": { "content": out }, "finish_reason": null })
        } else {
            json!({ "index": idx, "text": out, "finish_reason": null })
        };
        if let Some(obj) = chunk.as_object_mut() {
            obj.insert("choices".into(), json!([choice]));
        }
        self.send(&chunk.to_string()).await
    }

    async fn flush_all(&mut self) -> bool {
        let indices: Vec<u64> = self.windows.keys().copied().collect();
        for idx in indices {
            if !self.audit_and_release(idx, true).await {
                return false;
            }
        }
        true
    }

    /// Records a proceed decision per auditor that found nothing, when every event is logged.
    async fn finish(&mut self) {
        if !self.p.route.chain.log_all {
            return;
        }
        let quiet: Vec<Decision> = self
            .p
            .route
            .chain
            .post
            .iter()
            .filter(|l| l.auditor.is_some() && !self.flagged.contains(&l.config.auditor_id))
            .map(|l| Decision {
                auditor: l.config.auditor_id,
                name: l.config.name.clone(),
                stage: Stage::PostResponse,
                controls: l.config.auditor_id.controls().iter().map(|c| c.to_string()).collect(),
                verdict: Verdict::proceed(),
                latency_us: 0,
                late_us: None,
                failure: None,
            })
            .collect();
        let _ = record(&self.gw.app, &self.p.info, &quiet, true).await;
    }
}

fn find_event_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2).or_else(|| buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4))
}

fn carries_more_than_text(chunk: &Value, chat: bool) -> bool {
    if chunk.get("usage").is_some_and(|u| !u.is_null()) {
        return true;
    }
    let Some(choices) = chunk.get("choices").and_then(Value::as_array) else { return true };
    choices.iter().any(|c| {
        c.get("finish_reason").is_some_and(|f| !f.is_null())
            || (chat
                && c.get("delta").and_then(Value::as_object).is_some_and(|d| {
                    d.iter().any(|(k, v)| k != "content" && !v.is_null())
                }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unfinished_pem_block_holds_the_stream() {
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let open = "-----BEGIN RSA PRIVATE KEY-----\nMIIE";
        let prose = "x".repeat(2000);
        let w = |held: String| Window { held, released: 0, tail: String::new() };
        // A finished block releases like prose: all but the hold-back.
        let done = w(format!("{cert}{prose}"));
        assert_eq!(done.safe_len(false), done.held.len() - HOLD_BACK);
        // An open one holds from its header, even after finished ones.
        let held = format!("{cert}{prose}{open}{prose}");
        assert_eq!(w(held.clone()).safe_len(false), held.find(open).unwrap());
        // The end line itself not complete yet: still held.
        let partial = format!("{prose}{open}{}\n-----END RSA PRIV", "A".repeat(1000));
        assert_eq!(w(partial.clone()).safe_len(false), prose.len());
        assert_eq!(w(partial.clone()).safe_len(true), partial.len());
    }
}
