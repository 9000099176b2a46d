//! `lucidctl apply` and `lucidctl annotate`: the two ways an operator changes what the
//! ledger says about this host.

use std::path::Path;

use lucid_common::api::{AppendReceipt, ApplyRequest, ApplyResponse, NoteRequest};

use crate::client::{CallError, Client};
use crate::exit;
use crate::output::{self, Format};

pub async fn apply(client: &Client, file: &Path, format: Format) -> Result<u8, CallError> {
    let yaml = std::fs::read_to_string(file)
        .map_err(|e| CallError::new(exit::IO, format!("reading {}: {e}", file.display())))?;
    let request = ApplyRequest { yaml, file: file.display().to_string() };
    let r: ApplyResponse = client.post("/v1/config/apply", &request).await?;
    if format == Format::Json {
        output::json(&r)?;
        return Ok(exit::OK);
    }
    output::line(&format!(
        "applied {} (record #{}): {} -> {}",
        file.display(),
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
