//! What the ledger says about a period, folded into a passport's `controls` and `gaps`:
//! per SOC 2 control the records, decisions by outcome and exceptions; the
//! configurations in force; when lucidd was not running, and why.

use std::collections::BTreeMap;

use lucid_common::passport::{ConfigInForce, ControlPeriod, Gap, Period};
use lucid_common::record::{Kind, Record, Severity};

/// Exceptions listed per control (the count covers all of them).
const MAX_LISTED: usize = 1000;

/// The fold of a period's records.
#[derive(Debug, Default)]
pub struct Summary {
    /// Per control.
    pub per_control: BTreeMap<String, ControlPeriod>,
    /// Configurations that took effect in the period.
    pub configs: Vec<ConfigInForce>,
    /// Stretches without a running lucidd.
    pub gaps: Vec<Gap>,
    /// Integrity records per subject (model path).
    pub integrity: BTreeMap<String, u64>,
}

impl Summary {
    /// Seconds of `period` not inside a gap.
    pub fn operating_s(&self, period: Period) -> u64 {
        let total = period.to_ns.saturating_sub(period.from_ns);
        let down: u64 = self.gaps.iter().map(|g| g.to_ns.saturating_sub(g.from_ns)).sum();
        total.saturating_sub(down) / 1_000_000_000
    }
}

/// The fold, one record at a time (a period's records are not all held at once).
pub struct Folder {
    s: Summary,
    period: Period,
    /// When the previous run's last record was written, and whether it ended cleanly,
    /// so a crash just before a start shows as a gap.
    last_time: u64,
    stopped_at: Option<u64>,
}

impl Folder {
    /// An empty fold of `period`.
    pub fn new(period: Period) -> Folder {
        Folder { s: Summary::default(), period, last_time: period.from_ns, stopped_at: None }
    }

    /// Adds the next record (oldest first).
    pub fn add(&mut self, r: &Record) {
        let s = &mut self.s;
        if r.kind == Kind::System && r.subject == "lucidd.start" {
            match self.stopped_at.take() {
                Some(t) => s.gaps.push(Gap { from_ns: t, to_ns: r.time_ns, cause: "lucidd stopped".into() }),
                None if r.time_ns > self.period.from_ns => s.gaps.push(Gap {
                    from_ns: self.last_time,
                    to_ns: r.time_ns,
                    cause: "lucidd ended without a stop record (crash, kill or power loss)".into(),
                }),
                None => {}
            }
        }
        if r.kind == Kind::System && r.subject == "lucidd.stop" {
            self.stopped_at = Some(r.time_ns);
        }
        self.last_time = r.time_ns;
        if r.kind == Kind::Config && matches!(r.subject.as_str(), "config.load" | "config.apply" | "config.reload") {
            if let Some(d) = r.body.get("new_digest").and_then(|d| d.as_str()) {
                s.configs.push(ConfigInForce { digest: d.to_string(), record_seq: Some(r.seq), since_ns: r.time_ns });
            }
        }
        if r.kind == Kind::Integrity {
            *s.integrity.entry(r.subject.clone()).or_default() += 1;
        }
        for c in &r.controls {
            let entry = s.per_control.entry(c.clone()).or_default();
            entry.records += 1;
            if r.kind == Kind::Decision {
                let outcome = r.body.get("outcome").and_then(|o| o.as_str()).unwrap_or("unknown");
                *entry.decisions.entry(outcome.to_string()).or_default() += 1;
            }
            if r.severity >= Severity::Warning || r.kind == Kind::Anomaly {
                entry.exception_count += 1;
                if entry.exceptions.len() < MAX_LISTED {
                    entry.exceptions.push(r.seq);
                }
            }
        }
    }

    /// The summary.
    pub fn finish(mut self) -> Summary {
        if let Some(t) = self.stopped_at {
            // Stopped and not started again before the period's end (the passport that
            // closes such a period is issued at the next start).
            self.s.gaps.push(Gap { from_ns: t, to_ns: self.period.to_ns, cause: "lucidd stopped".into() });
        }
        self.s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(records: &[Record], period: Period) -> Summary {
        let mut f = Folder::new(period);
        for r in records {
            f.add(r);
        }
        f.finish()
    }
    use serde_json::json;

    fn rec(seq: u64, t: u64, kind: Kind, subject: &str, controls: &[&str], severity: Severity, body: serde_json::Value) -> Record {
        Record { seq, time_ns: t, kind, source: "t".into(), controls: controls.iter().map(|c| c.to_string()).collect(), severity, subject: subject.into(), body }
    }

    #[test]
    fn stops_and_crashes_are_gaps_and_decisions_are_counted_per_control() {
        let s = 1_000_000_000;
        let records = vec![
            rec(0, 10 * s, Kind::Decision, "chat", &["CC6.6"], Severity::Info, json!({ "outcome": "proceed" })),
            rec(1, 11 * s, Kind::Decision, "chat", &["CC6.6", "C1.1"], Severity::Warning, json!({ "outcome": "deny" })),
            rec(2, 20 * s, Kind::System, "lucidd.stop", &["CC7.2"], Severity::Notice, json!({})),
            rec(3, 50 * s, Kind::System, "lucidd.start", &["CC7.2"], Severity::Notice, json!({})),
            rec(4, 60 * s, Kind::Decision, "chat", &["CC6.6"], Severity::Info, json!({ "outcome": "proceed" })),
            // Killed: the next start has no stop before it.
            rec(5, 90 * s, Kind::System, "lucidd.start", &["CC7.2"], Severity::Notice, json!({})),
        ];
        let period = Period { from_ns: 0, to_ns: 100 * s };
        let sum = fold(&records, period);
        assert_eq!(sum.gaps.len(), 2, "{:?}", sum.gaps);
        assert_eq!((sum.gaps[0].from_ns, sum.gaps[0].to_ns), (20 * s, 50 * s));
        assert_eq!((sum.gaps[1].from_ns, sum.gaps[1].to_ns), (60 * s, 90 * s));
        assert!(sum.gaps[1].cause.contains("without a stop"));
        assert_eq!(sum.operating_s(period), 40);
        let cc66 = &sum.per_control["CC6.6"];
        assert_eq!((cc66.records, cc66.decisions["proceed"], cc66.decisions["deny"]), (3, 2, 1));
        assert_eq!(cc66.exceptions, vec![1]);
        assert_eq!(sum.per_control["C1.1"].exception_count, 1);
    }
}
