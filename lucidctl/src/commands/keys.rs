//! `lucidctl keys`: the gateway's API keys. A secret is printed once, at creation.

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{CallError, Client};
use crate::exit;
use crate::output::{self, Format};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once and never stored.
    Create {
        /// Who or what the key is for.
        #[arg(long)]
        name: String,
        /// Agents it may use (repeat); all agents when omitted.
        #[arg(long = "agent", value_name = "NAME")]
        agents: Vec<String>,
        /// Requests per minute (0: unlimited).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// List keys (ids, scopes, state; never secrets).
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Revoke a key; the next request with it is refused.
    Revoke {
        /// The key id (lk...).
        id: String,
    },
}

pub async fn run(client: &Client, cmd: KeysCommand) -> Result<u8, CallError> {
    match cmd {
        KeysCommand::Create { name, agents, rate, output } => {
            let r: Value = client.post("/v1/keys", &json!({ "name": name, "agents": agents, "rate_per_minute": rate })).await?;
            if output == Format::Json {
                output::json(&r)?;
            } else {
                output::line(&format!("created key {} for {name}", r["key"]["id"].as_str().unwrap_or("?")))?;
                output::line(&format!("secret (shown once): {}", r["secret"].as_str().unwrap_or("?")))?;
            }
        }
        KeysCommand::List { output } => {
            let keys: Vec<Value> = client.get("/v1/keys").await?;
            if output == Format::Json {
                output::json(&keys)?;
            } else {
                let mut t = output::table(&["ID", "NAME", "AGENTS", "RATE/MIN", "CREATED", "STATE"]);
                for k in &keys {
                    let agents: Vec<&str> = k["agents"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    t.add_row(vec![
                        k["id"].as_str().unwrap_or("?").to_string(),
                        k["name"].as_str().unwrap_or("").to_string(),
                        if agents.is_empty() { "all".into() } else { agents.join(",") },
                        match k["rate_per_minute"].as_u64() { Some(0) | None => "unlimited".into(), Some(n) => n.to_string() },
                        output::time(k["created_ns"].as_u64().unwrap_or(0)),
                        match k["revoked_ns"].as_u64() { Some(ns) => format!("revoked {}", output::time(ns)), None => "active".into() },
                    ]);
                }
                output::line(&t.to_string())?;
            }
        }
        KeysCommand::Revoke { id } => {
            let k: Value = client.post(&format!("/v1/keys/{id}/revoke"), &json!({})).await?;
            output::line(&format!("revoked {}", k["id"].as_str().unwrap_or(&id)))?;
        }
    }
    Ok(exit::OK)
}
