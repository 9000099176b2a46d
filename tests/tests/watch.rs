//! The model watch through the real daemon, with the real eBPF programs loaded (root
//! only; elsewhere the tests say they were skipped). From child processes: a write by
//! relative path, a truncate, a rename into the directory from outside, an unlink and a
//! chmod in an approved model directory each reach the ledger within a second as one
//! `integrity` record naming the child's pid and executable, turn the model `modified`
//! and add an anomaly; re-approval returns it to `verified`. Only the touched file is
//! re-hashed. The fanotify fallback is tested on the same host, forced by config.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lucid_tests::{is_root, skip, Daemon};
use serde_json::{json, Value};

/// Waits until the watch has picked its mode, and returns it.
fn watch_mode(d: &Daemon) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = d.ctl_json(&["status"]);
        let w = s["integrity_watch"].clone();
        if w["mode"] != "starting" && w["mode"] != "" || Instant::now() > deadline {
            return w;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Integrity records after `after`.
fn records(d: &Daemon, kind: &str, after: u64) -> Vec<Value> {
    let out = d.ctl_ok(&["logs", "--kind", kind, "-o", "json"]);
    out.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|r| r["seq"].as_u64().unwrap_or(0) > after).collect()
}

/// Runs `cmd`, then waits for the `model_change` record it caused; returns the record and
/// how long after the command finished it was written.
fn change_by(d: &Daemon, after: u64, cmd: &mut Command) -> (Value, u32, Duration) {
    let mut child = cmd.spawn().expect("spawning the writer");
    let pid = child.id();
    assert!(child.wait().unwrap().success(), "{cmd:?} failed");
    let done = Instant::now();
    let deadline = done + Duration::from_secs(10);
    loop {
        if let Some(r) = records(d, "integrity", after).into_iter().find(|r| r["body"]["event"] == "model_change") {
            return (r, pid, done.elapsed());
        }
        assert!(Instant::now() < deadline, "no change recorded for {cmd:?}; log:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn canonical_exe(name: &str) -> String {
    let out = Command::new("sh").args(["-c", &format!("command -v {name}")]).output().unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::fs::canonicalize(path).unwrap().display().to_string()
}

fn last_seq(d: &Daemon) -> u64 {
    d.ctl_json(&["status"])["ledger"]["records"].as_u64().unwrap_or(0).saturating_sub(1)
}

fn approve(d: &Daemon, model: &Path) {
    let a = d.ctl_json(&["model", "approve", model.to_str().unwrap(), "--method", "files", "--note", "test"]);
    assert_eq!(a["state"], "verified", "{a}");
}

fn model(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(m.join("sub")).unwrap();
    std::fs::write(m.join("w1.bin"), vec![1u8; 200_000]).unwrap();
    std::fs::write(m.join("w2.bin"), vec![2u8; 300_000]).unwrap();
    std::fs::write(m.join("sub/config.json"), b"{}").unwrap();
    m
}

/// Checks one change: recorded within 1 s with the writer's pid and executable, the
/// model modified, an anomaly beside it; re-approval makes it verified again.
fn judged(d: &Daemon, model: &Path, what: &str, cmd: &mut Command, exe: Option<&str>, op: &str) -> Value {
    let after = last_seq(d);
    let (r, pid, took) = change_by(d, after, cmd);
    let b = &r["body"];
    assert!(took < Duration::from_secs(1), "{what}: recorded {took:?} after the command");
    assert_eq!(b["actor"]["pid"], pid, "{what}: {b}");
    if let Some(exe) = exe {
        assert_eq!(b["actor"]["exe"], exe, "{what}: {b}");
    }
    assert!(b["operations"].as_array().unwrap().iter().any(|o| o["op"] == op), "{what}: no {op} in {b}");
    assert_eq!(b["verdict"], "unapproved", "{what}: {b}");
    assert_eq!(b["state"], "modified", "{what}: {b}");
    // The anomaly is the record after the integrity one.
    wait_anomaly(d, after, what, |b| b["event"] == "model_change");
    let list = d.ctl_json(&["model", "list"]);
    assert_eq!(list[0]["state"], "modified", "{what}: {list}");
    assert_eq!(list[0]["last_change"]["pid"], pid, "{what}: {list}");
    approve(d, model);
    assert_eq!(d.ctl_json(&["model", "list"])[0]["state"], "verified");
    b.clone()
}

#[test]
fn ebpf_probes_see_attribute_and_judge_every_kind_of_change() {
    if !is_root() {
        return skip("ebpf_probes_see_attribute_and_judge_every_kind_of_change", "loading eBPF programs needs root");
    }
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let d = Daemon::start(&tmp.path().join("state"), &[]);
    let w = watch_mode(&d);
    let mode = w["mode"].as_str().unwrap_or("");
    assert!(mode.starts_with("ebpf-"), "the probes did not load: {w}\n{}", d.log_text());
    if mode == "ebpf-tracepoint" {
        // The better families were tried first, and status says why each was refused.
        let detail = w["detail"].as_str().unwrap_or("");
        assert!(detail.contains("lsm: ") && detail.contains("fentry: "), "{w}");
    }
    approve(&d, &m);

    // A write through a relative path from a shell whose cwd is the model: only that
    // file is read again.
    let sh = canonical_exe("sh");
    let b = judged(&d, &m, "relative write", Command::new("sh").args(["-c", "printf x >> w1.bin"]).current_dir(&m), Some(&sh), "open");
    assert_eq!(b["rehashed"], serde_json::json!(["w1.bin"]), "{b}");
    assert_eq!(b["bytes_hashed"], 200_001, "untouched files were re-hashed: {b}");
    assert_eq!(b["changed"], serde_json::json!(["w1.bin"]));

    let b = judged(&d, &m, "truncate", Command::new("truncate").args(["-s", "100", "w2.bin"]).current_dir(&m), Some(&canonical_exe("truncate")), "open");
    assert_eq!(b["changed"], serde_json::json!(["w2.bin"]), "{b}");

    // A rename into the directory from outside, over an approved file.
    let outside = tmp.path().join("outside.bin");
    std::fs::write(&outside, b"replacement").unwrap();
    let mut mv = Command::new("mv");
    mv.arg(&outside).arg(m.join("w1.bin"));
    let b = judged(&d, &m, "rename in", &mut mv, Some(&canonical_exe("mv")), "rename");
    assert_eq!(b["changed"], serde_json::json!(["w1.bin"]), "{b}");

    let mut rm = Command::new("rm");
    rm.arg(m.join("sub/config.json"));
    let b = judged(&d, &m, "unlink", &mut rm, Some(&canonical_exe("rm")), "unlink");
    assert_eq!(b["missing"], serde_json::json!(["sub/config.json"]), "{b}");

    let mut chmod = Command::new("chmod");
    chmod.args(["600"]).arg(m.join("w2.bin"));
    let b = judged(&d, &m, "chmod", &mut chmod, Some(&canonical_exe("chmod")), "chmod");
    assert_eq!(b["attributes"].as_array().map(Vec::len), Some(1), "{b}");

    // status --integrity names the last change and who made it; the ledger verifies.
    let s = d.ctl_json(&["status", "--integrity"]);
    assert_eq!(s["models"][0]["state"], "verified", "{s}");
    assert_eq!(s["models"][0]["last_change"]["op"], "chmod", "{s}");

    // Opens whose flags say more than the opened file's mode (the programs stash only
    // these at entry): a truncation through a read-only open, which Linux carries out...
    let py = |code: &str| {
        let mut c = Command::new("python3");
        c.args(["-c", code]).current_dir(&m);
        c
    };
    let b = judged(&d, &m, "read-only truncate", &mut py("import os; os.close(os.open('w2.bin', os.O_RDONLY | os.O_TRUNC))"), None, "open");
    assert_eq!(b["changed"], serde_json::json!(["w2.bin"]), "{b}");
    // ...and a file created by a read-only open.
    let after = last_seq(&d);
    let (r, pid, took) = change_by(&d, after, &mut py("import os; os.close(os.open('new.bin', os.O_RDONLY | os.O_CREAT, 0o644))"));
    let b = &r["body"];
    assert!(took < Duration::from_secs(1), "read-only create: recorded {took:?} after the command");
    assert_eq!((b["actor"]["pid"].as_u64(), &b["verdict"], &b["state"]), (Some(pid as u64), &json!("unapproved"), &json!("unapproved file")), "{b}");
    // Removing it is a change too: wait for its record, so that it lands before the
    // re-approval and not among the records checked next.
    let after = last_seq(&d);
    change_by(&d, after, Command::new("rm").arg(m.join("new.bin")));
    approve(&d, &m);

    // Reads and writes outside the model are not recorded.
    let before = last_seq(&d);
    std::fs::write(tmp.path().join("elsewhere.bin"), b"x").unwrap();
    let _ = std::fs::read(m.join("w2.bin")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(records(&d, "integrity", before).is_empty(), "{:?}", records(&d, "integrity", before));
    assert_eq!(d.ctl_json(&["status"])["integrity_watch"]["lost"], 0);
}

#[test]
fn fanotify_fallback_sees_writes_renames_and_chmods() {
    if !is_root() {
        return skip("fanotify_fallback_sees_writes_renames_and_chmods", "fanotify needs CAP_SYS_ADMIN");
    }
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let config = tmp.path().join("lucid.yaml");
    std::fs::write(
        &config,
        "apiVersion: lucid.io/v1alpha1\nkind: LucidEnvironment\nmetadata:\n  name: watch-test\nspec:\n  agents:\n    - name: a\n      model:\n        id: m\n      auditChain:\n        postResponse:\n          - auditorId: lucid-eval-auditor\n            env:\n              INTEGRITY_WATCH_MODE: fanotify\n",
    )
    .unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &["--config", config.to_str().unwrap()]);
    let w = watch_mode(&d);
    // With eBPF's process events beside it (root, probes built): a writer that has
    // exited before its event is read is still named by its executable.
    assert_eq!(w["mode"], "fanotify+ebpf-exec", "{w}\n{}", d.log_text());
    approve(&d, &m);
    let sh = canonical_exe("sh");
    let b = judged(&d, &m, "write", Command::new("sh").args(["-c", "printf x >> w1.bin"]).current_dir(&m), Some(&sh), "close");
    assert_eq!(b["rehashed"], serde_json::json!(["w1.bin"]), "{b}");
    let outside = tmp.path().join("outside.bin");
    std::fs::write(&outside, b"replacement").unwrap();
    let mut mv = Command::new("mv");
    mv.arg(&outside).arg(m.join("w2.bin"));
    let after = last_seq(&d);
    let (r, _, _) = change_by(&d, after, &mut mv);
    assert_eq!(r["body"]["changed"], serde_json::json!(["w2.bin"]), "{r}");
    approve(&d, &m);
    let after = last_seq(&d);
    let (r, _, _) = change_by(&d, after, Command::new("chmod").arg("600").arg(m.join("w1.bin")));
    assert_eq!(r["body"]["state"], "modified", "{r}");
}

fn config_with(dir: &Path, env: &str) -> PathBuf {
    let config = dir.join("lucid.yaml");
    let text = format!(
        "apiVersion: lucid.io/v1alpha1\nkind: LucidEnvironment\nmetadata:\n  name: watch-test\nspec:\n  agents:\n    - name: a\n      model:\n        id: m\n      auditChain:\n        postResponse:\n          - auditorId: lucid-eval-auditor\n            env:\n{env}"
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// Waits for an integrity record whose body matches `pred`.
fn wait_record(d: &Daemon, after: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(r) = records(d, "integrity", after).into_iter().find(|r| pred(&r["body"])) {
            return r;
        }
        assert!(Instant::now() < deadline, "no {what} record; log:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for an anomaly (written just after its integrity record) whose body matches.
fn wait_anomaly(d: &Daemon, after: u64, what: &str, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !records(d, "anomaly", after).iter().any(|a| pred(&a["body"])) {
        assert!(Instant::now() < deadline, "no {what} anomaly; log:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Without root and without a watch: a change made while lucidd was down is found by
/// the start-up check, and one made while it runs by the periodic stamp check.
#[test]
fn startup_and_periodic_checks_find_changes_without_a_watch() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let config = config_with(tmp.path(), "              INTEGRITY_WATCH_MODE: periodic\n              INTEGRITY_CHECK_ON_STARTUP: \"true\"\n");
    let state = tmp.path().join("state");
    let args = ["--config", config.to_str().unwrap()];
    let mut d = Daemon::start(&state, &args);
    assert_eq!(watch_mode(&d)["mode"], "periodic");
    approve(&d, &m);
    d.stop();
    std::fs::write(m.join("w2.bin"), b"changed while lucidd was down").unwrap();
    let mut d = Daemon::start(&state, &args);
    let r = wait_record(&d, 0, "startup re-verification", |b| b["event"] == "reverified" && b["trigger"] == "startup");
    assert_eq!(r["body"]["state"], "modified", "{r}");
    wait_anomaly(&d, 0, "startup", |b| b["trigger"] == "startup");
    approve(&d, &m);

    let after = last_seq(&d);
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(m.join("w1.bin"), b"changed under a periodic watch").unwrap();
    let r = wait_record(&d, after, "periodic", |b| b["event"] == "reverified" && b["state"] == "modified");
    assert_eq!(r["body"]["rehashed"], serde_json::json!(["w1.bin"]), "{r}");
    assert_eq!(d.ctl_json(&["model", "list"])[0]["state"], "modified");
    d.stop();
}

/// An approved serving binary's exec is recorded with the digest of what ran; once the
/// binary is replaced, the replacement is a change and its exec is unapproved.
#[test]
fn serving_binary_execs_are_hashed_and_judged() {
    if !is_root() {
        return skip("serving_binary_execs_are_hashed_and_judged", "loading eBPF programs needs root");
    }
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("model-server");
    std::fs::copy("/usr/bin/true", &srv).unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &[]);
    assert!(watch_mode(&d)["mode"].as_str().is_some_and(|m| m.starts_with("ebpf-")));
    let a = d.ctl_json(&["model", "approve", srv.to_str().unwrap(), "--method", "files", "--note", "serving binary v1"]);
    let approved = a["digest"].clone();
    let after = last_seq(&d);
    let mut child = Command::new(&srv).spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let r = wait_record(&d, after, "serving exec", |b| b["event"] == "serving_exec");
    assert_eq!(r["body"]["verdict"], "approved", "{r}");
    assert_eq!(r["body"]["actor"]["pid"], pid, "{r}");
    let file_sha = lucid_common::hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&srv).unwrap()));
    assert_eq!(r["body"]["running_sha256"], file_sha.as_str());
    assert!(approved.is_string());

    // Replace the binary (a change, judged unapproved), then run the replacement.
    let after = last_seq(&d);
    let replacement = tmp.path().join("new-server");
    std::fs::copy("/usr/bin/false", &replacement).unwrap();
    let mut mv = Command::new("mv");
    mv.arg(&replacement).arg(&srv);
    let (r, _, _) = change_by(&d, after, &mut mv);
    assert_eq!(r["body"]["verdict"], "unapproved", "{r}");
    let after = last_seq(&d);
    let _ = Command::new(&srv).status();
    let r = wait_record(&d, after, "replaced serving exec", |b| b["event"] == "serving_exec");
    assert_eq!(r["body"]["verdict"], "unapproved", "{r}");
    wait_anomaly(&d, after, "serving exec", |b| b["event"] == "serving_exec");
}

/// INTEGRITY_ENFORCE on a kernel that refuses BPF LSM (this one): lucidd keeps watching,
/// and says in status and in the ledger that writes cannot be refused, and why. (The
/// refusal itself is proven in the VM test.)
#[test]
fn enforcement_that_the_kernel_refuses_is_reported_not_pretended() {
    if !is_root() {
        return skip("enforcement_that_the_kernel_refuses_is_reported_not_pretended", "loading eBPF programs needs root");
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = config_with(tmp.path(), "              INTEGRITY_ENFORCE: \"true\"\n              INTEGRITY_ALLOWED_WRITERS: /usr/bin/cp\n");
    let d = Daemon::start(&tmp.path().join("state"), &["--config", config.to_str().unwrap()]);
    let w = watch_mode(&d);
    assert!(w["mode"].as_str().is_some_and(|m| m.starts_with("ebpf-")), "{w}");
    let r = wait_record(&d, 0, "enforcement state", |b| b["event"].as_str().is_some_and(|e| e.starts_with("enforcement_")));
    let lsm_allowed = std::fs::read_to_string("/sys/kernel/security/lsm").is_ok_and(|l| l.split(',').any(|m| m == "bpf"));
    let enforcement = w["enforcement"].as_str().unwrap_or("");
    if lsm_allowed && enforcement.starts_with("on") {
        assert_eq!(r["body"]["event"], "enforcement_on");
    } else {
        assert!(enforcement.starts_with("unavailable: "), "{w}");
        assert_eq!(r["body"]["event"], "enforcement_unavailable", "{r}");
        assert_eq!(r["body"]["enforcement"], enforcement);
    }
    let text = d.ctl_ok(&["status"]);
    assert!(text.contains("enforcement"), "{text}");
}

/// A write into the middle of a large sharded file re-hashes only the shard it landed
/// in: the probes record where writes land.
#[test]
fn a_write_rehashes_only_the_shards_it_touched() {
    if !is_root() {
        return skip("a_write_rehashes_only_the_shards_it_touched", "loading eBPF programs needs root");
    }
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("model");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("big.bin"), vec![5u8; 4 << 20]).unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &[]);
    assert!(watch_mode(&d)["mode"].as_str().is_some_and(|m| m.starts_with("ebpf-")));
    let a = d.ctl_json(&["model", "approve", m.to_str().unwrap(), "--method", "shards:1048576"]);
    assert_eq!(a["resources"], 4, "{a}");
    let after = last_seq(&d);
    // dd seeks to 2.5 MiB and writes 10 bytes without truncating.
    let (r, pid, _) = change_by(
        &d,
        after,
        Command::new("dd").args(["if=/dev/zero", "of=big.bin", "bs=1", "count=10", "seek=2621440", "conv=notrunc", "status=none"]).current_dir(&m),
    );
    let b = &r["body"];
    assert_eq!(b["actor"]["pid"], pid, "{b}");
    assert_eq!(b["bytes_hashed"], 1 << 20, "only the third shard is read again: {b}");
    assert_eq!(b["changed"], serde_json::json!(["big.bin:2097152:3145728"]), "{b}");
    assert_eq!(b["written_ranges"]["big.bin"], serde_json::json!([2621440, 2621450]), "{b}");

    // A truncating open is re-hashed whole, whatever was written after it: here the file
    // is cut and its last 10 bytes written back, so the first shards are now zeros.
    d.ctl_json(&["model", "approve", m.to_str().unwrap(), "--method", "shards:1048576"]);
    let after = last_seq(&d);
    let script = "import os\nfd = os.open('big.bin', os.O_WRONLY | os.O_TRUNC)\nos.pwrite(fd, b'5' * 10, (4 << 20) - 10)\nos.close(fd)";
    let (r, _, _) = change_by(&d, after, Command::new("python3").args(["-c", script]).current_dir(&m));
    let b = &r["body"];
    assert_eq!(b["bytes_hashed"], 4 << 20, "a truncated file is read again whole: {b}");
    assert_eq!(b["changed"].as_array().map(Vec::len), Some(4), "{b}");
}

/// A write fd inherited across a fork is tracked in the child: the parent closing its
/// copy first does not end the change; the child's later write and close are judged.
#[test]
fn a_forked_child_writing_through_an_inherited_fd_is_judged() {
    if !is_root() {
        return skip("a_forked_child_writing_through_an_inherited_fd_is_judged", "loading eBPF programs needs root");
    }
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let d = Daemon::start(&tmp.path().join("state"), &[]);
    assert!(watch_mode(&d)["mode"].as_str().is_some_and(|m| m.starts_with("ebpf-")));
    approve(&d, &m);
    let after = last_seq(&d);
    let script = "import os, sys, time\nfd = os.open('w1.bin', os.O_WRONLY | os.O_APPEND)\npid = os.fork()\nif pid == 0:\n    time.sleep(0.4)\n    os.write(fd, b'late')\n    os._exit(0)\nos.close(fd)\nprint(pid, flush=True)\nos.waitpid(pid, 0)\n";
    let out = Command::new("python3").args(["-c", script]).current_dir(&m).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let child: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let r = wait_record(&d, after, "the child's change", |b| {
        b["event"] == "model_change" && b["operations"].as_array().is_some_and(|ops| ops.iter().any(|o| o["pid"] == child && o["op"] == "close"))
    });
    assert_eq!(r["body"]["state"], "modified", "{r}");
    assert_eq!(r["body"]["changed"], serde_json::json!(["w1.bin"]), "{r}");
}

/// Events that do not fit in the ring buffer are counted and reported, never hidden:
/// with the buffer shrunk to one page, a burst of writes overflows it; the loss is an
/// `events_lost` anomaly, status counts it, and every model is re-verified.
#[test]
fn lost_events_are_an_anomaly_and_trigger_a_full_reverification() {
    if !is_root() {
        return skip("lost_events_are_an_anomaly_and_trigger_a_full_reverification", "loading eBPF programs needs root");
    }
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let d = Daemon::start_env(&tmp.path().join("state"), &[], &[("LUCID_EBPF_RINGBUF_BYTES", "4096")]);
    assert!(watch_mode(&d)["mode"].as_str().is_some_and(|m| m.starts_with("ebpf-")));
    approve(&d, &m);
    let after = last_seq(&d);
    let script = "import os\nfor i in range(3000):\n    fd = os.open('burst-%d.bin' % (i % 50), os.O_WRONLY | os.O_CREAT)\n    os.close(fd)\n";
    let out = Command::new("python3").args(["-c", script]).current_dir(&m).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_anomaly(&d, after, "events lost", |b| b["event"] == "events_lost" && b["count"].as_u64().is_some_and(|n| n > 0));
    let r = wait_record(&d, after, "re-verification after the loss", |b| b["trigger"] == "events lost");
    assert_eq!(r["body"]["rehashed"], "all", "{r}");
    let lost = d.ctl_json(&["status"])["integrity_watch"]["lost"].as_u64().unwrap_or(0);
    assert!(lost > 0, "status does not count the loss");
}
