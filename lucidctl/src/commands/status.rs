//! `lucidctl status`.

use lucid_common::api::Status;

use crate::client::{CallError, Client};
use crate::exit;
use crate::output::{self, Format};

pub async fn run(client: &Client, detailed: bool, integrity: bool, format: Format) -> Result<u8, CallError> {
    let s: Status = client.get("/v1/status").await?;
    let verified = match integrity {
        true => Some(super::ledger::verify_report(client, 0, None).await?.0),
        false => None,
    };
    // With --integrity, every approved model and its latest verification too.
    let models: Vec<lucid_common::api::ModelStatus> = match integrity {
        true => client.get("/v1/models").await?,
        false => Vec::new(),
    };
    // A ledger that does not verify, or a model that is not as approved, fails the check.
    let broken = verified.as_ref().is_some_and(|r| !r.ok) || models.iter().any(|m| m.state != "verified");
    if format == Format::Json {
        let mut value = serde_json::to_value(&s).unwrap_or_default();
        if let (Some(r), Some(obj)) = (&verified, value.as_object_mut()) {
            obj.insert("integrity".into(), serde_json::to_value(r).unwrap_or_default());
            obj.insert("models".into(), serde_json::to_value(&models).unwrap_or_default());
        }
        output::json(&value)?;
        return Ok(if broken { exit::VERIFY_FAILED } else { exit::OK });
    }
    let ledger_health = match &s.ledger.error {
        None => s.ledger.health.clone(),
        Some(e) => format!("{} since {}: {e} (refusing work that needs evidence)", s.ledger.health.to_uppercase(), output::time(s.ledger.failed_since_ns.unwrap_or(0))),
    };
    let checkpoint = match &s.ledger.latest_checkpoint {
        Some(cp) => format!("size {} at {} (root {}…)", cp.size, output::time(cp.time_ns), output::short(&cp.root, 16)),
        None => "none yet".into(),
    };
    let mut t = output::table(&[]);
    t.add_row(vec!["lucidd".to_string(), format!("{} ({}), pid {}, up {}s", s.version, s.mode, s.pid, s.uptime_s)]);
    t.add_row(vec!["config".to_string(), format!("{} from {} (digest {}…)", s.config.name, s.config.source, output::short(&s.config.digest, 12))]);
    t.add_row(vec!["agents".to_string(), s.config.agents.iter().map(|a| format!("{} ({})", a.name, a.model)).collect::<Vec<_>>().join(", ")]);
    t.add_row(vec!["ledger".to_string(), format!("{ledger_health}, {} records, {}", s.ledger.records, output::size(s.ledger.db_bytes))]);
    t.add_row(vec!["checkpoint".to_string(), checkpoint]);
    t.add_row(vec!["gateway".to_string(), s.gateway.clone().unwrap_or_else(|| "not listening".into())]);
    if let Some(r) = &verified {
        t.add_row(vec!["integrity".to_string(), super::ledger::integrity_line(r)]);
        let line = match models.as_slice() {
            [] => "none approved (lucidctl model approve PATH)".to_string(),
            ms => ms
                .iter()
                .map(|m| {
                    let mut line = format!("{} {} (digest {}…, verified {})", m.state, m.path, output::short(&m.digest, 12), output::time(m.verified_ns));
                    if let Some(c) = &m.last_change {
                        let who = c.exe.clone().unwrap_or_else(|| "unknown executable".into());
                        line.push_str(&format!("\n  last change: {} {} by pid {} ({who}, uid {}) at {}, record #{}", c.op, c.path, c.pid, c.uid, output::time(c.time_ns), c.record));
                    }
                    line
                })
                .collect::<Vec<_>>()
                .join("\n"),
        };
        t.add_row(vec!["models".to_string(), line]);
    }
    let w = &s.integrity_watch;
    let watch = match w.detail.as_str() {
        "" => w.mode.clone(),
        why => format!("{} ({why})", w.mode),
    };
    t.add_row(vec!["model watch".to_string(), watch]);
    if !w.enforcement.is_empty() && w.enforcement != "off" {
        t.add_row(vec!["enforcement".to_string(), w.enforcement.clone()]);
    }
    if detailed {
        t.add_row(vec!["watch events".to_string(), format!("{} changes judged, {} events lost", w.changes, w.lost)]);
    }
    t.add_row(vec!["journald".to_string(), if s.journald { "mirroring records".into() } else { "not connected".into() }]);
    let classifiers = match (s.classifiers.as_slice(), &s.classifier_note) {
        ([], Some(note)) => format!("none: heuristics only ({note})"),
        ([], None) => "none configured".into(),
        (cs, _) => cs.iter().map(|c| format!("{} on {}", c.model, c.backend)).collect::<Vec<_>>().join(", "),
    };
    t.add_row(vec!["classifiers".to_string(), classifiers]);
    if detailed {
        t.add_row(vec!["state".to_string(), s.state_dir.clone()]);
        t.add_row(vec!["database".to_string(), s.ledger.path.clone()]);
        t.add_row(vec!["verifier key".to_string(), s.verifier_key.clone()]);
        t.add_row(vec!["retention".to_string(), s.config.retention_days.map(|d| format!("{d} days")).unwrap_or_else(|| "keep forever".into())]);
        t.add_row(vec!["pruned".to_string(), if s.ledger.pruned_to == 0 { "nothing".into() } else { format!("bodies of records 0..{}", s.ledger.pruned_to) }]);
        t.add_row(vec!["refused".to_string(), format!("{} appends since start", s.ledger.refused_appends)]);
        t.add_row(vec!["config record".to_string(), s.config.record_seq.map(|n| format!("#{n} at {}", output::time(s.config.applied_ns))).unwrap_or_default()]);
    }
    output::line(&t.to_string())?;
    if detailed {
        let mut chains = output::table(&["AGENT", "MODEL", "PRE-REQUEST", "POST-RESPONSE", "CONTROLS"]);
        for a in &s.config.agents {
            chains.add_row(vec![a.name.clone(), a.model.clone(), a.pre_request.join("\n"), a.post_response.join("\n"), a.controls.join(" ")]);
        }
        output::line("")?;
        output::line(&chains.to_string())?;
        if !s.classifiers.is_empty() {
            let mut models = output::table(&["MODEL", "BACKEND", "DEVICE", "WHY", "HEADS", "QUEUE"]);
            for c in &s.classifiers {
                let queue = format!(
                    "{} requests in {} batches, {} tokens\nwait mean {} us, max {} us\n{} expired, {} refused",
                    c.requests, c.batches, c.tokens, c.mean_wait_us, c.max_wait_us, c.expired, c.rejected
                );
                models.add_row(vec![c.model.clone(), c.backend.clone(), c.device.clone(), c.reason.clone(), c.heads.join("\n"), queue]);
            }
            output::line("")?;
            output::line(&models.to_string())?;
        }
    }
    Ok(if broken {
        exit::VERIFY_FAILED
    } else if s.ledger.health == "ok" {
        exit::OK
    } else {
        exit::DAEMON_ERROR
    })
}
