//! The JSON Schema (draft-07) of the configuration format, generated from the types
//! so that it cannot drift from what lucidd accepts. `lucidd schema` prints it; the
//! committed copy (`lucidd/schema/lucid-environment.schema.json`) is checked by a test.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

use super::auditors::{AuditorId, AuditorSettings};
use super::model::{FailPolicy, RawAuditorRef, RawEnvironment};

impl JsonSchema for RawAuditorRef {
    fn schema_name() -> Cow<'static, str> {
        "AuditorRef".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let ids: Vec<&str> = AuditorId::ALL.iter().map(|a| a.as_str()).collect();
        let rules: Vec<serde_json::Value> = AuditorId::ALL
            .iter()
            .map(|id| {
                let env = AuditorSettings::env_schema(*id, generator);
                serde_json::json!({
                    "if": { "properties": { "auditorId": { "const": id.as_str() } } },
                    "then": { "properties": { "env": env } }
                })
            })
            .collect();
        let fail_policy = generator.subschema_for::<FailPolicy>();
        json_schema!({
            "type": "object",
            "description": "One auditor in a chain stage. The keys allowed in env depend on auditorId.",
            "additionalProperties": false,
            "required": ["auditorId"],
            "properties": {
                "auditorId": { "type": "string", "enum": ids },
                "name": { "type": "string", "description": "Display name, e.g. the control it evidences." },
                "env": { "type": "object" },
                "failPolicy": fail_policy,
                "timeoutMs": { "type": "integer", "minimum": 1, "description": "Time budget in milliseconds." }
            },
            "allOf": rules
        })
    }
}

/// The schema as pretty JSON with a trailing newline.
pub fn schema_json() -> String {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<RawEnvironment>();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
