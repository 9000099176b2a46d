//! Retention: prunes ledger record bodies older than `LOG_RETENTION_DAYS`, hourly and
//! at start. Hashes and checkpoints stay; each prune writes a signed record.

use std::sync::Arc;
use std::time::Duration;

use crate::ledger::{now_ns, LedgerError, PruneOutcome};

use super::state::AppState;

const DAY_NS: u64 = 86_400 * 1_000_000_000;

/// Runs retention once as of `as_of_ns`; `None` when no retention is configured or
/// nothing is old enough.
pub async fn run_once(state: &AppState, as_of_ns: u64) -> Result<Option<PruneOutcome>, LedgerError> {
    let Some(days) = state.config().env.retention_days() else { return Ok(None) };
    let cutoff = as_of_ns.saturating_sub(u64::from(days) * DAY_NS);
    let outcome = state.ledger.prune(cutoff, format!("LOG_RETENTION_DAYS={days}")).await?;
    if let Some(o) = &outcome {
        tracing::info!(from = o.from, to = o.to, record = o.record_seq, days, "pruned ledger record bodies under retention");
    }
    Ok(outcome)
}

/// Starts the hourly retention task.
pub fn spawn(state: Arc<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            if let Err(e) = run_once(&state, now_ns()).await {
                tracing::warn!(error = %e, "retention run failed; will retry");
            }
        }
    });
}
