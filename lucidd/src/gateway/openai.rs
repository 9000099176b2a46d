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
    /// Any other string, by its JSON pointer (message names, tool definitions).
    Pointer(String),
}

/// Texts found in a body: where each came from, the message role, the text.
pub type Texts = Vec<(Slot, Option<String>, String)>;

/// The role given to text from tool definitions (names, descriptions, parameter
/// schemas): the model reads them as instructions about the tools.
pub const TOOL_DEFINITION: &str = "tool_definition";

/// Texts of a chat request: every message whatever its role (system, developer, user,
/// assistant, tool, function), its `name`, content parts, tool-call names and
/// arguments, and the tool and function definitions the model is shown (names,
/// descriptions, every string in their parameter schemas).
pub fn chat_request_texts(body: &Value) -> Texts {
    let mut out = Vec::new();
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
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
            if let Some(name) = m.get("name").and_then(Value::as_str) {
                out.push((Slot::Pointer(format!("/messages/{i}/name")), role.clone(), name.to_string()));
            }
            if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                for (j, c) in calls.iter().enumerate() {
                    if let Some(name) = c.pointer("/function/name").and_then(Value::as_str) {
                        out.push((Slot::Pointer(format!("/messages/{i}/tool_calls/{j}/function/name")), Some("tool_call".into()), name.to_string()));
                    }
                    if let Some(args) = c.pointer("/function/arguments").and_then(Value::as_str) {
                        out.push((Slot::ToolArguments(i, j), Some("tool_call".into()), args.to_string()));
                    }
                }
            }
            // The legacy single call (`function_call` on an assistant message).
            for field in ["name", "arguments"] {
                if let Some(t) = m.pointer(&format!("/function_call/{field}")).and_then(Value::as_str) {
                    out.push((Slot::Pointer(format!("/messages/{i}/function_call/{field}")), Some("tool_call".into()), t.to_string()));
                }
            }
        }
    }
    // Tool definitions (`tools[].function`) and the legacy `functions[]`: every string
    // in them is read by the model.
    for (field, inner) in [("tools", "/function"), ("functions", "")] {
        for (i, d) in body.get(field).and_then(Value::as_array).into_iter().flatten().enumerate() {
            if let Some(def) = d.pointer(inner) {
                strings_in(def, &format!("/{field}/{i}{inner}"), &mut |pointer, text| {
                    out.push((Slot::Pointer(pointer), Some(TOOL_DEFINITION.into()), text.to_string()))
                });
            }
        }
    }
    out
}

/// Every string value under `value` (object keys excluded), with its JSON pointer.
fn strings_in(value: &Value, pointer: &str, found: &mut impl FnMut(String, &str)) {
    match value {
        Value::String(s) => found(pointer.to_string(), s),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                strings_in(v, &format!("{pointer}/{i}"), found);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                strings_in(v, &format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1")), found);
            }
        }
        _ => {}
    }
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

/// Texts of a non-streamed response: each choice's content, and in chat its refusal,
/// reasoning, and the names and arguments of the tool calls it asks for (data leaves
/// through those too).
pub fn response_texts(body: &Value, chat: bool) -> Texts {
    let Some(choices) = body.get("choices").and_then(Value::as_array) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, c) in choices.iter().enumerate() {
        let text = if chat { c.pointer("/message/content") } else { c.get("text") };
        if let Some(t) = text.and_then(Value::as_str) {
            out.push((Slot::Choice(i), Some("assistant".into()), t.to_string()));
        }
        if !chat {
            continue;
        }
        for field in ["refusal", "reasoning_content", "reasoning"] {
            if let Some(t) = c.pointer(&format!("/message/{field}")).and_then(Value::as_str) {
                out.push((Slot::Pointer(format!("/choices/{i}/message/{field}")), Some("assistant".into()), t.to_string()));
            }
        }
        for (j, _) in c.pointer("/message/tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
            for field in ["name", "arguments"] {
                let pointer = format!("/choices/{i}/message/tool_calls/{j}/function/{field}");
                if let Some(t) = body.pointer(&pointer).and_then(Value::as_str) {
                    out.push((Slot::Pointer(pointer), Some("tool_call".into()), t.to_string()));
                }
            }
        }
        for field in ["name", "arguments"] {
            let pointer = format!("/choices/{i}/message/function_call/{field}");
            if let Some(t) = body.pointer(&pointer).and_then(Value::as_str) {
                out.push((Slot::Pointer(pointer), Some("tool_call".into()), t.to_string()));
            }
        }
    }
    out
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
            Slot::Pointer(p) => body.pointer_mut(p),
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
