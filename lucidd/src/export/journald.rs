//! The journald sink: every ledger record becomes a structured journal entry
//! (`MESSAGE_ID` per kind, `LUCID_SEQ`, `LUCID_KIND`, `LUCID_CONTROLS`, ...), explained by
//! `systemd/lucid.catalog`. It follows the ledger head and persists its cursor, so
//! records committed while it was behind or while the daemon was down are still sent.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use lucid_common::record::{Kind, Record, Severity};
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

use crate::daemon::state::AppState;
use crate::ledger::{Health, Ledger, MESSAGE_ID_LEDGER_FAILED, MESSAGE_ID_LEDGER_RECOVERED};

/// journald MESSAGE_ID of each record kind (see `systemd/lucid.catalog`).
pub fn message_id(kind: Kind) -> &'static str {
    match kind {
        Kind::Decision => "f5c33ee3c8544071875b2828d8636bc8",
        Kind::Integrity => "abaa0289df714119863cf7b27e35fbb2",
        Kind::Process => "e93945d33797449da1141c99f2014bbc",
        Kind::Config => "8da62cb44a214333a46e36784d9804bc",
        Kind::Anomaly => "3495689524d74ec98e7440b458f2c8a1",
        Kind::Attestation => "39ae24a4194e4b5e93eab661b26f499e",
        Kind::Note => "056acc0b553d4c11ad979b176f639b92",
        Kind::System => "5be033456f4a4586bf446c4f976f4c25",
    }
}

/// Records read per step.
const STEP: u64 = 1024;

/// A connection to journald for ledger records (separate from the daemon's own logs,
/// which go to stderr).
pub struct JournaldSink {
    dispatch: Dispatch,
}

impl JournaldSink {
    /// Connects; fails when no journald socket is there.
    pub fn connect() -> std::io::Result<JournaldSink> {
        let mappings = tracing_journald::PriorityMappings {
            info: tracing_journald::Priority::Informational,
            ..tracing_journald::PriorityMappings::new()
        };
        let layer = tracing_journald::layer()?
            .with_field_prefix(None)
            .with_syslog_identifier("lucidd".into())
            .with_priority_mappings(mappings);
        Ok(JournaldSink { dispatch: Dispatch::new(tracing_subscriber::registry().with(layer)) })
    }

    /// Sends one record.
    pub fn send(&self, r: &Record) {
        let controls = r.controls.join(",");
        let body = r.body.to_string();
        let text = format!("{} {}: {}", r.kind, r.subject, summary(r));
        let id = message_id(r.kind);
        tracing::dispatcher::with_default(&self.dispatch, || {
            macro_rules! emit {
                ($level:ident) => {
                    tracing::$level!(
                        target: "lucid::ledger",
                        message_id = id,
                        lucid_seq = r.seq,
                        lucid_time_ns = r.time_ns,
                        lucid_kind = r.kind.as_str(),
                        lucid_source = r.source.as_str(),
                        lucid_controls = controls.as_str(),
                        lucid_severity = r.severity.as_str(),
                        lucid_subject = r.subject.as_str(),
                        lucid_body = body.as_str(),
                        "{}",
                        text
                    )
                };
            }
            match r.severity {
                Severity::Info | Severity::Notice => emit!(info),
                Severity::Warning => emit!(warn),
                Severity::Error | Severity::Critical => emit!(error),
            }
        });
    }

    /// Sends a ledger health change (failure or recovery).
    pub fn send_health(&self, health: &Health) {
        tracing::dispatcher::with_default(&self.dispatch, || match health {
            Health::Failed { error, .. } => tracing::error!(
                target: "lucid::ledger",
                message_id = MESSAGE_ID_LEDGER_FAILED,
                lucid_error = error.as_str(),
                "evidence ledger cannot write ({error}); lucidd refuses work that needs evidence until it recovers"
            ),
            Health::Ok => tracing::warn!(
                target: "lucid::ledger",
                message_id = MESSAGE_ID_LEDGER_RECOVERED,
                "evidence ledger can write again; lucidd accepts work"
            ),
        });
    }
}

fn summary(r: &Record) -> String {
    match r.body.get("message").and_then(|m| m.as_str()) {
        Some(m) => m.chars().take(200).collect(),
        None => format!("{} [{}]", r.source, r.controls.join(",")),
    }
}

fn read_cursor(path: &PathBuf) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Starts the sink if journald is reachable: follows the ledger from the saved cursor
/// (or from the current head on first run) and reports health changes.
pub fn spawn(state: Arc<AppState>, cursor_path: PathBuf) {
    let sink = match JournaldSink::connect() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::info!(error = %e, "journald not reachable; ledger records are not mirrored to the journal");
            return;
        }
    };
    state.journald.store(true, Ordering::Relaxed);
    let ledger: Arc<Ledger> = state.ledger.clone();
    let health_sink = sink.clone();
    let mut health = ledger.health();
    tokio::spawn(async move {
        while health.changed().await.is_ok() {
            let now = health.borrow_and_update().clone();
            health_sink.send_health(&now);
        }
    });
    tokio::spawn(async move {
        let mut cursor = read_cursor(&cursor_path).unwrap_or(0);
        let mut head = ledger.subscribe();
        loop {
            let next = head.borrow_and_update().next_seq;
            while cursor < next {
                let (l, from, to) = (ledger.clone(), cursor, (cursor + STEP).min(next));
                let sink = sink.clone();
                let sent = tokio::task::spawn_blocking(move || {
                    let records = l.records(from, to)?;
                    for r in &records {
                        sink.send(r);
                    }
                    Ok::<_, crate::ledger::LedgerError>(())
                })
                .await;
                match sent {
                    Ok(Ok(())) => {
                        cursor = to;
                        if let Err(e) = std::fs::write(&cursor_path, format!("{cursor}\n")) {
                            tracing::warn!(error = %e, "saving the journald cursor failed");
                        }
                    }
                    _ => {
                        // Reading failed (ledger reopening): try again on the next change.
                        break;
                    }
                }
            }
            if head.changed().await.is_err() {
                return;
            }
        }
    });
}
