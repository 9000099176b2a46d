//! Configuration: the `LucidEnvironment` YAML format, its profiles and its validation.
//!
//! Loading is two steps (STYLE.md 6): [`model`] parses the text with spans, then
//! [`resolve`] checks every value and expands profiles into an [`Environment`], the
//! typed structure the rest of lucidd uses. Any error names file, line and column, and
//! nothing is applied unless the whole file is valid. The resolved form is what is
//! digested and diffed for `config` ledger records.

pub mod auditors;
pub mod diff;
pub mod model;
pub mod schema;
pub mod values;

use std::collections::HashSet;
use std::path::Path;

use serde::de::value::MapDeserializer;
use serde::Serialize;
use serde_saphyr::{Location, Spanned};
use sha2::{Digest, Sha256};

use auditors::{AuditorId, AuditorSettings, ObservabilityEnv};
use model::{FailPolicy, Gateway, Gpu, Infrastructure, Metadata, Profile, RawAgent, RawAuditorRef, RawEnvironment, Upstream};

/// The only `apiVersion` this release reads.
pub const API_VERSION: &str = "lucid.io/v1alpha1";
/// The only `kind` this release reads.
pub const KIND: &str = "LucidEnvironment";
/// Default time budget of an auditor.
pub const DEFAULT_TIMEOUT_MS: u32 = 1000;

/// The SOC 2 profile's chain, written in the reference format.
const SOC2_PROFILE: &str = include_str!("profiles/soc2.yaml");
/// The environment `lucidd --dev` runs without a config file.
pub const DEV_DEFAULT: &str = include_str!("profiles/dev.yaml");

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not a valid environment.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: u64,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    fn at(file: &str, loc: Location, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { file: file.to_string(), line: loc.line(), column: loc.column(), message: message.into() }
    }

    /// An error found after parsing, at a recorded position (line 1 column 1 when the
    /// entry came from somewhere without one).
    pub fn at_span(file: &str, span: Option<(u64, u64)>, message: impl Into<String>) -> ConfigError {
        let (line, column) = span.unwrap_or((1, 1));
        ConfigError::Invalid { file: file.to_string(), line, column, message: message.into() }
    }

    /// Where the error is, for API responses.
    pub fn location(&self) -> Option<lucid_common::api::SourceLocation> {
        match self {
            ConfigError::Invalid { file, line, column, .. } => {
                Some(lucid_common::api::SourceLocation { file: file.clone(), line: *line, column: *column })
            }
            ConfigError::Read { .. } => None,
        }
    }
}

/// A validated environment with profiles expanded: what lucidd runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// `lucid.io/v1alpha1`.
    pub api_version: String,
    /// `LucidEnvironment`.
    pub kind: String,
    /// Name and labels.
    pub metadata: Metadata,
    /// The environment.
    pub spec: Spec,
}

/// Resolved `spec`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// Where the host runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<Infrastructure>,
    /// The gateway (defaults filled in).
    pub gateway: Gateway,
    /// Agents.
    pub agents: Vec<Agent>,
    /// TPM, measured launch, anchoring and passports (defaults filled in).
    pub attestation: Attestation,
}

/// Resolved `spec.attestation`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attestation {
    /// Whether a TPM is used.
    pub tpm: model::TpmMode,
    /// How to reach it.
    pub tcti: String,
    /// The application PCR for measured launch.
    pub application_pcr: u32,
    /// The firmware event log.
    pub event_log: String,
    /// Minutes between passports.
    pub passport_interval_minutes: u64,
    /// Anchor every Nth checkpoint.
    pub anchor_every_checkpoints: u64,
}

impl Default for Attestation {
    fn default() -> Self {
        Attestation {
            tpm: model::TpmMode::Auto,
            tcti: "device:/dev/tpmrm0".into(),
            application_pcr: 23,
            event_log: "/sys/kernel/security/tpm0/binary_bios_measurements".into(),
            passport_interval_minutes: 60,
            anchor_every_checkpoints: 360,
        }
    }
}

fn resolve_attestation(raw: Option<model::RawAttestation>, file: &str) -> Result<Attestation, ConfigError> {
    let mut a = Attestation::default();
    let Some(raw) = raw else { return Ok(a) };
    if let Some(t) = raw.tpm {
        a.tpm = t;
    }
    if let Some(t) = raw.tcti {
        a.tcti = t;
    }
    if let Some(l) = raw.event_log {
        a.event_log = l;
    }
    if let Some(p) = raw.application_pcr {
        if !(p.value == 16 || p.value == 23) {
            return Err(ConfigError::at(file, p.referenced, format!("applicationPcr must be 16 or 23 (the PCRs an application may reset and extend), found {}", p.value)));
        }
        a.application_pcr = p.value;
    }
    if let Some(m) = raw.passport_interval_minutes {
        if m.value == 0 {
            return Err(ConfigError::at(file, m.referenced, "passportIntervalMinutes must be at least 1"));
        }
        a.passport_interval_minutes = m.value;
    }
    if let Some(n) = raw.anchor_every_checkpoints {
        if n.value == 0 {
            return Err(ConfigError::at(file, n.referenced, "anchorEveryCheckpoints must be at least 1"));
        }
        a.anchor_every_checkpoints = n.value;
    }
    Ok(a)
}

/// A resolved agent.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    /// Unique name.
    pub name: String,
    /// Model routing.
    pub model: Model,
    /// GPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
    /// Where requests go.
    pub upstream: Upstream,
    /// The chain.
    pub audit_chain: AuditChain,
    /// What the gateway forwards beyond what it audits.
    #[serde(skip_serializing_if = "AgentGateway::is_default")]
    pub gateway: AgentGateway,
}

/// Resolved `spec.agents[].gateway`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentGateway {
    /// Fields refused by default that this agent accepts (sorted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_fields: Vec<String>,
    /// Content kinds forwarded unread (sorted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_modalities: Vec<model::Modality>,
    /// The tokenizer token-id prompts are decoded with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// Where `tokenizer` was written.
    #[serde(skip)]
    pub spans: Spans,
}

impl AgentGateway {
    /// Whether nothing is set (kept out of the normalised form, so digests of
    /// configurations without it are unchanged).
    pub fn is_default(&self) -> bool {
        self.allow_fields.is_empty() && self.allow_modalities.is_empty() && self.tokenizer.is_none()
    }
}

/// Resolved model reference.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Model {
    /// Model id.
    pub id: String,
}

/// A resolved chain.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditChain {
    /// Before the model.
    pub pre_request: Vec<AuditorConfig>,
    /// After the model.
    pub post_response: Vec<AuditorConfig>,
    /// Lower-case hex SHA-256 digests of system or developer prompts not audited.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exempt_system_prompts: Vec<String>,
}

/// Where an auditor entry was written, so that what is found wrong after parsing (a
/// classifier that does not load, a writer that does not exist) is reported at its
/// file, line and column like a syntax error. Not part of the configuration's meaning:
/// any two compare equal and it is never serialised, so digests and diffs ignore it.
#[derive(Clone, Debug, Default)]
pub struct Spans {
    /// The entry's `auditorId` (for a profile's auditors, the agent's `profile`).
    pub entry: Option<(u64, u64)>,
    /// Each env key's value.
    pub values: std::collections::BTreeMap<String, (u64, u64)>,
}

impl PartialEq for Spans {
    fn eq(&self, _: &Spans) -> bool {
        true
    }
}

impl Spans {
    /// Where `key`'s value was written, else the entry.
    pub fn of(&self, key: Option<&str>) -> Option<(u64, u64)> {
        key.and_then(|k| self.values.get(k).copied()).or(self.entry)
    }
}

fn position(loc: Location) -> (u64, u64) {
    (loc.line(), loc.column())
}

/// A resolved auditor entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditorConfig {
    /// Which auditor.
    pub auditor_id: AuditorId,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Closed or open.
    pub fail_policy: FailPolicy,
    /// Time budget.
    pub timeout_ms: u32,
    /// Typed settings, defaults filled in.
    pub env: AuditorSettings,
    /// Where it was written.
    #[serde(skip)]
    pub spans: Spans,
}

impl Environment {
    /// The normalised form as JSON (what digests and diffs are computed over).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// SHA-256 of the normalised form (hex).
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        lucid_common::hex::encode(&Sha256::digest(bytes))
    }

    /// The longest `LOG_RETENTION_DAYS` of any observability auditor (the safe choice
    /// when agents disagree), if one is configured.
    pub fn retention_days(&self) -> Option<u32> {
        self.auditors()
            .filter_map(|a| match &a.env {
                AuditorSettings::Observability(ObservabilityEnv { log_retention_days, .. }) => Some(log_retention_days.0),
                _ => None,
            })
            .max()
    }

    /// Every auditor entry of every agent.
    pub fn auditors(&self) -> impl Iterator<Item = &AuditorConfig> {
        self.spec.agents.iter().flat_map(|a| a.audit_chain.pre_request.iter().chain(&a.audit_chain.post_response))
    }
}

/// Reads and validates a file.
pub fn load_file(path: &Path) -> Result<Environment, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
    parse(&text, &file)
}

/// Validates YAML text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Environment, ConfigError> {
    let raw: RawEnvironment = serde_saphyr::from_str(text).map_err(|e| yaml_error(file, &e))?;
    resolve(raw, file)
}

fn yaml_error(file: &str, e: &serde_saphyr::Error) -> ConfigError {
    let loc = e.location().unwrap_or(Location::UNKNOWN);
    let rendered = e.without_snippet().to_string();
    // The rendering repeats the position ("error: line 2 column 5: ..."); keep the message.
    let message = rendered
        .lines()
        .next()
        .map(|first| match first.split_once(": ") {
            Some((head, rest)) if head.starts_with("error") => match rest.split_once(": ") {
                Some((pos, msg)) if pos.starts_with("line ") => msg.to_string(),
                _ => rest.to_string(),
            },
            _ => first.to_string(),
        })
        .unwrap_or(rendered.clone());
    // Custom errors carry the position again at the end ("... at line 18, column 14").
    let message = match message.rsplit_once(" at line ") {
        Some((head, tail)) if tail.contains(", column ") => head.to_string(),
        _ => message,
    };
    ConfigError::Invalid { file: file.to_string(), line: loc.line().max(1), column: loc.column().max(1), message }
}

fn resolve(raw: RawEnvironment, file: &str) -> Result<Environment, ConfigError> {
    if raw.api_version.value != API_VERSION {
        return Err(ConfigError::at(
            file,
            raw.api_version.referenced,
            format!("apiVersion must be {API_VERSION:?}, found {:?}", raw.api_version.value),
        ));
    }
    if raw.kind.value != KIND {
        return Err(ConfigError::at(file, raw.kind.referenced, format!("kind must be {KIND:?}, found {:?}", raw.kind.value)));
    }
    let mut names = HashSet::new();
    let mut models = HashSet::new();
    let mut agents = Vec::new();
    for agent in raw.spec.agents {
        if !names.insert(agent.name.value.clone()) {
            return Err(ConfigError::at(file, agent.name.referenced, format!("agent name {:?} is used twice", agent.name.value)));
        }
        if !models.insert(agent.model.id.value.clone()) {
            return Err(ConfigError::at(
                file,
                agent.model.id.referenced,
                format!("model id {:?} is served by two agents; requests could not be routed", agent.model.id.value),
            ));
        }
        agents.push(resolve_agent(agent, file)?);
    }
    Ok(Environment {
        api_version: raw.api_version.value,
        kind: raw.kind.value,
        metadata: raw.metadata,
        spec: Spec {
            infrastructure: raw.spec.infrastructure,
            gateway: raw.spec.gateway.unwrap_or_default(),
            agents,
            attestation: resolve_attestation(raw.spec.attestation, file)?,
        },
    })
}

fn resolve_agent(agent: RawAgent, file: &str) -> Result<Agent, ConfigError> {
    let mut chain = match agent.profile {
        Some(profile) => {
            let mut chain = profile_chain(profile.value)?;
            // Errors in a profile's auditors are reported at the agent's `profile`.
            let at = Spans { entry: Some(position(profile.referenced)), values: Default::default() };
            for link in chain.pre_request.iter_mut().chain(&mut chain.post_response) {
                link.spans = at.clone();
            }
            chain
        }
        None => AuditChain::default(),
    };
    if let Some(raw) = agent.audit_chain {
        if let Some(pre) = raw.pre_request {
            chain.pre_request = resolve_stage(pre, file, "preRequest")?;
        }
        if let Some(post) = raw.post_response {
            chain.post_response = resolve_stage(post, file, "postResponse")?;
        }
        for digest in raw.exempt_system_prompts.unwrap_or_default() {
            let hex = digest.value.strip_prefix("sha256:").unwrap_or(&digest.value).to_ascii_lowercase();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::at(
                    file,
                    digest.referenced,
                    format!("exemptSystemPrompts: {:?} is not a SHA-256 digest (64 hex digits, e.g. from `sha256sum`)", digest.value),
                ));
            }
            chain.exempt_system_prompts.push(hex);
        }
    }
    let gateway = match agent.gateway {
        None => AgentGateway::default(),
        Some(g) => {
            let mut allow_fields = g.allow_fields;
            allow_fields.sort();
            allow_fields.dedup();
            let mut allow_modalities = g.allow_modalities;
            allow_modalities.sort();
            allow_modalities.dedup();
            let spans = Spans { entry: g.tokenizer.as_ref().map(|t| position(t.referenced)), values: Default::default() };
            AgentGateway { allow_fields, allow_modalities, tokenizer: g.tokenizer.map(|t| t.value), spans }
        }
    };
    Ok(Agent {
        name: agent.name.value,
        model: Model { id: agent.model.id.value },
        gpu: agent.gpu,
        upstream: agent.upstream.unwrap_or_else(model::default_upstream),
        audit_chain: chain,
        gateway,
    })
}

fn resolve_stage(refs: Vec<RawAuditorRef>, file: &str, stage: &str) -> Result<Vec<AuditorConfig>, ConfigError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in refs {
        let id = AuditorId::parse(&r.auditor_id.value).ok_or_else(|| {
            let known: Vec<&str> = AuditorId::ALL.iter().map(|a| a.as_str()).collect();
            ConfigError::at(
                file,
                r.auditor_id.referenced,
                format!("unknown auditorId {:?}; known auditors: {}", r.auditor_id.value, known.join(", ")),
            )
        })?;
        if !seen.insert(id) {
            return Err(ConfigError::at(file, r.auditor_id.referenced, format!("{} appears twice in {stage}", id.as_str())));
        }
        if r.timeout_ms == Some(0) {
            return Err(ConfigError::at(file, r.auditor_id.referenced, "timeoutMs must be at least 1"));
        }
        let env = r.env.unwrap_or_default();
        let spans = Spans {
            entry: Some(position(r.auditor_id.referenced)),
            values: env.iter().map(|(k, v)| (k.value.clone(), position(v.referenced))).collect(),
        };
        out.push(AuditorConfig {
            auditor_id: id,
            name: r.name,
            fail_policy: r.fail_policy.unwrap_or_default(),
            timeout_ms: r.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
            env: resolve_env(id, env, file)?,
            spans,
        });
    }
    Ok(out)
}

/// Checks each env key on its own first, so an error points at that key (an unknown
/// key) or its value (a bad value); then builds the typed settings from all of them.
fn resolve_env(
    id: AuditorId,
    env: std::collections::HashMap<Spanned<String>, Spanned<String>>,
    file: &str,
) -> Result<AuditorSettings, ConfigError> {
    let mut entries: Vec<(Spanned<String>, Spanned<String>)> = env.into_iter().collect();
    entries.sort_by_key(|(k, _)| (k.referenced.line(), k.referenced.column()));
    for (key, value) in &entries {
        let one = MapDeserializer::<_, serde::de::value::Error>::new(std::iter::once((key.value.as_str(), value.value.as_str())));
        if let Err(e) = AuditorSettings::from_env(id, one) {
            let message = e.to_string();
            let (loc, message) = if message.starts_with("unknown field") {
                (key.referenced, format!("{} does not take env key {:?}: {message}", id.as_str(), key.value))
            } else {
                (value.referenced, format!("{}: {message}", key.value))
            };
            return Err(ConfigError::at(file, loc, message));
        }
    }
    let all = MapDeserializer::<_, serde::de::value::Error>::new(
        entries.iter().map(|(k, v)| (k.value.as_str(), v.value.as_str())),
    );
    AuditorSettings::from_env(id, all).map_err(|e| ConfigError::at(file, Location::UNKNOWN, e.to_string()))
}

/// The chain a profile expands to.
pub fn profile_chain(profile: Profile) -> Result<AuditChain, ConfigError> {
    match profile {
        Profile::Soc2 => {
            let env = parse(SOC2_PROFILE, "<profile soc2>")?;
            Ok(env.spec.agents.into_iter().next().map(|a| a.audit_chain).unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod tests;
