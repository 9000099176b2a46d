//! The control inventory: for each SOC 2 control of each agent, whether it is
//! operating, by which auditor and settings, and if not, why.
//!
//! An auditor listed in a chain is not a control in force: a setting may switch part of
//! it off, a part may not be implemented in this version, a classifier may be missing
//! or a GPU given up, a watch may run below the mode asked for. The inventory states
//! each of those plainly, so `status`, the `config` record and the evidence built on
//! them never list a control as covered when nothing implements it. It is computed from
//! the configuration and the facts of the running daemon, never stored.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use lucid_common::api::{ControlPart, ControlState, ControlStatus};

use crate::audit::{ClassifierFacts, Stage};
use crate::config::auditors::{AuditorSettings, EvalEnv, GuardrailsEnv, ObservabilityEnv, PiiEnv, PolicyEnv};
use crate::config::values::{ClassifierModel, Signal};
use crate::config::{Agent, AuditorConfig, Environment};
use crate::gateway::routes::Routes;
use crate::integrity::watch::WatchInfo;

/// What the inventory knows of the running daemon besides the configuration.
#[derive(Default)]
pub struct Facts<'a> {
    /// The built chains (which classifier each guardrails auditor scores with).
    pub routes: Option<&'a Routes>,
    /// The model watch as it runs; `None` while it is being given new settings.
    pub watch: Option<WatchInfo>,
    /// Why the default classifier pack is not in use, where it was asked for.
    pub pack_note: Option<String>,
    /// The TPM as the daemon runs it; `None` where no daemon runs (check-config).
    pub attest: Option<lucid_common::api::AttestStatus>,
}

/// The inventory of `env`: one entry per (agent, control), in agent then control order.
pub fn inventory(env: &Environment, facts: &Facts) -> Vec<ControlStatus> {
    let mut out = Vec::new();
    for agent in &env.spec.agents {
        let mut by_control: BTreeMap<&'static str, Vec<ControlPart>> = BTreeMap::new();
        for (stage, links) in [(Stage::PreRequest, &agent.audit_chain.pre_request), (Stage::PostResponse, &agent.audit_chain.post_response)] {
            for (i, c) in links.iter().enumerate() {
                for (controls, part) in parts(env, agent, stage, i, c, facts) {
                    for control in controls {
                        by_control.entry(control).or_default().push(part.clone());
                    }
                }
            }
        }
        // What the gateway forwards unread for this agent weakens what reads prompts.
        if !agent.gateway.allow_modalities.is_empty() {
            let kinds: Vec<&str> = agent.gateway.allow_modalities.iter().map(|m| m.as_str()).collect();
            let part = ControlPart {
                auditor: "lucidd".into(),
                stage: Some(Stage::PreRequest.as_str().to_string()),
                does: format!("forwards {} content unaudited to the model; each such request is recorded with where it was", kinds.join(", ")),
                settings: vec![format!("gateway.allowModalities={}", kinds.join(","))],
                state: ControlState::Degraded,
                why: Some("no auditor reads images, audio, files or video".into()),
            };
            for control in ["CC6.6", "C1.1"] {
                by_control.entry(control).or_default().push(part.clone());
            }
        }
        // What this agent's chain does not configure is listed too, and said so: a
        // control none of whose usual auditors is in the chain is not operating, and one
        // that lacks some of them is partial.
        for (control, auditor, does) in KNOWN {
            let parts = by_control.entry(control).or_default();
            if !parts.iter().any(|p| p.auditor == auditor) {
                parts.push(ControlPart {
                    auditor: auditor.to_string(),
                    stage: None,
                    does: does.to_string(),
                    settings: Vec::new(),
                    state: ControlState::NotOperating,
                    why: Some(format!("not configured: this agent's chain has no {auditor}")),
                });
            }
        }
        if let Some(a) = &facts.attest {
            for (control, part) in tpm_parts(a) {
                by_control.entry(control).or_default().push(part);
            }
        }
        for (control, parts) in by_control {
            out.push(ControlStatus { agent: agent.name.clone(), control: control.to_string(), state: overall(&parts), parts });
        }
    }
    out
}

/// Every control lucidd can evidence, with the auditor whose part of it an agent's chain
/// must have, and what that part does: listed as not configured where the chain lacks it.
const KNOWN: [(&str, &str, &str); 9] = [
    ("C1.1", "lucid-pii-compliance-auditor", "reads messages and answers for personal data"),
    ("CC6.1", "lucid-pii-compliance-auditor", "requires API keys on the gateway"),
    ("CC6.3", "lucid-pii-compliance-auditor", "requires API keys, refused once revoked"),
    ("CC6.6", "lucid-guardrails-auditor", "reads every message for prompt injection and jailbreaks"),
    ("CC7.1", "lucid-eval-auditor", "watches approved model files for changes"),
    ("CC7.2", "lucid-observability-auditor", "records decisions in the evidence ledger"),
    ("CC7.3", "lucid-observability-auditor", "detects anomalies in traffic and raises them"),
    ("CC8.1", "lucid-eval-auditor", "watches approved model files and judges every change"),
    ("P1.1", "lucid-pii-compliance-auditor", "reads messages for personal data"),
];

/// The TPM's part of CC7.2 (a ledger that cannot be rolled back unseen, passports the
/// TPM quotes) and CC8.1 (measured launch): operating with a working TPM, degraded while
/// it fails, not operating without one.
fn tpm_parts(a: &lucid_common::api::AttestStatus) -> Vec<(&'static str, ControlPart)> {
    let (state, why) = match (a.available, &a.failing, &a.unavailable) {
        (true, None, _) => (ControlState::Operating, None),
        (true, Some(f), _) => (ControlState::Degraded, Some(format!("the TPM is failing: {f}; passports are issued unanchored until it answers"))),
        (false, _, why) => (ControlState::NotOperating, Some(format!("{}: passports are unanchored and a ledger whose tail was removed with its checkpoints is not detected", why.as_deref().unwrap_or("no TPM")))),
    };
    let settings = vec![format!("attestation.tpm={}", a.mode), format!("attestation.tcti={}", a.tcti), format!("attestation.applicationPcr={}", a.application_pcr)];
    let part = |does: &str| ControlPart { auditor: "lucidd".into(), stage: None, does: does.into(), settings: settings.clone(), state, why: why.clone() };
    vec![
        ("CC7.2", part("anchors the evidence ledger in the TPM's NV counter (a rolled-back ledger is refused at start) and has every passport quoted by the TPM")),
        ("CC8.1", part(&format!("measures lucidd, the configuration and each approved model into PCR {}, replayable from the ledger", a.application_pcr))),
    ]
}

/// Operating if every part operates; not operating if none operates or runs degraded;
/// partial between.
fn overall(parts: &[ControlPart]) -> ControlState {
    if parts.iter().all(|p| p.state == ControlState::Operating) {
        ControlState::Operating
    } else if parts.iter().all(|p| p.state == ControlState::NotOperating) {
        ControlState::NotOperating
    } else {
        ControlState::Partial
    }
}

/// What the operator should hear about `env`: agents whose responses no auditor reads.
pub fn warnings(env: &Environment, inventory: &[ControlStatus]) -> Vec<String> {
    let mut out = Vec::new();
    for agent in &env.spec.agents {
        let reads = inventory.iter().filter(|c| c.agent == agent.name).flat_map(|c| &c.parts).any(|p| {
            p.stage.as_deref() == Some(Stage::PostResponse.as_str()) && p.state != ControlState::NotOperating && p.does.starts_with(READS)
        });
        if !reads {
            let post: Vec<&str> = agent.audit_chain.post_response.iter().map(|c| c.auditor_id.as_str()).collect();
            out.push(format!(
                "agent {}: its responses are read by no auditor (postResponse: {}); PII, credentials and toxicity in answers go to clients unchecked",
                agent.name,
                if post.is_empty() { "empty".to_string() } else { post.join(", ") }
            ));
        }
    }
    out
}

/// How the description of a part that reads the text at its stage begins.
const READS: &str = "reads";

type Part = (Vec<&'static str>, ControlPart);

fn part(c: &AuditorConfig, stage: Stage, does: String, settings: Vec<String>, state: ControlState, why: Option<String>) -> ControlPart {
    ControlPart { auditor: c.auditor_id.as_str().to_string(), stage: Some(stage.as_str().to_string()), does, settings, state, why }
}

fn on(flag: bool) -> ControlState {
    if flag {
        ControlState::Operating
    } else {
        ControlState::NotOperating
    }
}

fn off_because(flag: bool, key: &str) -> Option<String> {
    (!flag).then(|| format!("{key} is false"))
}

/// The parts one auditor entry contributes, with the controls each evidences.
fn parts(env: &Environment, agent: &Agent, stage: Stage, index: usize, c: &AuditorConfig, facts: &Facts) -> Vec<Part> {
    match &c.env {
        AuditorSettings::Guardrails(g) => guardrails(agent, stage, index, c, g, facts),
        AuditorSettings::PiiCompliance(p) => pii(agent, stage, c, p, built_classifier(agent, stage, index, facts)),
        AuditorSettings::Policy(p) => policy(stage, c, p),
        AuditorSettings::Observability(o) => observability(stage, c, o, env.retention_days()),
        AuditorSettings::Eval(e) => eval(stage, c, e, facts),
    }
}

/// The classifier a guardrails entry scores with, as built.
fn built_classifier(agent: &Agent, stage: Stage, index: usize, facts: &Facts) -> Option<ClassifierFacts> {
    let route = facts.routes?.by_model.get(&agent.model.id)?;
    let links = match stage {
        Stage::PreRequest => &route.chain.pre,
        Stage::PostResponse => &route.chain.post,
    };
    links.get(index)?.auditor.as_ref()?.classifier()
}

fn guardrails(agent: &Agent, stage: Stage, index: usize, c: &AuditorConfig, g: &GuardrailsEnv, facts: &Facts) -> Vec<Part> {
    let model = built_classifier(agent, stage, index, facts);
    // What the classifier adds, and whether it runs as configured.
    let (with_model, model_state, model_why) = match (&g.classifier_model, &model) {
        (ClassifierModel::Off, _) => (String::new(), ControlState::Operating, None),
        (_, Some(m)) if m.scoring.backend == "cpu" && !m.scoring.detail.is_empty() => (
            format!(", with classifier {}", m.dir),
            ControlState::Degraded,
            Some(format!("GPU fallen back: scored on the CPU ({}: {})", m.scoring.detail, m.scoring.gpu_error.clone().unwrap_or_default())),
        ),
        (_, Some(m)) => (format!(", with classifier {}", m.dir), ControlState::Operating, None),
        (ClassifierModel::Builtin, None) => (
            String::new(),
            ControlState::Degraded,
            Some(format!("waiting for a model pack: heuristics only ({})", facts.pack_note.clone().unwrap_or_else(|| "the default pack is not loaded".into()))),
        ),
        (ClassifierModel::Dir(d), None) => (String::new(), ControlState::Degraded, Some(format!("classifier {d} is not loaded: heuristics only"))),
    };
    let mut out = Vec::new();
    let blocks = |b: bool| if b { "blocks" } else { "records, does not block" };
    if stage == Stage::PreRequest {
        let settings = vec![format!("INJECTION_THRESHOLD={}", g.injection_threshold.0), format!("INJECTION_BLOCK_ON_DETECTION={}", g.injection_block_on_detection.0)];
        let does = format!("{READS} every message for prompt injection: patterns on the normalised and decoded text{with_model}; {}", blocks(g.injection_block_on_detection.0));
        out.push((vec!["CC6.6", "CC7.2"], part(c, stage, does, settings, model_state, model_why.clone())));
        let settings = vec![format!("JAILBREAK_DETECTION_ENABLED={}", g.jailbreak_detection_enabled.0), format!("JAILBREAK_THRESHOLD={}", g.jailbreak_threshold.0)];
        let state = match g.jailbreak_detection_enabled.0 {
            true => model_state,
            false => ControlState::NotOperating,
        };
        let why = off_because(g.jailbreak_detection_enabled.0, "JAILBREAK_DETECTION_ENABLED").or(model_why.clone());
        let does = format!("{READS} every message for jailbreaks{with_model}; {}", blocks(g.jailbreak_block_on_detection.0));
        out.push((vec!["CC6.6"], part(c, stage, does, settings, state, why)));
        let canary = g.system_prompt_canary.0;
        out.push((
            vec!["C1.1"],
            part(
                c,
                stage,
                "adds a canary to the system prompt and denies responses that repeat it".into(),
                vec![format!("SYSTEM_PROMPT_CANARY={canary}")],
                on(canary),
                off_because(canary, "SYSTEM_PROMPT_CANARY"),
            ),
        ));
    }
    let toxicity = model.as_ref().is_some_and(|m| m.signals.contains(&Signal::Toxicity));
    let (state, why) = match (toxicity, &model_why) {
        (true, _) => (model_state, model_why.clone()),
        (false, Some(why)) => (ControlState::NotOperating, Some(format!("no toxicity classifier: {why}"))),
        (false, None) if g.classifier_model == ClassifierModel::Off => (ControlState::NotOperating, Some("CLASSIFIER_MODEL is none: toxicity needs a classifier".into())),
        (false, None) => (ControlState::NotOperating, Some("the classifier has no label that means toxicity".into())),
    };
    let settings = vec![format!("TOXICITY_THRESHOLD={}", g.toxicity_threshold.0), format!("TOXICITY_BLOCK_ON_DETECTION={}", g.toxicity_block_on_detection.0)];
    let does = format!("{READS} {} for toxicity{with_model}; {}", stage_text(stage), blocks(g.toxicity_block_on_detection.0));
    out.push((vec!["CC6.6"], part(c, stage, does, settings, state, why)));
    out
}

fn stage_text(stage: Stage) -> &'static str {
    match stage {
        Stage::PreRequest => "every message",
        Stage::PostResponse => "every response",
    }
}

fn pii(agent: &Agent, stage: Stage, c: &AuditorConfig, p: &PiiEnv, names: Option<ClassifierFacts>) -> Vec<Part> {
    let detect = p.pii_detection_enabled.0;
    let names = match names {
        Some(m) => format!("people's names by the token head of {}", m.dir),
        None => "not people's names (no model pack with a names head is loaded)".into(),
    };
    let reads = format!(
        "{READS} {} for personal data (emails, phones, cards, IBANs, national identifiers, dates of birth, ...; {names}); {}",
        stage_text(stage),
        if p.pii_redact_on_detection.0 { "redacts it" } else { "records it, does not redact" }
    );
    let settings = vec![format!("PII_DETECTION_ENABLED={detect}"), format!("PII_REDACT_ON_DETECTION={}", p.pii_redact_on_detection.0)];
    let access = p.access_control_enabled.0;
    // Keys are required for the agent when any of its PII entries asks (the gateway
    // checks them before any auditor runs).
    let required = agent.audit_chain.pre_request.iter().chain(&agent.audit_chain.post_response).any(|a| matches!(&a.env, AuditorSettings::PiiCompliance(p) if p.access_control_enabled.0));
    let why = match (access, required) {
        (false, true) => None,
        _ => off_because(access, "ACCESS_CONTROL_ENABLED"),
    };
    let keys = match (access, required) {
        (false, true) => "requires a valid, unrevoked, scoped API key on every gateway endpoint (asked by another PII entry of this agent)",
        _ => "requires a valid, unrevoked, scoped API key on every gateway endpoint",
    };
    vec![
        (vec!["C1.1", "P1.1"], part(c, stage, reads, settings, on(detect), off_because(detect, "PII_DETECTION_ENABLED"))),
        (vec!["CC6.1", "CC6.3"], part(c, stage, keys.into(), vec![format!("ACCESS_CONTROL_ENABLED={access}")], on(required), why)),
    ]
}

fn policy(stage: Stage, c: &AuditorConfig, p: &PolicyEnv) -> Vec<Part> {
    let detect = p.credential_detection_enabled.0;
    let rules = p.gitleaks_config.0.clone().unwrap_or_else(|| "built-in rules".into());
    let does = format!(
        "{READS} {} for credentials ({rules}); {}",
        stage_text(stage),
        if p.credential_block_on_detection.0 { "blocks" } else { "redacts" }
    );
    let settings = vec![format!("CREDENTIAL_DETECTION_ENABLED={detect}"), format!("CREDENTIAL_BLOCK_ON_DETECTION={}", p.credential_block_on_detection.0)];
    vec![(vec!["CC6.1", "C1.1"], part(c, stage, does, settings, on(detect), off_because(detect, "CREDENTIAL_DETECTION_ENABLED")))]
}

/// What this version does not implement yet, named where a setting asks for it.
const NOT_IMPLEMENTED: &str = "not implemented in this version of lucidd";

fn observability(stage: Stage, c: &AuditorConfig, o: &ObservabilityEnv, kept: Option<u32>) -> Vec<Part> {
    let all = o.log_all_events.0;
    // The ledger is one for the host: bodies are kept as long as the longest setting.
    let days = kept.unwrap_or(o.log_retention_days.0);
    let longer = match days == o.log_retention_days.0 {
        true => String::new(),
        false => format!(" (the longest LOG_RETENTION_DAYS of any agent; this one asks {})", o.log_retention_days.0),
    };
    let does = format!(
        "records {} in the evidence ledger, kept {days} days{longer}",
        if all { "every decision, and late or failed ones always" } else { "warnings, redactions, denials, and late or failed decisions (not plain proceeds)" },
    );
    let settings = vec![format!("LOG_ALL_EVENTS={all}"), format!("LOG_RETENTION_DAYS={}", o.log_retention_days.0)];
    let anomaly = o.anomaly_detection_enabled.0;
    let why = match anomaly {
        true => NOT_IMPLEMENTED.to_string(),
        false => "ANOMALY_DETECTION_ENABLED is false".to_string(),
    };
    vec![
        (vec!["CC7.2"], part(c, stage, does, settings, ControlState::Operating, None)),
        (
            vec!["CC7.2", "CC7.3"],
            part(c, stage, "detects anomalies in traffic and raises them".into(), vec![format!("ANOMALY_DETECTION_ENABLED={anomaly}")], ControlState::NotOperating, Some(why)),
        ),
    ]
}

fn eval(stage: Stage, c: &AuditorConfig, e: &EvalEnv, facts: &Facts) -> Vec<Part> {
    let check = e.model_integrity_check.0;
    let settings = vec![
        format!("MODEL_INTEGRITY_CHECK={check}"),
        format!("INTEGRITY_WATCH_MODE={}", e.integrity_watch_mode.as_str()),
        format!("INTEGRITY_RECHECK_MINUTES={}", e.integrity_recheck_minutes.0),
    ];
    let (state, why) = match (check, &facts.watch) {
        (false, _) => (ControlState::NotOperating, Some("MODEL_INTEGRITY_CHECK is false".to_string())),
        (true, None) => (ControlState::Degraded, Some("the watch is being restarted with new settings".to_string())),
        (true, Some(w)) => match w.mode.as_str() {
            m if m.starts_with("ebpf-") || m.starts_with("fanotify") => (ControlState::Operating, None),
            "periodic" => (ControlState::Degraded, Some(format!("watch mode degraded: periodic re-verification only ({})", w.detail))),
            "off" => (ControlState::NotOperating, Some(w.detail.clone())),
            "" | "starting" => (ControlState::Degraded, Some("the watch is starting".to_string())),
            other => (ControlState::Degraded, Some(format!("the watch is {other}"))),
        },
    };
    let mode = facts.watch.as_ref().map(|w| w.mode.clone()).unwrap_or_else(|| "restarting".into());
    let does = format!("watches approved model files and serving binaries and judges every change ({mode})");
    let mut out = vec![(vec!["CC8.1", "CC7.1"], part(c, stage, does, settings, state, why))];
    let bench = e.safety_benchmarks_enabled.0;
    out.push((
        vec!["CC8.1"],
        part(
            c,
            stage,
            "runs safety benchmarks when the model changes".into(),
            vec![format!("SAFETY_BENCHMARKS_ENABLED={bench}")],
            ControlState::NotOperating,
            Some(if bench { NOT_IMPLEMENTED.to_string() } else { "SAFETY_BENCHMARKS_ENABLED is false".to_string() }),
        ),
    ));
    if e.integrity_enforce.0 {
        let enforcement = facts.watch.as_ref().map(|w| w.enforcement.clone()).unwrap_or_else(|| "restarting".into());
        let (state, why) = match enforcement.starts_with("on") {
            true => (ControlState::Operating, None),
            false => (ControlState::NotOperating, Some(enforcement.clone())),
        };
        out.push((
            vec!["CC8.1"],
            part(
                c,
                stage,
                "refuses writes to approved model files by other executables".into(),
                vec!["INTEGRITY_ENFORCE=true".into(), format!("INTEGRITY_ALLOWED_WRITERS={}", e.integrity_allowed_writers.0.join(","))],
                state,
                why,
            ),
        ));
    }
    out
}
