//! `lucidctl audit`: the audit chain as a filter, for applications that do not route
//! through the gateway. Reads stdin, prints the decisions and the (redacted) text.

use std::io::Read;

use serde_json::{json, Value};

use crate::client::{CallError, Client};
use crate::exit;
use crate::output::{self, Format};

pub async fn run(client: &Client, stage: &str, agent: Option<String>, format: Format) -> Result<u8, CallError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CallError::new(exit::IO, format!("reading stdin: {e}")))?;
    let mut body = json!({ "stage": stage, "text": text });
    if let Some(a) = agent {
        body["agent"] = Value::String(a);
    }
    let r: Value = client.post("/v1/audit", &body).await?;
    let denied = r["outcome"] == "deny";
    if format == Format::Json {
        output::json(&r)?;
    } else {
        output::line(&format!("{} ({}, request {})", r["outcome"].as_str().unwrap_or("?"), r["agent"].as_str().unwrap_or("?"), r["request_id"].as_str().unwrap_or("?")))?;
        for d in r["decisions"].as_array().into_iter().flatten() {
            let spans: Vec<String> = d["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| format!("{}@{}..{}", f["kind"].as_str().unwrap_or("?"), f["start"], f["end"]))
                .collect();
            output::line(&format!(
                "  {:<30} {:<8} {} {}",
                d["auditor"].as_str().unwrap_or("?"),
                d["outcome"].as_str().unwrap_or("?"),
                d["reason"].as_str().unwrap_or(""),
                spans.join(" ")
            ))?;
        }
        if !denied {
            for t in r["texts"].as_array().into_iter().flatten() {
                output::line(t.as_str().unwrap_or_default())?;
            }
        }
    }
    Ok(if denied { exit::DENIED } else { exit::OK })
}
