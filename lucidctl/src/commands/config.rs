//! `lucidctl apply` and `lucidctl annotate`: the two ways an operator changes what the
//! ledger says about this host.

use std::path::PathBuf;

use clap::{ArgGroup, Args, ValueEnum};
use lucid_common::api::{AppendReceipt, ApplyRequest, ApplyResponse, NoteRequest};

use crate::client::{CallError, Client};
use crate::exit;
use crate::output::{self, Format};

/// `lucidctl apply`.
#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["file", "profile"])))]
pub struct ApplyArgs {
    /// The LucidEnvironment YAML file.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Build a one-agent environment from this profile instead of a file.
    #[arg(long, value_enum, requires_all = ["model", "upstream"])]
    profile: Option<Profile>,
    /// With --profile: the model id clients send (e.g. meta-llama/Llama-3.1-8B).
    #[arg(long, value_name = "ID", requires = "profile")]
    model: Option<String>,
    /// With --profile: the OpenAI-compatible server to forward to (e.g. http://127.0.0.1:8000/v1).
    #[arg(long, value_name = "URL", requires = "profile")]
    upstream: Option<String>,
    /// With --profile: the agent's name.
    #[arg(long, value_name = "NAME", default_value = "soc2-agent", requires = "profile")]
    agent: String,
    /// Print the configuration that would be applied, and apply nothing.
    #[arg(long)]
    dry_run: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

/// Profiles `apply --profile` can build from.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Profile {
    /// The SOC 2 chain of the reference environment.
    Soc2,
}

/// The environment `apply --profile` builds: one agent, the profile's chain. Values are
/// written as JSON strings, which YAML reads as they are, whatever they hold.
fn profile_yaml(profile: Profile, agent: &str, model: &str, upstream: &str) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let name = match profile {
        Profile::Soc2 => "soc2",
    };
    format!(
        "# Built by `lucidctl apply --profile {name}`.\napiVersion: lucid.io/v1alpha1\nkind: LucidEnvironment\nmetadata:\n  name: {}\nspec:\n  agents:\n    - name: {}\n      model:\n        id: {}\n      upstream:\n        url: {}\n      profile: {name}\n",
        q(agent),
        q(agent),
        q(model),
        q(upstream)
    )
}

pub async fn apply(client: &Client, args: ApplyArgs) -> Result<u8, CallError> {
    let (yaml, shown) = match (&args.file, args.profile) {
        (Some(file), _) => {
            let yaml = std::fs::read_to_string(file).map_err(|e| CallError::new(exit::IO, format!("reading {}: {e}", file.display())))?;
            (yaml, file.display().to_string())
        }
        (None, Some(profile)) => {
            let (Some(model), Some(upstream)) = (&args.model, &args.upstream) else {
                return Err(CallError::new(exit::USAGE, "--profile needs --model and --upstream"));
            };
            (profile_yaml(profile, &args.agent, model, upstream), "lucidctl apply --profile".to_string())
        }
        (None, None) => return Err(CallError::new(exit::USAGE, "give -f FILE or --profile")),
    };
    if args.dry_run {
        output::line(yaml.trim_end())?;
        return Ok(exit::OK);
    }
    let request = ApplyRequest { yaml, file: shown.clone() };
    let r: ApplyResponse = client.post("/v1/config/apply", &request).await?;
    if args.output == Format::Json {
        output::json(&r)?;
        return Ok(exit::OK);
    }
    output::line(&format!(
        "applied {shown} (record #{}): {} -> {}",
        r.seq,
        output::short(&r.old_digest, 12),
        output::short(&r.new_digest, 12)
    ))?;
    if r.changes.is_empty() {
        output::line("no changes")?;
    }
    for c in &r.changes {
        let show = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "(none)".into());
        output::line(&format!("  {}: {} -> {}", c.path, show(&c.old), show(&c.new)))?;
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    Ok(exit::OK)
}

pub async fn annotate(client: &Client, message: String, ticket: Option<String>, format: Format) -> Result<u8, CallError> {
    let r: AppendReceipt = client.post("/v1/notes", &NoteRequest { message, ticket }).await?;
    if format == Format::Json {
        output::json(&r)?;
    } else {
        output::line(&format!("recorded note #{} at {}", r.seq, output::time(r.time_ns)))?;
    }
    Ok(exit::OK)
}
