//! Typed `env` values. The reference format writes every env value as a string
//! (`"true"`, `"0.8"`, `"365"`); these types accept that form and the native YAML one,
//! and reject anything else with a message that says what was expected.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// A boolean switch: `true`/`false`, quoted or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Flag(pub bool);

/// A classifier threshold in `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Threshold(pub f64);

/// A number of days, 1 to 36500.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Days(pub u32);

/// A number of minutes, 1 to 36500.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Minutes(pub u32);

/// What redaction does to a detected entity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PiiOperator {
    /// Replace with the entity type, e.g. `<EMAIL_ADDRESS>`.
    #[default]
    Tag,
    /// Replace every character with `*`.
    Mask,
    /// Replace with a keyed hash, e.g. `<EMAIL_ADDRESS:3f9a...>`: equal values stay joinable.
    Hash,
    /// Leave the text as it is (still recorded).
    Keep,
}

impl PiiOperator {
    fn parse(s: &str) -> Result<PiiOperator, String> {
        match s {
            "tag" => Ok(PiiOperator::Tag),
            "mask" => Ok(PiiOperator::Mask),
            "hash" => Ok(PiiOperator::Hash),
            "keep" => Ok(PiiOperator::Keep),
            other => Err(format!("unknown PII operator {other:?}; one of tag, mask, hash, keep")),
        }
    }
}

/// Entity types the PII auditor knows, as written in `PII_OPERATORS`.
pub const PII_ENTITIES: &[&str] = &[
    "email_address",
    "phone_number",
    "us_ssn",
    "es_nif",
    "es_nie",
    "it_fiscal_code",
    "fr_nir",
    "uk_nino",
    "uk_nhs",
    "nl_bsn",
    "de_tax_id",
    "credit_card",
    "iban",
    "ip_address",
    "date_of_birth",
    "passport",
    "drivers_license",
    // By the default model pack's token head, not a recogniser.
    "person",
];

/// Per-entity operators: `email_address=mask,us_ssn=hash`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EntityOperators(pub std::collections::BTreeMap<String, PiiOperator>);

fn parse_entity_operators(s: &str) -> Result<EntityOperators, String> {
    let mut map = std::collections::BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (entity, op) = item.split_once('=').ok_or_else(|| format!("expected entity=operator, found {item:?}"))?;
        let entity = entity.trim().to_ascii_lowercase();
        if !PII_ENTITIES.contains(&entity.as_str()) {
            return Err(format!("unknown PII entity {entity:?}; one of {}", PII_ENTITIES.join(", ")));
        }
        map.insert(entity, PiiOperator::parse(op.trim())?);
    }
    Ok(EntityOperators(map))
}

impl<'de> Deserialize<'de> for EntityOperators {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText { expecting: "entity=operator pairs", parse: parse_entity_operators })
    }
}

impl JsonSchema for EntityOperators {
    fn schema_name() -> Cow<'static, str> {
        "EntityOperators".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let entities = PII_ENTITIES.join("|");
        json_schema!({
            "description": "Comma-separated entity=operator pairs, e.g. \"email_address=mask,us_ssn=hash\".",
            "type": "string",
            "pattern": format!("^\\s*(({entities})=(tag|mask|hash|keep)\\s*(,\\s*|$))*$")
        })
    }
}

/// An `http://` or `https://` base URL, without a trailing slash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HttpUrl(pub String);

fn parse_url(s: &str) -> Result<HttpUrl, String> {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace) => {
            Ok(HttpUrl(s.trim_end_matches('/').to_string()))
        }
        _ => Err(format!("expected an http:// or https:// URL, found {s:?}")),
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText { expecting: "an http(s) URL", parse: parse_url })
    }
}

impl JsonSchema for HttpUrl {
    fn schema_name() -> Cow<'static, str> {
        "HttpUrl".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^https?://[^/\\s]+", "description": "An http(s) base URL." })
    }
}

/// An optional file path given as an env value (`""` or absent: none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct OptionalPath(pub Option<String>);

impl<'de> Deserialize<'de> for OptionalPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText {
            expecting: "a file path",
            parse: |s| Ok(OptionalPath((!s.is_empty()).then(|| s.to_string()))),
        })
    }
}

impl JsonSchema for OptionalPath {
    fn schema_name() -> Cow<'static, str> {
        "OptionalPath".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "description": "A file path (empty: none)." })
    }
}

/// Absolute paths of executables, comma-separated (`/usr/bin/a,/opt/b`; empty: none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PathList(pub Vec<String>);

impl<'de> Deserialize<'de> for PathList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText {
            expecting: "comma-separated absolute paths",
            parse: |s| {
                let paths: Vec<String> = s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect();
                match paths.iter().find(|p| !p.starts_with('/')) {
                    Some(p) => Err(format!("{p:?} is not an absolute path")),
                    None => Ok(PathList(paths)),
                }
            },
        })
    }
}

impl JsonSchema for PathList {
    fn schema_name() -> Cow<'static, str> {
        "PathList".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "description": "Comma-separated absolute paths (empty: none)." })
    }
}

/// The classifier model the guardrails auditor scores with (`CLASSIFIER_MODEL`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClassifierModel {
    /// The default model pack, where it is installed (`builtin`, or the key absent);
    /// heuristics alone, with a warning, on a host without it.
    #[default]
    Builtin,
    /// No classifier: heuristics only (`none`).
    Off,
    /// A Hugging Face classifier directory (config.json, model.safetensors,
    /// tokenizer.json); loading it must succeed for the configuration to apply.
    Dir(String),
}

fn parse_classifier_model(s: &str) -> Result<ClassifierModel, String> {
    Ok(match s {
        "" | "builtin" => ClassifierModel::Builtin,
        "none" | "off" => ClassifierModel::Off,
        path => ClassifierModel::Dir(path.to_string()),
    })
}

impl Serialize for ClassifierModel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            ClassifierModel::Builtin => "builtin",
            ClassifierModel::Off => "none",
            ClassifierModel::Dir(d) => d,
        })
    }
}

impl<'de> Deserialize<'de> for ClassifierModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText { expecting: "builtin, none or a model directory", parse: parse_classifier_model })
    }
}

impl JsonSchema for ClassifierModel {
    fn schema_name() -> Cow<'static, str> {
        "ClassifierModel".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "description": "builtin (the default model pack), none, or a Hugging Face classifier directory." })
    }
}

/// Where classifiers run (`CLASSIFIER_BACKEND`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// `cuda` when a driver and a GPU are usable, else `cpu`.
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// The GPU; the configuration is refused where none is usable.
    Cuda,
}

/// The arithmetic of the CPU backend's encoder (`CLASSIFIER_PRECISION`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 where the CPU has AMX and the model, in bf16, scores probe texts within
    /// 0.02 of f32 (about twice as fast); f32 elsewhere. `status` says which and why.
    #[default]
    Auto,
    /// f32 throughout: matches PyTorch within 1e-4.
    F32,
    /// bf16 products with f32 sums on Intel AMX, several times faster; scores move by
    /// about 1e-2. Hosts without AMX keep f32 and `status` says why.
    Bf16,
}

/// How model files are watched (`INTEGRITY_WATCH_MODE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// eBPF probes where they load, else fanotify, else periodic re-verification.
    #[default]
    Auto,
    /// eBPF probes, falling back as `auto` does when they cannot load.
    Ebpf,
    /// fanotify (no eBPF), falling back to periodic re-verification.
    Fanotify,
    /// Periodic re-verification only.
    Periodic,
}

impl WatchMode {
    /// As written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchMode::Auto => "auto",
            WatchMode::Ebpf => "ebpf",
            WatchMode::Fanotify => "fanotify",
            WatchMode::Periodic => "periodic",
        }
    }
}

/// What a classifier label is evidence of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// Prompt injection.
    Injection,
    /// Jailbreak attempts.
    Jailbreak,
    /// Toxic language.
    Toxicity,
    /// Not used (benign, safe, neutral labels).
    Ignore,
}

impl Signal {
    fn parse(s: &str) -> Result<Signal, String> {
        match s {
            "injection" => Ok(Signal::Injection),
            "jailbreak" => Ok(Signal::Jailbreak),
            "toxicity" => Ok(Signal::Toxicity),
            "ignore" => Ok(Signal::Ignore),
            other => Err(format!("unknown signal {other:?}; one of injection, jailbreak, toxicity, ignore")),
        }
    }
}

/// Which classifier label feeds which signal (`CLASSIFIER_LABELS`:
/// `LABEL_1=injection,insult=toxicity`); labels not named are mapped by their names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct LabelSignals(pub std::collections::BTreeMap<String, Signal>);

fn parse_label_signals(s: &str) -> Result<LabelSignals, String> {
    let mut map = std::collections::BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (label, signal) = item.split_once('=').ok_or_else(|| format!("expected label=signal, found {item:?}"))?;
        map.insert(label.trim().to_string(), Signal::parse(signal.trim())?);
    }
    Ok(LabelSignals(map))
}

impl<'de> Deserialize<'de> for LabelSignals {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText { expecting: "label=signal pairs", parse: parse_label_signals })
    }
}

impl JsonSchema for LabelSignals {
    fn schema_name() -> Cow<'static, str> {
        "LabelSignals".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Comma-separated label=signal pairs, e.g. \"LABEL_1=injection\"; signals: injection, jailbreak, toxicity, ignore.",
            "type": "string",
            "pattern": "^\\s*([^=,]+=(injection|jailbreak|toxicity|ignore)\\s*(,\\s*|$))*$"
        })
    }
}

/// Accepts a scalar in any YAML form and hands its text to `parse`.
struct ScalarText<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for ScalarText<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v.trim()).map_err(E::custom)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        self.visit_str(if v { "true" } else { "false" })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

fn parse_flag(s: &str) -> Result<Flag, String> {
    match s {
        "true" => Ok(Flag(true)),
        "false" => Ok(Flag(false)),
        other => Err(format!("expected \"true\" or \"false\", found {other:?}")),
    }
}

fn parse_threshold(s: &str) -> Result<Threshold, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(Threshold(v)),
        Ok(v) => Err(format!("threshold must be between 0 and 1, found {v}")),
        Err(_) => Err(format!("expected a threshold between 0 and 1, found {s:?}")),
    }
}

fn parse_days(s: &str) -> Result<Days, String> {
    match s.parse::<u32>() {
        Ok(v) if (1..=36500).contains(&v) => Ok(Days(v)),
        Ok(v) => Err(format!("day count must be between 1 and 36500, found {v}")),
        Err(_) => Err(format!("expected a whole number of days, found {s:?}")),
    }
}

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText { expecting: "\"true\" or \"false\"", parse: parse_flag })
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText { expecting: "a threshold between 0 and 1", parse: parse_threshold })
    }
}

fn parse_minutes(s: &str) -> Result<Minutes, String> {
    match s.parse::<u32>() {
        Ok(v) if (1..=36500).contains(&v) => Ok(Minutes(v)),
        Ok(v) => Err(format!("minutes must be between 1 and 36500, found {v}")),
        Err(_) => Err(format!("expected a whole number of minutes, found {s:?}")),
    }
}

impl<'de> Deserialize<'de> for Minutes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText { expecting: "a number of minutes", parse: parse_minutes })
    }
}

impl JsonSchema for Minutes {
    fn schema_name() -> Cow<'static, str> {
        "Minutes".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A whole number of minutes from 1 to 36500, as a number or a string such as \"60\".",
            "anyOf": [{ "type": "integer", "minimum": 1, "maximum": 36500 }, { "type": "string", "pattern": "^[0-9]+$" }]
        })
    }
}

impl<'de> Deserialize<'de> for Days {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText { expecting: "a number of days", parse: parse_days })
    }
}

impl JsonSchema for Flag {
    fn schema_name() -> Cow<'static, str> {
        "Flag".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A switch: true or false (the string form \"true\" is what the reference examples use).",
            "anyOf": [{ "type": "boolean" }, { "type": "string", "enum": ["true", "false"] }]
        })
    }
}

impl JsonSchema for Threshold {
    fn schema_name() -> Cow<'static, str> {
        "Threshold".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A classifier threshold between 0 and 1, as a number or a string such as \"0.8\".",
            "anyOf": [
                { "type": "number", "minimum": 0, "maximum": 1 },
                { "type": "string", "pattern": "^\\s*(0(\\.[0-9]+)?|1(\\.0+)?|\\.[0-9]+)\\s*$" }
            ]
        })
    }
}

impl JsonSchema for Days {
    fn schema_name() -> Cow<'static, str> {
        "Days".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A number of days from 1 to 36500, as a number or a string such as \"365\".",
            "anyOf": [
                { "type": "integer", "minimum": 1, "maximum": 36500 },
                { "type": "string", "pattern": "^\\s*[1-9][0-9]{0,4}\\s*$" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rules() {
        assert_eq!(parse_flag("true"), Ok(Flag(true)));
        assert!(parse_flag("yes").is_err());
        assert_eq!(parse_threshold("0.8"), Ok(Threshold(0.8)));
        assert!(parse_threshold("1.5").is_err());
        assert!(parse_threshold("high").is_err());
        assert_eq!(parse_days("365"), Ok(Days(365)));
        assert!(parse_days("0").is_err());
        assert!(parse_days("-3").is_err());
    }
}
