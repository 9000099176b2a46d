//! Where in OpenAI request and response bodies the texts the audit chain reads sit, and
//! how redactions are written back (which fields are read is `surface`'s schema).

use serde_json::{json, Value};

/// Where a text came from in a request or response body, so a redacted version can be
/// written back to the same place.
#[derive(Clone, Debug, PartialEq)]
pub enum Slot {
    /// A string, by its JSON pointer.
    Pointer(String),
    /// An object's key (a schema's property name): the object's pointer and the key.
    Key(String, String),
    /// Token ids at a JSON pointer, decoded with the agent's tokenizer.
    TokenIds(String),
}

/// Texts found in a body: where each came from, the role it is read in, the text.
pub type Texts = Vec<(Slot, Option<String>, String)>;

/// The role given to text from tool definitions and other schemas (names,
/// descriptions, property names): the model reads them as instructions.
pub const TOOL_DEFINITION: &str = "tool_definition";

/// Whether a pointer is a message's text content (`/messages/i/content` or
/// `/messages/i/content/j/text`), the only text a system prompt exemption covers.
pub fn is_message_content(pointer: &str) -> bool {
    let parts: Vec<&str> = pointer.split('/').collect();
    matches!(parts.as_slice(), ["", "messages", _, "content"] | ["", "messages", _, "content", _, "text"])
}

/// Writes the subject's (possibly redacted) texts back where they came from: strings by
/// pointer, keys renamed (after every value below them; a name already taken gets a
/// suffix, so no sibling is lost), token ids encoded again with the agent's tokenizer.
/// Slots whose text did not change are left alone; a changed one that cannot be written
/// is an error (the caller refuses the request rather than forward the original).
pub fn write_back(body: &mut Value, slots: &[Slot], subject: &crate::audit::Subject, originals: &[String], tokenizer: Option<&tokenizers::Tokenizer>) -> Result<(), String> {
    let changed = slots.iter().zip(&subject.segments).zip(originals).filter(|((_, seg), orig)| seg.original != **orig).map(|((slot, seg), _)| (slot, seg.original.clone()));
    let mut keys = Vec::new();
    for (slot, text) in changed {
        match slot {
            Slot::Pointer(p) => *body.pointer_mut(p).ok_or_else(|| format!("no value at {p}"))? = Value::String(text),
            Slot::TokenIds(p) => {
                let tok = tokenizer.ok_or("token ids changed without a tokenizer")?;
                let ids = tok.encode(text.as_str(), false).map_err(|e| format!("encoding the redacted prompt at {p}: {e}"))?;
                *body.pointer_mut(p).ok_or_else(|| format!("no value at {p}"))? = Value::Array(ids.get_ids().iter().map(|i| json!(i)).collect());
            }
            Slot::Key(object, key) => keys.push((object.clone(), key.clone(), text)),
        }
    }
    // Deepest first, so a renamed key never moves an object another rename points into.
    keys.sort_by_key(|(object, ..)| std::cmp::Reverse(object.matches('/').count()));
    for (object, key, text) in keys {
        let Some(Value::Object(map)) = body.pointer_mut(&object) else { return Err(format!("no object at {object}")) };
        let v = map.remove(&key).ok_or_else(|| format!("no key {key:?} at {object}"))?;
        let mut name = text.clone();
        let mut n = 2;
        while map.contains_key(&name) {
            name = format!("{text}_{n}");
            n += 1;
        }
        map.insert(name, v);
    }
    Ok(())
}

/// An OpenAI-style error body.
pub fn error_body(message: &str, kind: &str, code: &str, extra: Option<Value>) -> Value {
    let mut err = json!({ "message": message, "type": kind, "param": null, "code": code });
    if let (Some(extra), Some(obj)) = (extra, err.as_object_mut()) {
        obj.insert("lucid".into(), extra);
    }
    json!({ "error": err })
}
