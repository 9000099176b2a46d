//! What the daemon's tasks share: the ledger, the active configuration and facts
//! about this run. The configuration is swapped whole (an `Arc` behind a lock), and
//! only after the `config` record that evidences the change is durable.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use lucid_common::api::{AgentStatus, ApplyResponse, CheckpointInfo, ConfigStatus, LedgerStatus, Status};
use lucid_common::record::{Entry, Kind, Severity};
use serde_json::json;

use crate::config::{self, ConfigError, Environment};
use crate::integrity::watch::plan::WatchPlan;
use crate::ledger::{now_ns, Health, Ledger, LedgerError};

/// How the daemon was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `--dev`: state in a local directory, embedded defaults, retention drills allowed.
    Dev,
    /// `--config FILE` under systemd.
    Production,
}

impl Mode {
    /// `dev` or `production`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dev => "dev",
            Mode::Production => "production",
        }
    }
}

/// Who asked for a change, as the kernel vouches for it (SO_PEERCRED), or the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A control-socket client.
    Peer {
        /// User id.
        uid: u32,
        /// Group id.
        gid: u32,
        /// Process id.
        pid: i32,
    },
    /// The daemon itself (start-up, SIGHUP).
    Daemon(&'static str),
}

impl Actor {
    /// As recorded in evidence.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Actor::Peer { uid, gid, pid } => {
                let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*uid)).ok().flatten().map(|u| u.name);
                json!({ "uid": uid, "gid": gid, "pid": pid, "user": user })
            }
            Actor::Daemon(trigger) => json!({ "daemon": trigger }),
        }
    }
}

/// The configuration in force.
#[derive(Clone, Debug)]
pub struct ActiveConfig {
    /// The environment.
    pub env: Environment,
    /// Where it came from: a file path, or `embedded:dev`.
    pub source: String,
    /// Digest of its normalised form.
    pub digest: String,
    /// When it took effect.
    pub applied_ns: u64,
    /// The `config` record that evidences it.
    pub record_seq: Option<u64>,
    /// The model watch's plan it makes (all agents' eval settings combined).
    pub watch: WatchPlan,
}

/// Why an apply did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The new configuration is invalid; nothing changed.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The change could not be recorded; nothing changed (fail closed).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// An auditor could not be built (for example its gitleaks config file is bad).
    #[error("{0}")]
    Chain(String),
    /// A setting that only takes effect at start changed: refused (and recorded), so
    /// that no value is recorded as applied that is not in force.
    #[error("needs a restart: {0} (change it in the config file and restart lucidd; nothing was applied)")]
    NeedsRestart(String),
}

/// Facts about this run.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// Dev or production.
    pub mode: Mode,
    /// When the daemon started.
    pub started_ns: u64,
    /// State directory.
    pub state_dir: PathBuf,
    /// Control socket.
    pub socket: PathBuf,
    /// Config file re-read on SIGHUP (none in dev mode without `--config`).
    pub config_path: Option<PathBuf>,
    /// Group whose members may use the control socket.
    pub control_gid: Option<u32>,
    /// Keys the PII `hash` operator (derived from the host key; never leaves memory).
    pub pii_hash_key: [u8; 32],
    /// Where the gateway listens.
    pub gateway_addr: Option<std::net::SocketAddr>,
    /// The host key: signs passports (the ledger's writer holds its own copy).
    pub host_key: Arc<ed25519_dalek::SigningKey>,
}

/// Shared daemon state.
pub struct AppState {
    /// The evidence ledger.
    pub ledger: Arc<Ledger>,
    /// Facts about this run.
    pub run: RunInfo,
    /// Whether records are being written to journald.
    pub journald: AtomicBool,
    /// Gateway API keys.
    pub keys: crate::access::KeyStore,
    /// Agents' built audit chains, by model (rebuilt when the config changes).
    pub routes: crate::gateway::routes::RouteCache,
    /// Approved models.
    pub models: crate::integrity::approvals::Approvals,
    /// The watch on approved models.
    pub watch: crate::integrity::watch::Watch,
    /// The TPM (or why there is none).
    pub attest: Arc<crate::attest::Attestor>,
    /// What passports keep between issues (launch measurements, the latest passport).
    pub passports: crate::passport::Cache,
    config: RwLock<Arc<ActiveConfig>>,
    apply_lock: tokio::sync::Mutex<()>,
}

impl AppState {
    /// State for a daemon whose configuration is `env` (not yet recorded).
    // The daemon's parts, each built once at start; a parameter struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ledger: Arc<Ledger>,
        run: RunInfo,
        env: Environment,
        source: String,
        keys: crate::access::KeyStore,
        models: crate::integrity::approvals::Approvals,
        watch: WatchPlan,
        attest: Arc<crate::attest::Attestor>,
    ) -> AppState {
        let active = ActiveConfig { digest: env.digest(), env, source, applied_ns: now_ns(), record_seq: None, watch };
        AppState {
            ledger,
            run,
            journald: AtomicBool::new(false),
            keys,
            routes: crate::gateway::routes::RouteCache::default(),
            models,
            watch: Default::default(),
            attest,
            passports: Default::default(),
            config: RwLock::new(Arc::new(active)),
            apply_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<ActiveConfig> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the start of this run and the configuration it loaded.
    pub async fn record_start(&self) -> Result<(), LedgerError> {
        let cfg = self.config();
        let body = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "mode": self.run.mode.as_str(),
            "pid": std::process::id(),
            "verifier_key": self.ledger.verifier_key().to_string(),
        });
        self.ledger.append(lifecycle_entry("lucidd.start", body)).await?;
        let receipt = self
            .ledger
            .append(config_entry("config.load", &cfg, None, &Actor::Daemon("startup"), &[], &self.inventory()))
            .await?;
        self.swap(ActiveConfig { record_seq: Some(receipt.seq), ..(*cfg).clone() });
        Ok(())
    }

    /// Records an orderly stop.
    pub async fn record_stop(&self, signal: &str) -> Result<(), LedgerError> {
        let body = json!({ "signal": signal, "pid": std::process::id() });
        self.ledger.append(lifecycle_entry("lucidd.stop", body)).await.map(|_| ())
    }

    /// Validates `text` and builds what it runs with, records the change, then swaps it
    /// in and puts the model watch's new plan in force before answering. Nothing is
    /// applied if any step before the record fails; a setting that only takes effect at
    /// start is refused (and the refusal recorded) rather than recorded as applied.
    pub async fn apply(&self, text: &str, file: &str, actor: Actor) -> Result<ApplyResponse, ApplyError> {
        let env = config::parse(text, file)?;
        let digest = env.digest();
        // Building may load a classifier (reading its weights): off the runtime's workers.
        let (e, d, f, key) = (env.clone(), digest.clone(), file.to_string(), self.run.pii_hash_key);
        let runtime = tokio::task::spawn_blocking(move || super::runtime::build(&e, &f, &d, key))
            .await
            .map_err(|e| ApplyError::Chain(format!("building the audit chains: {e}")))??;
        let _serial = self.apply_lock.lock().await;
        let old = self.config();
        let subject = match actor {
            Actor::Daemon("SIGHUP") => "config.reload",
            _ => "config.apply",
        };
        let restart = needs_restart(&old.env, &env);
        if !restart.is_empty() {
            let keys = restart.join(", ");
            let body = json!({
                "source": file,
                "current_digest": old.digest,
                "refused_digest": digest,
                "reason": format!("needs a restart: {keys}"),
                "actor": actor.to_json(),
            });
            let entry = Entry { kind: Kind::Config, source: "lucidd".into(), controls: vec!["CC8.1".into()], severity: Severity::Warning, subject: format!("{subject}.refused"), body };
            self.ledger.append(entry).await?;
            tracing::warn!(keys, "configuration refused: it changes settings that take effect only at start");
            return Err(ApplyError::NeedsRestart(keys));
        }
        let new = ActiveConfig { digest, env, source: file.to_string(), applied_ns: now_ns(), record_seq: None, watch: runtime.watch.clone() };
        let changes = config::diff::diff(&old.env.to_json(), &new.env.to_json());
        // The inventory as the new configuration will run: its chains, and the watch as
        // it runs now, or restarting where its plan changes.
        let facts = crate::controls::Facts {
            routes: Some(&runtime.routes),
            watch: (old.watch == runtime.watch).then(|| self.watch.info()),
            pack_note: crate::infer::service::unavailable(),
            attest: Some(self.attest.status()),
        };
        let inventory = crate::controls::inventory(&new.env, &facts);
        let receipt = self.ledger.append(config_entry(subject, &new, Some(&old), &actor, &changes, &inventory)).await?;
        self.swap(ActiveConfig { record_seq: Some(receipt.seq), applied_ns: receipt.time_ns, ..new.clone() });
        self.routes.install(runtime.routes);
        // The watch restarts its source when its plan changed; the answer waits for that,
        // so the caller sees the new settings in force (`status` shows the mode).
        let mut warnings = Vec::new();
        if old.watch != runtime.watch && !self.watch.replan(runtime.watch, std::time::Duration::from_secs(60)).await {
            let warning = "the model watch did not confirm its new settings within 60 s: `lucidctl status` shows what it runs".to_string();
            tracing::error!("{warning}");
            let entry = Entry {
                kind: Kind::System,
                source: "lucidd".into(),
                controls: vec!["CC8.1".into()],
                severity: Severity::Warning,
                subject: "config.watch_unconfirmed".into(),
                body: json!({ "config_record": receipt.seq, "warning": warning }),
            };
            if let Err(e) = self.ledger.append(entry).await {
                tracing::error!(error = %e, "could not record that the watch did not confirm its settings");
            }
            warnings.push(warning);
        }
        if old.digest != new.digest {
            self.measure_config().await;
        }
        tracing::info!(seq = receipt.seq, old = %old.digest, new = %new.digest, changes = changes.len(), "configuration applied");
        Ok(ApplyResponse { seq: receipt.seq, old_digest: old.digest.clone(), new_digest: new.digest, changes, warnings })
    }

    /// SIGHUP: re-reads the config file (or the embedded default) and applies it.
    pub async fn reload(&self) -> Result<ApplyResponse, ApplyError> {
        match &self.run.config_path {
            Some(path) => {
                let file = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
                self.apply(&text, &file, Actor::Daemon("SIGHUP")).await
            }
            None => self.apply(config::DEV_DEFAULT, "embedded:dev", Actor::Daemon("SIGHUP")).await,
        }
    }

    fn swap(&self, active: ActiveConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(active);
    }

    /// The control inventory of the configuration in force, as the daemon runs now.
    pub fn inventory(&self) -> Vec<lucid_common::api::ControlStatus> {
        let cfg = self.config();
        let routes = self.routes.get(self).ok();
        let facts = crate::controls::Facts {
            routes: routes.as_deref(),
            watch: Some(self.watch.info()),
            pack_note: crate::infer::service::unavailable(),
            attest: Some(self.attest.status()),
        };
        crate::controls::inventory(&cfg.env, &facts)
    }

    /// The answer to `GET /v1/status`.
    pub fn status(&self) -> Status {
        let cfg = self.config();
        let inventory = self.inventory();
        let warnings = crate::controls::warnings(&cfg.env, &inventory);
        let ledger = &self.ledger;
        let head = ledger.head();
        let (health, error, failed_since_ns) = match &*ledger.health().borrow() {
            Health::Ok => ("ok".to_string(), None, None),
            Health::Failed { error, since_ns } => ("failed".to_string(), Some(error.clone()), Some(*since_ns)),
        };
        let latest_checkpoint = head.checkpoint.as_ref().and_then(|(_, note)| {
            let cp = lucid_common::checkpoint::Checkpoint::verify(note, ledger.verifier_key()).ok()?;
            Some(CheckpointInfo { size: cp.size, root: lucid_common::hex::encode(&cp.root), time_ns: cp.time_ns })
        });
        let now = now_ns();
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: self.run.mode.as_str().to_string(),
            pid: std::process::id(),
            started_ns: self.run.started_ns,
            uptime_s: now.saturating_sub(self.run.started_ns) / 1_000_000_000,
            state_dir: self.run.state_dir.display().to_string(),
            verifier_key: ledger.verifier_key().to_string(),
            journald: self.journald.load(Ordering::Relaxed),
            gateway: self.run.gateway_addr.map(|a| a.to_string()),
            config: ConfigStatus {
                name: cfg.env.metadata.name.clone(),
                source: cfg.source.clone(),
                digest: cfg.digest.clone(),
                applied_ns: cfg.applied_ns,
                record_seq: cfg.record_seq,
                retention_days: cfg.env.retention_days(),
                agents: cfg
                    .env
                    .spec
                    .agents
                    .iter()
                    .map(|a| {
                        // Only what operates, wholly or in part; the inventory says the rest.
                        let controls: Vec<String> = inventory
                            .iter()
                            .filter(|c| c.agent == a.name && c.state != lucid_common::api::ControlState::NotOperating)
                            .map(|c| c.control.clone())
                            .collect();
                        AgentStatus {
                            name: a.name.clone(),
                            model: a.model.id.clone(),
                            pre_request: a.audit_chain.pre_request.iter().map(|c| c.auditor_id.as_str().to_string()).collect(),
                            post_response: a.audit_chain.post_response.iter().map(|c| c.auditor_id.as_str().to_string()).collect(),
                            controls,
                        }
                    })
                    .collect(),
            },
            ledger: LedgerStatus {
                health,
                error,
                failed_since_ns,
                refused_appends: ledger.refused_appends(),
                records: head.next_seq,
                latest_checkpoint,
                pruned_to: ledger.pruned_to().unwrap_or(0),
                db_bytes: ledger.db_bytes(),
                path: ledger.options().path.display().to_string(),
            },
            classifiers: crate::infer::service::loaded().iter().map(|c| classifier_status(c)).collect(),
            classifier_note: crate::infer::service::unavailable(),
            controls: inventory,
            warnings,
            attestation: {
                let mut a = self.attest.status();
                a.latest_passport = crate::passport::latest(self).ok().flatten().map(|(p, _)| p);
                a
            },
            integrity_watch: {
                let i = self.watch.info();
                let recheck_minutes = self.watch.plan().filter(|p| p.enabled).map(|p| p.recheck.as_secs() / 60);
                lucid_common::api::WatchStatus { mode: i.mode, detail: i.detail, changes: i.changes, lost: i.lost, enforcement: i.enforcement, recheck_minutes }
            },
        }
    }
}

/// Settings read only when lucidd starts, that differ between `old` and `new`.
/// Everything else takes effect on apply: the chains are rebuilt, the body limit is read
/// per request, and the model watch is given its new plan.
fn needs_restart(old: &Environment, new: &Environment) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.spec.gateway.listen != new.spec.gateway.listen {
        keys.push("spec.gateway.listen");
    }
    if old.spec.attestation != new.spec.attestation {
        keys.push("spec.attestation");
    }
    keys
}

/// An access-control change (a key created or revoked): CC6.1, CC6.2, CC6.3.
pub fn access_entry(subject: &str, key: &crate::access::ApiKey, actor: &Actor) -> Entry {
    Entry {
        kind: Kind::Config,
        source: "lucidd".into(),
        controls: vec!["CC6.1".into(), "CC6.2".into(), "CC6.3".into()],
        severity: Severity::Notice,
        subject: subject.into(),
        body: json!({
            "key_id": key.id,
            "name": key.name,
            "agents": key.agents,
            "rate_per_minute": key.rate_per_minute,
            "revoked_ns": key.revoked_ns,
            "actor": actor.to_json(),
        }),
    }
}

/// A daemon lifecycle record (start, stop): monitoring evidence (CC7.2).
fn lifecycle_entry(subject: &str, body: serde_json::Value) -> Entry {
    Entry {
        kind: Kind::System,
        source: "lucidd".into(),
        controls: vec!["CC7.2".into()],
        severity: Severity::Notice,
        subject: subject.into(),
        body,
    }
}

fn config_entry(
    subject: &str,
    new: &ActiveConfig,
    old: Option<&ActiveConfig>,
    actor: &Actor,
    changes: &[lucid_common::api::ConfigChange],
    controls: &[lucid_common::api::ControlStatus],
) -> Entry {
    Entry {
        kind: Kind::Config,
        source: "lucidd".into(),
        controls: vec!["CC8.1".into()],
        severity: Severity::Notice,
        subject: subject.into(),
        body: json!({
            "source": new.source,
            "name": new.env.metadata.name,
            "old_digest": old.map(|o| o.digest.clone()),
            "new_digest": new.digest,
            "changes": changes,
            "actor": actor.to_json(),
            "controls": controls,
        }),
    }
}

/// A loaded classifier as `status` shows it.
fn classifier_status(c: &crate::infer::service::Classifier) -> lucid_common::api::ClassifierStatus {
    let stats = &c.batcher.stats;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let requests = get(&stats.requests);
    let scoring = c.batcher.model().scoring();
    let (backend, device, reason) = match (c.choice.backend, scoring.backend) {
        ("cuda", "cpu") => (
            "cpu".to_string(),
            crate::infer::backend::cpu_device(),
            format!("{}; then the GPU {}: {}", c.choice.reason, scoring.detail, scoring.gpu_error.clone().unwrap_or_default()),
        ),
        _ => (c.choice.backend.to_string(), c.choice.device.clone(), c.choice.reason.clone()),
    };
    lucid_common::api::ClassifierStatus {
        model: c.dir.display().to_string(),
        backend,
        device,
        reason,
        gpu_fallbacks: scoring.gpu_fallbacks,
        gpu_error: scoring.gpu_error,
        heads: c.batcher.model().heads.iter().map(|h| format!("{} ({})", h.name, h.labels.join(", "))).collect(),
        load_ms: c.load_ms,
        batches: get(&stats.batches),
        requests,
        windows: get(&stats.windows),
        tokens: get(&stats.tokens),
        expired: get(&stats.expired),
        rejected: get(&stats.rejected),
        mean_wait_us: get(&stats.wait_us).checked_div(requests).unwrap_or(0),
        max_wait_us: get(&stats.max_wait_us),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::model::tests::Failing;

    /// Issue 13: a model whose GPU was given up was still shown on `cuda`.
    #[test]
    fn status_names_the_device_that_scores_and_the_last_gpu_error() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/infer/bert");
        let mut model = crate::infer::Model::load(&dir).unwrap();
        model.attach_accelerator(Box::new(Failing), "NVIDIA H100 (sm_90)");
        let batcher = crate::infer::batcher::Batcher::start(Arc::new(model), Default::default()).unwrap();
        let choice = crate::infer::backend::Choice { backend: "cuda", device: "NVIDIA H100 (sm_90)".into(), reason: "CLASSIFIER_BACKEND=cuda".into() };
        let c = crate::infer::service::Classifier {
            dir,
            wanted: crate::config::values::BackendChoice::Cuda,
            precision: crate::config::values::Precision::F32,
            choice,
            batcher,
            load_ms: 0,
        };
        assert_eq!((classifier_status(&c).backend.as_str(), classifier_status(&c).device.as_str()), ("cuda", "NVIDIA H100 (sm_90)"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for _ in 0..3 {
            c.batcher.score(&["a text"], crate::infer::batcher::Priority::Prompt, deadline).unwrap();
        }
        let s = classifier_status(&c);
        assert_eq!(s.backend, "cpu");
        assert_eq!(s.device, crate::infer::backend::cpu_device());
        assert!(s.reason.contains("NVIDIA H100 (sm_90) given up after 3 failed passes in a row: CUDA_ERROR_ILLEGAL_ADDRESS"), "{}", s.reason);
        assert_eq!((s.gpu_fallbacks, s.gpu_error.as_deref()), (3, Some("CUDA_ERROR_ILLEGAL_ADDRESS in masked_softmax")));
    }
}
