//! The daemon's lifetime: load configuration, open the ledger, start the control API,
//! the sinks and the timers, tell systemd it is ready, then react to signals.

pub mod background;
pub mod hostkey;
pub mod measured;
pub mod notify;
pub mod retention;
pub mod runtime;
pub mod state;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::config;
use crate::ledger::{now_ns, Ledger, LedgerOptions};
use state::{AppState, Mode, RunInfo};

/// Where the daemon keeps things and what it loads.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// Dev or production.
    pub mode: Mode,
    /// Ledger, host key, sink cursors.
    pub state_dir: PathBuf,
    /// Control socket path.
    pub socket: PathBuf,
    /// Configuration file; `None` runs the embedded dev default.
    pub config: Option<PathBuf>,
    /// Group whose members may use the control socket.
    pub control_group: String,
    /// Gateway address overriding `spec.gateway.listen` (port 0 picks a free port).
    pub listen: Option<std::net::SocketAddr>,
    /// Start although the TPM shows the ledger was rolled back (recorded).
    pub accept_rollback: bool,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    let (env, source) = match &opts.config {
        Some(path) => (config::load_file(path)?, path.display().to_string()),
        None => (config::parse(config::DEV_DEFAULT, "embedded:dev")?, "embedded:dev".to_string()),
    };
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("creating state directory {}", opts.state_dir.display()))?;
    crate::infer::service::set_kernel_cache(opts.state_dir.join("kernels"));
    if opts.mode == Mode::Production {
        std::fs::set_permissions(&opts.state_dir, std::fs::Permissions::from_mode(0o750))
            .with_context(|| format!("restricting {}", opts.state_dir.display()))?;
    }
    let key = hostkey::load_or_create(&opts.state_dir.join("host.key"))?;
    // The host key signs approved model manifests too.
    let manifest_key = key.clone();
    let host_key = Arc::new(key.clone());
    let pii_hash_key: [u8; 32] = {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"lucid/pii-hash/v1\n");
        h.update(key.to_bytes());
        h.finalize().into()
    };
    let runtime = runtime::build(&env, &source, &env.digest(), pii_hash_key)?;
    let listen = opts.listen.unwrap_or(env.spec.gateway.listen);
    let gateway_listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the gateway to {listen} (spec.gateway.listen, or --listen)"))?;
    let gateway_addr = gateway_listener.local_addr().ok();
    let origin = format!("{}/lucid", hostname());
    let ledger = Arc::new(
        Ledger::open(LedgerOptions::new(opts.state_dir.join("ledger.redb"), origin), key)
            .with_context(|| format!("opening the ledger in {}", opts.state_dir.display()))?,
    );
    // The TSS libraries print their own errors to stderr; lucidd reports TPM failures
    // itself (status, ledger), with the TCTI and what was asked.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+NONE");
    }
    let settings = env.spec.attestation.clone();
    let attestor = Arc::new(
        tokio::task::spawn_blocking(move || crate::attest::Attestor::start(&settings))
            .await
            .context("starting the TPM")?
            .context("spec.attestation.tpm is `required` and the TPM could not be used")?,
    );
    let control_gid = nix::unistd::Group::from_name(&opts.control_group).ok().flatten().map(|g| g.gid.as_raw());
    let run = RunInfo {
        mode: opts.mode,
        started_ns: now_ns(),
        state_dir: opts.state_dir.clone(),
        socket: opts.socket.clone(),
        config_path: opts.config.clone(),
        control_gid,
        pii_hash_key,
        gateway_addr,
        host_key,
    };
    let keys = crate::access::KeyStore::open(opts.state_dir.join("keys.json"))?;
    let models = crate::integrity::approvals::Approvals::load(opts.state_dir.join("models"), manifest_key);
    let watch_plan = runtime.watch.clone();
    let state = Arc::new(AppState::new(ledger.clone(), run, env, source, keys, models, runtime.watch, attestor.clone()));
    if let Err(message) = crate::attest::anchor::check_on_start(&ledger, &attestor, opts.accept_rollback).await {
        tracing::error!("{message}");
        ledger.shutdown().await;
        anyhow::bail!("{message}");
    }
    state.routes.install(runtime.routes);
    if let Err(e) = state.record_start().await {
        // Keep serving reads (status, verify) so the operator can see why.
        tracing::error!(error = %e, "could not record the start in the ledger; lucidd runs failed closed");
    }
    state.measure_launch().await;
    crate::attest::anchor::spawn(ledger.clone(), attestor.clone());
    crate::passport::spawn(state.clone());
    crate::export::journald::spawn(state.clone(), opts.state_dir.join("journald.cursor"));
    crate::integrity::watch::judge::spawn(state.clone(), watch_plan);

    // Production relies on the socket's group (0660, group lucid) and peer
    // credentials; dev mode relies on peer credentials alone.
    let socket_mode = if opts.mode == Mode::Dev { 0o666 } else { 0o660 };
    let listener = crate::control::bind(&opts.socket, socket_mode)
        .await
        .with_context(|| format!("binding the control socket {}", opts.socket.display()))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::control::serve(listener, state.clone(), async {
        let _ = stop_rx.await;
    }));
    let (gw_stop_tx, gw_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(crate::gateway::serve(state.clone(), gateway_listener, async {
        let _ = gw_stop_rx.await;
    }));
    retention::spawn(state.clone());
    notify::spawn_watchdog(ledger.clone());

    let ready = format!(
        "ready: {} agents, ledger {} records, socket {}, gateway {}",
        state.config().env.spec.agents.len(),
        ledger.head().next_seq,
        opts.socket.display(),
        gateway_addr.map(|a| a.to_string()).unwrap_or_default()
    );
    tracing::info!(mode = opts.mode.as_str(), socket = %opts.socket.display(), state_dir = %opts.state_dir.display(), "lucidd {ready}");
    notify::ready(&ready);

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stopped_by = loop {
        tokio::select! {
            _ = hup.recv() => {
                notify::reloading(false);
                match state.reload().await {
                    Ok(r) => tracing::info!(seq = r.seq, changes = r.changes.len(), "reloaded configuration on SIGHUP"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP reload refused; the previous configuration stays in force"),
                }
                notify::reloading(true);
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };
    notify::stopping();
    tracing::info!(signal = stopped_by, "stopping: flushing the ledger");
    let _ = stop_tx.send(());
    let _ = gw_stop_tx.send(());
    match gateway.await {
        Ok(Err(e)) => tracing::error!(error = %e, %listen, "the gateway could not serve"),
        Err(e) => tracing::error!(error = %e, "the gateway task failed"),
        Ok(Ok(())) => {}
    }
    if let Err(e) = state.record_stop(stopped_by).await {
        tracing::error!(error = %e, "could not record the stop");
    }
    ledger.shutdown().await;
    let _ = server.await;
    let _ = std::fs::remove_file(&opts.socket);
    Ok(())
}

/// This host's name (checkpoint origin, passports).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
