//! The ledger through the real daemon and CLI: tampering of every kind is found and
//! located by `lucidctl ledger verify`, retention keeps verification passing, and no
//! acknowledged record is lost when the daemon is SIGKILLed under concurrent appends.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lucid_common::export::pack_records;
use lucid_tests::{Daemon, Rng};
use lucidd::ledger::store::{self, BatchHeader};
use redb::ReadableDatabase;

/// Starts a daemon, appends `n` notes, stops it cleanly; returns the state dir.
fn ledger_with_notes(tmp: &Path, n: usize) -> std::path::PathBuf {
    let dir = tmp.join("state");
    let mut d = Daemon::start(&dir, &[]);
    for i in 0..n {
        let (status, body) = d.http("POST", "/v1/notes", &format!("{{\"message\": \"note number {i}\"}}"));
        assert_eq!(status, 200, "{body}");
    }
    assert!(d.stop().success());
    dir
}

/// Rewrites the batches holding records `from..to` as one batch with `edit` applied to
/// their (record, stored leaf hash) pairs; with `rehash` the leaf hashes are recomputed
/// from the edited records, as a forger would. The daemon must be stopped.
fn tamper(dir: &Path, from: u64, to: u64, rehash: bool, edit: impl FnOnce(&mut Vec<(Vec<u8>, [u8; 32])>, usize)) {
    let db = store::open(&dir.join("ledger.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let (first, header) = store::batch_containing(&txn, from).unwrap().expect("a batch holds the record");
    let bodies = txn.open_table(store::BODIES).unwrap();
    let mut pairs = Vec::new();
    let mut keys = Vec::new();
    let mut at = first;
    while at < to {
        let (key, h) = store::batch_containing(&txn, at).unwrap().expect("batches are contiguous");
        let batch = store::decode_batch(key, h, &store::read_body(&bodies, key).unwrap()).unwrap();
        for (bytes, leaf) in batch.records().unwrap().into_iter().zip(batch.leaves.iter()) {
            pairs.push((bytes.to_vec(), *leaf));
        }
        keys.push(key);
        at = key + u64::from(h.count);
    }
    drop(bodies);
    drop(txn);
    edit(&mut pairs, (from - first) as usize);
    if rehash {
        for (bytes, leaf) in pairs.iter_mut() {
            *leaf = lucid_common::merkle::leaf_hash(bytes);
        }
    }
    let packed = pack_records(pairs.iter().map(|(b, _)| b.as_slice()));
    let leaves: Vec<[u8; 32]> = pairs.iter().map(|(_, l)| *l).collect();
    let new_header = BatchHeader { count: pairs.len() as u32, ..header };
    let txn = db.begin_write().unwrap();
    for k in keys {
        store::remove_batch(&txn, k).unwrap();
    }
    store::put_batch(&txn, first, &new_header, &store::encode_body(&leaves, &packed, 3).unwrap()).unwrap();
    txn.commit().unwrap();
}

fn verify_fails_at(dir: &Path) -> (u64, String) {
    let d = Daemon::start(dir, &[]);
    let out = d.ctl(&["ledger", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "verify must fail: {text}{}", String::from_utf8_lossy(&out.stderr));
    let seq = text
        .lines()
        .find_map(|l| l.strip_prefix("LEDGER VERIFICATION FAILED: first bad sequence number "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sequence number in: {text}"));
    (seq, text)
}

#[test]
fn intact_ledger_verifies_with_and_without_from() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ledger_with_notes(tmp.path(), 30);
    let d = Daemon::start(&dir, &[]);
    let report = d.ctl_json(&["ledger", "verify"]);
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["records_checked"].as_u64().unwrap() >= 33);
    let status = d.ctl_json(&["status", "--integrity"]);
    assert_eq!(status["integrity"]["ok"], true, "{status}");
    assert!(d.ctl_ok(&["status", "--integrity"]).contains("intact:"));
    let partial = d.ctl_json(&["ledger", "verify", "--from", "20"]);
    assert_eq!(partial["ok"], true, "{partial}");
    assert!(partial["from"].as_u64().unwrap() <= 20);
    // A pinned key that is not the host's fails every checkpoint.
    let other = lucid_common::checkpoint::VerifierKey::new(
        report["root"].as_str().map(|_| "vm/lucid").unwrap_or("x"),
        ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]).verifying_key(),
    );
    let out = d.ctl(&["ledger", "verify", "--key", &other.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    // A consistency proof between two checkpoints checks out in lucidctl.
    let sign = || -> u64 {
        let (status, body) = d.http("POST", "/v1/ledger/checkpoint", "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["info"]["size"].as_u64().unwrap()
    };
    let older = sign();
    for i in 0..5 {
        assert_eq!(d.http("POST", "/v1/notes", &format!("{{\"message\": \"more {i}\"}}")).0, 200);
    }
    let newer = sign();
    assert!(newer > older);
    let proof: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["ledger", "consistency", &older.to_string(), &newer.to_string()])).unwrap();
    assert_eq!((proof["old_size"].as_u64(), proof["new_size"].as_u64()), (Some(older), Some(newer)));
    assert_eq!(d.ctl(&["ledger", "consistency", "1", &newer.to_string()]).status.code(), Some(5), "no checkpoint at size 1");
    // Inclusion proofs check out in lucidctl and carry the record.
    let proof: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["ledger", "prove", "5"])).unwrap();
    assert_eq!(proof["record"]["seq"], 5);
    assert!(d.ctl_ok(&["ledger", "checkpoint"]).contains("\n\u{2014} "));
}

#[test]
fn a_modified_record_is_located() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ledger_with_notes(tmp.path(), 40);
    tamper(&dir, 17, 18, false, |records, i| {
        let text = String::from_utf8_lossy(&records[i].0).replace("note number", "NOTE NUMBER");
        records[i].0 = text.into_bytes();
    });
    let (seq, text) = verify_fails_at(&dir);
    assert_eq!(seq, 17, "{text}");
    assert!(text.contains("modified"), "{text}");
    // `status --integrity` says the same and exits 1.
    let d = Daemon::start(&dir, &[]);
    let out = d.ctl(&["status", "--integrity"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("BROKEN at record 17"), "{out:?}");
}

#[test]
fn a_modified_record_with_a_forged_hash_fails_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ledger_with_notes(tmp.path(), 40);
    tamper(&dir, 17, 18, true, |records, i| {
        let text = String::from_utf8_lossy(&records[i].0).replace("note number", "NOTE NUMBER");
        records[i].0 = text.into_bytes();
    });
    let (seq, text) = verify_fails_at(&dir);
    assert!(seq <= 17, "the failure is reported at or before the forged record: {text}");
    assert!(text.contains("signed checkpoint"), "{text}");
}

#[test]
fn a_deleted_record_is_located() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ledger_with_notes(tmp.path(), 40);
    tamper(&dir, 23, 25, false, |records, i| {
        records.remove(i);
    });
    let (seq, text) = verify_fails_at(&dir);
    assert_eq!(seq, 23, "{text}");
}

#[test]
fn reordered_records_are_located() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ledger_with_notes(tmp.path(), 40);
    tamper(&dir, 30, 32, true, |records, i| records.swap(i, i + 1));
    let (seq, text) = verify_fails_at(&dir);
    assert_eq!(seq, 30, "{text}");
}

#[test]
fn a_truncated_ledger_is_located_and_fails_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ledger_with_notes(tmp.path(), 40);
    // Remove every batch from record 25 on, and the write-ahead log with them.
    let db = store::open(&dir.join("ledger.redb")).unwrap();
    let first = {
        let txn = db.begin_read().unwrap();
        store::batch_containing(&txn, 25).unwrap().unwrap().0
    };
    let keys: Vec<u64> = {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(store::BATCHES).unwrap();
        t.range(first..).unwrap().map(|e| e.unwrap().0.value()).collect()
    };
    let txn = db.begin_write().unwrap();
    for k in keys {
        store::remove_batch(&txn, k).unwrap();
    }
    txn.commit().unwrap();
    drop(db);
    std::fs::remove_file(dir.join("ledger.wal")).unwrap();
    let (seq, text) = verify_fails_at(&dir);
    assert_eq!(seq, first, "{text}");
    assert!(text.contains("truncated") || text.contains("missing"), "{text}");
    // The daemon refuses to append to a truncated ledger.
    let d = Daemon::start(&dir, &[]);
    let out = d.ctl(&["annotate", "-m", "after truncation"]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    assert_eq!(d.ctl_json(&["status"])["ledger"]["health"], "failed");
}

#[test]
fn retention_prunes_bodies_and_verification_still_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let d = Daemon::start(&dir, &[]);
    for i in 0..50 {
        assert_eq!(d.http("POST", "/v1/notes", &format!("{{\"message\": \"old note {i}\"}}")).0, 200);
    }
    assert_eq!(d.http("POST", "/v1/ledger/checkpoint", "").0, 200);
    let covered = d.ctl_json(&["ledger", "checkpoint"])["info"]["size"].as_u64().unwrap();
    // A drill: run retention as of 400 days from now (365-day retention).
    let later = std::time::SystemTime::now() + Duration::from_secs(400 * 86_400);
    let later = humantime::format_rfc3339_seconds(later).to_string();
    let r: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["ledger", "retention", "--as-of", &later])).unwrap();
    assert_eq!(r["retention_days"], 365);
    assert_eq!(r["pruned"]["from"], 0);
    assert_eq!(r["pruned"]["to"], covered);
    let prune_seq = r["pruned"]["record_seq"].as_u64().unwrap();

    let report = d.ctl_json(&["ledger", "verify"]);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["pruned"][0]["from"], 0);
    assert_eq!(report["pruned"][0]["to"], covered);
    assert_eq!(report["pruned"][0]["prune_record"], prune_seq);
    let text = d.ctl_ok(&["ledger", "verify"]);
    assert!(text.contains(&format!("pruned under retention: bodies of records 0..{covered}")), "{text}");
    // Bodies are gone, hashes and proofs remain, and the prune record says so.
    let logs = d.ctl_ok(&["logs", "--since", "2000-01-01"]);
    assert!(!logs.contains("old note 3\n") && logs.contains("ledger.prune"), "{logs}");
    let proof: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["ledger", "prove", "3"])).unwrap();
    assert!(proof["record"].is_null());
    assert_eq!(d.ctl_json(&["status"])["ledger"]["pruned_to"], covered);
}

#[test]
fn production_daemons_refuse_retention_drills() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("env.yaml");
    std::fs::write(&cfg, include_str!("../../examples/soc2-environment.yaml")).unwrap();
    let state = tmp.path().join("state");
    let _d = Daemon::start_production(&state, &cfg);
    let out = lucid_tests::lucidctl(&state, &["ledger", "retention", "--as-of", "2100-01-01"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
}

/// SIGKILL at random moments under concurrent appends; every acknowledged record must
/// be there after the restart, byte for byte, and the ledger must verify.
#[test]
fn sigkill_under_concurrent_appends_loses_no_acknowledged_record() {
    const ROUNDS: usize = 24;
    const APPENDERS: usize = 8;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let mut rng = Rng::from_clock("sigkill_under_concurrent_appends");
    let acked: Arc<Mutex<HashMap<u64, String>>> = Arc::new(Mutex::new(HashMap::new()));
    for round in 0..ROUNDS {
        let mut d = Daemon::start(&dir, &[]);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        for t in 0..APPENDERS {
            let (socket, acked, stop) = (d.socket.clone(), acked.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let message = format!("round {round} appender {t} note {i}");
                    let (status, body) = lucid_tests::http(&socket, "POST", "/v1/notes", &format!("{{\"message\":\"{message}\"}}"));
                    if status == 200 {
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                        if let Some(seq) = v["seq"].as_u64() {
                            acked.lock().unwrap().insert(seq, message);
                        }
                    } else if status == 0 {
                        break; // the daemon is gone
                    }
                    i += 1;
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.range(30, 400)));
        d.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
    }
    let d = Daemon::start(&dir, &[]);
    let logs = d.ctl_ok(&["logs", "--kind", "note", "--since", "2000-01-01", "-o", "json"]);
    let mut stored: HashMap<u64, String> = HashMap::new();
    for line in logs.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        stored.insert(v["seq"].as_u64().unwrap(), v["body"]["message"].as_str().unwrap_or_default().to_string());
    }
    let acked = acked.lock().unwrap();
    assert!(acked.len() > ROUNDS * 10, "the rounds did append ({} acknowledged)", acked.len());
    for (seq, message) in acked.iter() {
        assert_eq!(stored.get(seq), Some(message), "acknowledged record {seq} is missing or different after SIGKILL");
    }
    let report = d.ctl_json(&["ledger", "verify"]);
    assert_eq!(report["ok"], true, "{report}");
    eprintln!("{} acknowledged records over {ROUNDS} SIGKILL rounds, all present; ledger verifies", acked.len());
}
