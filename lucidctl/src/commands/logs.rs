//! `lucidctl logs`: evidence records as text lines or JSON lines, optionally followed.

use clap::Args;
use hyper::Method;
use lucid_common::record::{Kind, Record};

use crate::client::{next_chunk, CallError, Client};
use crate::exit;
use crate::output::{self, Format};

#[derive(Args)]
pub struct LogsArgs {
    /// Only records about this agent (its decisions and refusals).
    #[arg(value_name = "AGENT")]
    agent: Option<String>,
    /// Keep streaming new records as they are committed.
    #[arg(short, long)]
    follow: bool,
    /// Records at or after this time (RFC 3339, a date, or an age such as 2h).
    #[arg(long, value_name = "T", value_parser = output::parse_time)]
    since: Option<u64>,
    /// Records before this time.
    #[arg(long, value_name = "T", value_parser = output::parse_time)]
    until: Option<u64>,
    /// Only records of this kind.
    #[arg(long, value_name = "K", value_parser = parse_kind)]
    kind: Option<Kind>,
    /// Only records evidencing one of these SOC 2 controls (e.g. CC8.1 or CC6.1,CC6.6).
    #[arg(long, value_name = "CC..", value_parser = parse_controls)]
    control: Option<String>,
    /// Only anomalies: kind anomaly, or severity warning and above.
    #[arg(long)]
    anomalies: bool,
    /// At most this many of the newest matches [default: 100, or 10 with --follow, or all with --since].
    #[arg(short = 'n', long, value_name = "N")]
    limit: Option<u64>,
    /// Output format (json: one record per line).
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

fn parse_kind(text: &str) -> Result<Kind, String> {
    Kind::parse(text).ok_or_else(|| {
        let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown kind {text:?}; one of: {}", all.join(", "))
    })
}

fn parse_controls(text: &str) -> Result<String, String> {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == ',') {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} is not a control list such as CC8.1 or CC6.1,CC6.6"))
    }
}

fn query(args: &LogsArgs) -> String {
    let mut q = Vec::new();
    if let Some(s) = args.since {
        q.push(format!("since_ns={s}"));
    }
    if let Some(u) = args.until {
        q.push(format!("until_ns={u}"));
    }
    if let Some(k) = args.kind {
        q.push(format!("kind={k}"));
    }
    if let Some(c) = &args.control {
        q.push(format!("control={c}"));
    }
    if args.anomalies {
        q.push("anomalies=true".into());
    }
    if let Some(a) = &args.agent {
        q.push(format!("agent={}", percent(a)));
    }
    if args.follow {
        q.push("follow=true".into());
    }
    let default_limit = match (args.follow, args.since.is_some() || args.until.is_some()) {
        (_, true) => None,
        (true, false) => Some(10),
        (false, false) => Some(100),
    };
    if let Some(l) = args.limit.or(default_limit) {
        q.push(format!("limit={l}"));
    }
    format!("/v1/logs?{}", q.join("&"))
}

/// `text` as a URL query value: unreserved bytes as they are, the rest %-escaped.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn run(client: &Client, args: LogsArgs) -> Result<u8, CallError> {
    let response = client.send(Method::GET, &query(&args), None).await?;
    let mut body = response.into_body();
    let mut pending = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await? {
        pending.extend_from_slice(&chunk);
        // Print every complete line, then drop them from the buffer in one move.
        let mut start = 0;
        while let Some(len) = pending[start..].iter().position(|b| *b == b'\n') {
            print_record(&pending[start..start + len], args.output)?;
            start += len + 1;
        }
        pending.drain(..start);
    }
    Ok(exit::OK)
}

fn print_record(line: &[u8], format: Format) -> Result<(), CallError> {
    if format == Format::Json {
        return output::line(&String::from_utf8_lossy(line));
    }
    let r: Record = serde_json::from_slice(line)
        .map_err(|e| CallError::new(exit::DAEMON_ERROR, format!("unexpected record from lucidd: {e}")))?;
    let detail = match r.body.get("message").and_then(|m| m.as_str()) {
        Some(m) => m.to_string(),
        None => r.body.to_string(),
    };
    output::line(&format!(
        "{}  #{:<8} {:<11} {:<8} {:<14} {:<24} {}",
        output::time(r.time_ns),
        r.seq,
        r.kind.as_str(),
        r.severity.as_str(),
        r.controls.join(","),
        r.subject,
        detail
    ))
}
