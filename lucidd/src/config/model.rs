//! Step one of loading: the `LucidEnvironment` YAML as written, with source spans on
//! the values that are checked after parsing. Pure: no I/O, no runtime objects.

use std::collections::{BTreeMap, HashMap};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// The top-level document.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "LucidEnvironment", description = "A Lucid host environment: agents and the audit chains that guard them.")]
pub struct RawEnvironment {
    /// Must be `lucid.io/v1alpha1`.
    #[schemars(with = "ApiVersion")]
    pub api_version: Spanned<String>,
    /// Must be `LucidEnvironment`.
    #[schemars(with = "KindName")]
    pub kind: Spanned<String>,
    /// Name and labels.
    pub metadata: Metadata,
    /// The environment.
    pub spec: RawSpec,
}

#[derive(JsonSchema)]
#[schemars(rename = "ApiVersion")]
#[allow(dead_code)]
enum ApiVersion {
    #[serde(rename = "lucid.io/v1alpha1")]
    V1Alpha1,
}

#[derive(JsonSchema)]
#[schemars(rename = "Kind")]
#[allow(dead_code)]
enum KindName {
    LucidEnvironment,
}

/// `metadata`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Environment name; also the default checkpoint origin suffix.
    pub name: String,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `spec`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSpec {
    /// Where the host runs (informational, copied into evidence).
    #[serde(default)]
    pub infrastructure: Option<Infrastructure>,
    /// The OpenAI-compatible gateway in front of the agents.
    #[serde(default)]
    pub gateway: Option<Gateway>,
    /// The models served behind lucidd, each with its audit chain.
    pub agents: Vec<RawAgent>,
    /// The TPM, measured launch, ledger anchoring and AI passports.
    #[serde(default)]
    pub attestation: Option<RawAttestation>,
}

/// `spec.attestation`, as written (checked in `config::resolve`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAttestation {
    /// `auto` (use the TPM where there is one), `required` (refuse to start without
    /// one) or `off`.
    #[serde(default)]
    pub tpm: Option<TpmMode>,
    /// How to reach the TPM: `device:/dev/tpmrm0` (the default), `swtpm:host=H,port=P`,
    /// `tabrmd:`.
    #[serde(default)]
    pub tcti: Option<String>,
    /// The application PCR lucidd extends with what it launched (16 or 23).
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub application_pcr: Option<Spanned<u32>>,
    /// The firmware event log (TCG PC Client, crypto-agile).
    #[serde(default)]
    pub event_log: Option<String>,
    /// Minutes between passports (at least 1).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub passport_interval_minutes: Option<Spanned<u64>>,
    /// Anchor every Nth checkpoint in the TPM's NV counter (at least 1). Each anchor is
    /// one NV write; TPMs limit NV writes, so the default anchors about once an hour at
    /// the default checkpoint interval, and every passport is anchored as well.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub anchor_every_checkpoints: Option<Spanned<u64>>,
}

/// Whether lucidd uses a TPM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TpmMode {
    /// Use the TPM where the TCTI reaches one; otherwise run unanchored and say so.
    Auto,
    /// Refuse to start without a working TPM.
    Required,
    /// Do not use a TPM; passports are unanchored.
    Off,
}

/// `spec.gateway`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Gateway {
    /// Address the gateway listens on.
    #[serde(default = "default_listen")]
    #[schemars(with = "String")]
    pub listen: std::net::SocketAddr,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway { listen: default_listen(), max_body_bytes: default_max_body() }
    }
}

fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8700))
}

fn default_max_body() -> usize {
    4 << 20
}

/// `spec.agents[].upstream`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Upstream {
    /// Base URL of the OpenAI-compatible server, e.g. `http://127.0.0.1:8000/v1`.
    pub url: super::values::HttpUrl,
    /// Give up on the upstream after this many seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Name of an environment variable holding the upstream's API key, if it needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
}

fn default_timeout() -> u64 {
    120
}

/// vLLM's default address.
pub fn default_upstream() -> Upstream {
    Upstream {
        url: super::values::HttpUrl("http://127.0.0.1:8000/v1".into()),
        timeout_seconds: default_timeout(),
        api_key_env: None,
    }
}

/// `spec.infrastructure`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Infrastructure {
    /// Cloud or on-premises provider, e.g. `aws`.
    pub provider: String,
    /// Region or site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// A named audit-chain preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// The SOC 2 chain of the reference example: guardrails, PII, credentials before the
    /// model; observability and change management after it.
    Soc2,
}

/// `spec.agents[]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAgent {
    /// Agent name, unique in the environment.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The model requests are routed by.
    pub model: RawModel,
    /// The GPU it runs on (informational, copied into evidence).
    #[serde(default)]
    pub gpu: Option<Gpu>,
    /// The model server requests are forwarded to (default: vLLM's, http://127.0.0.1:8000/v1).
    #[serde(default)]
    pub upstream: Option<Upstream>,
    /// A preset chain; stages given in `auditChain` replace the preset's.
    #[serde(default)]
    #[schemars(with = "Option<Profile>")]
    pub profile: Option<Spanned<Profile>>,
    /// The audit chain.
    #[serde(default)]
    pub audit_chain: Option<RawChain>,
    /// What the gateway forwards to this agent beyond what it knows how to audit.
    #[serde(default)]
    pub gateway: Option<RawAgentGateway>,
}

/// `spec.agents[].gateway`: what the gateway may forward to an agent that it would
/// otherwise refuse. Every request field the gateway forwards is either audited or a
/// known parameter that carries no text; everything else is refused unless named here.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAgentGateway {
    /// Request fields refused by default and forwarded for this agent, by name: unknown
    /// fields and template overrides (`chat_template`, `chat_template_kwargs`), and the
    /// Responses API's stored state (`previous_response_id`, `conversation`, `prompt`).
    /// Their text is audited like the rest.
    #[serde(default)]
    pub allow_fields: Vec<String>,
    /// Kinds of content parts (`image`, `audio`, `file`, `video`) forwarded for this
    /// agent, unread: every request carrying one is recorded as carrying unaudited
    /// content, and the control inventory says so.
    #[serde(default)]
    pub allow_modalities: Vec<Modality>,
    /// The model's `tokenizer.json`: token-id prompts (completions' `prompt`,
    /// embeddings' `input`) are decoded with it and audited as text. Without it they are
    /// refused.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub tokenizer: Option<Spanned<String>>,
}

/// A kind of content the gateway cannot read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// `image_url`, `input_image`.
    Image,
    /// `input_audio`, `audio_url`.
    Audio,
    /// `file`, `input_file`.
    File,
    /// `video_url`.
    Video,
}

impl Modality {
    /// As written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Modality::Image => "image",
            Modality::Audio => "audio",
            Modality::File => "file",
            Modality::Video => "video",
        }
    }
}

/// `spec.agents[].model`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// Model id as clients send it in `model`, unique in the environment.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
}

/// `spec.agents[].gpu`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// GPU model, e.g. `A10G`.
    #[serde(rename = "type")]
    pub kind: String,
    /// GPU memory, e.g. `24GB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// `spec.agents[].auditChain`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawChain {
    /// Auditors run on the prompt before the model sees it, in order.
    #[serde(default)]
    pub pre_request: Option<Vec<RawAuditorRef>>,
    /// Auditors run on the response before the client sees it, in order.
    #[serde(default)]
    pub post_response: Option<Vec<RawAuditorRef>>,
    /// SHA-256 digests (hex, optionally `sha256:`-prefixed) of fixed system or
    /// developer prompts the chain does not read: only a message whose text has exactly
    /// one of these digests is exempt, and each exemption is counted in the request's
    /// decision records. Everything else, system prompts included, is audited.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub exempt_system_prompts: Option<Vec<Spanned<String>>>,
}

/// What an auditor does when it fails or runs out of time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailPolicy {
    /// Deny the request (the default: a control that cannot run does not pass).
    #[default]
    Closed,
    /// Let the request proceed and record the failure.
    Open,
}

/// One entry of a chain stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAuditorRef {
    /// Which auditor.
    pub auditor_id: Spanned<String>,
    /// Display name, e.g. the control it evidences.
    #[serde(default)]
    pub name: Option<String>,
    /// Auditor settings; keys and value types depend on `auditorId`.
    #[serde(default)]
    pub env: Option<HashMap<Spanned<String>, Spanned<String>>>,
    /// Fail closed (default) or open.
    #[serde(default)]
    pub fail_policy: Option<FailPolicy>,
    /// Time budget in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u32>,
}
