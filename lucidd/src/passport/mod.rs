//! Issuing AI passports (DESIGN.md section 7): hourly by default and on demand, each a
//! ledger record, each linked to the one before, so the chain has no silent gaps. A
//! passport reads the ledger (the period's records, the launch measurements, the
//! checkpoint and its consistency with the previous passport's), asks the TPM to anchor
//! the checkpoint and to quote the statement, and is signed by the host key. Without a
//! TPM it is issued unanchored and says why.

pub mod summary;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use lucid_common::api::PassportSummary;
use lucid_common::dsse::{Envelope, IN_TOTO};
use lucid_common::passport::{
    AnchorClaim, Boot, Controls, Host, LedgerClaim, Launch, Measurement, ModelClaim, Passport, Period, Statement, Subject, TpmClaim, PREDICATE_TYPE, STATEMENT_TYPE,
};
use lucid_common::record::{Entry, Kind, Record, Severity};
use serde_json::json;

use crate::daemon::background;
use crate::daemon::measured::MEASURE;
use crate::daemon::state::AppState;
use crate::ledger::{now_ns, LedgerError};

/// Subject of the record that holds a passport.
pub const ISSUED: &str = "passport.issued";

/// Why a passport could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Reading or writing the ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Something else (a task failed, the ledger has no checkpoint).
    #[error("{0}")]
    Other(String),
}

static ISSUING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Issues passports every `passportIntervalMinutes`, and one at start that closes the
/// period the daemon was down (so the gap is stated, never silent).
pub fn spawn(state: Arc<AppState>) {
    let every = Duration::from_secs(state.attest.settings().passport_interval_minutes.max(1) * 60);
    tokio::spawn(async move {
        // The first at one interval after start: the period since the last passport,
        // with the time lucidd was down as a stated gap.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = issue(&state, "scheduled").await {
                tracing::error!(error = %e, "could not issue a passport; trying again at the next interval");
            }
        }
    });
}

/// The latest passport: its summary and the checkpoint note it covers. Read from the
/// ledger once, then kept as each passport is issued, so `status` (polled by monitoring)
/// and the next passport do not scan the ledger backwards for it.
pub fn latest(state: &AppState) -> Result<Option<(PassportSummary, String)>, LedgerError> {
    let mut cached = state.passports.latest.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(latest) = &*cached {
        return Ok(latest.clone());
    }
    let found = state.ledger.last_matching(is_passport)?.and_then(|r| {
        let note = r.body.get("checkpoint").and_then(|c| c.as_str()).map(str::to_string)?;
        Some((summary_of(&r)?, note))
    });
    *cached = Some(found.clone());
    Ok(found)
}

/// Whether a record holds a passport.
pub fn is_passport(r: &Record) -> bool {
    r.kind == Kind::Attestation && r.subject == ISSUED
}

/// The summary a passport record carries.
pub fn summary_of(r: &Record) -> Option<PassportSummary> {
    let b = &r.body;
    Some(PassportSummary {
        number: b.get("number")?.as_u64()?,
        digest: b.get("digest")?.as_str()?.to_string(),
        record_seq: r.seq,
        from_ns: b.get("from_ns")?.as_u64()?,
        to_ns: b.get("to_ns")?.as_u64()?,
        anchored: b.get("anchored")?.as_bool()?,
        checkpoint_size: b.get("checkpoint_size")?.as_u64()?,
    })
}

/// What the previous passport left for the next one.
struct Previous {
    summary: Option<PassportSummary>,
    checkpoint: Option<String>,
    seq: u64,
    from_ns: u64,
}

/// Runs ledger reads, folding and TPM work off the async workers and below the
/// gateway's priority, so issuing never stalls requests.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, IssueError> + Send + 'static) -> Result<T, IssueError> {
    background::run("passport", f).await.map_err(IssueError::Other)?
}

/// Issues a passport for the period since the previous one, now.
pub async fn issue(state: &Arc<AppState>, reason: &str) -> Result<PassportSummary, IssueError> {
    let _one = ISSUING.lock().await;
    let ledger = &state.ledger;
    let s = state.clone();
    let prev = blocking(move || {
        let (summary, checkpoint) = latest(&s)?.unzip();
        let from_ns = match &summary {
            Some(p) => p.to_ns,
            None => s.ledger.records(0, 1)?.first().map(|r| r.time_ns).unwrap_or(s.run.started_ns),
        };
        Ok(Previous { seq: summary.as_ref().map(|p| p.record_seq).unwrap_or(0), summary, checkpoint, from_ns })
    })
    .await?;
    let period = Period { from_ns: prev.from_ns, to_ns: now_ns().max(prev.from_ns) };

    // Anchor (which signs a checkpoint first) where there is a TPM; otherwise just sign.
    let mut unanchored = state.attest.status().unavailable;
    let anchor = if state.attest.identity().is_some() {
        match crate::attest::anchor::anchor_now(ledger, &state.attest, "passport").await {
            Ok(a) => Some(a),
            Err(e) => {
                unanchored = Some(format!("the TPM failed: {e}"));
                None
            }
        }
    } else {
        None
    };
    let (size, note) = match &anchor {
        Some(a) => (checkpoint_size(&a.checkpoint), a.checkpoint.clone()),
        None => {
            ledger.checkpoint().await?;
            ledger.head().checkpoint.ok_or_else(|| IssueError::Other("the ledger has no checkpoint".into()))?
        }
    };
    // A TPM that was reset since the last measurement (it restarted, the host rebooted
    // under a running lucidd) holds a zero application PCR: measure the launch again,
    // so the PCR and the ledger agree and the passport can be replayed.
    if state.attest.identity().is_some() {
        let a = state.attest.clone();
        if let Ok(Ok(value)) = background::run("passport", move || a.application_pcr()).await {
            if value == [0u8; 32] {
                tracing::warn!("the application PCR was reset since lucidd measured its launch; measuring again");
                state.measure_launch().await;
            }
        }
    }
    let s = state.clone();
    let anchor_claim = anchor.as_ref().map(|a| AnchorClaim { counter: a.counter, attest: a.attest.clone(), signature: a.signature.clone() });
    let n = note.clone();
    let mut statement = blocking(move || compose(&s, &prev, period, size, n, anchor_claim)).await?;
    if state.attest.identity().is_some() && anchor.is_some() {
        let binding = statement.quote_binding();
        let attest = state.attest.clone();
        match background::run("passport", move || attest.quote(&binding)).await {
            Ok(Ok(q)) => {
                let clock = lucid_common::tpm::wire::Attest::parse(&q.signed.attest).ok().map(|a| a.clock);
                statement.predicate.tpm = Some(TpmClaim {
                    quote: B64.encode(&q.signed.attest),
                    signature: B64.encode(&q.signed.signature),
                    pcrs: q.pcrs.iter().map(|(i, v)| (*i, lucid_common::hex::encode(v))).collect(),
                    clock,
                });
            }
            Ok(Err(e)) => unanchored = Some(format!("the TPM could not quote: {e}")),
            Err(e) => unanchored = Some(format!("the quote task failed: {e}")),
        }
    }
    if statement.predicate.tpm.is_none() {
        statement.predicate.unanchored = Some(unanchored.unwrap_or_else(|| "no TPM".into()));
    }
    let s = state.clone();
    let reason = reason.to_string();
    let (summary, entry, note) = blocking(move || {
        let payload = serde_json::to_vec(&statement).map_err(|e| IssueError::Other(e.to_string()))?;
        let digest = lucid_common::hex::encode(&lucid_common::tpm::sha256(&[&payload]));
        let envelope = Envelope::sign(IN_TOTO, &payload, &s.run.host_key, &s.ledger.verifier_key().to_string());
        let p = &statement.predicate;
        let anchored = p.tpm.is_some();
        let body = json!({
            "number": p.number,
            "digest": digest,
            "from_ns": period.from_ns,
            "to_ns": period.to_ns,
            "anchored": anchored,
            "unanchored": p.unanchored,
            "checkpoint_size": size,
            "checkpoint": note.clone(),
            "reason": reason,
            "gaps": p.gaps,
            "envelope": envelope,
        });
        let severity = if anchored { Severity::Info } else { Severity::Notice };
        let controls = vec!["CC7.2".into(), "CC8.1".into(), "PI1.5".into()];
        let entry = Entry { kind: Kind::Attestation, source: "lucidd".into(), controls, severity, subject: ISSUED.into(), body };
        let summary = PassportSummary { number: p.number, digest, record_seq: 0, from_ns: period.from_ns, to_ns: period.to_ns, anchored, checkpoint_size: size };
        Ok((summary, entry, note))
    })
    .await?;
    let receipt = ledger.append(entry).await?;
    tracing::info!(number = summary.number, seq = receipt.seq, anchored = summary.anchored, "issued passport");
    let summary = PassportSummary { record_seq: receipt.seq, ..summary };
    *state.passports.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(Some((summary.clone(), note)));
    Ok(summary)
}

/// The statement of a period, before the quote: everything read from the ledger and the
/// daemon's state (blocking: it decompresses the period's records).
fn compose(state: &AppState, prev: &Previous, period: Period, size: u64, note: String, anchor: Option<AnchorClaim>) -> Result<Statement, IssueError> {
    let ledger = &state.ledger;
    let consistency = match &prev.summary {
        Some(p) if p.checkpoint_size <= size => ledger.consistency(p.checkpoint_size, size)?.proof,
        _ => Vec::new(),
    };
    let q = lucid_common::api::LogQuery { since_ns: Some(period.from_ns), until_ns: Some(period.to_ns), ..Default::default() };
    let mut folder = summary::Folder::new(period);
    ledger.visit(&q, prev.seq, |r| folder.add(&r))?;
    let folded = folder.finish();
    let cfg = state.config();
    let models: Vec<ModelClaim> = state
        .models
        .all()
        .into_iter()
        .map(|m| ModelClaim {
            id: m.id.clone(),
            path: m.path.display().to_string(),
            digest: lucid_common::hex::encode(&m.manifest.subject_digest()),
            state: m.last.state.clone(),
            changes_in_period: folded.integrity.get(&m.path.display().to_string()).copied().unwrap_or(0),
        })
        .collect();
    let mut subject = vec![Subject { name: "ledger-checkpoint".into(), digest: sha256_map(note.as_bytes()) }];
    for m in &models {
        subject.push(Subject { name: format!("model:{}", m.id), digest: [("sha256".to_string(), m.digest.clone())].into() });
    }
    let identity = state.attest.identity();
    let settings = state.attest.settings().clone();
    let (event_log, event_log_error) = match crate::attest::eventlog::read(&settings.event_log) {
        Ok(bytes) => (Some(B64.encode(bytes)), None),
        Err(e) => (None, Some(e)),
    };
    let measurements = ledger_measurements(state)?;
    let operating_s = folded.operating_s(period);
    let length_s = (period.to_ns - period.from_ns) / 1_000_000_000;
    Ok(Statement {
        statement_type: STATEMENT_TYPE.into(),
        subject,
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Passport {
            number: prev.summary.as_ref().map(|p| p.number + 1).unwrap_or(1),
            period,
            previous: prev.summary.as_ref().map(|p| p.digest.clone()),
            host: Host {
                hostname: crate::daemon::hostname(),
                machine_id: std::fs::read_to_string("/etc/machine-id").ok().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()),
                ledger_key: ledger.verifier_key().to_string(),
                ek_name: identity.as_ref().map(|i| i.ek_name.clone()),
                ek_certificate: identity.as_ref().and_then(|i| i.ek_certificate.as_ref()).map(|c| B64.encode(c)),
                ek_public: identity.as_ref().map(|i| B64.encode(&i.ek_public)),
                ak_public: identity.as_ref().map(|i| B64.encode(&i.ak_public)),
            },
            boot: Boot { event_log, event_log_error },
            launch: Launch { pcr: settings.application_pcr, lucidd: launch_digest(&measurements, "lucidd"), config_digest: cfg.digest.clone(), measurements },
            models,
            controls: Controls {
                inventory: state.inventory(),
                per_control: folded.per_control.clone(),
                configs: folded.configs.clone(),
                operating_s,
                coverage_pct: if length_s == 0 { 100.0 } else { (operating_s as f64 * 1000.0 / length_s as f64).round() / 10.0 },
            },
            gaps: folded.gaps.clone(),
            ledger: LedgerClaim { checkpoint: note, previous_checkpoint: prev.checkpoint.clone(), consistency, anchor },
            gpus: Vec::new(),
            gpus_note: Some("GPU identity (NVML) is not collected by this version of lucidd".into()),
            tpm: None,
            unanchored: None,
        },
    })
}

fn sha256_map(bytes: &[u8]) -> std::collections::BTreeMap<String, String> {
    [("sha256".to_string(), lucid_common::hex::encode(&lucid_common::tpm::sha256(&[bytes])))].into()
}

fn checkpoint_size(note: &str) -> u64 {
    note.lines().nth(1).and_then(|l| l.parse().ok()).unwrap_or(0)
}

fn launch_digest(measurements: &[Measurement], what: &str) -> Option<String> {
    measurements.iter().rev().find(|m| m.what == what).map(|m| m.digest.clone())
}

/// What passports keep between issues, so none rescans the ledger (a year of hourly
/// passports is 8,760): the launch measurements read so far (and up to which record),
/// and the latest passport (`None` until first read).
#[derive(Default)]
pub struct Cache {
    measurements: std::sync::Mutex<Option<(u64, Vec<Measurement>)>>,
    latest: std::sync::Mutex<Option<Option<(PassportSummary, String)>>>,
}

/// The application PCR's extensions since it was last reset: newest first back to the
/// one that started from zeros (or to where the cache already read), oldest first.
fn ledger_measurements(state: &AppState) -> Result<Vec<Measurement>, LedgerError> {
    let zeros = lucid_common::hex::encode(&[0u8; 32]);
    let head = state.ledger.head().next_seq;
    let cached = state.passports.measurements.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let read_to = cached.as_ref().map(|c| c.0).unwrap_or(0);
    let mut newer = Vec::new();
    let mut reset = false;
    state.ledger.scan_back(|r| {
        if r.seq < read_to {
            return false;
        }
        if r.seq >= head || r.kind != Kind::Attestation || r.subject != MEASURE {
            return true;
        }
        let field = |k: &str| r.body.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let (Some(what), Some(digest), Some(before), Some(after)) = (field("what"), field("digest"), field("before"), field("after")) else {
            return true; // not extended (no TPM): not part of the PCR's history
        };
        let from_zero = before == zeros;
        newer.push(Measurement { seq: r.seq, what, digest, before, after });
        reset = from_zero;
        !from_zero
    })?;
    newer.reverse();
    let mut all = match cached {
        Some((_, old)) if !reset => old,
        _ => Vec::new(),
    };
    all.extend(newer);
    *state.passports.measurements.lock().unwrap_or_else(|p| p.into_inner()) = Some((head, all.clone()));
    Ok(all)
}
