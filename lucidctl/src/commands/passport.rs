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
        /// Passport envelope files, or directories of them (*.json).
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
        /// Check each passport's EK certificate against the CA certificates (PEM or
        /// DER) in this directory.
        #[arg(long)]
        ek_ca: Option<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
}

#[derive(Subcommand)]
pub enum AttestCommand {
    /// The TPM: EK and AK names, EK certificate (and its chain with --ek-ca), anchor
    /// counter, failures.
    Show {
        /// Check the EK certificate against the CA certificates in this directory.
        #[arg(long)]
        ek_ca: Option<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Host, step 1 of enrolment: write what a verifier checks (EK certificate, EK and AK
    /// public areas, AK name, host key) as JSON.
    Enroll {
        /// Output file (stdout when omitted).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
    },
    /// Verifier, step 2 (offline, no TPM needed): check the EK certificate against a CA
    /// directory and the AK's attributes, then encrypt a fresh secret to the EK, bound
    /// to the AK (TPM2_MakeCredential). Writes the challenge for the host and keeps the
    /// expected answer in a state file for `confirm`.
    Challenge {
        /// The host's `attest enroll` output.
        request: PathBuf,
        /// Directory of trusted CA certificates (PEM or DER) for EK certificates.
        #[arg(long)]
        ek_ca: PathBuf,
        /// Where to write the challenge (send it to the host).
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Where to keep the verifier's state (do not send it).
        #[arg(long)]
        keep: PathBuf,
    },
    /// Host, step 3: have the TPM answer the challenge (TPM2_ActivateCredential).
    Activate {
        /// The verifier's challenge.
        challenge: PathBuf,
        /// Where to write the answer (send it back).
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Verifier, step 4: compare the host's answer with the kept state; on a match,
    /// write the pinned AK (pass it to `passport verify --ak`).
    Confirm {
        /// The host's answer.
        answer: PathBuf,
        /// The state kept by `challenge`.
        #[arg(long)]
        keep: PathBuf,
        /// Where to write the pinned AK.
        #[arg(short = 'f', long)]
        file: PathBuf,
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
        PassportCommand::Verify { files, from, to, aks, host_key, ek_ca, output } => {
            let mut loaded = Vec::new();
            // A directory stands for the passport files (*.json) in it.
            let mut expanded = Vec::new();
            for f in files {
                if f.is_dir() {
                    let mut inside: Vec<PathBuf> = std::fs::read_dir(&f)
                        .map_err(|e| CallError::new(exit::IO, format!("{}: {e}", f.display())))?
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "json"))
                        .collect();
                    inside.sort();
                    expanded.extend(inside);
                } else {
                    expanded.push(f);
                }
            }
            let files = expanded;
            // Read and parsed on every core, as they are verified.
            let read = passport::par_chunks(&files, |part| {
                part.iter()
                    .map(|f| {
                        let bytes = std::fs::read(f).map_err(|e| CallError::new(exit::IO, format!("{}: {e}", f.display())))?;
                        passport::load(&f.display().to_string(), &bytes).map_err(|e| CallError::new(exit::VERIFY_FAILED, format!("{}: {e}", f.display())))
                    })
                    .collect::<Vec<_>>()
            })
            .ok_or_else(|| CallError::new(exit::VERIFY_FAILED, "reading the passports failed"))?;
            for p in read {
                loaded.push(p?);
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
            let ek_anchors = ek_ca.map(|d| lucid_common::tpm::credential::load_ca_dir(&d)).transpose().map_err(|e| CallError::new(exit::IO, e))?;
            let trust = Trust { ek_anchors, pinned_aks: pinned(&aks)?, host_key: host_key.map(|k| lucid_common::checkpoint::VerifierKey::parse(&k)).transpose().map_err(|e| CallError::new(exit::USAGE, format!("--host-key: {e}")))? };
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
    match cmd {
        AttestCommand::Challenge { request, ek_ca, file, keep } => return challenge(&request, &ek_ca, &file, &keep),
        AttestCommand::Confirm { answer, keep, file } => return confirm(&answer, &keep, &file),
        AttestCommand::Activate { challenge, file } => {
            let c: Value = read_json(&challenge)?;
            let r: Value = client.post("/v1/attest/activate", &c).await?;
            write_json(&file, &r)?;
            output::line(&format!("answered the challenge; send {} to the verifier", file.display()))?;
            return Ok(exit::OK);
        }
        _ => {}
    }
    let r: Value = client.get("/v1/attest").await?;
    match cmd {
        AttestCommand::Show { ek_ca, output } => {
            let chain = ek_ca.map(|dir| -> Result<Vec<String>, String> {
                use lucid_common::tpm::credential;
                let field = |k: &str| r[k].as_str().and_then(lucid_common::dsse::b64).ok_or_else(|| format!("the TPM gave no {k}"));
                let ek = credential::EkPublic::parse(&field("ek_public")?).map_err(|e| e.to_string())?;
                credential::check_ek_certificate(&field("ek_certificate")?, &credential::load_ca_dir(&dir)?, &ek)
            });
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
                let cert = match (&chain, s["ek_certificate"].as_bool() == Some(true)) {
                    (_, false) => "none in NV".to_string(),
                    (None, true) => "present in NV (--ek-ca DIR checks its chain)".to_string(),
                    (Some(Ok(c)), true) => format!("chains to the given CA: {}", c.join(" <- ")),
                    (Some(Err(e)), true) => format!("DOES NOT CHAIN to the given CA: {e}"),
                };
                output::line(&format!("EK certificate: {cert}"))?;
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
        AttestCommand::Challenge { .. } | AttestCommand::Activate { .. } | AttestCommand::Confirm { .. } => {}
    }
    Ok(exit::OK)
}

fn read_json(path: &std::path::Path) -> Result<Value, CallError> {
    let text = std::fs::read_to_string(path).map_err(|e| CallError::new(exit::IO, format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| CallError::new(exit::REJECTED, format!("{}: {e}", path.display())))
}

fn write_json(path: &std::path::Path, value: &Value) -> Result<(), CallError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CallError::new(exit::IO, e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| CallError::new(exit::IO, format!("{}: {e}", path.display())))
}

fn b64_field(v: &Value, key: &str, file: &std::path::Path) -> Result<Vec<u8>, CallError> {
    v[key].as_str().and_then(lucid_common::dsse::b64).ok_or_else(|| CallError::new(exit::REJECTED, format!("{}: no base64 {key}", file.display())))
}

/// Verifier side: checks the request and makes the credential.
fn challenge(request: &std::path::Path, ek_ca: &std::path::Path, file: &std::path::Path, keep: &std::path::Path) -> Result<u8, CallError> {
    use lucid_common::tpm::{credential, wire::AkPublic};
    let r = read_json(request)?;
    let bad = |m: String| CallError::new(exit::VERIFY_FAILED, m);
    let ek = credential::EkPublic::parse(&b64_field(&r, "ek_public", request)?).map_err(|e| bad(format!("EK: {e}")))?;
    let cert = b64_field(&r, "ek_certificate", request).map_err(|_| bad("the TPM holds no EK certificate: the EK cannot be checked against a CA".into()))?;
    let anchors = credential::load_ca_dir(ek_ca).map_err(|e| CallError::new(exit::IO, e))?;
    let chain = credential::check_ek_certificate(&cert, &anchors, &ek).map_err(|e| bad(format!("EK certificate: {e}")))?;
    let ak = AkPublic::parse(&b64_field(&r, "ak_public", request)?).map_err(|e| bad(format!("AK: {e}")))?;
    let problems = ak.attestation_key_problems();
    if !problems.is_empty() {
        return Err(bad(format!("the AK is not an attestation key: {}", problems.join(", "))));
    }
    let mut secret = [0u8; 32];
    getrandom_secret(&mut secret)?;
    let cred = credential::make_credential(&ek, &ak.name, &secret).map_err(|e| bad(e.to_string()))?;
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    write_json(file, &serde_json::json!({ "credential_blob": b64(&cred.blob), "encrypted_secret": b64(&cred.secret) }))?;
    let ak_name = lucid_common::hex::encode(&ak.name);
    write_json(
        keep,
        &serde_json::json!({
            "ak_name": ak_name,
            "ek_name": lucid_common::hex::encode(&ek.name),
            "ek_chain": chain,
            "expected_sha256": lucid_common::hex::encode(&lucid_common::tpm::sha256(&[&secret])),
        }),
    )?;
    output::line(&format!("EK certificate chains to your CA: {}", chain.join(" <- ")))?;
    output::line(&format!("challenge for AK {ak_name} written to {}; keep {} here", file.display(), keep.display()))?;
    Ok(exit::OK)
}

fn getrandom_secret(buf: &mut [u8]) -> Result<(), CallError> {
    getrandom::getrandom(buf).map_err(|e| CallError::new(exit::IO, format!("no randomness: {e}")))
}

/// Verifier side: compares the answer and pins the AK.
fn confirm(answer: &std::path::Path, keep: &std::path::Path, file: &std::path::Path) -> Result<u8, CallError> {
    let a = read_json(answer)?;
    let k = read_json(keep)?;
    let secret = b64_field(&a, "secret", answer)?;
    if Some(lucid_common::hex::encode(&lucid_common::tpm::sha256(&[&secret])).as_str()) != k["expected_sha256"].as_str() {
        output::line("the answer does not match: this AK is not in the TPM that holds the certified EK; nothing pinned")?;
        return Ok(exit::VERIFY_FAILED);
    }
    write_json(file, &serde_json::json!({ "ak_name": k["ak_name"], "ek_name": k["ek_name"], "ek_chain": k["ek_chain"], "enrolled": "credential activation" }))?;
    output::line(&format!("AK {} is bound to the certified EK; pinned in {}", k["ak_name"].as_str().unwrap_or("?"), file.display()))?;
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
