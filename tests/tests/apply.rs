//! Issue 13: `apply` means applied, and `check-config` checks what `apply` checks. A
//! setting is either in force when `apply` returns or refused (and the refusal
//! recorded); a file that `apply` would refuse is refused by `check-config` too, at its
//! file, line and column.

use std::path::Path;
use std::process::Command;

use lucid_tests::{bin, repo_root, skip, tcp_http, Daemon};

/// An environment with one agent per eval env (indented for `env:`), and a gateway
/// section.
fn environment(gateway: &str, evals: &[&str]) -> String {
    let mut text = format!("apiVersion: lucid.io/v1alpha1\nkind: LucidEnvironment\nmetadata:\n  name: apply-test\nspec:\n{gateway}  agents:\n");
    for (i, env) in evals.iter().enumerate() {
        text.push_str(&format!(
            "    - name: a{i}\n      model:\n        id: m{i}\n      upstream:\n        url: http://127.0.0.1:9/v1\n      auditChain:\n        postResponse:\n          - auditorId: lucid-eval-auditor\n            env:\n{env}"
        ));
    }
    text
}

const OFF: &str = "              MODEL_INTEGRITY_CHECK: \"false\"\n";

fn recheck(minutes: u32) -> String {
    format!("              INTEGRITY_RECHECK_MINUTES: \"{minutes}\"\n")
}

fn apply(d: &Daemon, dir: &Path, text: &str) -> std::process::Output {
    let file = dir.join("apply.yaml");
    std::fs::write(&file, text).unwrap();
    d.ctl(&["apply", "-f", file.to_str().unwrap()])
}

fn watch(d: &Daemon) -> (String, serde_json::Value) {
    let s = d.ctl_json(&["status"]);
    (s["integrity_watch"]["mode"].as_str().unwrap_or_default().to_string(), s["integrity_watch"]["recheck_minutes"].clone())
}

#[test]
fn every_agents_eval_settings_take_effect_when_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("env.yaml");
    // The first agent switches the watch off; the second's settings count as well.
    std::fs::write(&file, environment("", &[OFF, &recheck(7)])).unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &["--config", file.to_str().unwrap()]);
    let mut started = watch(&d);
    for _ in 0..200 {
        if started.0 != "starting" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        started = watch(&d);
    }
    assert_ne!(started.0, "off", "the second agent asks for the watch");
    assert_eq!(started.1, 7);

    let out = apply(&d, tmp.path(), &environment("", &[OFF, OFF]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(watch(&d), ("off".to_string(), serde_json::Value::Null), "in force when apply returns");

    // A model approved while the watch is off is checked when the watch comes back.
    let model = tmp.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("weights.bin"), b"approved weights").unwrap();
    d.ctl_ok(&["model", "approve", model.to_str().unwrap(), "--note", "CHG-7"]);
    let out = apply(&d, tmp.path(), &environment("", &[&recheck(3), OFF]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (mode, minutes) = watch(&d);
    assert!(mode != "off" && mode != "starting", "{mode}");
    assert_eq!(minutes, 3);
    let logs = d.ctl_ok(&["logs", "--kind", "integrity", "-o", "json"]);
    assert!(logs.contains("\"watch_off\"") && logs.contains("\"watch_restarted\""), "each change of the watch is recorded: {logs}");
    let mut reverified = String::new();
    for _ in 0..100 {
        reverified = d.ctl_ok(&["logs", "--kind", "integrity", "-o", "json"]);
        if reverified.contains("\"trigger\":\"watch restarted\"") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(reverified.contains("\"trigger\":\"watch restarted\""), "the model is re-verified when the watch comes back: {reverified}");
}

#[test]
fn a_setting_read_only_at_start_is_refused_and_the_refusal_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("env.yaml");
    let text = environment("", &[&recheck(60)]);
    std::fs::write(&file, &text).unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &["--config", file.to_str().unwrap()]);
    let before = d.ctl_json(&["status"])["config"]["digest"].clone();
    let out = apply(&d, tmp.path(), &environment("  gateway:\n    listen: 127.0.0.1:8799\n", &[&recheck(60)]));
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a restart: spec.gateway.listen"), "{err}");
    assert_eq!(d.ctl_json(&["status"])["config"]["digest"], before, "nothing was applied");
    let refused = d.ctl_ok(&["logs", "--kind", "config", "-o", "json"]);
    assert!(refused.contains("config.apply.refused") && refused.contains("needs a restart: spec.gateway.listen"), "{refused}");
}

#[test]
fn the_body_limit_follows_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("env.yaml");
    std::fs::write(&file, environment("  gateway:\n    maxBodyBytes: 2000\n", &[&recheck(60)])).unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &["--config", file.to_str().unwrap()]);
    let gateway = d.ctl_json(&["status"])["gateway"].as_str().unwrap().to_string();
    let body = format!("{{\"model\":\"m0\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}", "x".repeat(3000));
    let (status, text) = tcp_http(&gateway, "POST", "/v1/chat/completions", &[], body.as_bytes());
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("maxBodyBytes (2000 bytes)"), "{text}");
    let out = apply(&d, tmp.path(), &environment("  gateway:\n    maxBodyBytes: 100000\n", &[&recheck(60)]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Now the body is read and the request goes on (to an upstream that is not there).
    let (status, text) = tcp_http(&gateway, "POST", "/v1/chat/completions", &[], body.as_bytes());
    assert_eq!(status, 502, "{text}");
}

/// `lucidd check-config FILE [--syntax-only]`: (exit code, stdout, stderr).
fn check(file: &Path, syntax_only: bool) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(bin("lucidd"));
    cmd.arg("check-config").arg(file).env("LUCID_MODEL_PACK", "none");
    if syntax_only {
        cmd.arg("--syntax-only");
    }
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn guardrails(env: &str) -> String {
    format!("apiVersion: lucid.io/v1alpha1\nkind: LucidEnvironment\nmetadata:\n  name: t\nspec:\n  agents:\n    - name: a\n      model:\n        id: m\n      auditChain:\n        preRequest:\n          - auditorId: lucid-guardrails-auditor\n          - auditorId: lucid-policy-auditor\n            env:\n{env}")
}

#[test]
fn check_config_refuses_what_apply_refuses_at_the_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let bad_rules = tmp.path().join("rules.toml");
    std::fs::write(&bad_rules, "[[rules]]\nid = \"x\"\nregex = '''(unclosed'''\n").unwrap();
    let fixture = repo_root().join("tests/fixtures/infer/bert");
    let gpu = matches!(lucidd::infer::backend::probe_gpu(), lucidd::infer::backend::Gpu::Usable { .. });
    let mut cases = vec![
        ("missing model", guardrails("              CREDENTIAL_DETECTION_ENABLED: \"true\"\n").replace(
            "          - auditorId: lucid-guardrails-auditor\n",
            "          - auditorId: lucid-guardrails-auditor\n            env:\n              CLASSIFIER_MODEL: /nonexistent/model\n",
        ), "14:33:", "CLASSIFIER_MODEL /nonexistent/model"),
        ("bad rules", guardrails(&format!("              GITLEAKS_CONFIG: {}\n", bad_rules.display())), "15:32:", "GITLEAKS_CONFIG"),
        ("missing writer", environment("", &["              INTEGRITY_ALLOWED_WRITERS: /opt/nowhere/vllm\n"]), "16:42:", "/opt/nowhere/vllm does not exist"),
    ];
    if gpu {
        skip("check_config_refuses_what_apply_refuses_at_the_setting (cuda case)", "GPU host: CLASSIFIER_BACKEND: cuda is valid here");
    } else {
        cases.push((
            "cuda without a GPU",
            guardrails("              CREDENTIAL_DETECTION_ENABLED: \"true\"\n").replace(
                "          - auditorId: lucid-guardrails-auditor\n",
                &format!("          - auditorId: lucid-guardrails-auditor\n            env:\n              CLASSIFIER_MODEL: {}\n              CLASSIFIER_BACKEND: cuda\n", fixture.display()),
            ),
            "15:35:",
            "CLASSIFIER_BACKEND",
        ));
    }
    let d = Daemon::start(&tmp.path().join("state"), &[]);
    for (name, text, at, says) in cases {
        let file = tmp.path().join(format!("{}.yaml", name.replace(' ', "-")));
        std::fs::write(&file, &text).unwrap();
        let (code, _, err) = check(&file, false);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(err.starts_with(&format!("{}:{at}", file.display())), "{name}: located at {at}: {err}");
        assert!(err.contains(says), "{name}: {err}");
        let (code, out, err) = check(&file, true);
        assert_eq!(code, Some(0), "{name} --syntax-only: {err}");
        assert!(out.contains("not checked (--syntax-only)"), "{out}");
        // apply refuses it with the same words.
        let out = d.ctl(&["apply", "-f", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(5), "{name}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let good = tmp.path().join("good.yaml");
    std::fs::write(&good, environment("", &[&recheck(60)])).unwrap();
    let (code, out, err) = check(&good, false);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(": valid ("), "{out}");
}
