//! Gateway latency with the default soc2 chain and the default model pack (prints one
//! JSON line): p50/p99 of chat completions through the real daemon, for prompts of
//! 1 KB and 4 KB of ordinary prose, against a scripted upstream (the model server is
//! not what is measured). The same requests straight to the upstream are the floor.
//!
//! `cargo build --release -p lucidd -p lucidctl && cargo bench -p lucid-tests --bench
//! gateway` (the pack from `scripts/pack.sh`, or `LUCID_MODEL_PACK`).

use std::time::Instant;

use lucid_tests::Daemon;
use serde_json::{json, Value};

fn fail(msg: &str) -> ! {
    println!("{}", json!({ "bench": "gateway", "error": msg }));
    std::process::exit(1)
}

/// About `bytes` of ordinary English prose, different for each seed.
fn prose(bytes: usize, seed: usize) -> String {
    const SENTENCES: [&str; 12] = [
        "Our quarterly revenue grew by eight percent, driven mostly by the new subscription tier.",
        "The support team closed most tickets within a day, although weekend coverage remains thin.",
        "Please summarise the main risks for the board and suggest two actions for each of them.",
        "Shipping delays in the northern warehouse were caused by a conveyor belt that broke in May.",
        "Customer feedback praised the mobile app but asked for a dark mode and faster search.",
        "The marketing budget for next year should stay flat unless the product launch moves forward.",
        "Two engineers will rotate onto the data platform to finish the migration before autumn.",
        "Energy costs at the plant fell after the heat pumps were installed on the east side.",
        "Legal reviewed the supplier contract and asked for a clearer termination clause.",
        "The hiring plan adds three roles in sales and one in finance during the second half.",
        "Write the answer as a short memo with headings and a table of the figures mentioned.",
        "Inventory turnover improved, but the slow-moving items still tie up too much cash.",
    ];
    let mut s = String::new();
    let mut i = seed;
    while s.len() < bytes {
        s.push_str(SENTENCES[i % SENTENCES.len()]);
        s.push(' ');
        // Kept small: unbounded, `i` overflowed after 22 sentences (wrapping in release,
        // a panic in debug), and the wrapped sequence repeated a few sentences a dozen
        // times each in every 4 KB prompt.
        i = (i * 7 + 3) % 65_521;
    }
    s.truncate(bytes);
    s
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Latencies in ms of `n` requests with prompts of `bytes`, sorted, and how many the
/// chain blocked (a false positive on this prose: counted and reported, still timed).
fn latencies(addr: &str, key: Option<&str>, bytes: usize, n: usize) -> (Vec<f64>, usize) {
    let mut blocked = 0;
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let mut out: Vec<f64> = (0..n)
        .map(|i| {
            let body = json!({ "model": "bench-model", "messages": [{ "role": "user", "content": prose(bytes, i) }] }).to_string();
            let t = Instant::now();
            let (status, text) = lucid_tests::tcp_http(addr, "POST", "/v1/chat/completions", &headers, body.as_bytes());
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            match status {
                200 => {}
                403 if text.contains("lucid_blocked") => blocked += 1,
                _ => fail(&format!("{addr} answered {status}: {text}")),
            }
            ms
        })
        .collect();
    out.sort_by(|a, b| a.total_cmp(b));
    (out, blocked)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("LUCID_BENCH_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let tmp = tempfile::tempdir().unwrap_or_else(|e| fail(&e.to_string()));
    let upstream = lucid_tests::stub_upstream("Here is the summary you asked for.").unwrap_or_else(|e| fail(&e.to_string()));
    let config = tmp.path().join("lucid.yaml");
    let yaml = format!(
        "apiVersion: lucid.io/v1alpha1\nkind: LucidEnvironment\nmetadata:\n  name: gateway-bench\nspec:\n  agents:\n    - name: bench\n      model:\n        id: bench-model\n      upstream:\n        url: http://{upstream}/v1\n      profile: soc2\n"
    );
    std::fs::write(&config, yaml).unwrap_or_else(|e| fail(&e.to_string()));
    let pack = std::env::var("LUCID_MODEL_PACK").unwrap_or_else(|_| lucid_tests::bin("lucidd").parent().map(|p| p.join("../lucid-pack/guard").display().to_string()).unwrap_or_default());
    let d = Daemon::start_env(&tmp.path().join("state"), &["--config", config.to_str().unwrap_or_default()], &[("LUCID_MODEL_PACK", &pack)]);
    let key = d.ctl_json(&["keys", "create", "--name", "bench"])["secret"].as_str().unwrap_or_default().to_string();
    let status: Value = d.ctl_json(&["status"]);
    let gateway = status["gateway"].as_str().unwrap_or_default().to_string();
    if status["classifiers"].as_array().is_none_or(|c| c.is_empty()) {
        fail(&format!("no classifier loaded from {pack}: {}", status["classifier_note"]));
    }
    let mut out = serde_json::Map::new();
    out.insert("bench".into(), json!("gateway"));
    out.insert("classifiers".into(), status["classifiers"].clone());
    for (name, bytes) in [("1k", 1024), ("4k", 4096)] {
        latencies(&gateway, Some(&key), bytes, 50);
        let (ours, blocked) = latencies(&gateway, Some(&key), bytes, n);
        let (floor, _) = latencies(&upstream, None, bytes, n);
        out.insert(format!("blocked_{name}"), json!(blocked));
        out.insert(
            format!("gateway_{name}_ms"),
            json!({ "p50": round2(percentile(&ours, 0.5)), "p99": round2(percentile(&ours, 0.99)), "max": round2(percentile(&ours, 1.0)) }),
        );
        out.insert(format!("upstream_alone_{name}_ms"), json!({ "p50": round2(percentile(&floor, 0.5)), "p99": round2(percentile(&floor, 0.99)) }));
    }
    out.insert("requests".into(), json!(n));
    out.insert("cpu".into(), json!(lucid_tests::cpu_model()));
    println!("{}", Value::Object(out));
}
