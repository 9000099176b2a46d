//! Ledger tests on a real redb file in a temp dir.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use lucid_common::export::{FrameReader, Verifier};
use lucid_common::merkle::verify_inclusion;
use lucid_common::record::{Entry, Kind, Severity};
use lucid_common::{checkpoint::Checkpoint, hex};

use super::*;

fn entry(i: u64) -> Entry {
    Entry {
        kind: Kind::Note,
        source: "test".into(),
        controls: vec!["CC7.2".into()],
        severity: Severity::Info,
        subject: format!("note {i}"),
        body: serde_json::json!({ "i": i }),
    }
}

fn open(dir: &std::path::Path, every: u64) -> Ledger {
    let mut opts = LedgerOptions::new(dir.join("ledger.redb"), "test.host/lucid".into());
    opts.checkpoint_every = every;
    Ledger::open(opts, SigningKey::from_bytes(&[3u8; 32])).unwrap()
}

fn verify(ledger: &Ledger, from: u64) -> lucid_common::export::VerifyReport {
    let mut reader = FrameReader::default();
    ledger
        .export(from, |chunk| {
            reader.extend(&chunk);
            true
        })
        .unwrap();
    let mut v = Verifier::new(ledger.verifier_key().clone());
    while let Some((tag, payload)) = reader.next_frame() {
        if v.feed(tag, &payload).is_err() {
            break;
        }
    }
    v.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_durable_ordered_and_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(open(dir.path(), 100));
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let l = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50 {
                seqs.push(l.append(entry(t * 1000 + i)).await.unwrap().seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..800).collect::<Vec<_>>());
    ledger.checkpoint().await.unwrap();
    let report = verify(&ledger, 0);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records_checked, 800);
    assert_eq!(report.latest_checkpoint, 800);
    assert!(report.checkpoints_checked >= 8, "{report:?}");

    // --from starts at the batch holding the sequence number and still verifies.
    let partial = verify(&ledger, 500);
    assert!(partial.ok, "{partial:?}");
    assert!(partial.from <= 500 && partial.records_checked <= 800 - 500 + 1024);

    // Every record has an inclusion proof against the latest checkpoint.
    for seq in [0, 1, 255, 256, 511, 799] {
        let p = ledger.prove(seq).unwrap();
        let cp = Checkpoint::verify(&p.checkpoint, ledger.verifier_key()).unwrap();
        let proof: Vec<_> = p.proof.iter().map(|h| hex::decode32(h).unwrap()).collect();
        let leaf = hex::decode32(&p.leaf_hash).unwrap();
        assert!(verify_inclusion(seq, cp.size, &leaf, &proof, &cp.root), "seq {seq}");
        assert_eq!(p.record.unwrap()["seq"], seq);
    }
    let sizes: Vec<u64> = ledger.checkpoints(0, 100).unwrap().iter().map(|c| c.info.size).collect();
    assert_eq!(sizes.last(), Some(&800));
    let old = sizes[0];
    let c = ledger.consistency(old, 800).unwrap();
    let old_cp = Checkpoint::verify(&c.old_checkpoint, ledger.verifier_key()).unwrap();
    let new_cp = Checkpoint::verify(&c.new_checkpoint, ledger.verifier_key()).unwrap();
    let proof: Vec<_> = c.proof.iter().map(|h| hex::decode32(h).unwrap()).collect();
    assert!(lucid_common::merkle::verify_consistency(old, 800, &old_cp.root, &new_cp.root, &proof));
}

#[tokio::test]
async fn reopen_restores_head_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = open(dir.path(), 1000);
        for i in 0..10 {
            ledger.append(entry(i)).await.unwrap();
        }
        ledger.shutdown().await;
    }
    let ledger = open(dir.path(), 1000);
    assert_eq!(ledger.head().next_seq, 10);
    let r = ledger.append(entry(10)).await.unwrap();
    assert_eq!(r.seq, 10);
    ledger.checkpoint().await.unwrap();
    assert!(verify(&ledger, 0).ok);
    let recs = ledger.records(0, 11).unwrap();
    assert_eq!(recs.len(), 11);
    assert_eq!(recs[10].subject, "note 10");
}

#[tokio::test]
async fn prune_keeps_hashes_and_writes_a_signed_record() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), 1_000_000);
    for i in 0..300 {
        ledger.append(entry(i)).await.unwrap();
    }
    ledger.checkpoint().await.unwrap();
    let cutoff = now_ns() + 1;
    for i in 300..310 {
        ledger.append(entry(i)).await.unwrap();
    }
    let outcome = ledger.prune(cutoff, "test".into()).await.unwrap().unwrap();
    assert_eq!((outcome.from, outcome.to), (0, 300));
    assert_eq!(outcome.record_seq, 310);
    assert!(ledger.records(0, 300).unwrap().is_empty());
    assert_eq!(ledger.records(300, 311).unwrap().len(), 11);
    let report = verify(&ledger, 0);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.pruned.len(), 1);
    assert_eq!((report.pruned[0].from, report.pruned[0].to, report.pruned[0].prune_record), (0, 300, Some(310)));
    assert_eq!(report.pruned_leaves, 300);
    // A pruned record is still provable: its hash stays in the tree.
    let p = ledger.prove(5).unwrap();
    assert!(p.record.is_none());
    // Nothing more to prune.
    assert!(ledger.prune(cutoff, "test".into()).await.unwrap().is_none());
    assert_eq!(ledger.pruned_to().unwrap(), 300);
}
