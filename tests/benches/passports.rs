//! Passports at scale (prints one JSON line): a year of hourly passports (8,760) issued
//! by the real daemon on a real swtpm, then
//!
//! * verified offline as `lucidctl passport verify DIR` does (every claim of every
//!   passport and every link of the chain), against the peer, tpm2-tools'
//!   `tpm2_checkquote`, checking the same quotes one by one (signature, qualifying data
//!   and PCR values: the quote claim alone, less than Lucid checks);
//! * the gateway's p50/p99 latency with a scripted upstream, alone and while passports
//!   are being issued.
//!
//! `cargo build --release -p lucidd -p lucidctl && cargo bench -p lucid-tests --bench
//! passports`; `LUCID_BENCH_PASSPORTS=N` for fewer (the target is for 8,760);
//! `LUCID_BENCH_KEEP=DIR` keeps the passports there.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use lucid_tests::tpm::{self, Swtpm};
use lucid_tests::Daemon;
use serde_json::{json, Value};

fn fail(msg: &str) -> ! {
    println!("{}", json!({ "bench": "passports", "error": msg }));
    std::process::exit(1)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Requests per latency sample (p99 of this many).
const SAMPLES: usize = 2000;
/// Requests per long sample (about 10 s on 2 cores), for issuing every 5 s.
const LONG_SAMPLES: usize = 6000;

/// Each request's start and latency (ms), in order.
fn gateway_timed(addr: &str, key: &str, n: usize) -> Vec<(Instant, f64)> {
    let body = br#"{"model":"bench-model","messages":[{"role":"user","content":"What is the capital of France?"}]}"#;
    let auth = format!("Bearer {key}");
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let (status, text) = lucid_tests::tcp_http(addr, "POST", "/v1/chat/completions", &[("Authorization", &auth)], body);
            if status != 200 {
                fail(&format!("gateway answered {status}: {text}"));
            }
            (t, t.elapsed().as_secs_f64() * 1000.0)
        })
        .collect()
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn gateway_latencies(addr: &str, key: &str, n: usize) -> Vec<f64> {
    sorted(gateway_timed(addr, key, n).into_iter().map(|(_, ms)| ms).collect())
}

/// The latencies of the requests that overlapped an issuance window, and of the rest.
fn split_by_overlap(timed: &[(Instant, f64)], windows: &[(Instant, Instant)]) -> (Vec<f64>, Vec<f64>) {
    let (mut during, mut outside) = (Vec::new(), Vec::new());
    for (start, ms) in timed {
        let end = *start + Duration::from_secs_f64(ms / 1000.0);
        if windows.iter().any(|(a, b)| *start < *b && end > *a) {
            during.push(*ms);
        } else {
            outside.push(*ms);
        }
    }
    (sorted(during), sorted(outside))
}

/// PCR values as tpm2-tools 5.4 serialises them for `tpm2_checkquote -f` (its raw-values
/// form with `-l` fails in this version): the TPML_PCR_SELECTION struct (little-endian,
/// 16 selections of 8 bytes), a u32 count of TPML_DIGESTs, each a u32 count and 8
/// TPM2B_DIGESTs of 2 + 64 bytes.
fn tpm2_tools_pcrs(pcrs: &std::collections::BTreeMap<u32, String>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&1u32.to_le_bytes());
    let mut select = [0u8; 4];
    for i in pcrs.keys() {
        select[*i as usize / 8] |= 1 << (i % 8);
    }
    out.extend_from_slice(&0x000Bu16.to_le_bytes());
    out.push(3);
    out.extend_from_slice(&select);
    out.push(0);
    out.extend_from_slice(&[0u8; 15 * 8]);
    let values: Vec<Vec<u8>> = pcrs.values().map(|h| lucid_common::hex::decode(h).unwrap_or_default()).collect();
    let groups: Vec<&[Vec<u8>]> = values.chunks(8).collect();
    out.extend_from_slice(&(groups.len() as u32).to_le_bytes());
    for g in groups {
        out.extend_from_slice(&(g.len() as u32).to_le_bytes());
        for k in 0..8 {
            let v = g.get(k).cloned().unwrap_or_default();
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
            let mut buf = [0u8; 64];
            buf[..v.len().min(64)].copy_from_slice(&v[..v.len().min(64)]);
            out.extend_from_slice(&buf);
        }
    }
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Some(why) = tpm::missing() {
        fail(&why);
    }
    let n: usize = std::env::var("LUCID_BENCH_PASSPORTS").ok().and_then(|v| v.parse().ok()).unwrap_or(8760);
    let tmp = tempfile::tempdir().unwrap_or_else(|e| fail(&e.to_string()));
    let swtpm = Swtpm::start(&tmp.path().join("tpm"));
    let upstream = lucid_tests::stub_upstream("The capital of France is Paris.").unwrap_or_else(|e| fail(&e.to_string()));
    let config = tmp.path().join("lucid.yaml");
    let yaml = format!(
        "apiVersion: lucid.io/v1alpha1\nkind: LucidEnvironment\nmetadata:\n  name: passport-bench\nspec:\n  agents:\n    - name: bench\n      model:\n        id: bench-model\n      upstream:\n        url: http://{upstream}/v1\n      profile: soc2\n  attestation:\n    tpm: required\n    tcti: {}\n    eventLog: {}\n    passportIntervalMinutes: 100000\n    anchorEveryCheckpoints: 100000\n",
        swtpm.tcti(),
        tmp.path().join("no-event-log").display()
    );
    std::fs::write(&config, yaml).unwrap_or_else(|e| fail(&e.to_string()));
    let d = Daemon::start(&tmp.path().join("state"), &["--config", config.to_str().unwrap_or_default()]);
    let key = d.ctl_json(&["keys", "create", "--name", "bench"])["secret"].as_str().unwrap_or_default().to_string();
    let gateway = d.ctl_json(&["status"])["gateway"].as_str().unwrap_or_default().to_string();

    // The gateway alone; while a passport is issued every 250 ms (14,400 times the
    // default hourly rate); and while they are issued back to back (a stress figure: on
    // 2 cores swtpm's own CPU work competes with the gateway's).
    gateway_latencies(&gateway, &key, 50);
    let quiet = gateway_latencies(&gateway, &key, SAMPLES);
    // The same again: how much p99 moves between two quiet runs (the noise).
    let quiet_again = gateway_latencies(&gateway, &key, SAMPLES);
    let run_with_issuer = |pause: Duration, samples: usize| {
        let issuing = Arc::new(AtomicBool::new(true));
        let socket = d.socket.clone();
        let flag = issuing.clone();
        let issuer = std::thread::spawn(move || {
            let mut windows = Vec::new();
            while flag.load(Ordering::Relaxed) {
                let start = Instant::now();
                let (status, _) = lucid_tests::http(&socket, "POST", "/v1/passports", "{}");
                if status == 200 {
                    windows.push((start, Instant::now()));
                }
                std::thread::sleep(pause);
            }
            windows
        });
        let timed = gateway_timed(&gateway, &key, samples);
        issuing.store(false, Ordering::Relaxed);
        let windows = issuer.join().unwrap_or_default();
        let (during, outside) = split_by_overlap(&timed, &windows);
        (sorted(timed.into_iter().map(|(_, ms)| ms).collect()), windows.len(), during, outside)
    };
    // At 720 times the default rate (every 5 s), over samples long enough to hold
    // two issues, between two quiet samples of the same length (the noise).
    let long_quiet = gateway_latencies(&gateway, &key, LONG_SAMPLES);
    let (every_5s, every_5s_issued, _, _) = run_with_issuer(Duration::from_secs(5), LONG_SAMPLES);
    let long_quiet_again = gateway_latencies(&gateway, &key, LONG_SAMPLES);
    let (paced, paced_issued, paced_during, paced_outside) = run_with_issuer(Duration::from_millis(250), SAMPLES);
    let (busy, busy_issued, _, _) = run_with_issuer(Duration::ZERO, SAMPLES);
    let issued_during = paced_issued + busy_issued + every_5s_issued;

    // A year of passports.
    let t = Instant::now();
    let mut issue_ms = Vec::with_capacity(n);
    for _ in issued_during..n {
        let s = Instant::now();
        let (status, body) = d.http("POST", "/v1/passports", "{}");
        if status != 200 {
            fail(&format!("issuing: {status} {body}"));
        }
        issue_ms.push(s.elapsed().as_secs_f64() * 1000.0);
    }
    let issue_s = t.elapsed().as_secs_f64();
    issue_ms.sort_by(|a, b| a.total_cmp(b));

    // Their envelopes, read from the ledger.
    let (_, logs) = d.http("GET", "/v1/logs?kind=attestation", "");
    let dir = tmp.path().join("passports");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&e.to_string()));
    let mut envelopes = Vec::new();
    for line in logs.lines() {
        let Ok(r) = serde_json::from_str::<Value>(line) else { continue };
        if r["subject"] == "passport.issued" {
            let number = r["body"]["number"].as_u64().unwrap_or(0);
            let bytes = serde_json::to_vec(&r["body"]["envelope"]).unwrap_or_default();
            std::fs::write(dir.join(format!("{number:06}.json")), &bytes).unwrap_or_else(|e| fail(&e.to_string()));
            envelopes.push(bytes);
        }
    }
    if envelopes.len() < n {
        fail(&format!("only {} passports in the ledger", envelopes.len()));
    }
    // For profiling the verifier on its own: `LUCID_BENCH_KEEP=DIR` keeps the passports.
    if let Ok(keep) = std::env::var("LUCID_BENCH_KEEP") {
        let keep = std::path::Path::new(&keep);
        std::fs::create_dir_all(keep).unwrap_or_else(|e| fail(&e.to_string()));
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            std::fs::copy(entry.path(), keep.join(entry.file_name())).unwrap_or_else(|e| fail(&e.to_string()));
        }
    }

    // Lucid: lucidctl on the directory, offline (no daemon socket).
    let t = Instant::now();
    let out = Command::new(lucid_tests::bin("lucidctl"))
        .args(["--socket", "/nonexistent", "passport", "verify", "-o", "json"])
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let lucid_s = t.elapsed().as_secs_f64();
    let appraisals: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| fail(&String::from_utf8_lossy(&out.stderr)));
    let contraindicated = appraisals.iter().flat_map(|a| a["claims"].as_array().cloned().unwrap_or_default()).filter(|c| c["status"] == "contraindicated").count();
    if contraindicated > 0 || appraisals.len() != envelopes.len() {
        fail(&format!("{contraindicated} contraindicated claims over {} passports", appraisals.len()));
    }

    // The peer: tpm2_checkquote on each quote.
    let work = tmp.path().join("peer");
    std::fs::create_dir_all(&work).unwrap_or_else(|e| fail(&e.to_string()));
    let mut jobs = Vec::new();
    for (i, bytes) in envelopes.iter().enumerate() {
        let loaded = lucid_common::passport::load("p", bytes).unwrap_or_else(|e| fail(&e));
        let p = &loaded.statement.predicate;
        let Some(tpm) = &p.tpm else { fail("an unanchored passport") };
        let ak = lucid_common::tpm::wire::AkPublic::parse(&B64.decode(p.host.ak_public.as_deref().unwrap_or_default()).unwrap_or_default()).unwrap_or_else(|e| fail(&e.to_string()));
        let base = work.join(i.to_string());
        let write = |ext: &str, data: &[u8]| std::fs::write(base.with_extension(ext), data).unwrap_or_else(|e| fail(&e.to_string()));
        write("pem", ak.to_pem().unwrap_or_default().as_bytes());
        write("msg", &B64.decode(&tpm.quote).unwrap_or_default());
        write("sig", &B64.decode(&tpm.signature).unwrap_or_default());
        write("pcrs", &tpm2_tools_pcrs(&tpm.pcrs));
        jobs.push((base, lucid_common::hex::encode(&loaded.binding)));
    }
    let t = Instant::now();
    for (base, nonce) in &jobs {
        let arg = |ext: &str| base.with_extension(ext).display().to_string();
        let out = Command::new("tpm2_checkquote")
            .args(["-u", &arg("pem"), "-m", &arg("msg"), "-s", &arg("sig"), "-f", &arg("pcrs"), "-g", "sha256", "-q", nonce])
            .output()
            .unwrap_or_else(|e| fail(&format!("tpm2_checkquote: {e}")));
        if !out.status.success() {
            fail(&format!("tpm2_checkquote rejected {} (Lucid verified all in {lucid_s:.3} s): {}", base.display(), String::from_utf8_lossy(&out.stderr)));
        }
    }
    let peer_s = t.elapsed().as_secs_f64();
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    println!(
        "{}",
        json!({
            "bench": "passports",
            "cpu": lucid_tests::cpu_model(),
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "passports": envelopes.len(),
            "verify_lucidctl_s": round(lucid_s),
            "verify_target_s": 10.0,
            "peer": "tpm2_checkquote (tpm2-tools 5.4), one process per quote: signature, qualifying data, PCR digest",
            "peer_s": round(peer_s),
            "speedup": round(peer_s / lucid_s),
            "issue_s": round(issue_s),
            "issue_ms_p50": round(percentile(&issue_ms, 0.5)),
            "issue_ms_p99": round(percentile(&issue_ms, 0.99)),
            "gateway_ms_p50_quiet": round(percentile(&quiet, 0.5)),
            "gateway_ms_p99_quiet": round(percentile(&quiet, 0.99)),
            "gateway_ms_p50_quiet_again": round(percentile(&quiet_again, 0.5)),
            "gateway_ms_p99_quiet_again": round(percentile(&quiet_again, 0.99)),
            "gateway_requests_per_sample": SAMPLES,
            "gateway_requests_per_long_sample": LONG_SAMPLES,
            "gateway_ms_p50_quiet_long": round(percentile(&long_quiet, 0.5)),
            "gateway_ms_p99_quiet_long": round(percentile(&long_quiet, 0.99)),
            "gateway_ms_p50_issuing_every_5s": round(percentile(&every_5s, 0.5)),
            "gateway_ms_p99_issuing_every_5s": round(percentile(&every_5s, 0.99)),
            "passports_issued_every_5s": every_5s_issued,
            "gateway_ms_p50_quiet_long_again": round(percentile(&long_quiet_again, 0.5)),
            "gateway_ms_p99_quiet_long_again": round(percentile(&long_quiet_again, 0.99)),
            "gateway_ms_p50_issuing_every_250ms": round(percentile(&paced, 0.5)),
            "gateway_ms_p99_issuing_every_250ms": round(percentile(&paced, 0.99)),
            "passports_issued_every_250ms": paced_issued,
            "gateway_requests_overlapping_an_issue_every_250ms": paced_during.len(),
            "gateway_ms_p50_overlapping_an_issue_every_250ms": round(percentile(&paced_during, 0.5)),
            "gateway_ms_p99_overlapping_an_issue_every_250ms": round(percentile(&paced_during, 0.99)),
            "gateway_ms_max_overlapping_an_issue_every_250ms": round(paced_during.last().copied().unwrap_or(0.0)),
            "gateway_ms_p99_not_overlapping_every_250ms": round(percentile(&paced_outside, 0.99)),
            "gateway_ms_max_not_overlapping_every_250ms": round(paced_outside.last().copied().unwrap_or(0.0)),
            "gateway_ms_p50_issuing_back_to_back": round(percentile(&busy, 0.5)),
            "gateway_ms_p99_issuing_back_to_back": round(percentile(&busy, 0.99)),
            "passports_issued_back_to_back": busy_issued,
        })
    );
    drop(d);
    drop(swtpm);
}
