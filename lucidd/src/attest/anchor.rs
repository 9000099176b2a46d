//! Ledger anchoring: a root attacker who deletes the ledger's tail together with its
//! checkpoints leaves a ledger that verifies on its own. The TPM's NV counter cannot
//! go back, so every Nth checkpoint (and every passport) advances it and the AK
//! certifies the new value together with the checkpoint; the certification is a
//! ledger record. On start a ledger whose last anchor is behind the counter has been
//! rolled back: lucidd records it and refuses to run until an operator accepts it.
//!
//! Order of an anchor: an intent record (durable), then the counter advance and the
//! certification, then the anchor record. A crash between the advance and the anchor
//! record leaves the counter one ahead of the last anchor *with* an intent after it,
//! which is not a rollback; a deleted tail removes the intent too.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use lucid_common::record::{Entry, Kind, Record, Severity};
use serde_json::json;

use super::Attestor;
use crate::ledger::Ledger;

/// Subject of an anchor record.
pub const ANCHOR: &str = "tpm.anchor";
/// Subject of the record written before the counter advances.
pub const INTENT: &str = "tpm.anchor.intent";

/// What an anchor produced (also what a passport carries).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Anchor {
    /// The counter's value after the advance.
    pub counter: u64,
    /// The checkpoint note bound with it.
    pub checkpoint: String,
    /// The NV certification (`TPMS_ATTEST`), base64.
    pub attest: String,
    /// The AK's signature over it, base64.
    pub signature: String,
    /// The ledger record holding it.
    #[serde(default)]
    pub record_seq: u64,
}

/// Why an anchor could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// The TPM failed or is absent.
    #[error(transparent)]
    Tpm(#[from] super::TpmError),
    /// The ledger could not record it.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// The blocking task failed.
    #[error("anchor task: {0}")]
    Task(String),
}

/// Advances the counter, binding the latest checkpoint (signing one first if records
/// came after it), and records it.
pub async fn anchor_now(ledger: &Ledger, attestor: &Arc<Attestor>, reason: &str) -> Result<Anchor, AnchorError> {
    ledger.checkpoint().await?;
    let Some((size, note)) = ledger.head().checkpoint else {
        return Err(AnchorError::Task("the ledger has no checkpoint yet".into()));
    };
    // The value the attestor last read or set (at start, at each anchor): lucidd is the
    // counter's only writer, so no TPM round trip is needed for it.
    let before = attestor.status().anchor_counter;
    ledger
        .append(entry(INTENT, Severity::Info, json!({ "counter_before": before, "checkpoint_size": size, "reason": reason })))
        .await?;
    let a = attestor.clone();
    let n = note.clone();
    let (counter, signed) = crate::daemon::background::run("anchor", move || a.anchor(&n)).await.map_err(AnchorError::Task)??;
    let mut anchor = Anchor { counter, checkpoint: note, attest: B64.encode(&signed.attest), signature: B64.encode(&signed.signature), record_seq: 0 };
    let receipt = ledger
        .append(entry(ANCHOR, Severity::Info, json!({
            "counter": counter,
            "checkpoint_size": size,
            "checkpoint": anchor.checkpoint,
            "attest": anchor.attest,
            "signature": anchor.signature,
            "reason": reason,
        })))
        .await?;
    anchor.record_seq = receipt.seq;
    Ok(anchor)
}

/// Anchors every `anchor_every_checkpoints`th checkpoint while the daemon runs.
pub fn spawn(ledger: Arc<Ledger>, attestor: Arc<Attestor>) {
    let every = attestor.settings().anchor_every_checkpoints.max(1);
    tokio::spawn(async move {
        let mut head = ledger.subscribe();
        let mut last_size = head.borrow().checkpoint.as_ref().map(|c| c.0);
        let mut seen = 0u64;
        // Records up to here are the last anchor's own (its intent and itself): a
        // checkpoint that adds nothing else does not count, or anchors would feed on
        // their own records.
        let mut own_through = 0u64;
        while head.changed().await.is_ok() {
            let size = head.borrow().checkpoint.as_ref().map(|c| c.0);
            if size == last_size || size.is_some_and(|s| s <= own_through) {
                continue;
            }
            last_size = size;
            seen += 1;
            if seen < every || attestor.identity().is_none() {
                continue;
            }
            seen = 0;
            match anchor_now(&ledger, &attestor, "checkpoint").await {
                Ok(a) => own_through = a.record_seq + 1,
                Err(e) => {
                    tracing::error!(error = %e, "could not anchor the ledger in the TPM; trying again at the next checkpoint");
                    seen = every;
                }
            }
        }
    });
}

/// What the start-up comparison of the ledger with the TPM found.
#[derive(Debug, PartialEq, Eq)]
pub enum Comparison {
    /// No TPM, or never anchored on this TPM.
    NothingToCompare,
    /// The ledger's last anchor matches the counter (or an interrupted anchor explains
    /// the difference).
    Consistent,
    /// The counter is ahead of every anchor the ledger holds: records were removed.
    RolledBack {
        /// The TPM's counter.
        tpm: u64,
        /// The ledger's last anchor (none: the ledger holds none at all).
        ledger: Option<u64>,
    },
}

/// Compares the TPM's counter with the ledger's last anchor and intent.
pub fn compare(tpm: Option<u64>, last_anchor: Option<&Record>, last_intent: Option<&Record>) -> Comparison {
    let Some(tpm) = tpm else { return Comparison::NothingToCompare };
    let anchored = last_anchor.and_then(|r| r.body.get("counter")).and_then(|c| c.as_u64());
    // An intent written after the last anchor: the advance it announced may have
    // happened without its record (a crash in between).
    let open_intent = match (last_intent, last_anchor) {
        (Some(i), Some(a)) => i.seq > a.seq,
        (Some(_), None) => true,
        _ => false,
    };
    match anchored {
        Some(a) if tpm == a => Comparison::Consistent,
        Some(a) if tpm == a + 1 && open_intent => Comparison::Consistent,
        // A first anchor that did not complete: a new counter starts at an unknown value.
        None if open_intent && last_intent.and_then(|i| i.body.get("counter_before")).is_some_and(|c| c.is_null()) => Comparison::Consistent,
        Some(a) if tpm < a => Comparison::Consistent, // a ledger ahead of a counter: another TPM (recorded at start)
        ledger => Comparison::RolledBack { tpm, ledger },
    }
}

/// The check at start: `Err` with the message for the operator when the ledger was
/// rolled back and `accept` is not given. Either way the finding is recorded.
pub async fn check_on_start(ledger: &Ledger, attestor: &Arc<Attestor>, accept: bool) -> Result<(), String> {
    if attestor.identity().is_none() {
        return Ok(());
    }
    let a = attestor.clone();
    let tpm = match tokio::task::spawn_blocking(move || a.counter()).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(format!("could not read the TPM's anchor counter: {e}")),
        Err(e) => return Err(e.to_string()),
    };
    let last = |subject: &'static str| ledger.last_matching(|r| r.kind == Kind::Attestation && r.subject == subject);
    let (anchor, intent) = match (last(ANCHOR), last(INTENT)) {
        (Ok(a), Ok(i)) => (a, i),
        (Err(e), _) | (_, Err(e)) => return Err(format!("could not read the ledger's anchors: {e}")),
    };
    let Comparison::RolledBack { tpm, ledger: at } = compare(tpm, anchor.as_ref(), intent.as_ref()) else { return Ok(()) };
    let message = format!(
        "the ledger was rolled back: the TPM's anchor counter is {tpm}, the ledger's last anchor {} (records and checkpoints after it were removed)",
        at.map(|a| a.to_string()).unwrap_or_else(|| "is missing".into())
    );
    let body = json!({ "tpm_counter": tpm, "ledger_counter": at, "records": ledger.head().next_seq, "accepted": accept });
    let recorded = ledger.append(entry("tpm.rollback_detected", Severity::Critical, body)).await;
    if let Err(e) = &recorded {
        tracing::error!(error = %e, "could not record the rollback");
    }
    if !accept {
        return Err(format!("{message}. lucidd refuses to run on it; restore the ledger, or start once with --accept-rollback to continue (recorded)"));
    }
    tracing::error!("{message}; continuing because --accept-rollback was given (recorded)");
    if let Err(e) = anchor_now(ledger, attestor, "rollback accepted").await {
        tracing::error!(error = %e, "could not re-anchor after the accepted rollback");
    }
    Ok(())
}

fn entry(subject: &str, severity: Severity, body: serde_json::Value) -> Entry {
    Entry { kind: Kind::Attestation, source: "lucidd".into(), controls: vec!["CC7.2".into(), "PI1.5".into()], severity, subject: subject.into(), body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, subject: &str, body: serde_json::Value) -> Record {
        Record { seq, time_ns: seq, kind: Kind::Attestation, source: "t".into(), controls: vec![], severity: Severity::Info, subject: subject.into(), body }
    }

    #[test]
    fn a_counter_ahead_of_the_ledger_is_a_rollback_unless_an_intent_explains_it() {
        let anchor = rec(10, ANCHOR, json!({ "counter": 7 }));
        let old_intent = rec(9, INTENT, json!({ "counter_before": 6 }));
        let new_intent = rec(12, INTENT, json!({ "counter_before": 7 }));
        assert_eq!(compare(None, Some(&anchor), None), Comparison::NothingToCompare);
        assert_eq!(compare(Some(7), Some(&anchor), Some(&old_intent)), Comparison::Consistent);
        assert_eq!(compare(Some(8), Some(&anchor), Some(&old_intent)), Comparison::RolledBack { tpm: 8, ledger: Some(7) });
        assert_eq!(compare(Some(8), Some(&anchor), Some(&new_intent)), Comparison::Consistent);
        assert_eq!(compare(Some(9), Some(&anchor), Some(&new_intent)), Comparison::RolledBack { tpm: 9, ledger: Some(7) });
        assert_eq!(compare(Some(3), None, None), Comparison::RolledBack { tpm: 3, ledger: None });
        assert_eq!(compare(Some(3), None, Some(&rec(1, INTENT, json!({ "counter_before": null })))), Comparison::Consistent);
    }
}
