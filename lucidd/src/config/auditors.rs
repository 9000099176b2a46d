//! The auditors a configuration may name, what each evidences, and its typed `env`.
//!
//! Each auditor's env is a struct with `deny_unknown_fields`: an unknown key or a bad
//! value is an error at that key. Defaults are the values of the reference SOC 2
//! example, so an auditor listed without an env behaves as in that example.

use serde::{Deserialize, Serialize};

use super::values::{Minutes, PathList, WatchMode, BackendChoice, Precision, ClassifierModel, Days, EntityOperators, Flag, LabelSignals, OptionalPath, PiiOperator, Threshold};

/// Known auditor ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
pub enum AuditorId {
    /// Prompt-injection, jailbreak and toxicity classifiers (boundary protection).
    #[serde(rename = "lucid-guardrails-auditor")]
    Guardrails,
    /// PII detection and redaction, access control.
    #[serde(rename = "lucid-pii-compliance-auditor")]
    PiiCompliance,
    /// Credential and secret detection.
    #[serde(rename = "lucid-policy-auditor")]
    Policy,
    /// Credential and secret detection under its own id (gitleaks-format rules).
    #[serde(rename = "lucid-secrets-auditor")]
    Secrets,
    /// Logging, retention and anomaly detection.
    #[serde(rename = "lucid-observability-auditor")]
    Observability,
    /// Model integrity and safety benchmarks (change management).
    #[serde(rename = "lucid-eval-auditor")]
    Eval,
}

impl AuditorId {
    /// Every known id.
    pub const ALL: [AuditorId; 6] = [
        AuditorId::Guardrails,
        AuditorId::PiiCompliance,
        AuditorId::Policy,
        AuditorId::Secrets,
        AuditorId::Observability,
        AuditorId::Eval,
    ];

    /// The id as written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditorId::Guardrails => "lucid-guardrails-auditor",
            AuditorId::PiiCompliance => "lucid-pii-compliance-auditor",
            AuditorId::Policy => "lucid-policy-auditor",
            AuditorId::Secrets => "lucid-secrets-auditor",
            AuditorId::Observability => "lucid-observability-auditor",
            AuditorId::Eval => "lucid-eval-auditor",
        }
    }

    /// Parses a configured id.
    pub fn parse(id: &str) -> Option<AuditorId> {
        AuditorId::ALL.into_iter().find(|a| a.as_str() == id)
    }

    /// SOC 2 controls this auditor evidences.
    pub fn controls(self) -> &'static [&'static str] {
        match self {
            AuditorId::Guardrails => &["CC6.6", "CC7.2"],
            AuditorId::PiiCompliance => &["CC6.1", "CC6.3", "C1.1", "P1.1"],
            AuditorId::Policy | AuditorId::Secrets => &["CC6.1", "C1.1"],
            AuditorId::Observability => &["CC7.2", "CC7.3"],
            AuditorId::Eval => &["CC8.1", "CC7.1"],
        }
    }
}

/// Settings of `lucid-guardrails-auditor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE", default)]
pub struct GuardrailsEnv {
    /// Deny a prompt whose injection score reaches the threshold.
    pub injection_block_on_detection: Flag,
    /// Prompt-injection score threshold.
    pub injection_threshold: Threshold,
    /// Deny a prompt whose jailbreak score reaches the threshold.
    pub jailbreak_block_on_detection: Flag,
    /// Jailbreak score threshold.
    pub jailbreak_threshold: Threshold,
    /// Deny text whose toxicity score reaches the threshold.
    pub toxicity_block_on_detection: Flag,
    /// Toxicity score threshold.
    pub toxicity_threshold: Threshold,
    /// Look for jailbreak attempts at all.
    pub jailbreak_detection_enabled: Flag,
    /// Add a canary token to the system prompt and deny responses that leak it.
    pub system_prompt_canary: Flag,
    /// The classifier scored beside the heuristics: `builtin`, `none` or a directory.
    pub classifier_model: ClassifierModel,
    /// Where it runs: `auto`, `cpu` or `cuda`.
    pub classifier_backend: BackendChoice,
    /// The CPU backend's arithmetic: `auto` (bf16 on Intel AMX where it stays close to
    /// f32), `f32` or `bf16`.
    pub classifier_precision: Precision,
    /// Label-to-signal mapping for labels whose names do not say (`LABEL_1=injection`).
    pub classifier_labels: LabelSignals,
}

impl Default for GuardrailsEnv {
    fn default() -> Self {
        GuardrailsEnv {
            injection_block_on_detection: Flag(true),
            injection_threshold: Threshold(0.8),
            jailbreak_block_on_detection: Flag(true),
            jailbreak_threshold: Threshold(0.8),
            toxicity_block_on_detection: Flag(true),
            toxicity_threshold: Threshold(0.7),
            jailbreak_detection_enabled: Flag(true),
            system_prompt_canary: Flag(true),
            classifier_model: ClassifierModel::Builtin,
            classifier_backend: BackendChoice::Auto,
            classifier_precision: Precision::Auto,
            classifier_labels: LabelSignals::default(),
        }
    }
}

/// Settings of `lucid-pii-compliance-auditor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE", default)]
pub struct PiiEnv {
    /// Look for personal data (emails, phone numbers, card numbers, ...).
    pub pii_detection_enabled: Flag,
    /// Replace detected personal data before it reaches the model.
    pub pii_redact_on_detection: Flag,
    /// Enforce per-client access rules.
    pub access_control_enabled: Flag,
    /// What redaction does to an entity: `tag` (`<EMAIL>`), `mask` (`****`), `hash`
    /// (a keyed hash) or `keep`.
    pub pii_operator: PiiOperator,
    /// Per-entity operators, e.g. `email=mask,ssn=hash,ip_address=keep`.
    pub pii_operators: EntityOperators,
}

impl Default for PiiEnv {
    fn default() -> Self {
        PiiEnv {
            pii_detection_enabled: Flag(true),
            pii_redact_on_detection: Flag(true),
            access_control_enabled: Flag(true),
            pii_operator: PiiOperator::Tag,
            pii_operators: EntityOperators::default(),
        }
    }
}

/// Settings of `lucid-policy-auditor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE", default)]
pub struct PolicyEnv {
    /// Look for credentials and secrets (API keys, private keys, tokens).
    pub credential_detection_enabled: Flag,
    /// Deny text that contains one.
    pub credential_block_on_detection: Flag,
    /// A gitleaks TOML config whose rules replace the built-in set.
    pub gitleaks_config: OptionalPath,
}

impl Default for PolicyEnv {
    fn default() -> Self {
        PolicyEnv { credential_detection_enabled: Flag(true), credential_block_on_detection: Flag(true), gitleaks_config: OptionalPath(None) }
    }
}

/// Settings of `lucid-observability-auditor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE", default)]
pub struct ObservabilityEnv {
    /// Keep ledger record bodies this many days; older bodies are pruned (hashes stay).
    pub log_retention_days: Days,
    /// Record every decision, not only warnings and denials.
    pub log_all_events: Flag,
    /// Flag unusual traffic as anomaly records.
    pub anomaly_detection_enabled: Flag,
}

impl Default for ObservabilityEnv {
    fn default() -> Self {
        ObservabilityEnv { log_retention_days: Days(365), log_all_events: Flag(true), anomaly_detection_enabled: Flag(true) }
    }
}

/// Settings of `lucid-eval-auditor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE", default)]
pub struct EvalEnv {
    /// Check served model files against their approved manifest: watch approved
    /// models for changes (eBPF, fanotify or periodic re-verification).
    pub model_integrity_check: Flag,
    /// Run safety benchmarks when the model changes.
    pub safety_benchmarks_enabled: Flag,
    /// Re-verify every approved model when lucidd starts.
    pub integrity_check_on_startup: Flag,
    /// Record every approved change (a re-approval) with its note and what changed.
    pub document_model_changes: Flag,
    /// How changes are watched: `auto`, `ebpf`, `fanotify` or `periodic`.
    pub integrity_watch_mode: WatchMode,
    /// Minutes between full re-verifications, 1 to 36500: the backstop for what a
    /// watch cannot see (writes through a shared mapping, io_uring in tracepoint mode).
    pub integrity_recheck_minutes: Minutes,
    /// Refuse write-opens of approved model files by executables not in
    /// `INTEGRITY_ALLOWED_WRITERS` (needs BPF LSM; where the kernel refuses it, lucidd
    /// says so in status and the ledger and only watches).
    pub integrity_enforce: Flag,
    /// Executables allowed to write approved files when enforcing.
    pub integrity_allowed_writers: PathList,
}

impl Default for EvalEnv {
    fn default() -> Self {
        EvalEnv {
            model_integrity_check: Flag(true),
            safety_benchmarks_enabled: Flag(true),
            integrity_check_on_startup: Flag(true),
            document_model_changes: Flag(true),
            integrity_watch_mode: WatchMode::Auto,
            integrity_recheck_minutes: Minutes(60),
            integrity_enforce: Flag(false),
            integrity_allowed_writers: PathList(Vec::new()),
        }
    }
}

/// One auditor's typed settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AuditorSettings {
    /// `lucid-guardrails-auditor`.
    Guardrails(GuardrailsEnv),
    /// `lucid-pii-compliance-auditor`.
    PiiCompliance(PiiEnv),
    /// `lucid-policy-auditor` or `lucid-secrets-auditor`.
    Policy(PolicyEnv),
    /// `lucid-observability-auditor`.
    Observability(ObservabilityEnv),
    /// `lucid-eval-auditor`.
    Eval(EvalEnv),
}

impl AuditorSettings {
    /// Deserialises `env` for the auditor `id`.
    pub fn from_env<'de, D: serde::Deserializer<'de>>(id: AuditorId, env: D) -> Result<AuditorSettings, D::Error> {
        Ok(match id {
            AuditorId::Guardrails => AuditorSettings::Guardrails(GuardrailsEnv::deserialize(env)?),
            AuditorId::PiiCompliance => AuditorSettings::PiiCompliance(PiiEnv::deserialize(env)?),
            AuditorId::Policy | AuditorId::Secrets => AuditorSettings::Policy(PolicyEnv::deserialize(env)?),
            AuditorId::Observability => AuditorSettings::Observability(ObservabilityEnv::deserialize(env)?),
            AuditorId::Eval => AuditorSettings::Eval(EvalEnv::deserialize(env)?),
        })
    }

    /// The schema of `env` for the auditor `id`.
    pub fn env_schema(id: AuditorId, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        match id {
            AuditorId::Guardrails => generator.subschema_for::<GuardrailsEnv>(),
            AuditorId::PiiCompliance => generator.subschema_for::<PiiEnv>(),
            AuditorId::Policy | AuditorId::Secrets => generator.subschema_for::<PolicyEnv>(),
            AuditorId::Observability => generator.subschema_for::<ObservabilityEnv>(),
            AuditorId::Eval => generator.subschema_for::<EvalEnv>(),
        }
    }
}
