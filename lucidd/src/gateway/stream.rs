//! Streamed responses: a sliding window per lane of text (a choice's content, refusal,
//! reasoning, each tool call's name and arguments; each Responses output part).
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

use super::surface::Endpoint;
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

/// One stream of text in an answer: a choice's content, refusal or reasoning, a tool
/// call's name or arguments, or a Responses output part. Each is held back and audited
/// on its own, and released inside a copy of the event it came in (`shell`, with the
/// text at `pointer`).
struct Lane {
    window: Window,
    shell: Value,
    pointer: String,
    /// The choice it belongs to (chat and completions), released inside a chunk.
    choice: Option<u64>,
    /// Everything the upstream sent on it, and everything released (Responses' done
    /// events repeat the whole text: it is replaced by what was released).
    raw: String,
    released: String,
}

struct Relay {
    gw: Arc<GatewayState>,
    p: Prepared,
    endpoint: Endpoint,
    canary: Option<String>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    lanes: BTreeMap<String, Lane>,
    template: Value,
    seen: HashSet<(AuditorId, String, usize)>,
    flagged: HashSet<AuditorId>,
}

/// Relays an upstream SSE stream through the post-response chain.
pub fn relay(gw: Arc<GatewayState>, p: Prepared, resp: reqwest::Response, endpoint: Endpoint, canary: Option<String>) -> Response {
    let (tx, rx) = mpsc::channel(32);
    let request_id = p.info.request_id.clone();
    let relay = Relay { gw, p, endpoint, canary, tx, lanes: BTreeMap::new(), template: json!({}), seen: HashSet::new(), flagged: HashSet::new() };
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

/// The text fields of a chat or completions choice, each a lane: (lane name, pointer in
/// the choice).
fn choice_fields(choice: &Value, endpoint: Endpoint) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if endpoint == Endpoint::Completions {
        out.push(("text".to_string(), "/text".to_string()));
        return out;
    }
    for field in ["content", "refusal", "reasoning_content", "reasoning"] {
        out.push((field.to_string(), format!("/delta/{field}")));
    }
    out.push(("audio_transcript".to_string(), "/delta/audio/transcript".to_string()));
    for (k, call) in choice.pointer("/delta/tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let ti = call.get("index").and_then(Value::as_u64).unwrap_or(k as u64);
        for field in ["name", "arguments"] {
            out.push((format!("tool/{ti}/{field}"), format!("/delta/tool_calls/{k}/function/{field}")));
        }
    }
    // The legacy single call.
    for field in ["name", "arguments"] {
        out.push((format!("function_call/{field}"), format!("/delta/function_call/{field}")));
    }
    out
}

/// A choice shell that carries only `text` at `pointer` (the tool call's own index
/// kept, so a client joins the parts).
fn choice_shell(idx: u64, pointer: &str, choice: &Value) -> Value {
    let mut shell = json!({ "index": idx, "finish_reason": null });
    if let Some(rest) = pointer.strip_prefix("/delta/tool_calls/") {
        let k: usize = rest.split('/').next().and_then(|k| k.parse().ok()).unwrap_or(0);
        let ti = choice.pointer(&format!("/delta/tool_calls/{k}/index")).cloned().unwrap_or(json!(k));
        let field = rest.rsplit('/').next().unwrap_or("arguments");
        shell["delta"] = json!({ "tool_calls": [{ "index": ti, "function": { field: "" } }] });
    } else if let Some(path) = pointer.strip_prefix("/delta/") {
        // The delta's path down to the text, and nothing else.
        let mut inner = json!("");
        for field in path.rsplit('/') {
            inner = json!({ field: inner });
        }
        shell["delta"] = inner;
    } else {
        shell["text"] = json!("");
    }
    shell
}

/// The pointer of the text inside a shell built by `choice_shell`.
fn shell_pointer(pointer: &str) -> String {
    match pointer.strip_prefix("/delta/tool_calls/") {
        Some(rest) => format!("/delta/tool_calls/0/function/{}", rest.rsplit('/').next().unwrap_or("arguments")),
        None => pointer.to_string(),
    }
}

impl Relay {
    async fn send(&self, data: &str) -> bool {
        self.tx.send(Ok(Bytes::from(format!("data: {data}\n\n")))).await.is_ok()
    }

    /// A Responses event, with its `event:` line.
    async fn send_event(&self, event: &Value) -> bool {
        let name = event.get("type").and_then(Value::as_str).unwrap_or("message");
        self.tx.send(Ok(Bytes::from(format!("event: {name}\ndata: {event}\n\n")))).await.is_ok()
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
                // An event's data may span several `data:` lines (SSE joins them).
                let lines: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect();
                if lines.is_empty() {
                    continue;
                }
                let data = lines.join("\n");
                if data.trim() == "[DONE]" {
                    if self.flush_all().await {
                        self.finish().await;
                        self.send("[DONE]").await;
                    }
                    return;
                }
                let Ok(value) = serde_json::from_str::<Value>(&data) else {
                    // What cannot be read is not passed on (fail closed).
                    let err = error_body("the model server sent a stream event lucid cannot read; the stream stops", "server_error", "upstream_bad_event", None);
                    self.send(&err.to_string()).await;
                    return;
                };
                let ok = match self.endpoint {
                    Endpoint::Responses => self.on_response_event(value).await,
                    _ => self.on_data(value).await,
                };
                if !ok {
                    return;
                }
            }
        }
        if self.flush_all().await {
            self.finish().await;
        }
    }

    /// Takes the text at `pointer` of `holder` into lane `key` (created with `shell`),
    /// leaving the place empty.
    fn take(&mut self, key: &str, holder: &mut Value, pointer: &str, shell: impl FnOnce() -> (Value, String), choice: Option<u64>) {
        let Some(t) = holder.pointer(pointer).and_then(Value::as_str).map(str::to_string) else { return };
        if let Some(v) = holder.pointer_mut(pointer) {
            *v = Value::String(String::new());
        }
        let lane = self.lanes.entry(key.to_string()).or_insert_with(|| {
            let (shell, pointer) = shell();
            Lane { window: Window::default(), shell, pointer, choice, raw: String::new(), released: String::new() }
        });
        lane.window.held.push_str(&t);
        lane.raw.push_str(&t);
    }

    /// One chat or completions chunk; false when the stream must stop.
    async fn on_data(&mut self, mut chunk: Value) -> bool {
        // Token detail repeats the text token by token, ahead of the hold-back: not
        // streamed.
        super::surface::drop_token_detail(&mut chunk);
        let mut finishing = Vec::new();
        let mut taken = Vec::new();
        let count = chunk.get("choices").and_then(Value::as_array).map_or(0, Vec::len);
        for c in 0..count {
            let Some(choice) = chunk.pointer(&format!("/choices/{c}")).cloned() else { continue };
            let idx = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            for (name, pointer) in choice_fields(&choice, self.endpoint) {
                let key = format!("{idx}/{name}");
                let Some(holder) = chunk.pointer_mut(&format!("/choices/{c}")) else { continue };
                let has = holder.pointer(&pointer).and_then(Value::as_str).is_some_and(|t| !t.is_empty());
                if has {
                    let (ptr, ch) = (pointer.clone(), choice.clone());
                    self.take(&key, holder, &pointer, || (choice_shell(idx, &ptr, &ch), shell_pointer(&ptr)), Some(idx));
                    taken.push((c, pointer));
                }
            }
            if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                finishing.push(idx);
            }
        }
        if let Some(obj) = chunk.as_object() {
            self.template = Value::Object(obj.iter().filter(|(k, _)| k.as_str() != "choices").map(|(k, v)| (k.clone(), v.clone())).collect());
        }
        let keys: Vec<String> = self.lanes.keys().cloned().collect();
        for key in keys {
            let final_ = self.lanes.get(&key).and_then(|l| l.choice).is_some_and(|i| finishing.contains(&i));
            if !self.audit_and_release(&key, final_).await {
                return false;
            }
        }
        // Pass the rest of the chunk (role, tool call ids, finish_reason, usage) through
        // once its text has been taken out.
        if carries_more_than_text(&mut chunk, &taken) {
            return self.send(&chunk.to_string()).await;
        }
        true
    }

    /// One Responses event; false when the stream must stop. Deltas go through lanes;
    /// an event that repeats whole texts (a part, an item, the response done) waits for
    /// its lanes, and its texts are replaced by what was released (or audited now,
    /// where they never came as deltas).
    async fn on_response_event(&mut self, mut event: Value) -> bool {
        super::surface::drop_token_detail(&mut event);
        let kind = event.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        let at = |k: &str| event.get(k).and_then(Value::as_u64).unwrap_or(0);
        let (oi, ci, si) = (at("output_index"), at("content_index"), at("summary_index"));
        // Every delta of text, whatever its kind, is a lane of its own.
        if let (Some(base), true) = (kind.strip_suffix(".delta"), event.get("delta").is_some_and(Value::is_string)) {
            let lane = format!("o{oi}/c{ci}/s{si}/{base}");
            let shell = event.clone();
            self.take(&lane, &mut event, "/delta", || (shell, "/delta".to_string()), None);
            return self.audit_and_release(&lane, false).await;
        }
        // Every other event: release what its output item has so far (all of it where
        // the event ends the item or the response), then its whole texts.
        let ending = kind.ends_with(".done") || matches!(kind.as_str(), "response.completed" | "response.incomplete" | "response.failed");
        let item_lanes: Vec<String> = self
            .lanes
            .keys()
            .filter(|k| kind.starts_with("response.completed") || kind.starts_with("response.incomplete") || kind.starts_with("response.failed") || k.starts_with(&format!("o{oi}/")))
            .cloned()
            .collect();
        for key in item_lanes {
            if !self.audit_and_release(&key, ending).await {
                return false;
            }
        }
        // Every other event's texts are read before it goes out (what repeats a lane's
        // text gets the lane's released text).
        if !self.replace_whole_texts(&mut event).await {
            return false;
        }
        self.send_event(&event).await
    }

    /// Replaces the whole texts a Responses event repeats by what was released on their
    /// lanes; a text that came on no lane is audited now. False on a deny.
    async fn replace_whole_texts(&mut self, event: &mut Value) -> bool {
        // The whole event, but for what was audited on the way in (the request the
        // response object repeats) and what is no text.
        let mut scratch = super::surface::Surface::default();
        if let Some(map) = event.as_object() {
            for (k, v) in map {
                if k == "response" {
                    for field in ["output", "output_text"] {
                        if let Some(o) = v.get(field) {
                            super::surface::walk_answer_value(o, &format!("/response/{field}"), &mut scratch);
                        }
                    }
                } else {
                    super::surface::walk_answer_value(v, &format!("/{}", super::surface::escape(k)), &mut scratch);
                }
            }
        }
        let texts = scratch.texts;
        let mut fresh = Vec::new();
        for (slot, _, text) in texts {
            let super::openai::Slot::Pointer(p) = slot else { continue };
            match self.lanes.values().find(|l| !l.raw.is_empty() && l.raw == text) {
                Some(lane) => {
                    let released = lane.released.clone();
                    if let Some(v) = event.pointer_mut(&p) {
                        *v = Value::String(released);
                    }
                }
                None if !text.is_empty() => fresh.push((p, text)),
                None => {}
            }
        }
        if fresh.is_empty() {
            return true;
        }
        let subject = Subject::new(fresh.iter().map(|(_, t)| (Some("assistant".to_string()), t.clone())));
        let (mut decisions, subject) = super::run_chain(&self.p.route, Stage::PostResponse, subject).await;
        if let Some(d) = self.canary.as_deref().and_then(|c| canary_decision(&subject, c)) {
            decisions.push(d);
        }
        let notable: Vec<Decision> = decisions.into_iter().filter(|d| d.verdict.outcome != Outcome::Proceed).collect();
        if !self.report(&notable).await {
            return false;
        }
        for ((p, _), seg) in fresh.iter().zip(&subject.segments) {
            if let Some(v) = event.pointer_mut(p) {
                *v = Value::String(seg.original.clone());
            }
        }
        true
    }

    /// Records a chunk's notable decisions and stops the stream on a deny or when the
    /// evidence cannot be written (fail closed); true when the stream goes on.
    async fn report(&mut self, notable: &[Decision]) -> bool {
        if notable.is_empty() {
            return true;
        }
        self.flagged.extend(notable.iter().map(|d| d.auditor));
        if record(&self.gw.app, &self.p.info, notable, true).await.is_err() {
            let err = error_body("lucid cannot record evidence; the stream stops (fail closed)", "server_error", "lucid_ledger_unavailable", None);
            self.send(&err.to_string()).await;
            return false;
        }
        if let Some(d) = notable.iter().find(|d| d.verdict.outcome == Outcome::Deny) {
            self.send(&blocked_body(&self.p.info, d).to_string()).await;
            return false;
        }
        true
    }

    /// Audits a lane's held text and releases what is safe; false on deny.
    async fn audit_and_release(&mut self, key: &str, final_: bool) -> bool {
        let Some(lane) = self.lanes.get_mut(key) else { return true };
        if lane.window.held.is_empty() {
            return true;
        }
        let base = lane.window.released;
        // The held text moves into the subject and back (possibly redacted) below.
        let mut subject = Subject::new([(Some("assistant".to_string()), std::mem::take(&mut lane.window.held))]);
        if let Some(seg) = subject.segments.first_mut() {
            seg.context = lane.window.tail.clone();
        }
        let (mut decisions, mut subject) = super::run_chain(&self.p.route, Stage::PostResponse, subject).await;
        if let Some(d) = self.canary.as_deref().and_then(|c| canary_decision(&subject, c)) {
            decisions.push(d);
        }
        let fresh: Vec<Decision> = decisions
            .into_iter()
            .filter(|d| d.verdict.outcome != Outcome::Proceed)
            .filter(|d| {
                // A finding seen before on this lane is not recorded again; a deny always is.
                let keys: Vec<_> = d.verdict.findings.iter().map(|f| (d.auditor, format!("{key}:{}", f.kind), base + f.start)).collect();
                let new = keys.is_empty() || keys.iter().any(|k| !self.seen.contains(k));
                self.seen.extend(keys);
                new || d.verdict.outcome == Outcome::Deny
            })
            .collect();
        if !self.report(&fresh).await {
            return false;
        }
        let blocks = self.p.route.chain.blocks;
        let Some(lane) = self.lanes.get_mut(key) else { return true };
        lane.window.held = subject.segments.pop().map(|s| s.original).unwrap_or_default();
        let n = lane.window.safe_len(final_);
        if n == 0 {
            return true;
        }
        let out: String = lane.window.held.drain(..n).collect();
        lane.window.released += n;
        lane.released.push_str(&out);
        // Kept only for chains with a classifier: rule auditors need no context.
        if blocks {
            lane.window.tail.push_str(&crate::audit::normalize::View::new(&out).text);
        }
        if lane.window.tail.len() > CONTEXT_BYTES {
            let mut cut = lane.window.tail.len() - CONTEXT_BYTES;
            while !lane.window.tail.is_char_boundary(cut) {
                cut += 1;
            }
            lane.window.tail.drain(..cut);
        }
        let mut piece = lane.shell.clone();
        if let Some(v) = piece.pointer_mut(&lane.pointer) {
            *v = Value::String(out);
        }
        match lane.choice {
            Some(_) => {
                let mut chunk = self.template.clone();
                if let Some(obj) = chunk.as_object_mut() {
                    obj.insert("choices".into(), json!([piece]));
                }
                self.send(&chunk.to_string()).await
            }
            None => self.send_event(&piece).await,
        }
    }

    async fn flush_all(&mut self) -> bool {
        let keys: Vec<String> = self.lanes.keys().cloned().collect();
        for key in keys {
            if !self.audit_and_release(&key, true).await {
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

/// Whether a chunk whose texts were taken out (`taken`: choice and pointer) still says
/// something (a role, a tool call's id, a finish reason, usage); the emptied text fields
/// are removed from it.
fn carries_more_than_text(chunk: &mut Value, taken: &[(usize, String)]) -> bool {
    for (c, pointer) in taken {
        let (parent, field) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        if let Some(Value::Object(obj)) = chunk.pointer_mut(&format!("/choices/{c}{parent}")) {
            obj.remove(field);
        }
    }
    if chunk.get("usage").is_some_and(|u| !u.is_null()) {
        return true;
    }
    let Some(choices) = chunk.get("choices").and_then(Value::as_array) else { return true };
    choices.iter().any(|c| {
        c.get("finish_reason").is_some_and(|f| !f.is_null())
            || c.get("delta").and_then(Value::as_object).is_some_and(|d| d.iter().any(|(k, v)| says_something(k, v)))
    })
}

/// Whether a delta field still carries something once its texts are gone: a tool call
/// with only its index and an empty function says nothing.
fn says_something(key: &str, v: &Value) -> bool {
    match (key, v) {
        (_, Value::Null) => false,
        ("tool_calls", Value::Array(calls)) => calls.iter().any(|c| c.as_object().is_some_and(|o| o.iter().any(|(k, v)| k != "index" && says_something(k, v)))),
        ("function" | "function_call", Value::Object(f)) => !f.is_empty(),
        _ => true,
    }
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
