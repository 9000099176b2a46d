//! The journald sink: every ledger record becomes a structured journal entry
//! (`MESSAGE_ID` per kind, `LUCID_SEQ`, `LUCID_KIND`, `LUCID_CONTROLS`, ...), explained by
//! `systemd/lucid.catalog`. It follows the ledger head and persists its cursor, so
//! records committed while it was behind or while the daemon was down are still sent.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lucid_common::record::{Kind, Record, Severity};

use super::journal_protocol::{JournalSocket, JOURNAL_SOCKET};

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

/// Records read per step: the ledger's merged batch size (a checkpoint every 4096
/// records), so a batch is decompressed about once, not once per smaller step.
const STEP: u64 = 4096;

/// Wait between attempts to reach journald while it is absent or refusing entries.
const RETRY: Duration = Duration::from_secs(2);

/// A connection to journald for ledger records (separate from the daemon's own logs,
/// which go to stderr).
pub struct JournaldSink {
    socket: JournalSocket,
}

impl JournaldSink {
    /// Connects; fails when no journald is listening.
    pub fn connect() -> std::io::Result<JournaldSink> {
        Ok(JournaldSink { socket: JournalSocket::connect(&socket_path())? })
    }

    /// Sends one record; an error means journald did not get it.
    pub fn send(&self, r: &Record) -> std::io::Result<()> {
        let controls = r.controls.join(",");
        let body = r.body.to_string();
        let text = format!("{} {}: {}", r.kind, r.subject, summary(r));
        let (seq, time_ns) = (r.seq.to_string(), r.time_ns.to_string());
        self.socket.send(&[
            ("MESSAGE", text.as_str()),
            ("PRIORITY", priority(r.severity)),
            ("SYSLOG_IDENTIFIER", "lucidd"),
            ("MESSAGE_ID", message_id(r.kind)),
            ("LUCID_SEQ", seq.as_str()),
            ("LUCID_TIME_NS", time_ns.as_str()),
            ("LUCID_KIND", r.kind.as_str()),
            ("LUCID_SOURCE", r.source.as_str()),
            ("LUCID_CONTROLS", controls.as_str()),
            ("LUCID_SEVERITY", r.severity.as_str()),
            ("LUCID_SUBJECT", r.subject.as_str()),
            ("LUCID_BODY", body.as_str()),
        ])
    }

    /// Sends a ledger health change (failure or recovery).
    pub fn send_health(&self, health: &Health) -> std::io::Result<()> {
        match health {
            Health::Failed { error, .. } => {
                let text = format!("evidence ledger cannot write ({error}); lucidd refuses work that needs evidence until it recovers");
                self.socket.send(&[
                    ("MESSAGE", text.as_str()),
                    ("PRIORITY", "3"),
                    ("SYSLOG_IDENTIFIER", "lucidd"),
                    ("MESSAGE_ID", MESSAGE_ID_LEDGER_FAILED),
                    ("LUCID_ERROR", error.as_str()),
                ])
            }
            Health::Ok => self.socket.send(&[
                ("MESSAGE", "evidence ledger can write again; lucidd accepts work"),
                ("PRIORITY", "4"),
                ("SYSLOG_IDENTIFIER", "lucidd"),
                ("MESSAGE_ID", MESSAGE_ID_LEDGER_RECOVERED),
            ]),
        }
    }
}

/// The journal socket: `LUCID_JOURNAL_SOCKET` where the journal is reached elsewhere
/// (a container with the host's socket bind-mounted; tests), else systemd's path.
pub fn socket_path() -> PathBuf {
    std::env::var_os("LUCID_JOURNAL_SOCKET").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(JOURNAL_SOCKET))
}

/// syslog priority of a severity.
fn priority(s: Severity) -> &'static str {
    match s {
        Severity::Info => "6",
        Severity::Notice => "5",
        Severity::Warning => "4",
        Severity::Error => "3",
        Severity::Critical => "2",
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

/// Connects, retrying every [`RETRY`] until journald listens; `status` shows the state.
async fn reconnect(state: &AppState) -> Arc<JournaldSink> {
    let mut told = false;
    loop {
        match JournaldSink::connect() {
            Ok(s) => {
                state.journald.store(true, Ordering::Relaxed);
                if told {
                    tracing::info!("journald reachable again; mirroring ledger records from the saved cursor");
                }
                return Arc::new(s);
            }
            Err(e) => {
                state.journald.store(false, Ordering::Relaxed);
                if !told {
                    tracing::warn!(error = %e, socket = %socket_path().display(), "journald not reachable; ledger records will be mirrored once it is (they stay in the ledger meanwhile)");
                    told = true;
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Starts the sink: follows the ledger from the saved cursor (from the first record on
/// first run, so the journal mirrors all the evidence) and reports health changes. The cursor moves only past records
/// journald accepted; while journald is absent the sink waits and then catches up.
pub fn spawn(state: Arc<AppState>, cursor_path: PathBuf) {
    let ledger: Arc<Ledger> = state.ledger.clone();
    let mut health = ledger.health();
    tokio::spawn(async move {
        let mut sink = reconnect(&state).await;
        let mut cursor = read_cursor(&cursor_path).unwrap_or(0);
        let mut head = ledger.subscribe();
        let mut pending_health: Option<Health> = None;
        loop {
            if let Some(h) = pending_health.take() {
                if let Err(e) = sink.send_health(&h) {
                    pending_health = Some(h);
                    tracing::warn!(error = %e, "journald refused an entry; reconnecting");
                    sink = reconnect_after_failure(&state).await;
                    continue;
                }
            }
            let next = head.borrow_and_update().next_seq;
            let mut failed = false;
            while cursor < next {
                let (l, from, to) = (ledger.clone(), cursor, (cursor + STEP).min(next));
                let (s, path) = (sink.clone(), cursor_path.clone());
                // Reading, sending and saving the cursor are blocking work.
                let sent = tokio::task::spawn_blocking(move || {
                    let records = l.records(from, to)?;
                    let mut done = from;
                    let mut err = None;
                    for r in &records {
                        if let Err(e) = s.send(r) {
                            err = Some(e);
                            break;
                        }
                        done = r.seq + 1;
                    }
                    if err.is_none() {
                        done = to;
                    }
                    if done > from {
                        if let Err(e) = std::fs::write(&path, format!("{done}\n")) {
                            tracing::warn!(error = %e, "saving the journald cursor failed");
                        }
                    }
                    Ok::<_, crate::ledger::LedgerError>((done, err))
                })
                .await;
                match sent {
                    Ok(Ok((done, err))) => {
                        cursor = cursor.max(done);
                        if let Some(e) = err {
                            tracing::warn!(error = %e, seq = cursor, "journald refused a record; reconnecting and resending from it");
                            failed = true;
                            break;
                        }
                    }
                    // Reading failed (ledger reopening): try again on the next change.
                    _ => break,
                }
            }
            if failed {
                sink = reconnect_after_failure(&state).await;
                continue;
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return },
                changed = health.changed() => {
                    if changed.is_err() { return }
                    pending_health = Some(health.borrow_and_update().clone());
                }
            }
        }
    });
}

/// After a failed send: marks journald unreachable, waits, and connects again.
async fn reconnect_after_failure(state: &AppState) -> Arc<JournaldSink> {
    state.journald.store(false, Ordering::Relaxed);
    tokio::time::sleep(RETRY).await;
    reconnect(state).await
}
