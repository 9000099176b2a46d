//! Issue 13 through the real daemon and CLI: the control inventory (`status --controls`,
//! the `config` record), the warning for answers nobody reads, the seed guide's command
//! line (`status AGENT`, `logs AGENT`, `apply --profile`), and status output that wraps.

use lucid_tests::Daemon;

const EXAMPLE: &str = include_str!("../../examples/soc2-environment.yaml");

fn daemon_on_example(tmp: &std::path::Path, env: &[(&str, &str)]) -> Daemon {
    let file = tmp.join("env.yaml");
    std::fs::write(&file, EXAMPLE).unwrap();
    Daemon::start_env(&tmp.join("state"), &["--config", file.to_str().unwrap()], env)
}

#[test]
fn the_inventory_says_what_does_not_operate_and_why() {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon_on_example(tmp.path(), &[]);
    let s = d.ctl_json(&["status"]);
    let controls = s["controls"].as_array().unwrap();
    let find = |c: &str| controls.iter().find(|x| x["control"] == c).cloned().unwrap_or_default();
    assert_eq!(find("CC7.3")["state"], "not_operating");
    let anomaly = &find("CC7.3")["parts"][0];
    assert_eq!(anomaly["settings"][0], "ANOMALY_DETECTION_ENABLED=true");
    assert_eq!(anomaly["why"], "not implemented in this version of lucidd");
    assert_eq!(find("CC8.1")["state"], "partial", "safety benchmarks do not run: {}", find("CC8.1"));
    // Without a model pack, people's names go undetected, and the inventory says so.
    assert!(find("C1.1").to_string().contains("not people's names (no model pack with a names head is loaded)"), "{}", find("C1.1"));
    // The agent's list of controls holds only what operates.
    let listed: Vec<&str> = s["config"]["agents"][0]["controls"].as_array().unwrap().iter().filter_map(|c| c.as_str()).collect();
    assert!(!listed.contains(&"CC7.3") && listed.contains(&"CC6.1"), "{listed:?}");
    // The example's answers are read by no auditor: said in status.
    let text = d.ctl_ok(&["status"]);
    assert!(text.contains("WARNING") && text.contains("its responses are read by no auditor"), "{text}");
    let shown = d.ctl_ok(&["status", "--controls"]);
    assert!(shown.contains("CC7.3   not operating") && shown.contains("why: not implemented in this version of lucidd"), "{shown}");
    // The config record carries the inventory.
    let logs = d.ctl_ok(&["logs", "--kind", "config", "-o", "json"]);
    let load: serde_json::Value = serde_json::from_str(logs.lines().last().unwrap()).unwrap();
    assert_eq!(load["subject"], "config.load");
    let recorded = load["body"]["controls"].as_array().unwrap();
    assert!(recorded.iter().any(|c| c["control"] == "CC7.3" && c["state"] == "not_operating"), "{load}");
}

#[test]
fn status_and_logs_take_an_agent_and_apply_takes_a_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &[]);
    let out = d.ctl_ok(&["apply", "--profile", "soc2", "--model", "meta-llama/Llama-3.1-8B", "--upstream", "http://10.0.0.7:8000/v1", "--dry-run"]);
    assert!(out.contains("id: \"meta-llama/Llama-3.1-8B\"") && out.contains("profile: soc2") && out.contains("name: \"soc2-agent\""), "{out}");
    assert_eq!(d.ctl_json(&["status"])["config"]["agents"][0]["name"], "dev-agent", "--dry-run applies nothing");
    let applied = d.ctl_ok(&["apply", "--profile", "soc2", "--model", "meta-llama/Llama-3.1-8B", "--upstream", "http://10.0.0.7:8000/v1", "--agent", "support"]);
    assert!(applied.contains("applied lucidctl apply --profile"), "{applied}");
    let s = d.ctl_json(&["status", "support"]);
    assert_eq!(s["config"]["agents"].as_array().unwrap().len(), 1);
    assert_eq!(s["config"]["agents"][0]["model"], "meta-llama/Llama-3.1-8B");
    assert!(s["controls"].as_array().unwrap().iter().all(|c| c["agent"] == "support"));
    let missing = d.ctl(&["status", "nobody"]);
    assert_eq!(missing.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no agent \"nobody\""));
    let bad = d.ctl(&["apply", "--profile", "soc2", "--model", "m"]);
    assert_eq!(bad.status.code(), Some(2), "--profile needs --upstream");

    // logs AGENT: that agent's decisions only.
    let audit = |agent: &str| {
        let mut child = std::process::Command::new(lucid_tests::bin("lucidctl"))
            .arg("--dev-state")
            .arg(&d.dir)
            .args(["audit", "--agent", agent])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"mail jane@example.com").unwrap();
        child.wait().unwrap();
    };
    audit("support");
    let mine = d.ctl_ok(&["logs", "support", "--kind", "decision", "-o", "json"]);
    assert!(!mine.trim().is_empty());
    assert!(mine.lines().all(|l| l.contains("\"agent\":\"support\"")), "{mine}");
    assert!(d.ctl_ok(&["logs", "someone-else", "--kind", "decision"]).trim().is_empty());
}

#[test]
fn status_wraps_long_reasons_instead_of_widening_every_line() {
    let tmp = tempfile::tempdir().unwrap();
    // A model pack looked for in a long path: status explains why it is missing.
    let far = format!("/nonexistent/{}/guard", "a-very-long-directory-name".repeat(6));
    let d = daemon_on_example(tmp.path(), &[("LUCID_MODEL_PACK", far.as_str())]);
    let out = lucid_tests::lucidctl(&d.dir, &["status", "--detailed"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("a-very-long-directory-name"), "{text}");
    let widest = text.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(widest <= 100, "status is {widest} columns wide:\n{text}");
    assert!(text.lines().all(|l| !l.ends_with(' ')), "no line is padded with blanks");
}
