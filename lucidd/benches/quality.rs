//! Detection-quality benchmark: recall, precision and false-positive rate of the default
//! soc2 chain (with the default model pack) per category, on the held-out set
//! `target/eval/heldout.jsonl` (public data the pack was not trained on, a fixed split,
//! built by `models/eval/build.sh`; its sources are in `models/eval/MANIFEST.md`), beside
//! LLM Guard and Presidio run by `peers/quality_peers.py` on the same records in the same
//! run. Every system is scored by the same code below. Prints a table, then one JSON line.
//!
//! `cargo bench -p lucidd --bench quality [-- --no-peers] [--split test|dev|all]
//! [--misses CATEGORY]]` (the test split by default; misses are shown for dev only)
//! (the pack from `scripts/pack.sh`, the peers from `.venv-peers`, made by
//! `lucidd/benches/peers/quality_peers.sh`; a peer that cannot run is reported, not hidden).

use std::collections::BTreeMap;
use std::time::Instant;

use lucidd::audit::chain::Chain;
use lucidd::audit::{Outcome, Stage, Subject};
use lucidd::config::auditors::AuditorId;
use serde::Deserialize;
use serde_json::{Value, json};

mod common;

fn fail(msg: &str) -> ! {
    common::fail("quality", msg)
}

/// One labelled text of the held-out set (`models/eval/FORMAT.md`).
#[derive(Deserialize)]
struct Record {
    id: String,
    /// `test` (scored only) or `dev` (a developer may read its misses).
    split: String,
    set: String,
    category: String,
    source: String,
    lang: String,
    #[serde(default)]
    locale: Option<String>,
    role: String,
    #[serde(default)]
    transform: Option<String>,
    label: u8,
    text: String,
    #[serde(default)]
    spans: Vec<Span>,
}

/// A labelled or predicted value, at code point offsets.
#[derive(Clone, Debug, Deserialize)]
struct Span {
    #[serde(rename = "type")]
    ty: String,
    start: usize,
    end: usize,
    #[serde(default)]
    subtype: Option<String>,
}

impl Span {
    fn overlaps(&self, o: &Span) -> bool {
        self.start < o.end && o.start < self.end
    }
}

/// What one system said about one record; `None` where it does not judge that kind.
#[derive(Default)]
struct Prediction {
    injection: Option<bool>,
    injection_score: Option<f64>,
    pii: Option<Vec<Span>>,
    secrets: Option<Vec<Span>>,
    secret_flag: Option<bool>,
}

/// The evaluation types of Lucid's PII entities (national identifiers are one type).
fn pii_type(kind: &str) -> String {
    match kind {
        "us_ssn" | "es_nif" | "es_nie" | "it_fiscal_code" | "fr_nir" | "uk_nino" | "uk_nhs" | "nl_bsn" | "de_tax_id" => "national_id".into(),
        k => k.into(),
    }
}

/// Byte offset in `text` to code point offset.
fn chars_at(text: &str, byte: usize) -> usize {
    text.get(..byte).map_or_else(|| text.chars().count(), |s| s.chars().count())
}

/// Runs each auditor of the chain's request stage on a record as it would arrive, and
/// reads off what each concluded.
fn lucid(chains: &[Chain], r: &Record) -> Prediction {
    let decisions = chains.iter().flat_map(|c| c.run(Stage::PreRequest, &mut Subject::new([(Some(r.role.clone()), r.text.clone())])));
    let mut p = Prediction { injection: Some(false), injection_score: Some(0.0), pii: Some(Vec::new()), secrets: Some(Vec::new()), secret_flag: Some(false) };
    for d in decisions {
        let v = &d.verdict;
        match d.auditor {
            AuditorId::Guardrails => {
                let top = v.scores.iter().filter(|(k, _)| matches!(k.as_str(), "injection" | "jailbreak")).map(|(_, s)| *s).fold(0.0, f64::max);
                p.injection_score = Some(top);
                p.injection = Some(v.findings.iter().any(|f| matches!(f.kind.as_str(), "injection" | "jailbreak")));
            }
            AuditorId::PiiCompliance => {
                for f in &v.findings {
                    let ty = pii_type(&f.kind);
                    let sub = (ty == "national_id").then(|| f.kind.clone());
                    p.pii.get_or_insert_default().push(Span { ty, start: chars_at(&r.text, f.start), end: chars_at(&r.text, f.end), subtype: sub });
                }
            }
            AuditorId::Policy | AuditorId::Secrets => {
                if v.outcome > Outcome::Proceed {
                    p.secret_flag = Some(true);
                }
                for f in &v.findings {
                    let s = Span { ty: "credential".into(), start: chars_at(&r.text, f.start), end: chars_at(&r.text, f.end), subtype: Some(f.kind.clone()) };
                    p.secrets.get_or_insert_default().push(s);
                }
            }
            _ => {}
        }
    }
    p
}

/// Reads a peer's predictions (`quality_peers.py`'s output) into the same shape.
fn peer_predictions(peers: &Value) -> BTreeMap<String, BTreeMap<String, Prediction>> {
    let spans = |v: &Value| -> Vec<Span> { v.as_array().map(|a| a.iter().filter_map(|s| serde_json::from_value(s.clone()).ok()).collect()).unwrap_or_default() };
    let mut out: BTreeMap<String, BTreeMap<String, Prediction>> = BTreeMap::new();
    let Some(all) = peers["peers"].as_object() else { return out };
    for (name, peer) in all {
        let mut by_id = BTreeMap::new();
        for (id, v) in peer["predictions"].as_object().into_iter().flatten() {
            let mut p = Prediction::default();
            match name.as_str() {
                "presidio" => p.pii = Some(spans(v)),
                "llm_guard_secrets" => {
                    p.secret_flag = v["flagged"].as_bool();
                    p.secrets = Some(spans(&v["spans"]));
                }
                "llm_guard_prompt_injection" => {
                    p.injection = v["flagged"].as_bool();
                    p.injection_score = v["score"].as_f64();
                }
                _ => {}
            }
            by_id.insert(id.clone(), p);
        }
        out.insert(name.clone(), by_id);
    }
    out
}

/// A count of hits among trials, printed as a rate with its counts.
#[derive(Clone, Copy, Default)]
struct Rate {
    hit: usize,
    of: usize,
}

impl Rate {
    fn add(&mut self, hit: bool) {
        self.of += 1;
        self.hit += usize::from(hit);
    }

    fn value(self) -> Option<f64> {
        (self.of > 0).then(|| self.hit as f64 / self.of as f64)
    }

    fn json(self) -> Value {
        match self.value() {
            Some(v) => json!({ "rate": (v * 1000.0).round() / 1000.0, "hit": self.hit, "of": self.of }),
            None => Value::Null,
        }
    }

    fn show(self) -> String {
        match self.value() {
            Some(v) => format!("{v:.3} ({}/{})", self.hit, self.of),
            None => "-".into(),
        }
    }
}

/// Every figure of one system, keyed by a row name such as `injection.recall.indirect`.
type Scores = BTreeMap<String, Rate>;

fn score(records: &[Record], preds: &BTreeMap<String, Prediction>) -> Scores {
    let mut s = Scores::new();
    let bump = |s: &mut Scores, key: String, hit: bool| s.entry(key).or_default().add(hit);
    for r in records {
        let Some(p) = preds.get(&r.id) else { continue };
        if let Some(flag) = p.injection {
            match r.set.as_str() {
                "injection" => {
                    bump(&mut s, "injection.recall.all".into(), flag);
                    bump(&mut s, format!("injection.recall.{}", r.category), flag);
                    if r.category == "multilingual" {
                        bump(&mut s, format!("injection.recall.multilingual.{}", r.lang), flag);
                    }
                    if let Some(t) = &r.transform {
                        bump(&mut s, format!("injection.recall.obfuscated.{t}"), flag);
                    }
                    bump(&mut s, format!("injection.recall.source.{}", r.source), flag);
                }
                "benign" => {
                    bump(&mut s, "injection.fpr.all".into(), flag);
                    bump(&mut s, format!("injection.fpr.{}", r.category), flag);
                    bump(&mut s, format!("injection.fpr.lang.{}", r.lang), flag);
                    bump(&mut s, format!("injection.fpr.source.{}", r.source), flag);
                }
                _ => {}
            }
        }
        if let Some(found) = &p.pii {
            if r.set == "pii" {
                let gold = &r.spans;
                for g in gold.iter().filter(|g| g.ty != "person" && g.ty != "address") {
                    let any = found.iter().any(|f| f.ty != "person" && f.overlaps(g));
                    bump(&mut s, "pii.recall.all".into(), any);
                    bump(&mut s, format!("pii.recall.{}", g.ty), any);
                    if let Some(sub) = &g.subtype {
                        bump(&mut s, format!("pii.recall.{}.{sub}", g.ty), any);
                    }
                    if let Some(l) = &r.locale {
                        bump(&mut s, format!("pii.recall.locale.{l}"), any);
                    }
                }
                for g in gold.iter().filter(|g| g.ty == "address") {
                    bump(&mut s, "pii.recall.address".into(), found.iter().any(|f| f.overlaps(g)));
                }
                for g in gold.iter().filter(|g| g.ty == "person") {
                    bump(&mut s, "names.recall".into(), found.iter().any(|f| f.ty == "person" && f.overlaps(g)));
                }
                for f in found {
                    let right = gold.iter().any(|g| g.overlaps(f));
                    if f.ty == "person" {
                        bump(&mut s, "names.precision".into(), right);
                        if r.category == "names_not_people" {
                            bump(&mut s, "names.precision.names_not_people".into(), right);
                        }
                    } else {
                        bump(&mut s, "pii.precision.all".into(), right);
                        bump(&mut s, format!("pii.precision.{}", f.ty), right);
                    }
                }
            }
        }
        if r.set == "secrets" || r.set == "benign" || r.set == "pii" {
            if let Some(found) = &p.secrets {
                for g in r.spans.iter().filter(|g| g.ty == "credential") {
                    let any = found.iter().any(|f| f.overlaps(g));
                    bump(&mut s, "credentials.recall.all".into(), any);
                    if let Some(sub) = &g.subtype {
                        bump(&mut s, format!("credentials.recall.{sub}"), any);
                    }
                }
                for f in found {
                    bump(&mut s, "credentials.precision.all".into(), r.spans.iter().any(|g| g.ty == "credential" && g.overlaps(f)));
                }
            }
            if let Some(flag) = p.secret_flag {
                match r.label {
                    1 if r.set == "secrets" => bump(&mut s, "credentials.texts.recall".into(), flag),
                    0 => bump(&mut s, format!("credentials.texts.fpr.{}", r.set), flag),
                    _ => {}
                }
            }
        }
    }
    s
}

/// The rows of the table, in its order, then the breakdowns.
fn print_table(systems: &[(&str, &Scores)]) {
    let mut keys: Vec<&String> = systems.iter().flat_map(|(_, s)| s.keys()).collect();
    keys.sort();
    keys.dedup();
    let width = 48;
    print!("{:width$}", "");
    for (name, _) in systems {
        print!(" {name:>22}");
    }
    println!();
    for k in keys {
        print!("{k:width$}");
        for (_, s) in systems {
            print!(" {:>22}", s.get(k).map_or("-".into(), |r| r.show()));
        }
        println!();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let no_peers = args.iter().any(|a| a == "--no-peers");
    let misses = args.iter().position(|a| a == "--misses").and_then(|i| args.get(i + 1)).cloned();
    let split = args.iter().position(|a| a == "--split").and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| "test".into());
    if misses.is_some() && split != "dev" {
        fail("--misses shows texts of the dev split only (add --split dev): the test split is only ever scored");
    }
    let root = common::repo_root();
    let path = std::env::var("LUCID_EVAL").map(std::path::PathBuf::from).unwrap_or_else(|_| root.join("target/eval/heldout.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| fail(&format!("{}: {e} (build it with models/eval/build.sh)", path.display())));
    let records: Vec<Record> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str::<Record>(l).unwrap_or_else(|e| fail(&format!("{}:{}: {e}", path.display(), i + 1))))
        .filter(|r| split == "all" || r.split == split)
        .collect();

    // The default chain with the default pack, as `lucidd --dev` runs it.
    if std::env::var_os("LUCID_MODEL_PACK").is_none() {
        // SAFETY: single-threaded here, before anything reads the environment.
        unsafe { std::env::set_var("LUCID_MODEL_PACK", root.join("target/lucid-pack/guard")) };
    }
    let env = lucidd::config::parse(lucidd::config::DEV_DEFAULT, "dev").unwrap_or_else(|e| fail(&e.to_string()));
    // Each request-stage auditor of the chain on its own: in the chain a deny stops the
    // auditors after it, and each is measured on every text. With a minute's budget: what
    // is measured is what each finds, not whether this machine was busy (the gateway
    // bench measures time).
    let full = &env.spec.agents[0].audit_chain;
    let chains: Vec<Chain> = full
        .pre_request
        .iter()
        .map(|a| {
            let mut a = a.clone();
            a.timeout_ms = 60_000;
            let one = lucidd::config::AuditChain { pre_request: vec![a], post_response: Vec::new(), exempt_system_prompts: Vec::new() };
            Chain::build(&one, [3; 32]).unwrap_or_else(|e| fail(&e.to_string()))
        })
        .collect();
    let pack = match lucidd::infer::service::unavailable() {
        Some(why) if std::env::var("LUCID_MODEL_PACK").as_deref() != Ok("none") => fail(&format!("the default pack is not loaded: {why}")),
        Some(_) => "none (heuristics only)".to_string(),
        None => std::env::var("LUCID_MODEL_PACK").unwrap_or_default(),
    };
    let start = Instant::now();
    let ours: BTreeMap<String, Prediction> = records.iter().map(|r| (r.id.clone(), lucid(&chains, r))).collect();
    let lucid_s = start.elapsed().as_secs_f64();

    let peers = if no_peers {
        json!({ "errors": { "all": "--no-peers" } })
    } else {
        common::run_peer(".venv-peers", "lucidd/benches/peers/quality_peers.py", &[path.display().to_string()])
    };
    let theirs = peer_predictions(&peers);

    let lucid_scores = score(&records, &ours);
    let peer_scores: Vec<(String, Scores)> = theirs.iter().map(|(n, p)| (n.clone(), score(&records, p))).collect();
    let mut systems: Vec<(&str, &Scores)> = vec![("lucid", &lucid_scores)];
    systems.extend(peer_scores.iter().map(|(n, s)| (n.as_str(), s)));
    print_table(&systems);

    if let Some(cat) = misses {
        // The texts a category got wrong, to read (never committed anywhere).
        for r in records.iter().filter(|r| r.category == cat || r.set == cat) {
            let p = &ours[&r.id];
            let wrong = match r.set.as_str() {
                "injection" => p.injection == Some(false),
                "benign" => p.injection == Some(true),
                _ => false,
            };
            // PII and credentials: the values missed, and those found that are none.
            let values = |spans: &[Span]| spans.iter().map(|s| format!("{}:{:?}", s.ty, r.text.chars().skip(s.start).take(s.end - s.start).collect::<String>())).collect::<Vec<_>>().join(" ");
            let found: Vec<Span> = p.pii.iter().chain(p.secrets.iter()).flatten().cloned().collect();
            let missed: Vec<Span> = r.spans.iter().filter(|g| g.ty != "person" && g.ty != "address" && !found.iter().any(|f| f.overlaps(g))).cloned().collect();
            let extra: Vec<Span> = found.iter().filter(|f| !r.spans.iter().any(|g| g.overlaps(f))).cloned().collect();
            if matches!(r.set.as_str(), "pii" | "secrets") && (!missed.is_empty() || !extra.is_empty()) {
                eprintln!("{} missed [{}] extra [{}]", r.id, values(&missed), values(&extra));
            }
            if wrong {
                let head: String = r.text.chars().take(160).collect();
                eprintln!("{} [{:.2}] {}", r.id, p.injection_score.unwrap_or(0.0), head.replace('\n', " "));
            }
        }
    }

    let by_set = records.iter().fold(BTreeMap::<String, usize>::new(), |mut m, r| {
        *m.entry(format!("{}.{}", r.set, r.category)).or_default() += 1;
        m
    });
    let as_json = |s: &Scores| -> Value { Value::Object(s.iter().map(|(k, r)| (k.clone(), r.json())).collect()) };
    let mut out = serde_json::Map::new();
    out.insert("bench".into(), json!("quality"));
    out.insert("eval".into(), json!(path.display().to_string()));
    out.insert("split".into(), json!(split));
    out.insert("records".into(), json!(by_set));
    out.insert("pack".into(), json!(pack));
    out.insert("lucid_seconds".into(), json!((lucid_s * 10.0).round() / 10.0));
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()));
    out.insert("cpu".into(), json!(cpu));
    out.insert("lucid".into(), as_json(&lucid_scores));
    for (n, s) in &peer_scores {
        out.insert(n.clone(), as_json(s));
    }
    out.insert("peer_versions".into(), Value::Object(peers["peers"].as_object().into_iter().flatten().map(|(n, p)| (n.clone(), json!({ "version": p["version"], "config": p["config"] }))).collect()));
    out.insert("peer_errors".into(), peers.get("errors").cloned().unwrap_or_else(|| peers.get("error").cloned().unwrap_or(Value::Null)));
    println!("{}", Value::Object(out));
}
