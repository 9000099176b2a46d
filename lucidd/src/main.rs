//! `lucidd`: argument parsing and logging set-up; everything else is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lucidd::daemon::state::Mode;
use lucidd::daemon::DaemonOptions;

/// The Lucid host daemon: audit gateway, model integrity and evidence ledger.
#[derive(Parser)]
#[command(name = "lucidd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (production default: /etc/lucid/lucid.yaml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Development mode: state and socket in a local directory, embedded soc2 defaults.
    #[arg(long)]
    dev: bool,
    /// State directory (dev default: ./.lucid; production: /var/lib/lucid).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Control socket (dev default: DIR/lucidd.sock; production: /run/lucid/lucidd.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Group whose members may use the control socket.
    #[arg(long, default_value = "lucid", value_name = "GROUP")]
    control_group: String,
    /// Gateway address, overriding spec.gateway.listen (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Start although the TPM's anchor counter shows the ledger was rolled back
    /// (records and checkpoints removed). The finding and the acceptance are recorded.
    #[arg(long)]
    accept_rollback: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file as `apply` would, without starting: the syntax and
    /// values, and that classifier models load, gitleaks files parse, a GPU is present
    /// where `cuda` is asked for, and allowed writers exist. Exit 0 if valid, 2 if not.
    CheckConfig {
        /// The file.
        file: PathBuf,
        /// Check the syntax and values only (for CI pipelines without the models or
        /// the target host's devices).
        #[arg(long)]
        syntax_only: bool,
    },
    /// Print the JSON Schema (draft-07) of the configuration format.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Some(Command::CheckConfig { file, syntax_only }) => check_config(&file, syntax_only),
        Some(Command::Schema) => {
            print!("{}", lucidd::config::schema::schema_json());
            ExitCode::SUCCESS
        }
        None => run_daemon(cli),
    }
}

/// `lucidd check-config`: what `apply` would accept, or the first error at its file,
/// line and column.
fn check_config(file: &std::path::Path, syntax_only: bool) -> ExitCode {
    let checked = lucidd::config::load_file(file).and_then(|env| {
        if !syntax_only {
            let shown = file.display().to_string();
            // The PII hash key only keys hashes; a throwaway one builds the same chains.
            lucidd::daemon::runtime::build(&env, &shown, &env.digest(), [0; 32])?;
        }
        Ok(env)
    });
    match checked {
        Ok(env) => {
            let what = match syntax_only {
                true => "syntax and values valid; models, rule files, devices and paths not checked (--syntax-only)",
                false => "valid",
            };
            let n = env.spec.agents.len();
            println!("{}: {what} ({n} agent{}, digest {})", file.display(), if n == 1 { "" } else { "s" }, env.digest());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn run_daemon(cli: Cli) -> ExitCode {
    let opts = if cli.dev {
        let state_dir = cli.state_dir.unwrap_or_else(|| PathBuf::from(".lucid"));
        DaemonOptions {
            mode: Mode::Dev,
            socket: cli.socket.unwrap_or_else(|| state_dir.join(lucid_common::api::DEV_SOCKET_NAME)),
            state_dir,
            config: cli.config,
            control_group: cli.control_group,
            listen: cli.listen,
            accept_rollback: cli.accept_rollback,
        }
    } else {
        DaemonOptions {
            mode: Mode::Production,
            state_dir: cli.state_dir.unwrap_or_else(|| PathBuf::from("/var/lib/lucid")),
            socket: cli.socket.unwrap_or_else(|| PathBuf::from(lucid_common::api::DEFAULT_SOCKET)),
            config: Some(cli.config.unwrap_or_else(|| PathBuf::from("/etc/lucid/lucid.yaml"))),
            control_group: cli.control_group,
            listen: cli.listen,
            accept_rollback: cli.accept_rollback,
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lucidd: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(lucidd::daemon::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("lucidd: {e:#}");
            eprintln!("lucidd: {e:#}");
            // A configuration error is a usage error (2); anything else is 1.
            if e.downcast_ref::<lucidd::config::ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LUCID_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tss_esapi=off"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
