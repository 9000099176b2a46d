//! `lucidctl ledger verify | prove | checkpoint | retention`: evidence checks that run
//! here, in the CLI, against what the daemon streams. `verify` recomputes the Merkle
//! tree from the stored records and checks every checkpoint signature itself.

use clap::Subcommand;
use hyper::Method;
use lucid_common::api::{CheckpointResponse, InclusionProof, Status};
use lucid_common::checkpoint::{Checkpoint, VerifierKey};
use lucid_common::export::{FrameReader, Verifier, VerifyReport};
use lucid_common::hex;
use lucid_common::merkle::verify_inclusion;

use crate::client::{next_chunk, CallError, Client};
use crate::exit;
use crate::output::{self, Format};

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Recompute the tree from the stored records and check every checkpoint signature.
    /// Exit 1 and print the first bad sequence number if anything was modified,
    /// deleted, reordered or truncated.
    Verify {
        /// Start at this sequence number (the tree before it is taken from stored hashes).
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        from: u64,
        /// Trust only this verifier key (name+id+key) instead of the one the daemon reports.
        #[arg(long, value_name = "VKEY")]
        key: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Print an inclusion proof (JSON) of one record against the latest checkpoint,
    /// after checking it here.
    Prove {
        /// The record's sequence number.
        seq: u64,
    },
    /// Print a consistency proof (JSON) between two signed checkpoints, after checking
    /// it here: the newer tree extends the older one without rewriting it.
    Consistency {
        /// Older checkpoint's tree size.
        old: u64,
        /// Newer checkpoint's tree size.
        new: u64,
    },
    /// Print the latest signed checkpoint.
    Checkpoint {
        /// Output format (text prints the signed note itself).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Run retention (LOG_RETENTION_DAYS) now; --as-of runs a drill as of a later time
    /// (dev-mode daemons only).
    Retention {
        /// Pretend it is this time (RFC 3339, a date).
        #[arg(long, value_name = "T", value_parser = output::parse_time)]
        as_of: Option<u64>,
    },
}

pub async fn run(client: &Client, cmd: LedgerCommand) -> Result<u8, CallError> {
    match cmd {
        LedgerCommand::Verify { from, key, output } => verify(client, from, key, output).await,
        LedgerCommand::Prove { seq } => prove(client, seq).await,
        LedgerCommand::Checkpoint { output } => checkpoint(client, output).await,
        LedgerCommand::Consistency { old, new } => consistency(client, old, new).await,
        LedgerCommand::Retention { as_of } => {
            let r: serde_json::Value = client.post("/v1/ledger/retention", &serde_json::json!({ "as_of_ns": as_of })).await?;
            output::json(&r)?;
            Ok(exit::OK)
        }
    }
}

async fn verify(client: &Client, from: u64, key: Option<String>, format: Format) -> Result<u8, CallError> {
    let (report, key) = verify_report(client, from, key).await?;
    if format == Format::Json {
        output::json(&report)?;
    } else {
        print_report(&report, &key)?;
    }
    Ok(if report.ok { exit::OK } else { exit::VERIFY_FAILED })
}

/// The `status --integrity` line for a verification report.
pub fn integrity_line(r: &VerifyReport) -> String {
    match &r.failure {
        None => format!(
            "intact: {} records recomputed, {} checkpoint signatures, root {}…",
            r.tree_size,
            r.checkpoints_checked,
            output::short(&r.root, 16)
        ),
        Some(f) => format!("BROKEN at record {}: {}", f.seq, f.reason),
    }
}

/// Streams the ledger from `from` and verifies it here; the report and the key used.
pub async fn verify_report(client: &Client, from: u64, key: Option<String>) -> Result<(VerifyReport, VerifierKey), CallError> {
    let key = match key {
        Some(k) => k,
        None => client.get::<Status>("/v1/status").await?.verifier_key,
    };
    let key = VerifierKey::parse(&key).map_err(|e| CallError::new(exit::USAGE, format!("--key: {e}")))?;
    let response = client.send(Method::GET, &format!("/v1/ledger/export?from={from}"), None).await?;
    let mut body = response.into_body();
    let mut reader = FrameReader::default();
    let mut verifier = Verifier::new(key.clone());
    'stream: while let Some(chunk) = next_chunk(&mut body).await? {
        reader.extend(&chunk);
        while let Some((tag, payload)) = reader.next_frame() {
            if verifier.feed(tag, &payload).is_err() {
                break 'stream;
            }
        }
    }
    Ok((verifier.finish(), key))
}

fn print_report(r: &VerifyReport, key: &VerifierKey) -> Result<(), CallError> {
    if let Some(f) = &r.failure {
        output::line(&format!("LEDGER VERIFICATION FAILED: first bad sequence number {}", f.seq))?;
        output::line(&format!("  {}", f.reason))?;
        output::line(&format!("  verified before it: {} records, {} checkpoints", r.records_checked, r.checkpoints_checked))?;
        return Ok(());
    }
    output::line(&format!(
        "ledger intact: records {}..{} ({} hashed from their stored bodies), {} checkpoint signatures by {} ({})",
        r.from,
        r.tree_size,
        r.records_checked,
        r.checkpoints_checked,
        key.name,
        hex::encode(&key.key_id)
    ))?;
    output::line(&format!("  root {} at size {}; latest checkpoint covers {}", r.root, r.tree_size, r.latest_checkpoint))?;
    if r.unsigned_tail > 0 {
        output::line(&format!("  {} newest records are not yet under a checkpoint (they are signed within seconds)", r.unsigned_tail))?;
    }
    for p in &r.pruned {
        let by = p.prune_record.map(|s| format!("signed prune record #{s}")).unwrap_or_default();
        output::line(&format!("  pruned under retention: bodies of records {}..{} (hashes kept; {by})", p.from, p.to))?;
    }
    Ok(())
}

async fn prove(client: &Client, seq: u64) -> Result<u8, CallError> {
    let p: InclusionProof = client.get(&format!("/v1/ledger/prove?seq={seq}")).await?;
    let key = VerifierKey::parse(&p.verifier_key).map_err(|e| CallError::new(exit::DAEMON_ERROR, e.to_string()))?;
    let cp = Checkpoint::verify(&p.checkpoint, &key)
        .map_err(|e| CallError::new(exit::VERIFY_FAILED, format!("the proof's checkpoint does not verify: {e}")))?;
    let leaf = hex::decode32(&p.leaf_hash);
    let path: Option<Vec<_>> = p.proof.iter().map(|h| hex::decode32(h)).collect();
    let record_matches = match &p.record {
        Some(r) => {
            let rec: Option<lucid_common::record::Record> = serde_json::from_value(r.clone()).ok();
            rec.map(|r| lucid_common::merkle::leaf_hash(&r.encode())) == leaf
        }
        None => true,
    };
    let ok = match (leaf, path) {
        (Some(leaf), Some(path)) => record_matches && verify_inclusion(seq, cp.size, &leaf, &path, &cp.root),
        _ => false,
    };
    output::json(&p)?;
    if !ok {
        eprintln!("lucidctl: the inclusion proof of record {seq} does NOT verify against checkpoint {}", cp.size);
        return Ok(exit::VERIFY_FAILED);
    }
    Ok(exit::OK)
}

async fn consistency(client: &Client, old: u64, new: u64) -> Result<u8, CallError> {
    let p: lucid_common::api::ConsistencyProof = client.get(&format!("/v1/ledger/consistency?old={old}&new={new}")).await?;
    let key = client.get::<Status>("/v1/status").await?.verifier_key;
    let key = VerifierKey::parse(&key).map_err(|e| CallError::new(exit::DAEMON_ERROR, e.to_string()))?;
    let checked = (|| {
        let a = Checkpoint::verify(&p.old_checkpoint, &key).ok()?;
        let b = Checkpoint::verify(&p.new_checkpoint, &key).ok()?;
        let proof: Vec<_> = p.proof.iter().map(|h| hex::decode32(h)).collect::<Option<_>>()?;
        Some(a.size == old && b.size == new && lucid_common::merkle::verify_consistency(old, new, &a.root, &b.root, &proof))
    })();
    output::json(&p)?;
    if checked != Some(true) {
        eprintln!("lucidctl: the consistency proof {old} -> {new} does NOT verify");
        return Ok(exit::VERIFY_FAILED);
    }
    Ok(exit::OK)
}

async fn checkpoint(client: &Client, format: Format) -> Result<u8, CallError> {
    let c: CheckpointResponse = client.get("/v1/ledger/checkpoint").await?;
    if format == Format::Json {
        output::json(&c)?;
    } else {
        output::line(c.note.trim_end())?;
    }
    Ok(exit::OK)
}
