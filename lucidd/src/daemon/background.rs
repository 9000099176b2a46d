//! Evidence work that must not take CPU from the gateway: issuing passports,
//! anchoring checkpoints (TPM client work, reading and folding the ledger, signing) and
//! merging the ledger's segments.
//! On a host with few cores it competes with requests for the same CPUs, so it runs on
//! its own thread at a lower scheduling priority, where requests preempt it.

/// The nice value of background evidence work: requests (nice 0) get about ten times
/// its share of a contended CPU; an idle CPU runs it at full speed.
pub const NICE: i32 = 10;

/// Runs `f` on a new thread named `name` at [`NICE`] and waits for it. `Err` when the
/// thread could not start or `f` panicked.
pub async fn run<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_priority();
            let _ = tx.send(f());
        })
        .map_err(|e| format!("could not start the {name} thread: {e}"))?;
    rx.await.map_err(|_| format!("the {name} thread failed"))
}

/// Lowers this thread's priority to [`NICE`], never raises it (Linux: `setpriority` on
/// a thread id affects that thread only; raising a nice value needs no privilege).
pub fn lower_priority() {
    let target = current_nice().max(NICE);
    // SAFETY: plain syscall on this thread's own id.
    let done = unsafe { libc::setpriority(libc::PRIO_PROCESS as _, libc::gettid() as libc::id_t, target) };
    if done != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the priority of background evidence work");
    }
}

/// The nice value of the calling thread (for tests).
pub fn current_nice() -> i32 {
    // SAFETY: plain syscall on this thread's own id.
    unsafe { libc::getpriority(libc::PRIO_PROCESS as _, libc::gettid() as libc::id_t) }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn work_runs_at_the_lower_priority_and_a_panic_is_an_error() {
        let before = super::current_nice();
        let nice = super::run("test-bg", super::current_nice).await.unwrap();
        assert_eq!(nice, before.max(super::NICE));
        assert_eq!(super::current_nice(), before, "the caller's priority is untouched");
        let failed = super::run("test-bg", || -> u8 { panic!("boom") }).await;
        assert!(failed.is_err());
    }
}
