//! `lucidctl passport` and `lucidctl attest`: list, show, issue and verify AI passports;
//! show the TPM and what a verifier enrols. `passport verify FILE...` is offline: it
//! reads nothing but the files and the trust anchors named on its command line.

use std::path::PathBuf;

use clap::Subcommand;
use lucid_common::api::PassportSummary;
use lucid_common::passport::{self, Appraisal, Status, Trust};
use serde_json::Value;

use crate::client::{CallError, Client};
use crate::exit;
use crate::output::{self, Format};

#[derive(Subcommand)]
pub enum PassportCommand {
    /// List passports, optionally only those overlapping a period.
    List {
        /// From (RFC 3339 date or time, or an age such as 7d).
        #[arg(long)]
        from: Option<String>,
        /// To.
        #[arg(long)]
        to: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Show one passport: its claims, or the signed envelope (what `verify` reads).
    Show {
        /// Passport number.
        number: u64,
        /// Print the per-control summary of its period.
        #[arg(long)]
        controls: bool,
        /// Print the signed envelope itself (save it and verify it anywhere).
        #[arg(long)]
        envelope: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Issue a passport now for the period since the previous one.
    Issue {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Verify passports offline (files), or fetch a period's passports from lucidd and
    /// verify them here. Exit 0: every claim affirming; 9: verified with warnings (for
    /// example unanchored, or an AK not pinned); 1: a claim is contraindicated.
    Verify {
        /// Passport envelope files.
        files: Vec<PathBuf>,
        /// Fetch passports from this time (with --to) instead of reading files.
        #[arg(long)]
        from: Option<String>,
        /// ... to this time.
        #[arg(long)]
        to: Option<String>,
        /// A pinned attestation key: its TPM name (hex), or a file holding the name
        /// (as `attest enroll` writes it). Repeat for several hosts.
        #[arg(long = "ak", value_name = "NAME|FILE")]
        aks: Vec<String>,
        /// A pinned host key (name+id+key, as `status` prints it).
        #[arg(long)]
        host_key: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
}

#[derive(Subcommand)]
pub enum AttestCommand {
    /// The TPM: EK and AK names, EK certificate, anchor counter, failures.
    Show {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Write what a verifier checks to enrol this host (EK certificate, EK and AK public
    /// areas, AK name, host key) as JSON.
    Enroll {
        /// Output file (stdout when omitted).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
    },
}

pub async fn run(client: &Client, cmd: PassportCommand) -> Result<u8, CallError> {
    match cmd {
        PassportCommand::List { from, to, output } => {
            let query = period_query(from.as_deref(), to.as_deref())?;
            let list: Vec<PassportSummary> = client.get(&format!("/v1/passports{query}")).await?;
            if output == Format::Json {
                output::json(&list)?;
            } else {
                let mut t = output::table(&["NUMBER", "FROM", "TO", "ANCHORED", "CHECKPOINT", "RECORD", "DIGEST"]);
                for p in &list {
                    t.add_row(vec![
                        p.number.to_string(),
                        output::time(p.from_ns),
                        output::time(p.to_ns),
                        if p.anchored { "tpm".into() } else { "no".into() },
                        p.checkpoint_size.to_string(),
                        p.record_seq.to_string(),
                        p.digest.chars().take(16).collect(),
                    ]);
                }
                output::line(&t.to_string())?;
            }
        }
        PassportCommand::Show { number, controls, envelope, output } => {
            let r: Value = client.get(&format!("/v1/passports/{number}")).await?;
            let env = &r["passport"]["envelope"];
            if envelope {
                output::line(&serde_json::to_string(env).map_err(|e| CallError::new(exit::IO, e.to_string()))?)?;
                return Ok(exit::OK);
            }
            let loaded = load_value(&format!("passport {number}"), env)?;
            if output == Format::Json {
                output::json(&loaded.statement)?;
            } else {
                print_statement(&loaded.statement.predicate, controls)?;
            }
        }
        PassportCommand::Issue { output } => {
            let p: PassportSummary = client.post("/v1/passports", &serde_json::json!({})).await?;
            if output == Format::Json {
                output::json(&p)?;
            } else {
                output::line(&format!(
                    "issued passport {} ({} to {}), {}, ledger record {}",
                    p.number,
                    output::time(p.from_ns),
                    output::time(p.to_ns),
                    if p.anchored { "anchored in the TPM" } else { "unanchored (no TPM)" },
                    p.record_seq
                ))?;
            }
        }
        PassportCommand::Verify { files, from, to, aks, host_key, output } => {
            let mut loaded = Vec::new();
            for f in &files {
                let bytes = std::fs::read(f).map_err(|e| CallError::new(exit::IO, format!("{}: {e}", f.display())))?;
                loaded.push(passport::load(&f.display().to_string(), &bytes).map_err(|e| CallError::new(exit::VERIFY_FAILED, format!("{}: {e}", f.display())))?);
            }
            if files.is_empty() {
                if from.is_none() && to.is_none() {
                    return Err(CallError::new(exit::USAGE, "name passport files, or a period with --from/--to"));
                }
                let query = period_query(from.as_deref(), to.as_deref())?;
                let list: Vec<PassportSummary> = client.get(&format!("/v1/passports{query}")).await?;
                for p in list {
                    let r: Value = client.get(&format!("/v1/passports/{}", p.number)).await?;
                    loaded.push(load_value(&format!("passport {}", p.number), &r["passport"]["envelope"])?);
                }
            }
            let trust = Trust { pinned_aks: pinned(&aks)?, host_key: host_key.map(|k| lucid_common::checkpoint::VerifierKey::parse(&k)).transpose().map_err(|e| CallError::new(exit::USAGE, format!("--host-key: {e}")))? };
            let appraisals = passport::verify_chain(loaded, &trust);
            if output == Format::Json {
                output::json(&appraisals)?;
            } else {
                print_appraisals(&appraisals)?;
            }
            let worst = appraisals.iter().map(Appraisal::status).max();
            return Ok(match worst {
                Some(Status::Affirming) => exit::OK,
                Some(Status::Warning) => exit::WARNINGS,
                _ => exit::VERIFY_FAILED,
            });
        }
    }
    Ok(exit::OK)
}

pub async fn attest(client: &Client, cmd: AttestCommand) -> Result<u8, CallError> {
    let r: Value = client.get("/v1/attest").await?;
    match cmd {
        AttestCommand::Show { output } => {
            if output == Format::Json {
                output::json(&r)?;
                return Ok(exit::OK);
            }
            let s = &r["status"];
            let text = |v: &Value| v.as_str().map(str::to_string);
            output::line(&format!("TPM:            {}", if s["available"].as_bool() == Some(true) { format!("available at {}", s["tcti"].as_str().unwrap_or("?")) } else { format!("none: {}", text(&s["unavailable"]).unwrap_or_default()) }))?;
            output::line(&format!("mode:           {}", text(&s["mode"]).unwrap_or_default()))?;
            if let Some(ek) = text(&s["ek_name"]) {
                output::line(&format!("EK name:        {ek}"))?;
                output::line(&format!("EK certificate: {}", if s["ek_certificate"].as_bool() == Some(true) { "present in NV (check its chain with the manufacturer's CA)" } else { "none in NV" }))?;
            }
            if let Some(ak) = text(&s["ak_name"]) {
                output::line(&format!("AK name:        {ak} (ECC P-256, restricted signing, persisted)"))?;
            }
            output::line(&format!("launch PCR:     {}", s["application_pcr"]))?;
            output::line(&format!("anchor counter: {}", s["anchor_counter"].as_u64().map(|c| c.to_string()).unwrap_or_else(|| "never advanced".into())))?;
            if let Some(f) = text(&s["failing"]) {
                output::line(&format!("FAILING:        {f}"))?;
            }
            output::line(&format!("failures:       {}", s["failures"]))?;
        }
        AttestCommand::Enroll { file } => {
            let text = serde_json::to_string_pretty(&serde_json::json!({
                "ek_certificate": r["ek_certificate"],
                "ek_public": r["ek_public"],
                "ak_public": r["ak_public"],
                "ak_name": r["status"]["ak_name"],
                "ledger_key": r["ledger_key"],
            }))
            .map_err(|e| CallError::new(exit::IO, e.to_string()))?;
            match file {
                Some(f) => std::fs::write(&f, text + "\n").map_err(|e| CallError::new(exit::IO, format!("{}: {e}", f.display())))?,
                None => output::line(&text)?,
            }
        }
    }
    Ok(exit::OK)
}

fn load_value(what: &str, env: &Value) -> Result<passport::Loaded, CallError> {
    let bytes = serde_json::to_vec(env).map_err(|e| CallError::new(exit::IO, e.to_string()))?;
    passport::load(what, &bytes).map_err(|e| CallError::new(exit::VERIFY_FAILED, format!("{what}: {e}")))
}

fn period_query(from: Option<&str>, to: Option<&str>) -> Result<String, CallError> {
    let mut parts = Vec::new();
    for (name, value) in [("from_ns", from), ("to_ns", to)] {
        if let Some(v) = value {
            let ns = output::parse_time(v).map_err(|e| CallError::new(exit::USAGE, format!("--{}: {e}", &name[..name.len() - 3])))?;
            parts.push(format!("{name}={ns}"));
        }
    }
    Ok(if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) })
}

/// AK names given directly, or read from files written by `attest enroll`.
fn pinned(aks: &[String]) -> Result<Vec<String>, CallError> {
    aks.iter()
        .map(|a| {
            if a.chars().all(|c| c.is_ascii_hexdigit()) && !a.is_empty() {
                return Ok(a.clone());
            }
            let text = std::fs::read_to_string(a).map_err(|e| CallError::new(exit::IO, format!("--ak {a}: {e}")))?;
            let v: Value = serde_json::from_str(&text).map_err(|e| CallError::new(exit::USAGE, format!("--ak {a}: {e}")))?;
            v["ak_name"].as_str().map(str::to_string).ok_or_else(|| CallError::new(exit::USAGE, format!("--ak {a}: no ak_name")))
        })
        .collect()
}

fn print_statement(p: &passport::Passport, controls: bool) -> Result<(), CallError> {
    output::line(&format!("passport {}: {} to {}", p.number, output::time(p.period.from_ns), output::time(p.period.to_ns)))?;
    output::line(&format!("host:      {} (machine id {})", p.host.hostname, p.host.machine_id.as_deref().unwrap_or("unknown")))?;
    output::line(&format!("TPM:       {}", match (&p.tpm, &p.unanchored) {
        (Some(t), _) => format!("quoted PCRs {:?}; boot {} restart {}", t.pcrs.keys().collect::<Vec<_>>(), t.clock.map(|c| c.reset_count).unwrap_or(0), t.clock.map(|c| c.restart_count).unwrap_or(0)),
        (None, Some(why)) => format!("UNANCHORED: {why}"),
        (None, None) => "UNANCHORED".into(),
    }))?;
    output::line(&format!("boot:      {}", if p.boot.event_log.is_some() { "event log included" } else { p.boot.event_log_error.as_deref().unwrap_or("no event log") }))?;
    output::line(&format!("launch:    PCR {}, {} measurements, config {}", p.launch.pcr, p.launch.measurements.len(), p.launch.config_digest))?;
    output::line(&format!("ledger:    {} records, anchor counter {}", p.ledger.checkpoint.lines().nth(1).unwrap_or("?"), p.ledger.anchor.as_ref().map(|a| a.counter.to_string()).unwrap_or_else(|| "none".into())))?;
    output::line(&format!("coverage:  {:.1}% ({} s operating)", p.controls.coverage_pct, p.controls.operating_s))?;
    for g in &p.gaps {
        output::line(&format!("GAP:       {} to {}: {}", output::time(g.from_ns), output::time(g.to_ns), g.cause))?;
    }
    for m in &p.models {
        output::line(&format!("model:     {} {} ({}, {} changes)", m.id, &m.digest[..m.digest.len().min(16)], m.state, m.changes_in_period))?;
    }
    if controls {
        let mut t = output::table(&["CONTROL", "RECORDS", "DECISIONS", "EXCEPTIONS"]);
        for (c, cp) in &p.controls.per_control {
            let decisions: Vec<String> = cp.decisions.iter().map(|(k, v)| format!("{k} {v}")).collect();
            t.add_row(vec![c.clone(), cp.records.to_string(), decisions.join(", "), cp.exception_count.to_string()]);
        }
        output::line(&t.to_string())?;
    }
    Ok(())
}

fn print_appraisals(appraisals: &[Appraisal]) -> Result<(), CallError> {
    for a in appraisals {
        let word = |s: Status| match s {
            Status::Affirming => "affirming",
            Status::Warning => "WARNING",
            Status::Contraindicated => "CONTRAINDICATED",
        };
        output::line(&format!("passport {} ({}): {}", a.number, a.file, word(a.status())))?;
        for c in &a.claims {
            output::line(&format!("  {:<12} {:<16} {}", c.claim, word(c.status), c.detail))?;
        }
    }
    Ok(())
}
