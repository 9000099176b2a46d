//! What the model watch is to do, from every agent's `lucid-eval-auditor` settings.
//!
//! Approved models, and so the watch, belong to the host, not to one agent, so the
//! settings of all agents are combined, never only the first agent's: the watch runs if
//! any agent asks for it, re-verifies as often as the most demanding one asks, and
//! enforces if any enforces. Where agents ask for things that cannot both hold (two
//! watch modes, two different lists of allowed writers), the configuration is refused
//! at the second one's line and column rather than one of them silently losing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::auditors::{AuditorSettings, EvalEnv};
use crate::config::values::WatchMode;
use crate::config::{AuditorConfig, ConfigError, Environment};

/// The watch's settings in force.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchPlan {
    /// Watch at all (`MODEL_INTEGRITY_CHECK` of any agent).
    pub enabled: bool,
    /// Re-verify every approved model at start (`INTEGRITY_CHECK_ON_STARTUP`).
    pub check_on_startup: bool,
    /// Record what changed when a model is re-approved (`DOCUMENT_MODEL_CHANGES`).
    pub document_changes: bool,
    /// How changes are seen (`INTEGRITY_WATCH_MODE`).
    pub mode: WatchMode,
    /// Time between full re-verifications (`INTEGRITY_RECHECK_MINUTES`, the shortest).
    pub recheck: Duration,
    /// Refuse write-opens of approved files except by these executables
    /// (`INTEGRITY_ENFORCE` with `INTEGRITY_ALLOWED_WRITERS`).
    pub enforce: Option<Vec<PathBuf>>,
}

impl Default for WatchPlan {
    fn default() -> Self {
        WatchPlan::combine(&[], "").unwrap_or_else(|_| WatchPlan {
            enabled: true,
            check_on_startup: true,
            document_changes: true,
            mode: WatchMode::Auto,
            recheck: Duration::from_secs(3600),
            enforce: None,
        })
    }
}

impl WatchPlan {
    /// The plan of a configuration, checked: agents agree where they must, and every
    /// allowed writer exists. Errors name the file, line and column of the setting.
    pub fn build(env: &Environment, file: &str) -> Result<WatchPlan, ConfigError> {
        let entries: Vec<(&str, &AuditorConfig, &EvalEnv)> = env
            .spec
            .agents
            .iter()
            .flat_map(|a| a.audit_chain.pre_request.iter().chain(&a.audit_chain.post_response).map(move |c| (a.name.as_str(), c)))
            .filter_map(|(agent, c)| match &c.env {
                AuditorSettings::Eval(e) => Some((agent, c, e)),
                _ => None,
            })
            .collect();
        WatchPlan::combine(&entries, file)
    }

    fn combine(entries: &[(&str, &AuditorConfig, &EvalEnv)], file: &str) -> Result<WatchPlan, ConfigError> {
        for (_, c, e) in entries {
            if let Some(missing) = e.integrity_allowed_writers.0.iter().find(|w| !Path::new(w).exists()) {
                return Err(ConfigError::at_span(
                    file,
                    c.spans.of(Some("INTEGRITY_ALLOWED_WRITERS")),
                    format!("INTEGRITY_ALLOWED_WRITERS: {missing} does not exist"),
                ));
            }
        }
        // No eval auditor anywhere: the defaults (watching on), as documented.
        let default = EvalEnv::default();
        let defaults = [("", None, &default)];
        let all: Vec<(&str, Option<&AuditorConfig>, &EvalEnv)> = match entries.is_empty() {
            true => defaults.to_vec(),
            false => entries.iter().map(|(a, c, e)| (*a, Some(*c), *e)).collect(),
        };
        let on: Vec<&(&str, Option<&AuditorConfig>, &EvalEnv)> = all.iter().filter(|(_, _, e)| e.model_integrity_check.0).collect();
        let mut mode: Option<(&str, WatchMode)> = None;
        for (agent, c, e) in &on {
            let m = e.integrity_watch_mode;
            if m == WatchMode::Auto {
                continue;
            }
            match mode {
                Some((first, other)) if other != m => {
                    return Err(ConfigError::at_span(
                        file,
                        c.and_then(|c| c.spans.of(Some("INTEGRITY_WATCH_MODE"))),
                        format!(
                            "INTEGRITY_WATCH_MODE: agents {first} and {agent} ask for {} and {}; the model watch is one for the host, so they must agree",
                            other.as_str(),
                            m.as_str()
                        ),
                    ))
                }
                _ => mode = Some((agent, m)),
            }
        }
        let mut enforce: Option<(&str, Vec<PathBuf>)> = None;
        for (agent, c, e) in on.iter().filter(|(_, _, e)| e.integrity_enforce.0) {
            let mut writers: Vec<PathBuf> = e.integrity_allowed_writers.0.iter().map(PathBuf::from).collect();
            writers.sort();
            match &enforce {
                Some((first, other)) if *other != writers => {
                    return Err(ConfigError::at_span(
                        file,
                        c.and_then(|c| c.spans.of(Some("INTEGRITY_ALLOWED_WRITERS"))),
                        format!("INTEGRITY_ALLOWED_WRITERS: agents {first} and {agent} both enforce, with different writers; enforcement is one for the host, so the lists must be equal"),
                    ))
                }
                _ => enforce = Some((agent, writers)),
            }
        }
        let minutes = on.iter().map(|(_, _, e)| e.integrity_recheck_minutes.0).min().unwrap_or(60);
        Ok(WatchPlan {
            enabled: !on.is_empty(),
            check_on_startup: on.iter().any(|(_, _, e)| e.integrity_check_on_startup.0),
            document_changes: all.iter().any(|(_, _, e)| e.document_model_changes.0),
            mode: mode.map(|(_, m)| m).unwrap_or(WatchMode::Auto),
            recheck: Duration::from_secs(u64::from(minutes) * 60),
            enforce: enforce.map(|(_, w)| w),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(agents: &[&str]) -> String {
        let mut text = "apiVersion: lucid.io/v1alpha1\nkind: LucidEnvironment\nmetadata:\n  name: t\nspec:\n".to_string();
        text.push_str(if agents.is_empty() { "  agents: []\n" } else { "  agents:\n" });
        for (i, eval_env) in agents.iter().enumerate() {
            text.push_str(&format!(
                "    - name: a{i}\n      model:\n        id: m{i}\n      auditChain:\n        postResponse:\n          - auditorId: lucid-eval-auditor\n            env:\n{eval_env}"
            ));
        }
        text
    }

    fn plan(agents: &[&str]) -> Result<WatchPlan, String> {
        let text = env(agents);
        let env = crate::config::parse(&text, "t.yaml").map_err(|e| e.to_string())?;
        WatchPlan::build(&env, "t.yaml").map_err(|e| e.to_string())
    }

    /// Issue 13: only the first agent's eval settings counted.
    #[test]
    fn every_agents_settings_count() {
        let off = "              MODEL_INTEGRITY_CHECK: \"false\"\n";
        let on_10 = "              INTEGRITY_RECHECK_MINUTES: \"10\"\n";
        let p = plan(&[off, on_10]).unwrap();
        assert!(p.enabled, "the second agent watches");
        assert_eq!(p.recheck, Duration::from_secs(600));
        let p = plan(&[on_10, "              INTEGRITY_RECHECK_MINUTES: \"5\"\n"]).unwrap();
        assert_eq!(p.recheck, Duration::from_secs(300), "the shortest interval wins");
        assert!(!plan(&[off, off]).unwrap().enabled);
        let enforce = "              INTEGRITY_ENFORCE: \"true\"\n              INTEGRITY_ALLOWED_WRITERS: \"/bin/cp\"\n";
        assert_eq!(plan(&[on_10, enforce]).unwrap().enforce, Some(vec![PathBuf::from("/bin/cp")]));
        assert_eq!(plan(&[]).unwrap(), WatchPlan::default(), "no eval auditor: the defaults");
        assert!(WatchPlan::default().enabled);
    }

    #[test]
    fn agents_that_cannot_both_have_their_way_are_refused_at_the_setting() {
        let err = plan(&["              INTEGRITY_WATCH_MODE: ebpf\n", "              INTEGRITY_WATCH_MODE: periodic\n"]).unwrap_err();
        assert!(err.starts_with("t.yaml:22:37: INTEGRITY_WATCH_MODE: agents a0 and a1"), "{err}");
        assert!(plan(&["              INTEGRITY_WATCH_MODE: ebpf\n", "              INTEGRITY_WATCH_MODE: auto\n"]).is_ok());
        let err = plan(&[
            "              INTEGRITY_ENFORCE: \"true\"\n              INTEGRITY_ALLOWED_WRITERS: /bin/cp\n",
            "              INTEGRITY_ENFORCE: \"true\"\n              INTEGRITY_ALLOWED_WRITERS: /bin/mv\n",
        ])
        .unwrap_err();
        assert!(err.contains("INTEGRITY_ALLOWED_WRITERS: agents a0 and a1 both enforce"), "{err}");
    }

    #[test]
    fn an_allowed_writer_that_does_not_exist_is_named() {
        let err = plan(&["              INTEGRITY_ALLOWED_WRITERS: /bin/cp,/opt/nowhere/vllm\n"]).unwrap_err();
        assert_eq!(err, "t.yaml:14:42: INTEGRITY_ALLOWED_WRITERS: /opt/nowhere/vllm does not exist");
    }
}
