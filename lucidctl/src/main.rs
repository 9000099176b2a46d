//! `lucidctl`: the operator's CLI for lucidd. It talks to the daemon over its control
//! socket and verifies evidence itself (with `lucid-common`), so an auditor can check
//! the ledger without taking the daemon's word for it.

mod client;
mod commands;
mod exit;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use client::{CallError, Client};
use output::Format;

/// Operate lucidd: status, evidence logs, configuration, ledger verification.
#[derive(Parser)]
#[command(name = "lucidctl", version, about, after_help = exit::HELP)]
pub struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

/// Which daemon to talk to.
#[derive(Args)]
pub struct Target {
    /// Control socket of the daemon [default: /run/lucid/lucidd.sock].
    #[arg(long, global = true, env = "LUCID_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Talk to a dev daemon whose state directory is DIR (its socket is DIR/lucidd.sock).
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "socket")]
    dev_state: Option<PathBuf>,
}

impl Target {
    fn socket(&self) -> PathBuf {
        match (&self.socket, &self.dev_state) {
            (Some(s), _) => s.clone(),
            (None, Some(dir)) => dir.join(lucid_common::api::DEV_SOCKET_NAME),
            (None, None) => PathBuf::from(lucid_common::api::DEFAULT_SOCKET),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Daemon, configuration and ledger status; with AGENT, that agent's only.
    Status {
        /// Only this agent (its chain, controls and warnings).
        #[arg(value_name = "AGENT")]
        agent: Option<String>,
        /// Show every agent's chain and the ledger's details.
        #[arg(long)]
        detailed: bool,
        /// Also verify the whole ledger here (as `ledger verify`); exit 1 if it is not intact.
        #[arg(long)]
        integrity: bool,
        /// Show the control inventory: each SOC 2 control, what implements it, whether
        /// it is operating and if not, why.
        #[arg(long)]
        controls: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Show evidence records, newest last; --follow keeps streaming.
    Logs(commands::logs::LogsArgs),
    /// Validate a configuration and apply it to the running daemon (recorded in the
    /// ledger): a file (-f), or one agent built from a profile (--profile soc2 --model ID
    /// --upstream URL), which replaces the configuration as -f does.
    Apply(commands::config::ApplyArgs),
    /// Record an operator note in the ledger, for example a change ticket.
    Annotate {
        /// The note.
        #[arg(short, long)]
        message: String,
        /// A ticket or change reference, e.g. CHG-1234.
        #[arg(long)]
        ticket: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Run an agent's audit chain on text read from stdin (no model involved).
    Audit {
        /// Which stage's auditors: pre (the prompt) or post (a response).
        #[arg(long, value_parser = ["pre", "post"], default_value = "pre")]
        stage: String,
        /// The agent whose chain runs [default: the first agent].
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Gateway API keys: create, list, revoke.
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Verify the ledger, prove records, show checkpoints.
    #[command(subcommand)]
    Ledger(commands::ledger::LedgerCommand),
    /// Approve models (signed manifests), list them, verify them.
    #[command(subcommand)]
    Model(commands::model::ModelCommand),
    /// AI passports: list, show, issue, and verify offline.
    #[command(subcommand)]
    Passport(commands::passport::PassportCommand),
    /// The TPM: show it, and write what a verifier enrols.
    #[command(subcommand)]
    Attest(commands::passport::AttestCommand),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (lucidctl.1 and one per subcommand) into a directory.
    Man {
        /// Output directory.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lucidctl: {e}");
            return ExitCode::from(exit::DAEMON_ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lucidctl: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

async fn run(cli: Cli) -> Result<u8, CallError> {
    let client = Client::new(cli.target.socket());
    match cli.command {
        Command::Status { agent, detailed, integrity, controls, output } => {
            commands::status::run(&client, commands::status::View { agent, detailed, integrity, controls }, output).await
        }
        Command::Logs(args) => commands::logs::run(&client, args).await,
        Command::Apply(args) => commands::config::apply(&client, args).await,
        Command::Annotate { message, ticket, output } => commands::config::annotate(&client, message, ticket, output).await,
        Command::Ledger(cmd) => commands::ledger::run(&client, cmd).await,
        Command::Audit { stage, agent, output } => commands::audit::run(&client, &stage, agent, output).await,
        Command::Keys(cmd) => commands::keys::run(&client, cmd).await,
        Command::Model(cmd) => commands::model::run(&client, cmd).await,
        Command::Passport(cmd) => commands::passport::run(&client, cmd).await,
        Command::Attest(cmd) => commands::passport::attest(&client, cmd).await,
        Command::Completions { shell } => commands::generate::completions(shell),
        Command::Man { dir } => commands::generate::man(&dir),
    }
}
