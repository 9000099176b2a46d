//! Request and response bodies of the control API (HTTP/1.1 + JSON over the Unix
//! socket), shared by `lucidd` (which serves them) and `lucidctl` (which calls them).
//!
//! Field names are part of `lucidctl -o json`'s stable output: add fields, never
//! rename or remove them.

use serde::{Deserialize, Serialize};

use crate::record::Kind;

/// Default control socket path for a production daemon.
pub const DEFAULT_SOCKET: &str = "/run/lucid/lucidd.sock";
/// Socket file name inside a dev state directory.
pub const DEV_SOCKET_NAME: &str = "lucidd.sock";

/// Every non-2xx response carries this body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// The error.
    pub error: ErrorBody,
}

/// What went wrong, for people and for scripts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `forbidden`, `invalid_config`, `ledger_unavailable`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Where in a config file the problem is, for `invalid_config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<SourceLocation>,
}

/// A position in a configuration file (1-based line and column).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLocation {
    /// File name as given by the caller.
    pub file: String,
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// lucidd version.
    pub version: String,
    /// `dev` or `production`.
    pub mode: String,
    /// Daemon process id.
    pub pid: u32,
    /// Start time, ns since the epoch.
    pub started_ns: u64,
    /// Seconds since start.
    pub uptime_s: u64,
    /// State directory (ledger, host key).
    pub state_dir: String,
    /// The host's checkpoint verifier key (`name+id+key`).
    pub verifier_key: String,
    /// Whether ledger records are being written to journald.
    pub journald: bool,
    /// Address the OpenAI-compatible gateway listens on.
    #[serde(default)]
    pub gateway: Option<String>,
    /// The active configuration.
    pub config: ConfigStatus,
    /// The evidence ledger.
    pub ledger: LedgerStatus,
    /// Classifiers loaded for the guardrails auditors.
    #[serde(default)]
    pub classifiers: Vec<ClassifierStatus>,
    /// Why guardrails run on heuristics alone, where the default pack was wanted and
    /// is not installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_note: Option<String>,
    /// How approved models are watched for changes.
    #[serde(default)]
    pub integrity_watch: WatchStatus,
    /// The TPM, the anchor counter and passports.
    #[serde(default)]
    pub attestation: AttestStatus,
    /// The control inventory: every SOC 2 control of every agent, whether it operates,
    /// by what, and if not, why.
    #[serde(default)]
    pub controls: Vec<ControlStatus>,
    /// What an operator should know about the configuration in force (an agent whose
    /// responses no auditor reads, ...).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Whether a control, or one part of one, is in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlState {
    /// Everything configured for it runs.
    Operating,
    /// Some of what is configured for it runs, not all (a part switched off, or one
    /// running below its configuration).
    Partial,
    /// It runs, below what was configured (heuristics without the classifier asked
    /// for, a periodic check where a watch was asked for, a GPU given up).
    Degraded,
    /// Nothing configured for it runs (not configured, or not implemented in this
    /// version).
    NotOperating,
}

impl ControlState {
    /// As shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlState::Operating => "operating",
            ControlState::Partial => "partial",
            ControlState::Degraded => "degraded",
            ControlState::NotOperating => "not operating",
        }
    }
}

/// One SOC 2 control of one agent in the control inventory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlStatus {
    /// The agent.
    pub agent: String,
    /// The control, e.g. `CC6.6`.
    pub control: String,
    /// Operating if every part operates, not operating if none does, partial between.
    pub state: ControlState,
    /// What implements it.
    pub parts: Vec<ControlPart>,
}

/// One thing that implements (part of) a control: an auditor's function, with the
/// settings that make it so.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlPart {
    /// The auditor id (or `lucidd` for the daemon itself).
    pub auditor: String,
    /// `preRequest` or `postResponse`, for auditors in a chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// What it does, in words.
    pub does: String,
    /// The settings that decide it, as `KEY=value`.
    #[serde(default)]
    pub settings: Vec<String>,
    /// Whether it is in force.
    pub state: ControlState,
    /// Why not, or why degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// A loaded classifier: where it runs, why there, and how its queue is doing.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClassifierStatus {
    /// Model directory.
    pub model: String,
    /// `cpu` or `cuda`: where batches are scored now (a GPU given up after failures
    /// is `cpu`, whatever was chosen at load).
    pub backend: String,
    /// The processor or GPU that scores them now.
    pub device: String,
    /// Why this backend.
    pub reason: String,
    /// Batches the GPU failed and the CPU scored, since load.
    #[serde(default)]
    pub gpu_fallbacks: u64,
    /// The last GPU failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_error: Option<String>,
    /// Heads with their labels, e.g. `injection (benign, injection)`.
    pub heads: Vec<String>,
    /// Milliseconds loading took.
    pub load_ms: u64,
    /// Encoder passes run.
    pub batches: u64,
    /// Requests scored.
    pub requests: u64,
    /// Windows (up to 512 tokens) scored.
    pub windows: u64,
    /// Tokens scored.
    pub tokens: u64,
    /// Requests whose deadline passed in the queue.
    pub expired: u64,
    /// Requests refused because the queue was full.
    pub rejected: u64,
    /// Mean queue wait, microseconds.
    pub mean_wait_us: u64,
    /// Longest queue wait, microseconds.
    pub max_wait_us: u64,
}

/// The active configuration, summarised.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// `metadata.name`.
    pub name: String,
    /// File it came from, or `embedded:soc2` in dev mode.
    pub source: String,
    /// SHA-256 of the normalised configuration (hex).
    pub digest: String,
    /// When it took effect, ns since the epoch.
    pub applied_ns: u64,
    /// Ledger record that evidences the load or apply.
    pub record_seq: Option<u64>,
    /// Retention in days (`LOG_RETENTION_DAYS`), if configured.
    pub retention_days: Option<u32>,
    /// Agents and their audit chains.
    pub agents: Vec<AgentStatus>,
}

/// One agent's audit chain.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Agent name.
    pub name: String,
    /// Model id requests are routed by.
    pub model: String,
    /// preRequest auditor ids, in order.
    pub pre_request: Vec<String>,
    /// postResponse auditor ids, in order.
    pub post_response: Vec<String>,
    /// SOC 2 controls operating (wholly or in part) for this agent; the inventory
    /// (`Status::controls`) says what does not, and why.
    pub controls: Vec<String>,
}

/// Ledger health and size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LedgerStatus {
    /// `ok` or `failed` (failed closed: work needing evidence is refused).
    pub health: String,
    /// The storage error while failed.
    pub error: Option<String>,
    /// When the failure began, ns since the epoch.
    pub failed_since_ns: Option<u64>,
    /// Appends refused since start because the ledger could not write.
    pub refused_appends: u64,
    /// Number of records (the next sequence number).
    pub records: u64,
    /// Latest signed checkpoint.
    pub latest_checkpoint: Option<CheckpointInfo>,
    /// Records whose bodies were pruned under retention: `[0, pruned_to)`.
    pub pruned_to: u64,
    /// Size of the database file in bytes.
    pub db_bytes: u64,
    /// Path of the database file.
    pub path: String,
}

/// A checkpoint, summarised.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// Records covered.
    pub size: u64,
    /// Root hash (hex).
    pub root: String,
    /// Ledger time of the last covered record.
    pub time_ns: u64,
}

/// `POST /v1/notes`: an operator note (for example a change ticket).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NoteRequest {
    /// The note.
    pub message: String,
    /// Optional ticket reference, e.g. `CHG-1234`.
    #[serde(default)]
    pub ticket: Option<String>,
}

/// Returned once a record is durable.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppendReceipt {
    /// Sequence number assigned.
    pub seq: u64,
    /// Ledger time assigned.
    pub time_ns: u64,
    /// Leaf hash (hex).
    pub leaf_hash: String,
}

/// `POST /v1/config/apply`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// The YAML text.
    pub yaml: String,
    /// The file name to report in errors.
    pub file: String,
}

/// One changed value between two configurations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// JSON-pointer-like path, e.g. `/spec/agents/0/auditChain/preRequest/0/env/INJECTION_THRESHOLD`.
    pub path: String,
    /// Value before (absent when added).
    pub old: Option<serde_json::Value>,
    /// Value after (absent when removed).
    pub new: Option<serde_json::Value>,
}

/// Result of an apply or reload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyResponse {
    /// The `config` ledger record.
    pub seq: u64,
    /// Digest before.
    pub old_digest: String,
    /// Digest after.
    pub new_digest: String,
    /// What changed.
    pub changes: Vec<ConfigChange>,
    /// What the operator should know: a part of the new configuration not confirmed in
    /// force when the answer was given (also recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `GET /v1/ledger/prove?seq=N`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The record's sequence number (its leaf index).
    pub seq: u64,
    /// The record's leaf hash (hex).
    pub leaf_hash: String,
    /// The record, or `null` when its body was pruned.
    pub record: Option<serde_json::Value>,
    /// Tree size the proof is against (the checkpoint's).
    pub tree_size: u64,
    /// Audit path, hex, deepest first.
    pub proof: Vec<String>,
    /// The signed checkpoint note.
    pub checkpoint: String,
    /// Verifier key for the checkpoint.
    pub verifier_key: String,
}

/// `GET /v1/ledger/consistency?old=M&new=N`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// Older tree size.
    pub old_size: u64,
    /// Newer tree size.
    pub new_size: u64,
    /// Proof hashes, hex.
    pub proof: Vec<String>,
    /// Checkpoint note at the older size.
    pub old_checkpoint: String,
    /// Checkpoint note at the newer size.
    pub new_checkpoint: String,
}

/// `GET /v1/ledger/checkpoint`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointResponse {
    /// The signed note text.
    pub note: String,
    /// Parsed fields.
    pub info: CheckpointInfo,
    /// Verifier key for the note.
    pub verifier_key: String,
}

/// Query of `GET /v1/logs` (all optional).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LogQuery {
    /// Records at or after this time (ns since the epoch).
    pub since_ns: Option<u64>,
    /// Records before this time (ns since the epoch).
    pub until_ns: Option<u64>,
    /// Only this kind.
    pub kind: Option<Kind>,
    /// Only records evidencing this control (comma-separated list: any of them).
    pub control: Option<String>,
    /// Only anomalies: kind `anomaly` or severity warning and above.
    #[serde(default)]
    pub anomalies: bool,
    /// Only records about this agent (`body.request.agent` or `body.agent`).
    #[serde(default)]
    pub agent: Option<String>,
    /// Keep the stream open and send new records as they are committed.
    #[serde(default)]
    pub follow: bool,
    /// At most this many records (before following); the newest ones.
    pub limit: Option<u64>,
}

/// `POST /v1/models/approve` and `POST /v1/models/verify`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelRequest {
    /// The model's directory or file.
    pub path: String,
    /// Why it is approved (approve only).
    #[serde(default)]
    pub note: Option<String>,
    /// `shards` (default, 1 GB shards), `shards:BYTES`, `files`, or `blake3` (by file)
    /// (approve only).
    #[serde(default)]
    pub method: Option<String>,
}

/// `POST /v1/models/import`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImportRequest {
    /// The model's directory or file.
    pub path: String,
    /// The signature file's text: a sigstore bundle (model_signing's `model.sig`) or a
    /// bare DSSE envelope.
    pub signature: String,
    /// The signer's public key (PEM, ECDSA P-256 or P-384); without it the signature is
    /// recorded as not checked.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Why it is approved.
    #[serde(default)]
    pub note: Option<String>,
}

/// An approved model and where it stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelStatus {
    /// Short id.
    pub id: String,
    /// Directory or file.
    pub path: String,
    /// Its name in the manifest.
    pub name: String,
    /// `shards:N`, `files` or `blake3`.
    pub method: String,
    /// Files or shards in the manifest.
    pub resources: usize,
    /// The manifest's subject digest (SHA-256, hex).
    pub digest: String,
    /// When approved, ns since the epoch.
    pub approved_ns: u64,
    /// The operator's note.
    pub note: Option<String>,
    /// Ledger record of the approval.
    pub record_seq: u64,
    /// `verified`, `modified`, `unapproved file`, `missing` or `verifying` (a change is
    /// being judged).
    pub state: String,
    /// Latest verification, ns since the epoch.
    pub verified_ns: u64,
    /// Resources whose digests differ from the approval.
    pub changed: Vec<String>,
    /// Approved resources that are gone.
    pub missing: Vec<String>,
    /// Files that were not approved.
    pub added: Vec<String>,
    /// Files whose mode or owner differ from the approval.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// The latest change a watch saw, and who made it.
    #[serde(default)]
    pub last_change: Option<ModelChange>,
    /// Ledger record of this answer's verification (verify only).
    #[serde(default)]
    pub record: Option<u64>,
}

/// The latest change seen on an approved model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelChange {
    /// When, ns since the epoch.
    pub time_ns: u64,
    /// The operation (`open`, `close`, `rename`, `unlink`, `chmod`, ...).
    pub op: String,
    /// The path it touched.
    pub path: String,
    /// The process.
    pub pid: u32,
    /// Its executable, where known.
    pub exe: Option<String>,
    /// Its uid.
    pub uid: u32,
    /// The ledger record of the change.
    pub record: u64,
}

/// How approved models are watched.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WatchStatus {
    /// `ebpf-tracepoint`, `fanotify`, `periodic` or `off`.
    pub mode: String,
    /// Why that mode (what could not be used before it).
    #[serde(default)]
    pub detail: String,
    /// Changes and re-verifications judged since start.
    pub changes: u64,
    /// Events lost since start.
    pub lost: u64,
    /// Refusing writes to approved files: `off`, `on (...)` or `unavailable: why`.
    #[serde(default)]
    pub enforcement: String,
    /// Minutes between full re-verifications in force (none while the watch is off).
    #[serde(default)]
    pub recheck_minutes: Option<u64>,
}

/// The TPM as `status` and `lucidctl attest show` report it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestStatus {
    /// `auto`, `required` or `off` (spec.attestation.tpm).
    pub mode: String,
    /// How the TPM is reached.
    pub tcti: String,
    /// Whether a TPM was provisioned at start.
    pub available: bool,
    /// Why there is no TPM (passports are unanchored).
    #[serde(default)]
    pub unavailable: Option<String>,
    /// The endorsement key's TPM name (hex).
    #[serde(default)]
    pub ek_name: Option<String>,
    /// Whether the TPM holds an EK certificate.
    #[serde(default)]
    pub ek_certificate: bool,
    /// The attestation key's TPM name (hex).
    #[serde(default)]
    pub ak_name: Option<String>,
    /// The PCR lucidd extends with what it launched.
    pub application_pcr: u32,
    /// The NV anchor counter's last known value.
    #[serde(default)]
    pub anchor_counter: Option<u64>,
    /// The TPM is failing now: the first error.
    #[serde(default)]
    pub failing: Option<String>,
    /// ... since then.
    #[serde(default)]
    pub failing_since_ns: Option<u64>,
    /// TPM operations that failed since start.
    #[serde(default)]
    pub failures: u64,
    /// Minutes between passports.
    pub passport_interval_minutes: u64,
    /// Checkpoints between anchors.
    pub anchor_every_checkpoints: u64,
    /// The latest passport: its id, sequence number in the ledger and period end.
    #[serde(default)]
    pub latest_passport: Option<PassportSummary>,
}

/// One passport as `passport list` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassportSummary {
    /// Passport id (its number in this host's chain, from 1).
    pub number: u64,
    /// SHA-256 of the envelope's payload (what the next passport links to).
    pub digest: String,
    /// The ledger record that holds it.
    pub record_seq: u64,
    /// Period start (ns since the epoch).
    pub from_ns: u64,
    /// Period end.
    pub to_ns: u64,
    /// Whether a TPM quote and anchor bind it.
    pub anchored: bool,
    /// Ledger checkpoint size it covers.
    pub checkpoint_size: u64,
}
