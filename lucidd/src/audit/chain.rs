//! Runs the configured auditors of one stage, in order, on a [`Subject`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lucid_common::record::{Entry, Kind, Severity};
use serde::Serialize;
use serde_json::json;

use super::classify::ModelSignals;
use super::guardrails::GuardrailsAuditor;
use super::pii::PiiAuditor;
use super::secrets::{RuleSet, SecretsAuditor};
use super::{Auditor, Outcome, Stage, Subject, Verdict};
use crate::config::auditors::{AuditorId, AuditorSettings, GuardrailsEnv};
use crate::config::values::ClassifierModel;
use crate::infer::service;
use crate::config::model::FailPolicy;
use crate::config::{AuditChain, AuditorConfig};

/// A configured auditor in a chain.
pub struct Link {
    /// Its configuration entry.
    pub config: AuditorConfig,
    /// The auditor; `None` for auditors with no per-request work (observability, eval).
    pub auditor: Option<Arc<dyn Auditor>>,
}

/// An agent's two stages, built from configuration.
pub struct Chain {
    /// `preRequest`.
    pub pre: Vec<Link>,
    /// `postResponse`.
    pub post: Vec<Link>,
    /// Whether proceed decisions are recorded too (`LOG_ALL_EVENTS`).
    pub log_all: bool,
    /// Whether some auditor waits on a classifier (the chain then runs on a blocking
    /// thread).
    pub blocks: bool,
}

/// What one auditor decided for one request, with how long it took.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// Which auditor.
    pub auditor: AuditorId,
    /// Its display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The stage.
    pub stage: Stage,
    /// SOC 2 controls it evidences.
    pub controls: Vec<String>,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Microseconds it took.
    pub latency_us: u64,
    /// How far past its `timeoutMs` budget the verdict came, in microseconds (the
    /// verdict stands; this is recorded with control PI1.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_us: Option<u64>,
    /// Set when the auditor failed or ran out of time and its fail policy decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// Why a chain could not be built, and where in the configuration (the setting at
/// fault, else the auditor's entry), so the error names file, line and column.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    /// What is wrong.
    pub message: String,
    /// Where the setting at fault was written, if known.
    pub span: Option<(u64, u64)>,
}

impl BuildError {
    /// An error about `key` of the auditor entry `c`.
    fn at(c: &AuditorConfig, key: &str, message: String) -> BuildError {
        BuildError { message, span: c.spans.of(Some(key)) }
    }
}

impl Chain {
    /// Builds the auditors of an agent's chain. `hash_key` keys PII hashing.
    pub fn build(chain: &AuditChain, hash_key: [u8; 32]) -> Result<Chain, BuildError> {
        let build_stage = |links: &[AuditorConfig]| -> Result<Vec<Link>, BuildError> {
            links.iter().map(|c| Ok(Link { config: c.clone(), auditor: build_auditor(c, hash_key)? })).collect()
        };
        let log_all = chain.pre_request.iter().chain(&chain.post_response).all(|c| match &c.env {
            AuditorSettings::Observability(o) => o.log_all_events.0,
            _ => true,
        });
        let (pre, post) = (build_stage(&chain.pre_request)?, build_stage(&chain.post_response)?);
        let blocks = pre.iter().chain(&post).any(|l| l.auditor.as_ref().is_some_and(|a| a.blocks()));
        Ok(Chain { pre, post, log_all, blocks })
    }

    /// Runs a stage: applies redactions as it goes, stops at the first deny.
    ///
    /// A verdict an auditor returns stands, however late: lateness is recorded beside
    /// it (`late_us`, PI1.3), never turned into the fail policy, so padding a prompt
    /// cannot weaken a deny or a redaction. The fail policy decides only where an
    /// auditor could not conclude (an error, a panic, a classifier past its deadline),
    /// and even then what it did conclude stands where that is stricter.
    pub fn run(&self, stage: Stage, subject: &mut Subject) -> Vec<Decision> {
        let links = match stage {
            Stage::PreRequest => &self.pre,
            Stage::PostResponse => &self.post,
        };
        let mut decisions = Vec::new();
        for link in links {
            let Some(auditor) = &link.auditor else { continue };
            let budget = Duration::from_millis(u64::from(link.config.timeout_ms));
            let started = Instant::now();
            // A panicking auditor is a failing one: its fail policy decides, and the
            // chain (and the request) carry on.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| auditor.audit(stage, subject, started + budget)));
            let elapsed = started.elapsed();
            let latency_us = elapsed.as_micros() as u64;
            let late_us = elapsed.checked_sub(budget).map(|d| d.as_micros() as u64).filter(|l| *l > 0);
            let (verdict, failure) = match result {
                Ok(Ok(v)) => (v, None),
                Ok(Err(e)) => failed(&link.config, e.message, e.partial.map(|v| *v)),
                Err(_) => failed(&link.config, "the auditor panicked".into(), None),
            };
            if verdict.outcome == Outcome::Redact {
                subject.apply(&verdict.redactions);
            }
            let mut controls: Vec<String> = link.config.auditor_id.controls().iter().map(|c| c.to_string()).collect();
            if late_us.is_some() {
                controls.push("PI1.3".into());
            }
            if failure.is_some() {
                controls.push("PI1.5".into());
            }
            let deny = verdict.outcome == Outcome::Deny;
            decisions.push(Decision {
                auditor: link.config.auditor_id,
                name: link.config.name.clone(),
                stage,
                controls,
                verdict,
                latency_us,
                late_us,
                failure,
            });
            if deny {
                break;
            }
        }
        decisions
    }
}

/// The verdict of an auditor that could not conclude: its fail policy's outcome, or
/// what it had found before it stopped (`partial`) where that is stricter; the partial
/// findings and scores are kept either way.
fn failed(config: &AuditorConfig, why: String, partial: Option<Verdict>) -> (Verdict, Option<String>) {
    let policy = match config.fail_policy {
        FailPolicy::Closed => Outcome::Deny,
        FailPolicy::Open => Outcome::Warn,
    };
    let failing = match config.fail_policy {
        FailPolicy::Closed => "closed",
        FailPolicy::Open => "open",
    };
    let mut v = partial.unwrap_or_else(Verdict::proceed);
    let found = v.reason.take();
    v.reason = Some(match (found, v.outcome > policy) {
        (Some(found), true) => format!("{found} (the auditor then could not finish: {why}; what it found stands)"),
        (Some(found), false) => format!("auditor could not decide ({why}); failing {failing}; found before that: {found}"),
        (None, _) => format!("auditor could not decide ({why}); failing {failing}"),
    });
    v.outcome = v.outcome.max(policy);
    if v.outcome != Outcome::Redact {
        v.redactions.clear();
    }
    (v, Some(why))
}

fn build_auditor(c: &AuditorConfig, hash_key: [u8; 32]) -> Result<Option<Arc<dyn Auditor>>, BuildError> {
    Ok(match &c.env {
        AuditorSettings::Guardrails(env) => {
            let model = classifier(c, env)?;
            Some(Arc::new(GuardrailsAuditor::new(env.clone(), model)))
        }
        AuditorSettings::PiiCompliance(env) => Some(Arc::new(PiiAuditor::new(env.clone(), hash_key, names_classifier(env)))),
        AuditorSettings::Policy(env) => {
            let rules = match &env.gitleaks_config.0 {
                Some(path) => Arc::new(RuleSet::load(path).map_err(|e| BuildError::at(c, "GITLEAKS_CONFIG", format!("GITLEAKS_CONFIG: {e}")))?),
                None => RuleSet::builtin().map_err(|e| BuildError { message: e, span: c.spans.entry })?,
            };
            Some(Arc::new(SecretsAuditor::new(c.auditor_id, env.clone(), rules)))
        }
        AuditorSettings::Observability(_) | AuditorSettings::Eval(_) => None,
    })
}

/// The default pack, for the PII auditor's names (its token head), where detection is
/// on and the pack is installed and loads; else none, and names go undetected (the
/// control inventory says so). The pack is loaded once, whichever auditor asks first.
fn names_classifier(env: &crate::config::auditors::PiiEnv) -> Option<Arc<service::Classifier>> {
    if !env.pii_detection_enabled.0 {
        return None;
    }
    let dir = service::builtin_dir().ok().flatten()?;
    match service::shared(&dir) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(pack = %dir.display(), error = %e, "the model pack does not load: people's names are not detected");
            None
        }
    }
}

/// The classifier a guardrails auditor scores with: the default pack where installed
/// (heuristics alone, noted for `status`, where not), none, or the configured directory,
/// which must load (on the GPU, when `CLASSIFIER_BACKEND` is `cuda`).
fn classifier(c: &AuditorConfig, env: &GuardrailsEnv) -> Result<Option<ModelSignals>, BuildError> {
    let dir = match &env.classifier_model {
        ClassifierModel::Off => return Ok(None),
        ClassifierModel::Dir(d) => PathBuf::from(d),
        ClassifierModel::Builtin => match service::builtin_dir() {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(None),
            Err(why) => {
                service::note_unavailable(&why);
                return Ok(None);
            }
        },
    };
    let loaded = service::load(&dir, env.classifier_backend, env.classifier_precision).map_err(|e| {
        // A model that loads but not on the GPU asked for is the backend's fault.
        let backend = env.classifier_backend == crate::config::values::BackendChoice::Cuda
            && (matches!(e, crate::infer::InferError::Gpu(_)) || e.to_string().contains("CLASSIFIER_BACKEND"));
        match backend {
            true => BuildError::at(c, "CLASSIFIER_BACKEND", format!("CLASSIFIER_BACKEND cuda ({}): {e}", dir.display())),
            false => BuildError::at(c, "CLASSIFIER_MODEL", format!("CLASSIFIER_MODEL {}: {e}", dir.display())),
        }
    })?;
    ModelSignals::new(loaded, &env.classifier_labels).map(Some).map_err(|e| BuildError::at(c, "CLASSIFIER_LABELS", e))
}

/// Who and what a decision was about, for its ledger record.
#[derive(Clone, Debug, Serialize)]
pub struct RequestInfo {
    /// The request id returned to the client.
    pub request_id: String,
    /// Agent name.
    pub agent: String,
    /// Model id.
    pub model: String,
    /// API key id, if the client used one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Which endpoint (`chat.completions`, `audit`, ...).
    pub endpoint: String,
    /// System or developer messages left unread because their digest is listed in
    /// `exemptSystemPrompts`.
    #[serde(skip_serializing_if = "is_zero")]
    pub exempt_system_prompts: usize,
    /// Content forwarded unread because the agent allows its modality
    /// (`gateway.allowModalities`), e.g. `image at /messages/1/content/0`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unaudited: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The ledger record of one decision: ids, outcome, scores, span types and offsets,
/// latency. Never the text.
pub fn decision_entry(info: &RequestInfo, d: &Decision) -> Entry {
    let severity = match d.verdict.outcome {
        Outcome::Proceed => Severity::Info,
        Outcome::Warn | Outcome::Redact => Severity::Notice,
        Outcome::Deny => Severity::Warning,
    };
    Entry {
        kind: Kind::Decision,
        source: "gateway".into(),
        controls: d.controls.clone(),
        severity,
        subject: info.request_id.clone(),
        body: json!({
            "request": info,
            "auditor": d.auditor,
            "name": d.name,
            "stage": d.stage,
            "outcome": d.verdict.outcome,
            "reason": d.verdict.reason,
            "scores": d.verdict.scores,
            "spans": d.verdict.findings,
            "latency_us": d.latency_us,
            "late_us": d.late_us,
            "failure": d.failure,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(policy: &str, timeout_ms: u32) -> Chain {
        let yaml = format!(
            "apiVersion: lucid.io/v1alpha1\nkind: LucidEnvironment\nmetadata:\n  name: t\nspec:\n  agents:\n    - name: a\n      model:\n        id: m\n      auditChain:\n        preRequest:\n          - auditorId: lucid-pii-compliance-auditor\n            failPolicy: {policy}\n            timeoutMs: {timeout_ms}\n          - auditorId: lucid-policy-auditor\n            failPolicy: {policy}\n            timeoutMs: {timeout_ms}\n"
        );
        let env = crate::config::parse(&yaml, "t").unwrap();
        Chain::build(&env.spec.agents[0].audit_chain, [0; 32]).unwrap()
    }

    fn big_subject() -> Subject {
        // Enough text that scanning it takes longer than a 1 ms budget.
        let text = "mail a.b@example.com or call +1 415 555 0100 about it. ".repeat(2_000);
        Subject::new([(Some("user".into()), text)])
    }

    /// Issue 13: a verdict that came back after its budget used to be replaced by the
    /// fail policy, so with `failPolicy: open` a padded prompt's redaction or deny
    /// became a warning and the text went upstream as written.
    #[test]
    fn a_late_verdict_stands_and_its_lateness_is_recorded_issue_13() {
        for policy in ["closed", "open"] {
            let decisions = chain(policy, 1).run(Stage::PreRequest, &mut big_subject());
            assert_eq!(decisions[0].verdict.outcome, Outcome::Redact, "{policy}: the PII found is redacted, late or not");
            assert!(decisions[0].failure.is_none(), "{policy}");
            assert!(decisions[0].late_us.is_some_and(|l| l > 0), "{policy}: the lateness is recorded");
            assert!(decisions[0].controls.contains(&"PI1.3".to_string()));
            assert!(!decisions[0].controls.contains(&"PI1.5".to_string()), "no fail policy was applied");
            assert_eq!(decisions.len(), 2, "{policy}: the chain goes on after a redaction");
        }
        // 64 KiB of padding before a private key: the credential auditor denies.
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MaoTTAtjv4WZlF0qnIA9\n-----END RSA PRIVATE KEY-----";
        let text = format!("{}{key}", "lorem ipsum dolor sit amet ".repeat(64 * 1024 / 27));
        let decisions = chain("open", 1).run(Stage::PreRequest, &mut Subject::new([(Some("user".into()), text)]));
        let last = decisions.last().map(|d| (d.auditor, d.verdict.outcome));
        assert_eq!(last, Some((AuditorId::Policy, Outcome::Deny)), "{:?}", decisions.iter().map(|d| &d.verdict.reason).collect::<Vec<_>>());
        assert!(decisions.last().is_some_and(|d| d.late_us.is_some() && d.failure.is_none()), "late, and its deny stands");

        let decisions = chain("closed", 60_000).run(Stage::PreRequest, &mut Subject::new([(None, "mail a@b.co".to_string())]));
        assert_eq!(decisions[0].verdict.outcome, Outcome::Redact);
        assert!(decisions[0].failure.is_none() && decisions[0].late_us.is_none());
    }

    /// Fails with what it had concluded before.
    struct Unfinished(Option<Outcome>);

    impl Auditor for Unfinished {
        fn id(&self) -> AuditorId {
            AuditorId::Guardrails
        }

        fn audit(&self, _stage: Stage, _subject: &Subject, _deadline: Instant) -> Result<Verdict, crate::audit::AuditError> {
            let err = crate::audit::AuditError::new("classifier deadline passed");
            Err(match self.0 {
                Some(outcome) => {
                    let mut v = Verdict::proceed();
                    v.outcome = outcome;
                    if outcome != Outcome::Proceed {
                        v.reason = Some("injection score 0.90 reaches the threshold 0.80".into());
                    }
                    err.with_partial(v)
                }
                None => err,
            })
        }
    }

    #[test]
    fn an_auditor_that_cannot_finish_fails_by_policy_unless_what_it_found_is_stricter() {
        for (policy, partial, want) in [
            ("open", None, Outcome::Warn),
            ("closed", None, Outcome::Deny),
            ("open", Some(Outcome::Deny), Outcome::Deny),
            ("open", Some(Outcome::Proceed), Outcome::Warn),
            ("closed", Some(Outcome::Warn), Outcome::Deny),
        ] {
            let mut c = chain(policy, 60_000);
            c.pre[0].auditor = Some(Arc::new(Unfinished(partial)));
            let d = c.run(Stage::PreRequest, &mut Subject::new([(None, "hello".to_string())]));
            assert_eq!(d[0].verdict.outcome, want, "{policy} {partial:?}");
            assert_eq!(d[0].failure.as_deref(), Some("classifier deadline passed"));
            assert!(d[0].controls.contains(&"PI1.5".to_string()));
            let reason = d[0].verdict.reason.clone().unwrap_or_default();
            assert!(reason.contains("classifier deadline passed"), "{reason}");
            assert_eq!(reason.contains("injection score"), partial.is_some_and(|p| p != Outcome::Proceed), "{reason}");
        }
    }

    struct Panics;

    impl Auditor for Panics {
        fn id(&self) -> AuditorId {
            AuditorId::PiiCompliance
        }

        fn audit(&self, _stage: Stage, _subject: &Subject, _deadline: Instant) -> Result<Verdict, crate::audit::AuditError> {
            panic!("auditor bug")
        }
    }

    #[test]
    fn a_panicking_auditor_fails_by_its_policy() {
        for (policy, outcome, decisions) in [("closed", Outcome::Deny, 1), ("open", Outcome::Warn, 2)] {
            let mut c = chain(policy, 60_000);
            c.pre[0].auditor = Some(Arc::new(Panics));
            let d = c.run(Stage::PreRequest, &mut Subject::new([(None, "hello".to_string())]));
            assert_eq!(d.len(), decisions, "{policy}");
            assert_eq!(d[0].verdict.outcome, outcome);
            assert_eq!(d[0].failure.as_deref(), Some("the auditor panicked"));
            assert!(d[0].controls.contains(&"PI1.5".to_string()));
        }
    }

    #[test]
    fn a_bad_gitleaks_file_is_refused_when_the_chain_is_built() {
        let yaml = "apiVersion: lucid.io/v1alpha1\nkind: LucidEnvironment\nmetadata:\n  name: t\nspec:\n  agents:\n    - name: a\n      model:\n        id: m\n      auditChain:\n        preRequest:\n          - auditorId: lucid-secrets-auditor\n            env:\n              GITLEAKS_CONFIG: /nonexistent/gitleaks.toml\n";
        let env = crate::config::parse(yaml, "t").unwrap();
        let err = Chain::build(&env.spec.agents[0].audit_chain, [0; 32]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("/nonexistent/gitleaks.toml"), "{err}");
    }
}
