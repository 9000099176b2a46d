//! The real daemon and CLI: dev start, status, config check/apply/reload, notes, logs,
//! peer-credential authorisation, malformed requests, orderly stop.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use lucid_tests::{bin, is_root, lucidctl, skip, Daemon};

const EXAMPLE: &str = include_str!("../../examples/soc2-environment.yaml");

#[test]
fn dev_start_creates_key_and_socket_and_reports_status() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let d = Daemon::start(&dir, &[]);
    let key_mode = std::fs::metadata(dir.join("host.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600);
    let s = d.ctl_json(&["status"]);
    assert_eq!(s["mode"], "dev");
    assert_eq!(s["config"]["source"], "embedded:dev");
    assert_eq!(s["ledger"]["health"], "ok");
    assert_eq!(s["config"]["agents"][0]["pre_request"][0], "lucid-guardrails-auditor");
    assert!(s["ledger"]["records"].as_u64().unwrap() >= 2, "{s}");
    let text = d.ctl_ok(&["status", "--detailed"]);
    assert!(text.contains("lucid-policy-auditor") && text.contains("verifier key"), "{text}");
}

#[test]
fn check_config_names_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.yaml");
    std::fs::write(&good, EXAMPLE).unwrap();
    let out = Command::new(bin("lucidd")).arg("check-config").arg(&good).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, EXAMPLE.replace("TOXICITY_THRESHOLD: \"0.7\"", "TOXICITY_THRESHOLD: \"seven\"")).unwrap();
    let out = Command::new(bin("lucidd")).arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:25:35:", bad.display())), "{err}");
    assert!(err.contains("TOXICITY_THRESHOLD"), "{err}");
    // The daemon refuses to start on it, with the same message.
    let out = Command::new(bin("lucidd"))
        .args(["--dev", "--state-dir"])
        .arg(tmp.path().join("s"))
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":25:35:"));
}

#[test]
fn apply_records_digests_and_diff_and_rejects_invalid_files_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &[]);
    let before = d.ctl_json(&["status"])["config"]["digest"].clone();

    let file = tmp.path().join("env.yaml");
    std::fs::write(&file, EXAMPLE.replace("INJECTION_THRESHOLD: \"0.8\"", "INJECTION_THRESHOLD: \"0.9\"")).unwrap();
    let r = d.ctl_json(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(r["old_digest"], before);
    assert_ne!(r["new_digest"], before);
    let paths: Vec<&str> = r["changes"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"/spec/agents/0/auditChain/preRequest/0/env/INJECTION_THRESHOLD"), "{paths:?}");
    let s = d.ctl_json(&["status"]);
    assert_eq!(s["config"]["digest"], r["new_digest"]);
    assert_eq!(s["config"]["name"], "soc2-compliant-ai");

    // The config record carries both digests and the diff.
    let logs = d.ctl_ok(&["logs", "--kind", "config", "-o", "json"]);
    let last: serde_json::Value = serde_json::from_str(logs.lines().last().unwrap()).unwrap();
    assert_eq!(last["subject"], "config.apply");
    assert_eq!(last["controls"][0], "CC8.1");
    assert_eq!(last["body"]["old_digest"], before);
    assert_eq!(last["body"]["new_digest"], r["new_digest"]);
    let threshold = last["body"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "/spec/agents/0/auditChain/preRequest/0/env/INJECTION_THRESHOLD")
        .cloned()
        .unwrap_or_default();
    assert_eq!((threshold["old"].clone(), threshold["new"].clone()), (serde_json::json!(0.8), serde_json::json!(0.9)));
    assert_eq!(last["body"]["actor"]["uid"], nix::unistd::getuid().as_raw());

    // An invalid file: exit 5, file:line:column, nothing applied, nothing recorded.
    let records = s["ledger"]["records"].as_u64().unwrap();
    std::fs::write(&file, EXAMPLE.replace("lucid-eval-auditor", "lucid-evil-auditor")).unwrap();
    let out = d.ctl(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:45:24: unknown auditorId", file.display())), "{err}");
    let after = d.ctl_json(&["status"]);
    assert_eq!(after["config"]["digest"], r["new_digest"]);
    assert_eq!(after["ledger"]["records"].as_u64().unwrap(), records);
}

#[test]
fn sighup_reloads_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("env.yaml");
    std::fs::write(&file, EXAMPLE).unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &["--config", file.to_str().unwrap()]);
    assert_eq!(d.ctl_json(&["status"])["config"]["retention_days"], 365);
    std::fs::write(&file, EXAMPLE.replace("LOG_RETENTION_DAYS: \"365\"", "LOG_RETENTION_DAYS: \"400\"")).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let mut days = serde_json::Value::Null;
    for _ in 0..100 {
        days = d.ctl_json(&["status"])["config"]["retention_days"].clone();
        if days == 400 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(days, 400);
    let logs = d.ctl_ok(&["logs", "--kind", "config"]);
    assert!(logs.contains("config.reload"), "{logs}");
    // A broken file on SIGHUP is refused; the daemon keeps the old config and runs on.
    std::fs::write(&file, "apiVersion: [").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.ctl_json(&["status"])["config"]["retention_days"], 400);
}

#[test]
fn notes_logs_filters_and_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &[]);
    let r = d.ctl_json(&["annotate", "--message", "rolled out model v2", "--ticket", "CHG-42"]);
    let seq = r["seq"].as_u64().unwrap();
    let notes = d.ctl_ok(&["logs", "--kind", "note"]);
    assert!(notes.contains("CHG-42") && notes.contains("rolled out model v2"), "{notes}");
    assert!(!notes.contains("lucidd.start"));
    let cc = d.ctl_ok(&["logs", "--control", "CC7.2", "-o", "json"]);
    assert!(cc.lines().all(|l| l.contains("CC7.2")) && cc.contains("lucidd.start"), "{cc}");
    let since = d.ctl_ok(&["logs", "--since", "1h", "--kind", "note"]);
    assert!(since.contains("CHG-42"));
    let until = d.ctl_ok(&["logs", "--until", "2000-01-01"]);
    assert!(until.trim().is_empty(), "{until}");
    let bad = d.ctl(&["logs", "--kind", "nonsense"]);
    assert_eq!(bad.status.code(), Some(2));

    // --follow streams a record appended after it started.
    let mut follow = Command::new(bin("lucidctl"))
        .arg("--dev-state")
        .arg(&d.dir)
        .args(["logs", "--follow", "--kind", "note", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    d.ctl_ok(&["annotate", "--message", "followed note"]);
    let mut stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 65536];
        let mut seen = String::new();
        while !seen.contains("followed note") {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let seen = reader.join().unwrap();
    assert!(seen.contains("followed note"), "follow output: {seen}");
    assert!(seen.contains(&format!("\"seq\":{seq}")), "the follow starts with recent notes: {seen}");
}

#[test]
fn malformed_requests_get_4xx_and_the_daemon_carries_on() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &[]);
    let cases: [(&str, &str, &str, u16); 7] = [
        ("POST", "/v1/notes", "{not json", 400),
        ("POST", "/v1/notes", "{\"message\": 5}", 400),
        ("POST", "/v1/notes", "{\"message\": \"   \"}", 400),
        ("POST", "/v1/config/apply", "[]", 400),
        ("GET", "/v1/ledger/prove?seq=abc", "", 400),
        ("GET", "/v1/ledger/prove?seq=999999", "", 404),
        ("GET", "/v1/nothing-here", "", 404),
    ];
    for (method, path, body, want) in cases {
        let (status, text) = d.http(method, path, body);
        assert_eq!(status, want, "{method} {path} {body}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert!(v["error"]["message"].is_string(), "{method} {path}: error body {text}");
    }
    let (status, _) = d.http("DELETE", "/v1/status", "");
    assert_eq!(status, 405);
    // Garbage that is not HTTP at all.
    let garbage = lucid_tests::raw(&d.socket, b"\x00\x01\x02 hello\r\n\r\n").unwrap_or_default();
    assert!(garbage.is_empty() || String::from_utf8_lossy(&garbage).starts_with("HTTP/1.1 4"));
    let long = format!("{{\"message\": \"{}\"}}", "x".repeat(20_000));
    assert_eq!(d.http("POST", "/v1/notes", &long).0, 400);
    // Still serving.
    assert_eq!(d.ctl_json(&["status"])["ledger"]["health"], "ok");
    d.ctl_ok(&["annotate", "-m", "still here"]);
}

#[test]
fn peers_outside_root_and_the_control_group_get_403() {
    if !is_root() {
        return skip("peers_outside_root_and_the_control_group_get_403", "needs root to run lucidctl as another user");
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return skip("peers_outside_root_and_the_control_group_get_403", "setpriv (util-linux) not installed");
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The control group is `users` (gid 100 on Debian) so the test needs no new group.
    let d = Daemon::start(&tmp.path().join("state"), &["--control-group", "users"]);
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let users_gid = nix::unistd::Group::from_name("users").ok().flatten().map(|g| g.gid.as_raw()).unwrap_or(100);
    let as_user = |groups: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", &format!("--groups={groups}")])
            .arg(bin("lucidctl"))
            .arg("--dev-state")
            .arg(&d.dir)
            .args(["status", "-o", "json"])
            .output()
            .unwrap()
    };
    let denied = as_user("65534");
    assert_eq!(denied.status.code(), Some(4), "{denied:?}");
    assert!(String::from_utf8_lossy(&denied.stderr).contains("lucid group"), "{denied:?}");
    let member = as_user(&users_gid.to_string());
    assert!(member.status.success(), "a member of the control group is allowed: {member:?}");
    // The refusal happened at the API: the daemon still serves root.
    assert_eq!(d.ctl_json(&["status"])["ledger"]["health"], "ok");
}

#[test]
fn lucidctl_says_clearly_when_no_daemon_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = lucidctl(tmp.path(), &["status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is lucidd running?"), "{err}");
}

#[test]
fn sigterm_flushes_records_the_stop_and_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let mut d = Daemon::start(&dir, &[]);
    d.ctl_ok(&["annotate", "-m", "before stop"]);
    let status = d.stop();
    assert!(status.success(), "{status:?}\n{}", d.log_text());
    assert!(!d.socket.exists(), "the socket is removed on exit");
    let d = Daemon::start(&dir, &[]);
    let logs = d.ctl_ok(&["logs", "--kind", "system"]);
    assert!(logs.contains("lucidd.stop") && logs.contains("SIGTERM"), "{logs}");
    // The stop left a checkpoint covering everything before the restart.
    let verify = d.ctl_json(&["ledger", "verify"]);
    assert_eq!(verify["ok"], true, "{verify}");
    assert!(verify["checkpoints_checked"].as_u64().unwrap() >= 1);
}

#[test]
fn completions_and_man_pages_are_generated() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin("lucidctl")).args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("lucidctl"));
    let man = tmp.path().join("man");
    let out = Command::new(bin("lucidctl")).arg("man").arg(&man).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = std::fs::read_to_string(man.join("lucidctl.1")).unwrap();
    assert!(page.contains("Exit codes") || page.contains("exit codes") || page.contains("lucidctl"), "{page}");
    assert!(man.join("lucidctl-ledger.1").exists());
}

#[test]
fn lucid_socket_selects_the_daemon_and_a_closed_pipe_exits_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &[]);
    for i in 0..300 {
        assert_eq!(d.http("POST", "/v1/notes", &format!("{{\"message\":\"n{i}\"}}")).0, 200);
    }
    let out = Command::new(bin("lucidctl")).env("LUCID_SOCKET", &d.socket).args(["status", "-o", "json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // `lucidctl logs | head -1`: lucidctl must exit 0 without an error when head closes the pipe.
    let script = format!(
        "{} --socket {} logs -n 300 | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}",
        bin("lucidctl").display(),
        d.socket.display()
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{out:?}");
}

#[test]
fn lucidctl_audit_filters_stdin_through_the_chain() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &[]);
    let run = |input: &str, args: &[&str]| {
        let mut child = Command::new(bin("lucidctl"))
            .arg("--dev-state")
            .arg(&d.dir)
            .arg("audit")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("please email jane@example.com the report", &[]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("redact") && text.contains("please email <EMAIL_ADDRESS> the report"), "{text}");
    let out = run("token ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", &["-o", "json"]);
    assert_eq!(out.status.code(), Some(8), "a denial exits 8");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decisions"].as_array().unwrap().last().unwrap()["auditor"], "lucid-policy-auditor");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ghp_A1b2"), "the secret is not echoed");
    // Each decision is a ledger record.
    let logs = d.ctl_ok(&["logs", "--kind", "decision", "-o", "json"]);
    assert!(logs.lines().count() >= 4, "{logs}");
}
