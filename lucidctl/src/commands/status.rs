//! `lucidctl status`.

use lucid_common::api::{ControlState, Status};

use crate::client::{CallError, Client};
use crate::exit;
use crate::output::{self, Format};

/// What `status` shows.
pub struct View {
    /// Only this agent.
    pub agent: Option<String>,
    /// Chains, classifiers and ledger details.
    pub detailed: bool,
    /// Verify the ledger and list approved models.
    pub integrity: bool,
    /// The control inventory.
    pub controls: bool,
}

/// Keeps only `agent`'s parts of the status, or says there is no such agent.
fn only_agent(s: &mut Status, agent: &str) -> Result<(), CallError> {
    if !s.config.agents.iter().any(|a| a.name == agent) {
        let names: Vec<&str> = s.config.agents.iter().map(|a| a.name.as_str()).collect();
        return Err(CallError::new(exit::REJECTED, format!("no agent {agent:?} in the configuration in force (agents: {})", names.join(", "))));
    }
    s.config.agents.retain(|a| a.name == agent);
    s.controls.retain(|c| c.agent == agent);
    s.warnings.retain(|w| w.starts_with(&format!("agent {agent}:")));
    Ok(())
}

/// The inventory as an indented list, wrapped to the output's width: per agent, each
/// control and its state, then each part with its settings and, where it does not
/// operate, why.
fn controls_text(s: &Status) -> String {
    let width = usize::from(output::width());
    let mut out = Vec::new();
    let mut agent = "";
    for c in &s.controls {
        if c.agent != agent {
            agent = &c.agent;
            if !out.is_empty() {
                out.push(String::new());
            }
            out.push(format!("agent {agent}"));
        }
        out.push(format!("  {:<7} {}", c.control, c.state.as_str()));
        for p in &c.parts {
            let mark = match p.state {
                ControlState::Operating => "+",
                ControlState::NotOperating => "-",
                ControlState::Partial | ControlState::Degraded => "~",
            };
            let stage = p.stage.as_deref().map(|st| format!(" ({st})")).unwrap_or_default();
            let mut text = format!("{}{stage}: {}", p.auditor, p.does);
            if p.state != ControlState::Operating {
                text = format!("[{}] {text}", p.state.as_str());
            }
            out.extend(output::wrap(&text, &format!("    {mark} "), "      ", width));
            out.extend(output::wrap(&p.settings.join(" "), "      ", "      ", width));
            if let Some(why) = &p.why {
                out.extend(output::wrap(&format!("why: {why}"), "      ", "           ", width));
            }
        }
    }
    out.join("\n")
}

pub async fn run(client: &Client, view: View, format: Format) -> Result<u8, CallError> {
    let View { agent, detailed, integrity, controls } = view;
    let mut s: Status = client.get("/v1/status").await?;
    if let Some(a) = &agent {
        only_agent(&mut s, a)?;
    }
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
    if controls {
        if format == Format::Json {
            output::json(&s.controls)?;
        } else {
            output::line(&controls_text(&s))?;
        }
        return Ok(exit::OK);
    }
    let mut t = output::table(&[]);
    t.add_row(vec!["lucidd".to_string(), format!("{} ({}), pid {}, up {}s", s.version, s.mode, s.pid, s.uptime_s)]);
    t.add_row(vec!["config".to_string(), format!("{} from {} (digest {}…)", s.config.name, s.config.source, output::short(&s.config.digest, 12))]);
    t.add_row(vec!["agents".to_string(), s.config.agents.iter().map(|a| format!("{} ({})", a.name, a.model)).collect::<Vec<_>>().join(", ")]);
    let count = |st: ControlState| s.controls.iter().filter(|c| c.state == st).count();
    t.add_row(vec![
        "controls".to_string(),
        format!(
            "{} operating, {} partial, {} not operating (lucidctl status --controls)",
            count(ControlState::Operating),
            count(ControlState::Partial),
            count(ControlState::NotOperating)
        ),
    ]);
    for w in &s.warnings {
        t.add_row(vec!["WARNING".to_string(), w.clone()]);
    }
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
    let a = &s.attestation;
    let tpm = match (a.available, &a.failing, &a.unavailable) {
        (true, None, _) => format!("{} (AK {}…, anchor counter {})", a.tcti, output::short(a.ak_name.as_deref().unwrap_or(""), 16), a.anchor_counter.map(|c| c.to_string()).unwrap_or_else(|| "not yet advanced".into())),
        (true, Some(f), _) => format!("FAILING: {f} (passports are unanchored until it answers)"),
        (false, _, why) => format!("none: {} (passports are unanchored)", why.as_deref().unwrap_or("not available")),
    };
    t.add_row(vec!["TPM".to_string(), tpm]);
    let passport = match &a.latest_passport {
        Some(p) => format!("#{} to {} ({}; every {} min; lucidctl passport list)", p.number, output::time(p.to_ns), if p.anchored { "anchored" } else { "unanchored" }, a.passport_interval_minutes),
        None => format!("none yet (every {} min, or lucidctl passport issue)", a.passport_interval_minutes),
    };
    t.add_row(vec!["passports".to_string(), passport]);
    t.add_row(vec!["journald".to_string(), if s.journald { "mirroring records".into() } else { "not connected".into() }]);
    let classifiers = match (s.classifiers.as_slice(), &s.classifier_note) {
        ([], Some(note)) => format!("none: heuristics only ({note})"),
        ([], None) => "none configured".into(),
        (cs, _) => cs
            .iter()
            .map(|c| match &c.gpu_error {
                Some(e) if c.backend == "cpu" => format!("{} on cpu (the GPU was given up: {e})", c.model),
                _ => format!("{} on {}", c.model, c.backend),
            })
            .collect::<Vec<_>>()
            .join(", "),
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
    output::line(&output::render(t))?;
    if detailed {
        // Lists rather than wide tables: auditor ids and reasons are long, and a wrapped
        // cell would cut them in the middle.
        let width = usize::from(output::width());
        let mut lines: Vec<String> = Vec::new();
        let kv = |lines: &mut Vec<String>, key: &str, value: &str| lines.extend(output::wrap(value, &format!("  {key:<13} "), &" ".repeat(16), width));
        for a in &s.config.agents {
            lines.push(String::new());
            lines.push(format!("agent {} (model {})", a.name, a.model));
            kv(&mut lines, "preRequest", &a.pre_request.join(", "));
            kv(&mut lines, "postResponse", &a.post_response.join(", "));
            kv(&mut lines, "operating", &a.controls.join(" "));
        }
        for c in &s.classifiers {
            lines.push(String::new());
            lines.push(format!("classifier {}", c.model));
            kv(&mut lines, "scored on", &format!("{}: {}", c.backend, c.device));
            kv(&mut lines, "why", &c.reason);
            kv(&mut lines, "heads", &c.heads.join("; "));
            kv(
                &mut lines,
                "queue",
                &format!(
                    "{} requests in {} batches, {} tokens; wait mean {} us, max {} us; {} expired, {} refused; {} batches left to the CPU by the GPU",
                    c.requests, c.batches, c.tokens, c.mean_wait_us, c.max_wait_us, c.expired, c.rejected, c.gpu_fallbacks
                ),
            );
        }
        output::line(&lines.join("\n"))?;
    }
    Ok(if broken {
        exit::VERIFY_FAILED
    } else if s.ledger.health == "ok" {
        exit::OK
    } else {
        exit::DAEMON_ERROR
    })
}
