//! Audit-chain benchmark: added latency (p50/p99) of the full rule chain at 1 KB, 4 KB
//! and 64 KB prompts (and 4 KB of German prose), and scanning MB/s of the PII and credential auditors, against
//! Presidio's pattern recognizers and detect-secrets run by `peers/audit_peers.py` on
//! the same texts in the same run. Prints one JSON line.
//!
//! `cargo bench -p lucidd --bench audit` (needs `.venv` with presidio-analyzer and
//! detect-secrets for the peers; without it the peers are reported missing).

use std::time::Instant;

use lucidd::audit::chain::Chain;
use lucidd::audit::pii::PiiAuditor;
use lucidd::audit::secrets::{RuleSet, SecretsAuditor};
use lucidd::audit::{Auditor, Stage, Subject};
use lucidd::config::auditors::{AuditorId, PiiEnv, PolicyEnv};
use serde_json::json;

mod common;

fn fail(msg: &str) -> ! {
    common::fail("audit", msg)
}

/// English prose for `text_in`.
const ENGLISH: [&str; 24] = [
    "the", "model", "should", "summarise", "quarterly", "report", "and", "list", "risks", "for", "our", "customers",
    "in", "Europe", "please", "include", "numbers", "from", "table", "three", "with", "a", "short", "note",
];

/// German prose, with the umlauts and ß that take a regex with Unicode word boundaries
/// off its DFA.
const GERMAN: [&str; 24] = [
    "die", "Präsentation", "für", "Donnerstag", "Überweisung", "und", "prüfen", "Änderungen", "im", "Vertrag", "Müller",
    "bitte", "schließen", "Größe", "Kunden", "in", "Europa", "Zahlen", "aus", "Tabelle", "drei", "mit", "kurzer", "Notiz",
];

/// Prose with the occasional email, phone, card, key and token, like real prompts.
fn text_of(bytes: usize, seed: u64) -> String {
    text_in(&ENGLISH, bytes, seed)
}

/// `text_of` in the words given.
fn text_in(words: &[&str], bytes: usize, seed: u64) -> String {
    let extras = [
        "contact jane.doe@example.com",
        "call +44 20 7946 0958",
        "order 123456789",
        "card 4111 1111 1111 1111",
        "key AKIAQWERTYUIOPASDFGH",
        "token ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
        "version 1.2.3.4",
        "password = hunter2",
    ];
    let mut s = String::with_capacity(bytes + 64);
    let mut rng = common::Rng::new(seed);
    while s.len() < bytes {
        let x = rng.next();
        if x.is_multiple_of(53) {
            s.push_str(extras[(x / 53 % extras.len() as u64) as usize]);
        } else {
            s.push_str(words[(x % words.len() as u64) as usize]);
        }
        s.push(if x.is_multiple_of(11) { '\n' } else { ' ' });
    }
    let mut end = bytes.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

/// Puts a peer's figure into `peers`, or why it is missing.
fn keep(peers: &mut serde_json::Map<String, serde_json::Value>, name: &str, run: &serde_json::Value) {
    peers.insert(name.into(), run[name].clone());
    if run[name].is_null() {
        peers.insert(format!("{name}_error"), run["error"].clone());
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn chain_latency(chain: &Chain, words: &[&str], size: usize) -> (f64, f64) {
    let texts: Vec<String> = (0..64).map(|i| text_in(words, size, 7 + i)).collect();
    let iterations = (2_000_000 / size).clamp(200, 5000);
    let mut us = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = &texts[i % texts.len()];
        let start = Instant::now();
        let mut subject = Subject::new([(Some("user".to_string()), t.clone())]);
        let decisions = chain.run(Stage::PreRequest, &mut subject);
        std::hint::black_box(decisions);
        us.push(start.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(|a, b| a.total_cmp(b));
    (percentile(&us, 0.5), percentile(&us, 0.99))
}

fn scan_rate(auditor: &dyn Auditor, texts: &[String]) -> f64 {
    let subjects: Vec<Subject> = texts.iter().map(|t| Subject::new([(Some("user".to_string()), t.clone())])).collect();
    let start = Instant::now();
    let mut bytes = 0usize;
    while start.elapsed().as_secs_f64() < 2.0 {
        for s in &subjects {
            std::hint::black_box(auditor.audit(Stage::PreRequest, s, start).ok());
            bytes += s.len();
        }
    }
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let env = lucidd::config::parse(lucidd::config::DEV_DEFAULT, "dev").unwrap_or_else(|e| fail(&e.to_string()));
    let chain = Chain::build(&env.spec.agents[0].audit_chain, [3; 32]).unwrap_or_else(|e| fail(&e.to_string()));
    let mut out = serde_json::Map::new();
    for (name, words, size) in [("1k", &ENGLISH, 1024), ("4k", &ENGLISH, 4096), ("64k", &ENGLISH, 65536), ("4k_de", &GERMAN, 4096)] {
        let (p50, p99) = chain_latency(&chain, words, size);
        out.insert(format!("chain_{name}_us"), json!({ "p50": (p50 * 10.0).round() / 10.0, "p99": (p99 * 10.0).round() / 10.0 }));
    }
    // Scanning rates on 64 KiB texts (one core: this loop is single-threaded).
    let texts: Vec<String> = (0..8).map(|i| text_of(65536, 100 + i)).collect();
    // The rules alone: names need the model pack, which the quality bench measures.
    let pii = PiiAuditor::new(PiiEnv::default(), [3; 32], None);
    let rules = RuleSet::builtin().unwrap_or_else(|e| fail(&e));
    let secrets = SecretsAuditor::new(AuditorId::Policy, PolicyEnv::default(), rules);
    let pii_rate = scan_rate(&pii, &texts);
    out.insert("pii_mb_s".into(), json!(round1(pii_rate)));

    // Peers on the same texts, each in its own interpreter.
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&e.to_string()));
    let files: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let p = dir.path().join(format!("text{i}.txt"));
            let _ = std::fs::write(&p, t);
            p.display().to_string()
        })
        .collect();
    let peer = |name: &str| -> serde_json::Value {
        let args: Vec<String> = ["--only".to_string(), name.to_string()].into_iter().chain(files.iter().cloned()).collect();
        common::run_peer(".venv", "lucidd/benches/peers/audit_peers.py", &args)
    };
    let mut peers = serde_json::Map::new();
    let presidio = peer("presidio_pii_mb_s");
    if let Some(p) = presidio["presidio_pii_mb_s"].as_f64() {
        out.insert("pii_vs_presidio".into(), json!(round1(pii_rate / p)));
    }
    keep(&mut peers, "presidio_pii_mb_s", &presidio);

    // Credentials against detect-secrets in alternating rounds, compared by medians:
    // this machine's speed drifts by a third within a minute, and a single pair of runs
    // can land on either side of the drift.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        ours.push(scan_rate(&secrets, &texts));
        let run = peer("detect_secrets_mb_s");
        match run["detect_secrets_mb_s"].as_f64() {
            Some(p) => theirs.push(p),
            None => keep(&mut peers, "detect_secrets_mb_s", &run),
        }
    }
    let secrets_rate = median(&mut ours);
    out.insert("credentials_mb_s".into(), json!(round1(secrets_rate)));
    out.insert("credentials_rounds_mb_s".into(), json!(ours.iter().map(|r| round1(*r)).collect::<Vec<_>>()));
    if !theirs.is_empty() {
        let p = median(&mut theirs);
        peers.insert("detect_secrets_mb_s".into(), json!(p));
        peers.insert("detect_secrets_rounds_mb_s".into(), json!(theirs));
        out.insert("credentials_vs_detect_secrets".into(), json!(round1(secrets_rate / p)));
    }
    let guard = peer("llm_guard_secrets_mb_s");
    if let Some(p) = guard["llm_guard_secrets_mb_s"].as_f64() {
        out.insert("credentials_vs_llm_guard_secrets".into(), json!(round1(secrets_rate / p)));
    }
    keep(&mut peers, "llm_guard_secrets_mb_s", &guard);
    let peers = serde_json::Value::Object(peers);
    out.insert("peers".into(), peers);
    out.insert("bench".into(), json!("audit"));
    println!("{}", serde_json::Value::Object(out));
}

