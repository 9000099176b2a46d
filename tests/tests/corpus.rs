//! Precision and recall of the rule auditors on the labelled corpus
//! (`tests/corpus/corpus.jsonl`, written by `tests/corpus/make_corpus.py`): PII,
//! credentials, injections, and benign texts that look like them. Each type has a
//! floor; a change that drops below it fails here.

use std::collections::BTreeMap;

use lucidd::audit::guardrails::GuardrailsAuditor;
use lucidd::audit::pii::PiiAuditor;
use lucidd::audit::secrets::{RuleSet, SecretsAuditor};
use lucidd::audit::{Auditor, Stage, Subject};
use lucidd::config::auditors::{AuditorId, GuardrailsEnv, PiiEnv, PolicyEnv};

/// Lowest precision and recall any type may have.
const FLOOR_PRECISION: f64 = 0.95;
const FLOOR_RECALL: f64 = 0.90;

#[derive(Default)]
struct Counts {
    tp: u32,
    fp: u32,
    fn_: u32,
}

#[test]
fn rule_auditors_meet_their_precision_and_recall_floors() {
    let corpus = include_str!("../corpus/corpus.jsonl");
    let pii = PiiAuditor::new(PiiEnv::default(), [7; 32], None);
    let secrets = SecretsAuditor::new(AuditorId::Policy, PolicyEnv::default(), RuleSet::builtin().unwrap());
    let guard = GuardrailsAuditor::new(GuardrailsEnv::default(), None);
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    let mut benign_hits = Vec::new();
    for line in corpus.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = row["text"].as_str().unwrap();
        let subject = Subject::new([(Some("user".to_string()), text.to_string())]);
        let mut predicted: Vec<(String, String)> = Vec::new();
        for auditor in [&pii as &dyn Auditor, &secrets, &guard] {
            let v = auditor.audit(Stage::PreRequest, &subject, std::time::Instant::now()).unwrap();
            for f in v.findings {
                let kind = if f.kind == "jailbreak" { "injection".to_string() } else { f.kind };
                predicted.push((kind, text.get(f.start..f.end).unwrap_or_default().to_string()));
            }
        }
        predicted.sort();
        predicted.dedup();
        let expected: Vec<(String, String)> = row["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["type"].as_str().unwrap().to_string(), l["value"].as_str().unwrap().to_string()))
            .collect();
        let overlaps = |a: &(String, String), b: &(String, String)| {
            a.0 == b.0 && (a.0 == "injection" || a.1.contains(b.1.as_str()) || b.1.contains(a.1.as_str()))
        };
        for e in &expected {
            let c = counts.entry(e.0.clone()).or_default();
            if predicted.iter().any(|p| overlaps(p, e)) {
                c.tp += 1;
            } else {
                c.fn_ += 1;
                eprintln!("missed {}: {text:?}", e.0);
            }
        }
        let mut seen_injection = false;
        for p in &predicted {
            if expected.iter().any(|e| overlaps(p, e)) {
                continue;
            }
            if p.0 == "injection" && (seen_injection || expected.iter().any(|e| e.0 == "injection")) {
                seen_injection = true;
                continue;
            }
            counts.entry(p.0.clone()).or_default().fp += 1;
            eprintln!("false {} {:?} in {text:?}", p.0, p.1);
            if row["group"] == "benign" {
                benign_hits.push(text.to_string());
            }
        }
    }
    eprintln!("{:<28} {:>5} {:>5} {:>5} {:>9} {:>7}", "type", "tp", "fp", "fn", "precision", "recall");
    let mut failures = Vec::new();
    for (kind, c) in &counts {
        let precision = if c.tp + c.fp == 0 { 1.0 } else { f64::from(c.tp) / f64::from(c.tp + c.fp) };
        let recall = if c.tp + c.fn_ == 0 { 1.0 } else { f64::from(c.tp) / f64::from(c.tp + c.fn_) };
        eprintln!("{kind:<28} {:>5} {:>5} {:>5} {precision:>9.3} {recall:>7.3}", c.tp, c.fp, c.fn_);
        if precision < FLOOR_PRECISION || recall < FLOOR_RECALL {
            failures.push(format!("{kind}: precision {precision:.3}, recall {recall:.3}"));
        }
    }
    assert!(failures.is_empty(), "below the floors ({FLOOR_PRECISION} / {FLOOR_RECALL}): {failures:?}");
    assert!(benign_hits.is_empty(), "benign look-alikes flagged: {benign_hits:?}");
}
