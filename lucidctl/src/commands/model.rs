//! `lucidctl model`: approve a model (lucidd hashes it, signs its manifest with the host
//! key and records the approval), list approvals, verify a model against its approval.

use clap::Subcommand;
use lucid_common::api::{ModelRequest, ModelStatus};

use crate::client::{next_chunk, CallError, Client};
use crate::exit;
use crate::output::{self, Format};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Approve the model at PATH as it is now (a directory or one file).
    Approve {
        /// The model's directory or file.
        path: String,
        /// Why (a change ticket, a release): recorded with the approval.
        #[arg(long)]
        note: Option<String>,
        /// How to hash: shards (1 GB shards, SHA-256), shards:BYTES (another shard size),
        /// files (SHA-256) or blake3 (by file).
        #[arg(long, default_value = "shards")]
        method: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Import a model_signing signature made elsewhere (`model_signing sign key` writes a
    /// sigstore bundle; a bare DSSE envelope works too): lucidd checks the manifest, its
    /// signature when --public-key is given, and that the files at PATH match it, then
    /// approves PATH (exit 1 when they do not match).
    Import {
        /// The signature file (e.g. model.sig).
        signature: String,
        /// The model's directory or file.
        path: String,
        /// The signer's public key (PEM, ECDSA P-256 or P-384).
        #[arg(long)]
        public_key: Option<String>,
        /// Why (a change ticket, a release): recorded with the approval.
        #[arg(long)]
        note: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// List approved models and their latest verification.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Re-hash a model and compare it with its approval (exit 1 when it differs).
    Verify {
        /// The model's directory or file.
        path: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
}

fn absolute(path: &str) -> String {
    std::fs::canonicalize(path).map(|p| p.display().to_string()).unwrap_or_else(|_| path.to_string())
}

fn summary(m: &ModelStatus) -> String {
    let mut s = format!("{} {} ({} {}, digest {}…)", m.state, m.path, m.resources, m.method, output::short(&m.digest, 16));
    for (what, names) in [("changed", &m.changed), ("missing", &m.missing), ("not approved", &m.added)] {
        if !names.is_empty() {
            s.push_str(&format!("\n  {what}: {}", names.join(", ")));
        }
    }
    s
}

/// Approves through the streaming endpoint, drawing a progress bar on stderr while
/// lucidd hashes (when stderr is a terminal and the model is large enough to wait for).
async fn approve_with_progress(client: &Client, req: &ModelRequest) -> Result<ModelStatus, CallError> {
    let body = serde_json::to_vec(req).map_err(|e| CallError::new(exit::USAGE, e.to_string()))?;
    let response = client.send(hyper::Method::POST, "/v1/models/approve/stream", Some(body)).await?;
    let mut body = response.into_body();
    let mut pending = Vec::new();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut last: Option<serde_json::Value> = None;
    while let Some(chunk) = next_chunk(&mut body).await? {
        pending.extend_from_slice(&chunk);
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else { continue };
            if let (Some(done), Some(total)) = (v["done"].as_u64(), v["total"].as_u64()) {
                // Only worth a bar for models that take a while (over 256 MiB).
                if total > 256 << 20 {
                    let b = bar.get_or_insert_with(|| {
                        let b = indicatif::ProgressBar::new(total);
                        if let Ok(style) = indicatif::ProgressStyle::with_template("hashing {bar:40} {bytes}/{total_bytes} {bytes_per_sec}, {eta} left") {
                            b.set_style(style);
                        }
                        b
                    });
                    b.set_position(done);
                }
            } else {
                last = Some(v);
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match last {
        Some(v) if v.get("result").is_some() => serde_json::from_value(v["result"].clone()).map_err(|e| CallError::new(exit::DAEMON_ERROR, format!("unexpected answer from lucidd: {e}"))),
        Some(v) => {
            let message = v["error"]["message"].as_str().unwrap_or("approval failed").to_string();
            let code = if v["error"]["code"] == "bad_request" { exit::REJECTED } else { exit::DAEMON_ERROR };
            Err(CallError::new(code, message))
        }
        None => Err(CallError::new(exit::DAEMON_ERROR, "lucidd ended the approval without an answer")),
    }
}

pub async fn run(client: &Client, cmd: ModelCommand) -> Result<u8, CallError> {
    match cmd {
        ModelCommand::Approve { path, note, method, output } => {
            let req = ModelRequest { path: absolute(&path), note, method: Some(method) };
            let m = approve_with_progress(client, &req).await?;
            match output {
                Format::Json => output::json(&m)?,
                _ => output::line(&format!("approved {} (record #{}): {} {}, digest {}", m.path, m.record_seq, m.resources, m.method, m.digest))?,
            }
            Ok(exit::OK)
        }
        ModelCommand::Import { signature, path, public_key, note, output } => {
            let read = |p: &str| std::fs::read_to_string(p).map_err(|e| CallError::new(exit::USAGE, format!("{p}: {e}")));
            let req = lucid_common::api::ImportRequest {
                path: absolute(&path),
                signature: read(&signature)?,
                public_key: public_key.as_deref().map(read).transpose()?,
                note,
            };
            let m: ModelStatus = client.post("/v1/models/import", &req).await?;
            match output {
                Format::Json => output::json(&m)?,
                _ => output::line(&format!("imported {} (record #{}): {} {}, digest {}", m.path, m.record_seq, m.resources, m.method, m.digest))?,
            }
            Ok(exit::OK)
        }
        ModelCommand::List { output } => {
            let models: Vec<ModelStatus> = client.get("/v1/models").await?;
            if output == Format::Json {
                output::json(&models)?;
            } else {
                let mut t = output::table(&["PATH", "STATE", "APPROVED", "DIGEST", "NOTE"]);
                for m in &models {
                    t.add_row(vec![m.path.clone(), m.state.clone(), output::time(m.approved_ns), format!("{}…", output::short(&m.digest, 16)), m.note.clone().unwrap_or_default()]);
                }
                output::line(&t.to_string())?;
            }
            Ok(exit::OK)
        }
        ModelCommand::Verify { path, output } => {
            let req = ModelRequest { path: absolute(&path), note: None, method: None };
            let m: ModelStatus = client.post("/v1/models/verify", &req).await?;
            match output {
                Format::Json => output::json(&m)?,
                _ => output::line(&summary(&m))?,
            }
            Ok(if m.state == "verified" { exit::OK } else { exit::VERIFY_FAILED })
        }
    }
}
