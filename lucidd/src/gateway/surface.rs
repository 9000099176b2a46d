//! What the gateway forwards, endpoint by endpoint: its own schema of each request's
//! fields, so that every text the model will read is audited wherever it sits in the
//! body, and nothing it cannot read goes through unsaid.
//!
//! Each top-level field is one of:
//! - **text**: every string under it (and, for schemas, every object key: a property's
//!   name is read by the model too) is a segment the chain reads;
//! - **structured**: messages, a prompt, an input: walked item by item; content parts
//!   are read where they are text, and images, audio, files and video are refused
//!   unless the agent allows that modality (then recorded as unaudited);
//! - **plain**: a sampling or control parameter that carries no text the model reads
//!   (numbers, switches, identifiers); forwarded as it is;
//! - **refused unless allowed**: template overrides and stored state the gateway
//!   cannot see (`chat_template`, `chat_template_kwargs`, `previous_response_id`, ...),
//!   and every field the gateway does not know. An agent can allow them by name
//!   (`spec.agents[].gateway.allowFields`); their text is then audited like the rest.
//!
//! Token-id prompts are refused, or decoded with the agent's tokenizer and audited.

use serde_json::Value;
use tokenizers::Tokenizer;

use super::openai::{Slot, Texts, TOOL_DEFINITION};
use crate::config::model::Modality;
use crate::config::AgentGateway;

/// The endpoints the gateway serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/responses`.
    Responses,
}

/// Why a request is not forwarded (a 400 naming the field).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// The field (a JSON pointer below the body).
    pub field: String,
    /// What is wrong and how to allow it.
    pub message: String,
    /// The OpenAI-style error code.
    pub code: &'static str,
}

/// What a request carries: the texts the chain reads, and what goes through unread.
#[derive(Debug, Default)]
pub struct Surface {
    /// Texts, each with where it sits and the role it is read in.
    pub texts: Texts,
    /// Content forwarded unread, e.g. `image at /messages/1/content/0`.
    pub unaudited: Vec<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Class {
    Plain,
    /// Asks for an output the gateway cannot read (audio): needs the modality allowed.
    Output,
    Text,
    /// Text whose object keys are read too (schemas).
    Schema,
    Structured,
    Refused,
}

/// Parameters that carry no text the model reads, on every endpoint that takes them.
const PLAIN: &[&str] = &[
    "model", "stream", "stream_options", "temperature", "top_p", "n", "max_tokens", "max_completion_tokens", "max_output_tokens", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "seed", "stop", "user", "parallel_tool_calls", "service_tier", "store", "metadata",
    "reasoning_effort", "reasoning", "safety_identifier", "prompt_cache_key", "best_of", "top_k", "min_p", "repetition_penalty",
    "length_penalty", "stop_token_ids", "include_stop_str_in_output", "ignore_eos", "min_tokens", "skip_special_tokens", "spaces_between_special_tokens",
    "truncate_prompt_tokens", "prompt_logprobs", "allowed_token_ids", "echo", "add_generation_prompt", "continue_final_message", "add_special_tokens",
    "guided_decoding_backend", "guided_whitespace_pattern", "priority", "request_id", "return_tokens_as_token_ids", "cache_salt", "encoding_format",
    "dimensions", "include", "truncation", "background", "verbosity",
];

/// The class of a top-level field of a request to `endpoint`.
fn class(endpoint: Endpoint, field: &str) -> Option<Class> {
    use Endpoint::*;
    let structured = matches!((endpoint, field), (Chat, "messages") | (Completions, "prompt") | (Embeddings, "input") | (Responses, "input"));
    if structured {
        return Some(Class::Structured);
    }
    match field {
        "tools" | "functions" | "response_format" | "guided_json" | "structural_tag" | "documents" => Some(Class::Schema),
        "text" if endpoint == Responses => Some(Class::Schema),
        "tool_choice" | "guided_regex" | "guided_choice" | "guided_grammar" | "prediction" | "bad_words" => Some(Class::Text),
        "suffix" if endpoint == Completions => Some(Class::Text),
        "instructions" if endpoint == Responses => Some(Class::Text),
        "chat_template" | "chat_template_kwargs" | "mm_processor_kwargs" | "logits_processors" | "vllm_xargs" | "kv_transfer_params" | "web_search_options" => {
            Some(Class::Refused)
        }
        // Spoken answers: the audio itself is no text the auditors read.
        "audio" | "modalities" => Some(Class::Output),
        "previous_response_id" | "conversation" | "prompt" if endpoint == Responses => Some(Class::Refused),
        f if PLAIN.contains(&f) => Some(Class::Plain),
        _ => None,
    }
}

/// Keys of messages, items and parts that carry no text (roles, ids, kinds); every
/// other string in them is read.
const NOT_TEXT: &[&str] = &[
    "role", "type", "id", "tool_call_id", "call_id", "status", "index", "object", "detail", "format", "mime_type", "encrypted_content", "logprobs", "top_logprobs",
];

/// The texts of a request to `endpoint`, or why it is refused.
pub fn request(endpoint: Endpoint, body: &Value, policy: &AgentGateway, tokenizer: Option<&Tokenizer>) -> Result<Surface, Refused> {
    let mut out = Surface::default();
    let Some(fields) = body.as_object() else { return Ok(out) };
    for (field, value) in fields {
        let pointer = format!("/{}", escape(field));
        let allowed = policy.allow_fields.iter().any(|f| f == field);
        match (class(endpoint, field), allowed) {
            (Some(Class::Plain), _) => {}
            (Some(Class::Output), _) => {
                let audio = field == "audio" || value.as_array().is_some_and(|m| m.iter().any(|v| v.as_str() == Some("audio")));
                if audio && !policy.allow_modalities.contains(&Modality::Audio) {
                    return Err(Refused {
                        field: field.clone(),
                        message: "spoken answers are refused: the gateway cannot read audio. Allow it with spec.agents[].gateway.allowModalities: [audio] (the transcript is read, the audio passes unread and is recorded as such)".into(),
                        code: "lucid_modality_refused",
                    });
                }
                if audio {
                    out.unaudited.push(format!("audio answer asked for at {pointer}"));
                }
            }
            (Some(Class::Structured), _) => structured(endpoint, value, &pointer, policy, tokenizer, &mut out)?,
            (Some(Class::Schema), _) => {
                if field == "tools" {
                    hosted_tools(value, policy)?;
                }
                strings(value, &pointer, TOOL_DEFINITION, true, &mut out.texts)
            }
            (Some(Class::Text), _) => strings(value, &pointer, field, false, &mut out.texts),
            // Allowed by name: forwarded, and every string and key in it read.
            (Some(Class::Refused) | None, true) => strings(value, &pointer, field, true, &mut out.texts),
            (Some(Class::Refused), false) => {
                return Err(Refused {
                    field: field.clone(),
                    message: format!(
                        "`{field}` is refused: it changes what the model reads in a way the gateway cannot audit (templates, stored state); allow it for this agent with spec.agents[].gateway.allowFields (its text is then audited)"
                    ),
                    code: "lucid_field_refused",
                })
            }
            (None, false) => {
                return Err(Refused {
                    field: field.clone(),
                    message: format!(
                        "unknown field `{field}`: the gateway forwards only fields it knows how to audit; allow it for this agent with spec.agents[].gateway.allowFields (its text is then audited)"
                    ),
                    code: "lucid_unknown_field",
                })
            }
        }
    }
    Ok(out)
}

/// Refuses tools the server runs itself (web search, file search, code interpreter,
/// MCP servers, ...): what they bring back enters the model's context unread. Allowed
/// by name as `tools.<type>` in `allowFields`.
fn hosted_tools(tools: &Value, policy: &AgentGateway) -> Result<(), Refused> {
    for (i, t) in tools.as_array().into_iter().flatten().enumerate() {
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("function");
        if !matches!(kind, "function" | "custom") && !policy.allow_fields.iter().any(|f| *f == format!("tools.{kind}")) {
            return Err(Refused {
                field: format!("tools/{i}/type"),
                message: format!("`{kind}` tools are refused: the server runs them and what they return reaches the model unread; allow them for this agent with spec.agents[].gateway.allowFields: [tools.{kind}]"),
                code: "lucid_field_refused",
            });
        }
    }
    Ok(())
}

/// The structured field of an endpoint: messages, a prompt or an input.
fn structured(endpoint: Endpoint, value: &Value, pointer: &str, policy: &AgentGateway, tokenizer: Option<&Tokenizer>, out: &mut Surface) -> Result<(), Refused> {
    match (endpoint, value) {
        (_, Value::String(s)) => out.texts.push((Slot::Pointer(pointer.to_string()), Some("user".into()), s.clone())),
        (Endpoint::Completions | Endpoint::Embeddings, Value::Array(items)) => {
            // A list of strings, one list of token ids, or lists of token ids.
            if items.iter().all(Value::is_number) && !items.is_empty() {
                token_ids(value, pointer, tokenizer, out)?;
            } else {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{pointer}/{i}");
                    match item {
                        Value::String(s) => out.texts.push((Slot::Pointer(at), Some("user".into()), s.clone())),
                        Value::Array(_) => token_ids(item, &at, tokenizer, out)?,
                        other => return Err(malformed(&at, &format!("a prompt item must be text or token ids, not {}", kind(other)))),
                    }
                }
            }
        }
        (Endpoint::Completions | Endpoint::Embeddings, other) => return Err(malformed(pointer, &format!("the prompt must be text or token ids, not {}", kind(other)))),
        (_, Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                // A Responses item without a role is the user's, except a tool's result
                // (function_call_output, custom_tool_call_output, ...), which is a tool's:
                // the auditors read tool results as data, as they read chat's tool messages.
                let role = item.get("role").and_then(Value::as_str).unwrap_or_else(|| match item.get("type").and_then(Value::as_str) {
                    Some(t) if t.ends_with("_call_output") => "tool",
                    _ => "user",
                });
                walk(item, &format!("{pointer}/{i}"), role, policy, out)?;
            }
        }
        (_, Value::Null) => {}
        (_, other) => return Err(malformed(pointer, &format!("expected messages, not {}", kind(other)))),
    }
    Ok(())
}

/// Token ids, decoded with the agent's tokenizer, or refused.
fn token_ids(value: &Value, pointer: &str, tokenizer: Option<&Tokenizer>, out: &mut Surface) -> Result<(), Refused> {
    let Some(tok) = tokenizer else {
        return Err(Refused {
            field: pointer.trim_start_matches('/').to_string(),
            message: "token-id prompts are refused: the gateway cannot read them. Name the model's tokenizer.json in spec.agents[].gateway.tokenizer to have them decoded and audited".into(),
            code: "lucid_token_ids_refused",
        });
    };
    let ids: Option<Vec<u32>> = value.as_array().map(|a| a.iter().map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok())).collect::<Option<Vec<u32>>>()).unwrap_or(None);
    let Some(ids) = ids else { return Err(malformed(pointer, "token ids must be whole numbers")) };
    let text = tok.decode(&ids, false).map_err(|e| malformed(pointer, &format!("these token ids do not decode with the agent's tokenizer: {e}")))?;
    out.texts.push((Slot::TokenIds(pointer.to_string()), Some("user".into()), text));
    Ok(())
}

/// Every string of a message or item (its content parts checked by kind), skipping the
/// keys that carry no text.
fn walk(value: &Value, pointer: &str, role: &str, policy: &AgentGateway, out: &mut Surface) -> Result<(), Refused> {
    match value {
        Value::String(s) => out.texts.push((Slot::Pointer(pointer.to_string()), Some(role.to_string()), s.clone())),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, &format!("{pointer}/{i}"), role, policy, out)?;
            }
        }
        Value::Object(map) => {
            // Media, by its kind or by the fields that carry it (servers infer the kind
            // from them when `type` is missing or says text).
            let by_kind = map.get("type").and_then(Value::as_str).and_then(modality);
            let by_field = map.keys().find_map(|k| media_field(k));
            if let Some(modality) = by_kind.or(by_field) {
                {
                    if !policy.allow_modalities.contains(&modality) {
                        return Err(Refused {
                            field: pointer.trim_start_matches('/').to_string(),
                            message: format!(
                                "{} content is refused: the gateway cannot read it. Allow it for this agent with spec.agents[].gateway.allowModalities: [{}] (each such request is then recorded as carrying unaudited content)",
                                modality.as_str(),
                                modality.as_str()
                            ),
                            code: "lucid_modality_refused",
                        });
                    }
                    out.unaudited.push(format!("{} at {pointer}", modality.as_str()));
                    return Ok(());
                }
            }
            if let Some(kind) = map.get("type").and_then(Value::as_str) {
                if kind == "item_reference" {
                    return Err(Refused {
                        field: pointer.trim_start_matches('/').to_string(),
                        message: "item references are refused: they bring in stored items the gateway cannot read".into(),
                        code: "lucid_field_refused",
                    });
                }
            }
            // Templates render the role and ids as they are: only known roles, and ids
            // that are identifiers, not text.
            if let Some(r) = map.get("role") {
                if !r.as_str().is_some_and(|r| ROLES.contains(&r)) {
                    // The role itself is not echoed: it may carry what the auditors look for.
                    return Err(malformed(&format!("{pointer}/role"), &format!("unknown role ({}): one of {}", kind(r), ROLES.join(", "))));
                }
            }
            for id in ["id", "tool_call_id", "call_id"] {
                if let Some(v) = map.get(id).filter(|v| !v.as_str().is_some_and(is_identifier)) {
                    return Err(malformed(&format!("{pointer}/{id}"), &format!("`{id}` must be an identifier (letters, digits, `_`, `-`, `.`, `:`; at most 128), not {}", kind(v))));
                }
            }
            let role = map.get("role").and_then(Value::as_str).unwrap_or(role);
            for (k, v) in map {
                if NOT_TEXT.contains(&k.as_str()) {
                    continue;
                }
                let at = format!("{pointer}/{}", escape(k));
                // Tool calls are read as tool calls, whoever made them.
                let inner = if k == "tool_calls" || k == "function_call" || map.get("type").and_then(Value::as_str) == Some("function_call") { "tool_call" } else { role };
                walk(v, &at, inner, policy, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The roles a message may have.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

/// Whether an id is an identifier (what templates may render as it is).
fn is_identifier(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// The modality of a field that carries media (or a reference to it), if it is one.
fn media_field(key: &str) -> Option<Modality> {
    match key {
        "image_url" | "image_embeds" | "image_pil" | "input_image" | "image" => Some(Modality::Image),
        "input_audio" | "audio_url" | "audio_embeds" => Some(Modality::Audio),
        "file" | "file_data" | "file_id" | "file_url" | "input_file" => Some(Modality::File),
        "video_url" | "video" | "video_embeds" => Some(Modality::Video),
        // A reference to media the server already holds.
        "uuid" => Some(Modality::File),
        _ => None,
    }
}

/// The modality of a content part's kind, if it is not text.
fn modality(kind: &str) -> Option<Modality> {
    match kind {
        "image_url" | "input_image" | "image" => Some(Modality::Image),
        "input_audio" | "audio_url" | "audio" => Some(Modality::Audio),
        "file" | "input_file" => Some(Modality::File),
        "video_url" | "video" | "input_video" => Some(Modality::Video),
        _ => None,
    }
}

/// Every string under `value` (and every object key, with `keys`), as segments read in
/// `role`.
pub fn strings(value: &Value, pointer: &str, role: &str, keys: bool, out: &mut Texts) {
    match value {
        Value::String(s) => out.push((Slot::Pointer(pointer.to_string()), Some(role.to_string()), s.clone())),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                strings(v, &format!("{pointer}/{i}"), role, keys, out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                if keys {
                    out.push((Slot::Key(pointer.to_string(), k.clone()), Some(role.to_string()), k.clone()));
                }
                strings(v, &format!("{pointer}/{}", escape(k)), role, keys, out);
            }
        }
        _ => {}
    }
}

/// A key as a JSON pointer token.
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn malformed(pointer: &str, why: &str) -> Refused {
    Refused { field: pointer.trim_start_matches('/').to_string(), message: why.to_string(), code: "invalid_request_error" }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The texts of a non-streamed answer from `endpoint`: every string the model wrote
/// (content, refusal, reasoning, tool calls' names and arguments, in every choice or
/// output item).
pub fn response(endpoint: Endpoint, body: &Value) -> Texts {
    let mut out = Surface::default();
    let field = match endpoint {
        Endpoint::Responses => "output",
        Endpoint::Chat | Endpoint::Completions => "choices",
        Endpoint::Embeddings => return Vec::new(),
    };
    if let Some(items) = body.get(field) {
        walk_answer_value(items, &format!("/{field}"), &mut out);
    }
    // The Responses API's convenience copy of the output text.
    if let Some(t) = body.get("output_text").and_then(Value::as_str) {
        out.texts.push((Slot::Pointer("/output_text".into()), Some("assistant".into()), t.to_string()));
    }
    out.texts
}

/// Keys of an answer that are not text the model wrote (or repeat it token by token).
const ANSWER_NOT_TEXT: &[&str] = &["finish_reason", "stop_reason", "token_ids", "prompt_token_ids", "data", "expires_at", "sequence_number", "item_id", "model"];

/// Every text the model wrote in part of an answer (a choice, an output item or part,
/// a streamed event's payload), skipping ids, kinds and token detail.
pub fn walk_answer_value(value: &Value, pointer: &str, out: &mut Surface) {
    match value {
        Value::String(s) => out.texts.push((Slot::Pointer(pointer.to_string()), Some("assistant".into()), s.clone())),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk_answer_value(v, &format!("{pointer}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                if !ANSWER_NOT_TEXT.contains(&k.as_str()) && !NOT_TEXT.contains(&k.as_str()) {
                    walk_answer_value(v, &format!("{pointer}/{}", escape(k)), out);
                }
            }
        }
        _ => {}
    }
}

/// Removes what repeats an answer's text in another form (logprobs and token ids, token
/// by token; the audio of a transcript): once the text has been redacted, or before a
/// stream event goes out ahead of the hold-back, it would give back what was read.
pub fn drop_token_detail(body: &mut Value) {
    match body {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if matches!(k.as_str(), "logprobs" | "top_logprobs" | "token_ids") {
                    *v = Value::Null;
                } else if k == "audio" {
                    // The spoken form of a (redacted) transcript says what was taken out.
                    if let Some(audio) = v.as_object_mut() {
                        audio.remove("data");
                    }
                    drop_token_detail(v);
                } else {
                    drop_token_detail(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_token_detail),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn texts(endpoint: Endpoint, body: Value) -> Result<Vec<String>, Refused> {
        request(endpoint, &body, &AgentGateway::default(), None).map(|s| s.texts.into_iter().map(|(_, _, t)| t).collect())
    }

    #[test]
    fn every_place_text_can_hide_in_a_chat_request_is_read() {
        let body = json!({
            "model": "m", "temperature": 0.2, "stream": false, "n": 2, "user": "u-1",
            "messages": [
                {"role": "system", "content": "S1", "name": "N1"},
                {"role": "user", "content": [{"type": "text", "text": "P1"}, {"type": "text", "text": "P2"}]},
                {"role": "assistant", "content": null, "refusal": "R1", "reasoning_content": "RC1",
                 "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "F1", "arguments": "A1"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "T1"}
            ],
            "tools": [{"type": "function", "function": {"name": "TN", "description": "TD", "parameters": {"type": "object", "properties": {"PK": {"type": "string", "description": "PD"}}}}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "RF", "schema": {"properties": {"RK": {"description": "RD"}}}}},
            "guided_json": {"properties": {"GK": {"description": "GD"}}},
            "documents": [{"title": "DT", "text": "DX"}]
        });
        let got = texts(Endpoint::Chat, body).unwrap();
        for want in ["S1", "N1", "P1", "P2", "R1", "RC1", "F1", "A1", "T1", "TN", "TD", "PK", "PD", "RF", "RK", "RD", "GK", "GD", "DT", "DX"] {
            assert!(got.iter().any(|t| t == want), "{want} not read: {got:?}");
        }
        for not in ["m", "u-1", "c1", "system"] {
            assert!(!got.iter().any(|t| t == not), "{not} is no text the model reads: {got:?}");
        }
    }

    #[test]
    fn unknown_fields_templates_ids_and_media_are_refused_unless_allowed() {
        let refused = |endpoint, body: Value| texts(endpoint, body).err().map(|r| (r.code, r.field)).unwrap_or_default();
        assert_eq!(refused(Endpoint::Chat, json!({"model": "m", "messages": [], "sneaky": "x"})), ("lucid_unknown_field", "sneaky".to_string()));
        assert_eq!(refused(Endpoint::Chat, json!({"model": "m", "messages": [], "chat_template": "{{x}}"})), ("lucid_field_refused", "chat_template".to_string()));
        assert_eq!(refused(Endpoint::Completions, json!({"model": "m", "prompt": [40, 1223]})).0, "lucid_token_ids_refused");
        assert_eq!(refused(Endpoint::Embeddings, json!({"model": "m", "input": [[40, 1223]]})).0, "lucid_token_ids_refused");
        assert_eq!(
            refused(Endpoint::Chat, json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:"}}]}]})).0,
            "lucid_modality_refused"
        );
        assert_eq!(refused(Endpoint::Responses, json!({"model": "m", "input": "hi", "previous_response_id": "r1"})).0, "lucid_field_refused");
        // Allowed by name: forwarded, and read.
        let policy = AgentGateway { allow_fields: vec!["chat_template_kwargs".into()], allow_modalities: vec![Modality::Image], ..Default::default() };
        let body = json!({"model": "m", "chat_template_kwargs": {"note": "K1"}, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "hi"}]}]});
        let s = request(Endpoint::Chat, &body, &policy, None).unwrap();
        assert!(s.texts.iter().any(|(_, _, t)| t == "K1") && s.texts.iter().any(|(_, _, t)| t == "note"));
        assert_eq!(s.unaudited, ["image at /messages/0/content/0"]);
    }

    #[test]
    fn responses_input_items_are_read() {
        let body = json!({"model": "m", "instructions": "I1", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "U1"}]},
            {"type": "function_call", "call_id": "c", "name": "FN", "arguments": "FA"},
            {"type": "function_call_output", "call_id": "c", "output": "FO"},
            {"role": "assistant", "content": "AS"}
        ], "text": {"format": {"type": "json_schema", "name": "SN", "schema": {"properties": {"SK": {}}}}}});
        let got = texts(Endpoint::Responses, body).unwrap();
        for want in ["I1", "U1", "FN", "FA", "FO", "AS", "SN", "SK"] {
            assert!(got.iter().any(|t| t == want), "{want} not read: {got:?}");
        }
        // A tool's output is read in the tool role, as chat's tool messages are.
        let policy = AgentGateway::default();
        let s = request(Endpoint::Responses, &json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "FO"}, {"type": "message", "content": "UM"}]}), &policy, None).unwrap();
        assert!(s.texts.iter().any(|(_, role, t)| t == "FO" && role.as_deref() == Some("tool")), "{:?}", s.texts);
        assert!(s.texts.iter().any(|(_, role, t)| t == "UM" && role.as_deref() == Some("user")), "{:?}", s.texts);
    }

    /// Random bodies (nested objects, arrays, strings with pointer-special characters,
    /// numbers, token-id-like lists) through every endpoint's reader, the answer reader
    /// and the write-back: errors are fine, panics are not.
    #[test]
    fn random_bodies_never_panic_the_readers_or_the_write_back() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let words = ["messages", "content", "type", "text", "image_url", "role", "tools", "input", "prompt", "a/b", "c~d", "", "function", "name", "arguments", "output", "choices"];
        fn value(next: &mut dyn FnMut() -> u64, words: &[&str], depth: u32) -> Value {
            match next() % if depth > 3 { 4 } else { 7 } {
                0 => json!(words[(next() % words.len() as u64) as usize]),
                1 => json!(next() % 70_000),
                2 => json!(null),
                3 => json!(next().is_multiple_of(2)),
                4 => Value::Array((0..next() % 4).map(|_| json!(next() % 100_000)).collect()),
                5 => Value::Array((0..next() % 4).map(|_| value(next, words, depth + 1)).collect()),
                _ => Value::Object((0..next() % 4).map(|_| (words[(next() % words.len() as u64) as usize].to_string(), value(next, words, depth + 1))).collect()),
            }
        }
        let tok = tokenizers::Tokenizer::from_file(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/infer/roberta/tokenizer.json")).ok();
        let policy = AgentGateway { allow_modalities: vec![Modality::Image], allow_fields: vec!["a/b".into()], ..Default::default() };
        for _ in 0..3000 {
            // Mostly objects, as bodies are; now and then anything.
            let mut body = match next() % 8 {
                0 => value(&mut next, &words, 0),
                _ => Value::Object((0..1 + next() % 5).map(|_| (words[(next() % words.len() as u64) as usize].to_string(), value(&mut next, &words, 1))).collect()),
            };
            for endpoint in [Endpoint::Chat, Endpoint::Completions, Endpoint::Embeddings, Endpoint::Responses] {
                if let Ok(read) = request(endpoint, &body, &policy, tok.as_ref()) {
                    let slots: Vec<Slot> = read.texts.iter().map(|(s, ..)| s.clone()).collect();
                    let originals: Vec<String> = read.texts.iter().map(|(_, _, t)| t.clone()).collect();
                    let subject = crate::audit::Subject::new(read.texts.into_iter().map(|(_, r, t)| (r, format!("{t}!"))));
                    let _ = super::super::openai::write_back(&mut body, &slots, &subject, &originals, tok.as_ref());
                }
                let _ = response(endpoint, &body);
            }
        }
    }
}
