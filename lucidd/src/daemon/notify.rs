//! systemd readiness, status and watchdog (Type=notify). Every call is a no-op when
//! the daemon was not started by systemd (no `NOTIFY_SOCKET`).

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::ledger::{now_ns, Ledger};

/// Tells systemd the daemon is ready, with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Updates the status line `systemctl status` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Tells systemd a configuration reload started / finished.
pub fn reloading(done: bool) {
    if done {
        send(&[NotifyState::Ready]);
    } else {
        send(&[NotifyState::Reloading]);
    }
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The watchdog period systemd asked for, as `sd_watchdog_enabled(3)` reads it:
/// `WATCHDOG_USEC`, unless `WATCHDOG_PID` names another process.
fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok().filter(|u| *u > 0)?;
    match std::env::var("WATCHDOG_PID").ok().map(|p| p.parse::<u32>()) {
        Some(Ok(pid)) if pid != std::process::id() => None,
        _ => Some(usec),
    }
}

/// Pings the watchdog at half its period, but only while the ledger writer is alive:
/// a wedged writer (a hung disk) must get the daemon restarted, not kept alive.
pub fn spawn_watchdog(ledger: Arc<Ledger>) {
    let Some(usec) = watchdog_usec() else { return };
    // A tiny WATCHDOG_USEC must not make a zero period (tokio's interval panics on it).
    let period = Duration::from_micros(usec / 2).max(Duration::from_millis(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let age = Duration::from_nanos(now_ns().saturating_sub(ledger.heartbeat_ns()));
            if age < Duration::from_micros(usec) {
                send(&[NotifyState::Watchdog]);
            } else {
                tracing::error!(stalled_for = ?age, "ledger writer stalled; withholding the watchdog ping");
            }
        }
    });
}
