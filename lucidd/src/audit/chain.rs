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
    /// Set when the auditor failed or ran out of time and its fail policy decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// Why a chain could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

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
    pub fn run(&self, stage: Stage, subject: &mut Subject) -> Vec<Decision> {
        let links = match stage {
            Stage::PreRequest => &self.pre,
            Stage::PostResponse => &self.post,
        };
        let mut decisions = Vec::new();
        for link in links {
            let Some(auditor) = &link.auditor else { continue };
            let started = Instant::now();
            // A panicking auditor is a failing one: its fail policy decides, and the
            // chain (and the request) carry on.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| auditor.audit(stage, subject)));
            let latency_us = started.elapsed().as_micros() as u64;
            let budget_us = u64::from(link.config.timeout_ms) * 1000;
            let (verdict, failure) = match result {
                Ok(Ok(v)) if latency_us <= budget_us => (v, None),
                Ok(Ok(_)) => failed(&link.config, format!("took {latency_us} us, over its {} ms budget", link.config.timeout_ms)),
                Ok(Err(e)) => failed(&link.config, e.to_string()),
                Err(_) => failed(&link.config, "the auditor panicked".into()),
            };
            if verdict.outcome == Outcome::Redact {
                subject.apply(&verdict.redactions);
            }
            let mut controls: Vec<String> = link.config.auditor_id.controls().iter().map(|c| c.to_string()).collect();
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
                failure,
            });
            if deny {
                break;
            }
        }
        decisions
    }
}

fn failed(config: &AuditorConfig, why: String) -> (Verdict, Option<String>) {
    let mut v = Verdict::proceed();
    v.outcome = match config.fail_policy {
        FailPolicy::Closed => Outcome::Deny,
        FailPolicy::Open => Outcome::Warn,
    };
    v.reason = Some(format!("auditor could not decide ({why}); failing {}", match config.fail_policy {
        FailPolicy::Closed => "closed",
        FailPolicy::Open => "open",
    }));
    (v, Some(why))
}

fn build_auditor(c: &AuditorConfig, hash_key: [u8; 32]) -> Result<Option<Arc<dyn Auditor>>, BuildError> {
    Ok(match &c.env {
        AuditorSettings::Guardrails(env) => {
            let model = classifier(env)?;
            Some(Arc::new(GuardrailsAuditor::new(env.clone(), model, Duration::from_millis(u64::from(c.timeout_ms)))))
        }
        AuditorSettings::PiiCompliance(env) => Some(Arc::new(PiiAuditor::new(env.clone(), hash_key))),
        AuditorSettings::Policy(env) => {
            let rules = match &env.gitleaks_config.0 {
                Some(path) => Arc::new(RuleSet::load(path).map_err(|e| BuildError(e.to_string()))?),
                None => RuleSet::builtin().map_err(BuildError)?,
            };
            Some(Arc::new(SecretsAuditor::new(c.auditor_id, env.clone(), rules)))
        }
        AuditorSettings::Observability(_) | AuditorSettings::Eval(_) => None,
    })
}

/// The classifier a guardrails auditor scores with: the default pack where installed
/// (heuristics alone, noted for `status`, where not), none, or the configured directory,
/// which must load.
fn classifier(env: &GuardrailsEnv) -> Result<Option<ModelSignals>, BuildError> {
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
    let loaded = service::load(&dir, env.classifier_backend, env.classifier_precision).map_err(|e| BuildError(format!("CLASSIFIER_MODEL {}: {e}", dir.display())))?;
    ModelSignals::new(loaded, &env.classifier_labels).map(Some).map_err(BuildError)
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
            "failure": d.failure,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(policy: &str, timeout_ms: u32) -> Chain {
        let yaml = format!(
            "apiVersion: lucid.io/v1alpha1\nkind: LucidEnvironment\nmetadata:\n  name: t\nspec:\n  agents:\n    - name: a\n      model:\n        id: m\n      auditChain:\n        preRequest:\n          - auditorId: lucid-pii-compliance-auditor\n            failPolicy: {policy}\n            timeoutMs: {timeout_ms}\n          - auditorId: lucid-policy-auditor\n"
        );
        let env = crate::config::parse(&yaml, "t").unwrap();
        Chain::build(&env.spec.agents[0].audit_chain, [0; 32]).unwrap()
    }

    fn big_subject() -> Subject {
        // Enough text that scanning it takes longer than a 1 ms budget.
        let text = "mail a.b@example.com or call +1 415 555 0100 about it. ".repeat(2_000);
        Subject::new([(Some("user".into()), text)])
    }

    #[test]
    fn an_auditor_over_its_budget_fails_closed_or_open_and_says_so() {
        let decisions = chain("closed", 1).run(Stage::PreRequest, &mut big_subject());
        assert_eq!(decisions.len(), 1, "a deny stops the chain");
        assert_eq!(decisions[0].verdict.outcome, Outcome::Deny);
        assert!(decisions[0].failure.as_deref().unwrap_or_default().contains("budget"));
        assert!(decisions[0].controls.contains(&"PI1.5".to_string()));

        let decisions = chain("open", 1).run(Stage::PreRequest, &mut big_subject());
        assert_eq!(decisions[0].verdict.outcome, Outcome::Warn);
        assert_eq!(decisions.len(), 2, "failing open lets the chain go on");

        let decisions = chain("closed", 60_000).run(Stage::PreRequest, &mut Subject::new([(None, "mail a@b.co".to_string())]));
        assert_eq!(decisions[0].verdict.outcome, Outcome::Redact);
        assert!(decisions[0].failure.is_none());
    }

    struct Panics;

    impl Auditor for Panics {
        fn id(&self) -> AuditorId {
            AuditorId::PiiCompliance
        }

        fn audit(&self, _stage: Stage, _subject: &Subject) -> Result<Verdict, crate::audit::AuditError> {
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
