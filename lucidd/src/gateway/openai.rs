//! The parts of OpenAI request and response bodies the audit chain reads and writes.
//! Bodies stay `serde_json::Value`s, so fields lucidd does not know pass through
//! untouched.

use serde_json::{json, Value};

use crate::audit::Subject;

/// Where a text came from in a request or response body, so a redacted version can be
/// written back to the same place.
#[derive(Clone, Debug, PartialEq)]
pub enum Slot {
    /// `messages[i].content` as a string.
    Message(usize),
    /// `messages[i].content[j].text`.
    MessagePart(usize, usize),
    /// `messages[i].tool_calls[j].function.arguments`.
    ToolArguments(usize, usize),
    /// `prompt` (a string) or `prompt[i]`; `input` likewise for embeddings.
    Prompt(Option<usize>),
    /// `choices[i].message.content` (chat) or `choices[i].text` (completions).
    Choice(usize),
}

/// Texts found in a body: where each came from, the message role, the text.
pub type Texts = Vec<(Slot, Option<String>, String)>;

/// Texts of a chat request: every message, tool results and tool-call arguments included.
pub fn chat_request_texts(body: &Value) -> Texts {
    let mut out = Vec::new();
    let Some(messages) = body.get("messages").and_then(Value::as_array) else { return out };
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).map(str::to_string);
        match m.get("content") {
            Some(Value::String(s)) => out.push((Slot::Message(i), role.clone(), s.clone())),
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        out.push((Slot::MessagePart(i, j), role.clone(), t.to_string()));
                    }
                }
            }
            _ => {}
        }
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            for (j, c) in calls.iter().enumerate() {
                if let Some(args) = c.pointer("/function/arguments").and_then(Value::as_str) {
                    out.push((Slot::ToolArguments(i, j), Some("tool_call".into()), args.to_string()));
                }
            }
        }
    }
    out
}

/// Texts of a completions (`prompt`) or embeddings (`input`) request.
pub fn prompt_texts(body: &Value, field: &str) -> Texts {
    match body.get(field) {
        Some(Value::String(s)) => vec![(Slot::Prompt(None), Some("user".into()), s.clone())],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_str().map(|s| (Slot::Prompt(Some(i)), Some("user".into()), s.to_string())))
            .collect(),
        _ => Vec::new(),
    }
}

/// Texts of a non-streamed response: each choice's content.
pub fn response_texts(body: &Value, chat: bool) -> Texts {
    let Some(choices) = body.get("choices").and_then(Value::as_array) else { return Vec::new() };
    choices
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let text = if chat { c.pointer("/message/content") } else { c.get("text") };
            text.and_then(Value::as_str).map(|t| (Slot::Choice(i), Some("assistant".into()), t.to_string()))
        })
        .collect()
}

/// Writes the subject's (possibly redacted) texts back into the body.
pub fn write_back(body: &mut Value, slots: &[Slot], subject: &Subject, prompt_field: &str, chat: bool) {
    for (slot, seg) in slots.iter().zip(&subject.segments) {
        let text = Value::String(seg.original.clone());
        let target = match slot {
            Slot::Message(i) => body.pointer_mut(&format!("/messages/{i}/content")),
            Slot::MessagePart(i, j) => body.pointer_mut(&format!("/messages/{i}/content/{j}/text")),
            Slot::ToolArguments(i, j) => body.pointer_mut(&format!("/messages/{i}/tool_calls/{j}/function/arguments")),
            Slot::Prompt(None) => body.get_mut(prompt_field),
            Slot::Prompt(Some(i)) => body.pointer_mut(&format!("/{prompt_field}/{i}")),
            Slot::Choice(i) if chat => body.pointer_mut(&format!("/choices/{i}/message/content")),
            Slot::Choice(i) => body.pointer_mut(&format!("/choices/{i}/text")),
        };
        if let Some(t) = target {
            *t = text;
        }
    }
}

/// An OpenAI-style error body.
pub fn error_body(message: &str, kind: &str, code: &str, extra: Option<Value>) -> Value {
    let mut err = json!({ "message": message, "type": kind, "param": null, "code": code });
    if let (Some(extra), Some(obj)) = (extra, err.as_object_mut()) {
        obj.insert("lucid".into(), extra);
    }
    json!({ "error": err })
}
