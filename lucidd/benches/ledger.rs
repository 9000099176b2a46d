//! Ledger benchmark: durable appends/s at 1, 16 and 256 concurrent appenders, verify
//! rate, and bytes on disk per record, against SQLite (WAL, synchronous=FULL, the same
//! group commit: one transaction per batch of queued appends) on the same records in
//! the same run. Prints one JSON line.
//!
//! `cargo bench -p lucidd --bench ledger` (env `LUCID_BENCH_SCALE=0.1` for a quick run,
//! `LUCID_BENCH_DIR` to choose the disk; the default is the system temp dir).

use std::sync::Arc;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use lucid_common::export::{FrameReader, Verifier};
use lucid_common::record::{Entry, Kind, Record, Severity};
use lucidd::ledger::{Ledger, LedgerOptions};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

/// A decision record shaped like the gateway's: auditor, verdict, scores, spans.
fn entry(i: u64) -> Entry {
    let denied = i.is_multiple_of(17);
    Entry {
        kind: Kind::Decision,
        source: "gateway".into(),
        controls: vec!["CC6.6".into(), "CC7.2".into()],
        severity: if denied { Severity::Warning } else { Severity::Info },
        subject: format!("req-{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        body: json!({
            "agent": "soc2-agent",
            "model": "meta-llama/Llama-3.1-8B",
            "stage": if i.is_multiple_of(2) { "preRequest" } else { "postResponse" },
            "auditor": "lucid-guardrails-auditor",
            "decision": if denied { "deny" } else { "proceed" },
            "scores": { "injection": (i % 1000) as f64 / 1000.0, "toxicity": (i % 97) as f64 / 97.0 },
            "latency_us": 180 + i % 400,
            "client": format!("10.0.{}.{}", i % 7, i % 250),
            "prompt_tokens": 40 + i % 900,
            "pii": if i.is_multiple_of(5) { json!([{"type": "email", "start": 12, "end": 31}]) } else { json!([]) },
        }),
    }
}

fn scale() -> f64 {
    std::env::var("LUCID_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0)
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("LUCID_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .unwrap_or_else(|e| fail(&format!("temp dir: {e}")))
}

mod common;

fn fail(msg: &str) -> ! {
    common::fail("ledger", msg)
}

/// Runs `total` appends from `concurrency` tasks; returns appends per second.
async fn run_appenders<F, Fut>(concurrency: u64, total: u64, append: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let append = Arc::new(append);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let append = append.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while i < total {
                append(i).await;
                i += concurrency;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| fail(&format!("appender: {e}")));
    }
    total as f64 / start.elapsed().as_secs_f64()
}

struct LucidRun {
    per_s: f64,
    ledger: Ledger,
    _dir: tempfile::TempDir,
}

async fn lucid(concurrency: u64, total: u64) -> LucidRun {
    let dir = bench_dir();
    let opts = LedgerOptions::new(dir.path().join("ledger.redb"), "bench.host/lucid".into());
    let ledger = Arc::new(
        Ledger::open(opts, SigningKey::from_bytes(&[1u8; 32])).unwrap_or_else(|e| fail(&e.to_string())),
    );
    let l = ledger.clone();
    let per_s = run_appenders(concurrency, total, move |i| {
        let l = l.clone();
        async move {
            l.append(entry(i)).await.unwrap_or_else(|e| fail(&e.to_string()));
        }
    })
    .await;
    let _ = ledger.checkpoint().await;
    let ledger = Arc::try_unwrap(ledger).unwrap_or_else(|_| fail("ledger still shared"));
    LucidRun { per_s, ledger, _dir: dir }
}

/// The peer: SQLite with the same group commit, fed the same canonical records.
struct SqliteRun {
    per_s: f64,
    bytes: u64,
}

enum SqlCmd {
    Append(Entry, oneshot::Sender<u64>),
}

async fn sqlite(concurrency: u64, total: u64) -> SqliteRun {
    let dir = bench_dir();
    let path = dir.path().join("peer.sqlite");
    let (tx, mut rx) = mpsc::channel::<SqlCmd>(65536);
    let p = path.clone();
    let writer = std::thread::spawn(move || {
        let mut conn = rusqlite::Connection::open(&p).unwrap_or_else(|e| fail(&e.to_string()));
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE records (seq INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, record BLOB NOT NULL);",
        )
        .unwrap_or_else(|e| fail(&e.to_string()));
        let mut seq = 0u64;
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while group.len() < 8192 {
                match rx.try_recv() {
                    Ok(c) => group.push(c),
                    Err(_) => break,
                }
            }
            let txn = conn.transaction().unwrap_or_else(|e| fail(&e.to_string()));
            let mut replies = Vec::with_capacity(group.len());
            {
                let mut stmt = txn
                    .prepare_cached("INSERT INTO records (seq, time_ns, record) VALUES (?1, ?2, ?3)")
                    .unwrap_or_else(|e| fail(&e.to_string()));
                for SqlCmd::Append(e, reply) in group {
                    let now = lucidd::ledger::now_ns();
                    let bytes = Record::from_entry(seq, now, e).encode();
                    stmt.execute(rusqlite::params![seq as i64, now as i64, bytes])
                        .unwrap_or_else(|e| fail(&e.to_string()));
                    replies.push((reply, seq));
                    seq += 1;
                }
            }
            txn.commit().unwrap_or_else(|e| fail(&e.to_string()));
            for (reply, seq) in replies {
                let _ = reply.send(seq);
            }
        }
        let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
    });
    let t = tx.clone();
    let per_s = run_appenders(concurrency, total, move |i| {
        let t = t.clone();
        async move {
            let (reply, rx) = oneshot::channel();
            if t.send(SqlCmd::Append(entry(i), reply)).await.is_err() {
                fail("sqlite writer gone");
            }
            let _ = rx.await;
        }
    })
    .await;
    drop(tx);
    let _ = writer.join();
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let bytes = size(&path) + size(&path.with_extension("sqlite-wal"));
    SqliteRun { per_s, bytes }
}

/// Export on one thread (the daemon's side), verify on another (lucidctl's side),
/// as it runs for real: two processes on a socket.
fn verify_rate(ledger: &Ledger) -> (f64, u64) {
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    let report = std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Err(e) = ledger.export(0, |chunk| tx.send(chunk).is_ok()) {
                fail(&format!("export: {e}"));
            }
        });
        let mut reader = FrameReader::default();
        let mut v = Verifier::new(ledger.verifier_key().clone());
        for chunk in rx {
            reader.extend(&chunk);
            while let Some((tag, payload)) = reader.next_frame() {
                if let Err(f) = v.feed(tag, &payload) {
                    fail(&format!("verification failed: {f:?}"));
                }
            }
        }
        v.finish()
    });
    if !report.ok {
        fail(&format!("verification failed: {:?}", report.failure));
    }
    (report.records_checked as f64 / start.elapsed().as_secs_f64(), report.records_checked)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rounds() -> usize {
    std::env::var("LUCID_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3).max(1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let s = scale();
    let counts = [(1u64, (2_000.0 * s) as u64), (16, (40_000.0 * s) as u64), (256, (400_000.0 * s) as u64)];
    let mut results = serde_json::Map::new();
    let mut big = None;
    for (concurrency, total) in counts {
        let total = total.max(concurrency);
        // Alternate the two stores over several rounds (each on a fresh database) and
        // compare medians: this disk's fsync latency drifts over seconds.
        let (mut lucid_rates, mut sqlite_rates) = (Vec::new(), Vec::new());
        for round in 0..rounds() {
            let per_round = (total / rounds() as u64).max(concurrency);
            if round % 2 == 1 {
                sqlite_rates.push(sqlite(concurrency, per_round).await.per_s);
            }
            let ours = lucid(concurrency, per_round).await;
            lucid_rates.push(ours.per_s);
            if round % 2 == 0 {
                sqlite_rates.push(sqlite(concurrency, per_round).await.per_s);
            }
        }
        let (ours_per_s, peer_per_s) = (median(lucid_rates.clone()), median(sqlite_rates.clone()));
        results.insert(
            format!("appenders_{concurrency}"),
            json!({
                "records_per_round": (total / rounds() as u64).max(concurrency),
                "rounds": rounds(),
                "lucid_per_s": ours_per_s.round(),
                "sqlite_per_s": peer_per_s.round(),
                "ratio_vs_sqlite": (ours_per_s / peer_per_s * 100.0).round() / 100.0,
                "lucid_rounds": lucid_rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
                "sqlite_rounds": sqlite_rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
            }),
        );
        if concurrency == 256 {
            // Disk use and verify rate on one full-size ledger and its SQLite twin.
            let ours = lucid(concurrency, total).await;
            let peer = sqlite(concurrency, total).await;
            big = Some((ours, peer, total));
        }
    }
    let Some((ours, peer, total)) = big else { fail("no 256 run") };
    let json_bytes: u64 = (0..total).map(|i| Record::from_entry(i, lucidd::ledger::now_ns(), entry(i)).encode().len() as u64 + 1).sum();
    let (verify_per_s, verified) = verify_rate(&ours.ledger);
    let db_bytes = ours.ledger.db_bytes();
    let wal_bytes = ours.ledger.options().wal_capacity;
    let (batch_bytes, _) = ours.ledger.stored_batch_bytes().unwrap_or_default();
    results.insert("verify_per_s".into(), json!(verify_per_s.round()));
    results.insert("verified_records".into(), json!(verified));
    results.insert(
        "disk".into(),
        json!({
            "records": total,
            "json_lines_bytes": json_bytes,
            "lucid_bytes": db_bytes,
            "lucid_bytes_per_record": (db_bytes as f64 / total as f64 * 10.0).round() / 10.0,
            "lucid_wal_bytes_fixed": wal_bytes,
            "lucid_batch_bytes_per_record": (batch_bytes as f64 / total as f64 * 10.0).round() / 10.0,
            "lucid_vs_json": (db_bytes as f64 / json_bytes as f64 * 1000.0).round() / 1000.0,
            "sqlite_bytes": peer.bytes,
            "sqlite_vs_json": (peer.bytes as f64 / json_bytes as f64 * 1000.0).round() / 1000.0,
        }),
    );
    results.insert("bench".into(), json!("ledger"));
    println!("{}", serde_json::Value::Object(results));
}
