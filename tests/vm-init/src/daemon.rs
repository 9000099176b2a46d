//! The daemon mode of the VM init (`lucid.daemon` on the kernel command line): the real
//! `lucidd` and `lucidctl`, built static, on a kernel that allows BPF LSM, so the LSM
//! family is what reports changes (or, booted with BPF left out of the kernel's LSM
//! list and `lucid.family=fentry`, the fentry family). The build machines refuse LSM programs, so the host's
//! watch tests cover the tracepoint family; this covers the same judgments through the
//! LSM one, end to end: a model is approved, a separate executable (`/tmp/writer`, a
//! copy of this init) appends to a file, renames a file from outside over an approved
//! one, truncates one by path, chmods one and unlinks one, and each change must become
//! one `model_change` record naming that process and executable, with the right
//! operation and verdict, before the model is approved again. In a model approved in
//! 1 MiB shards, a write into one shard must re-hash only that shard, and a truncating
//! open all of them. Writes outside the models must leave no record, and no event may
//! be lost.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::mount;

const STATE: &str = "/tmp/state";
const MODEL: &str = "/tmp/models/m";
const WRITER: &str = "/tmp/writer";

/// Brings the loopback interface up (the gateway listens on 127.0.0.1).
pub(crate) fn lo_up() -> Result<(), String> {
    // SAFETY: a plain socket; the ifreq is zeroed and named before each ioctl.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if s < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, c) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *c as libc::c_char;
        }
        if libc::ioctl(s, libc::SIOCGIFFLAGS as _, &mut req) != 0 {
            return Err(format!("SIOCGIFFLAGS lo: {}", std::io::Error::last_os_error()));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        let r = libc::ioctl(s, libc::SIOCSIFFLAGS as _, &req);
        libc::close(s);
        if r != 0 {
            return Err(format!("SIOCSIFFLAGS lo: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// `lucidctl --dev-state STATE ARGS -o json`.
pub(crate) fn ctl(args: &[&str]) -> Result<Value, String> {
    let out = Command::new("/lucidctl").arg("--dev-state").arg(STATE).args(args).args(["-o", "json"]).output().map_err(|e| format!("lucidctl: {e}"))?;
    if !out.status.success() {
        return Err(format!("lucidctl {args:?}: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("lucidctl {args:?} printed no JSON ({e})"))
}

/// Integrity records after `after`.
fn records(after: u64) -> Result<Vec<Value>, String> {
    let out = Command::new("/lucidctl").arg("--dev-state").arg(STATE).args(["logs", "--kind", "integrity", "-o", "json"]).output().map_err(|e| format!("lucidctl logs: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["seq"].as_u64().unwrap_or(0) > after)
        .collect())
}

fn last_seq() -> Result<u64, String> {
    Ok(ctl(&["status"])?["ledger"]["records"].as_u64().unwrap_or(0).saturating_sub(1))
}

const BIG: &str = "/tmp/models/big";

/// Approves `model`: by files, or (the big one) in 1 MiB shards.
fn approve_model(model: &str) -> Result<(), String> {
    let method = if model == BIG { "shards:1048576" } else { "files" };
    let a = ctl(&["model", "approve", model, "--method", method, "--note", "vm"])?;
    if a["state"] != "verified" {
        return Err(format!("approval: {a}"));
    }
    Ok(())
}

fn approve() -> Result<(), String> {
    approve_model(MODEL)
}

/// The last lines of lucidd's log, on one line.
pub(crate) fn log_tail() -> String {
    let log = std::fs::read_to_string("/tmp/lucidd.log").unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join(" | ")
}

/// Runs the writer with `args` and returns the `model_change` record it caused.
fn change(what: &str, args: &[&str]) -> Result<(Value, u32), String> {
    let after = last_seq()?;
    let mut child = Command::new(WRITER).arg("act").args(args).spawn().map_err(|e| format!("{what}: {e}"))?;
    let pid = child.id();
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("{what}: the writer failed ({status})"));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(r) = records(after)?.into_iter().find(|r| r["body"]["event"] == "model_change") {
            return Ok((r, pid));
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: no model_change record; lucidd: {}", log_tail()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One change, judged: the writer's pid and executable, the operation, the verdict;
/// `check` looks at the rest of the body. The model is approved again after.
fn judged(what: &str, args: &[&str], op: &str, check: impl Fn(&Value) -> bool) -> Result<(), String> {
    judged_in(MODEL, what, args, op, check)
}

/// [`judged`] for a change to `model`.
fn judged_in(model: &str, what: &str, args: &[&str], op: &str, check: impl Fn(&Value) -> bool) -> Result<(), String> {
    let (r, pid) = change(what, args)?;
    let b = &r["body"];
    let ok = b["actor"]["pid"] == pid
        && b["actor"]["exe"] == WRITER
        && b["operations"].as_array().is_some_and(|ops| ops.iter().any(|o| o["op"] == op))
        && b["verdict"] == "unapproved"
        && check(b);
    if !ok {
        return Err(format!("{what} (pid {pid}, want op {op}): {b}"));
    }
    approve_model(model)
}

/// Starts `/lucidd --dev` on [`STATE`] with `extra` arguments after its own, and waits
/// until its control socket answers.
pub(crate) fn start(extra: &[&str]) -> Result<Child, String> {
    let log = std::fs::File::create("/tmp/lucidd.log").map_err(|e| e.to_string())?;
    let mut child = Command::new("/lucidd")
        .args(["--dev", "--state-dir", STATE, "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("LUCID_MODEL_PACK", "none")
        .env("LUCID_LOG", "info")
        .env("HOME", "/tmp")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting lucidd: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(180);
    while UnixStream::connect(Path::new(STATE).join("lucidd.sock")).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("lucidd exited ({status}) before opening its socket; lucidd: {}", log_tail()));
        }
        if Instant::now() > deadline {
            return Err(format!("lucidd did not open its socket; lucidd: {}", log_tail()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(child)
}

/// How many of process `pid`'s fds attach a program to a tracepoint: perf events, or
/// BPF links of the perf_event kind.
fn perf_event_links(pid: u32) -> Result<usize, String> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))?;
    Ok(entries
        .flatten()
        .filter(|e| {
            let perf = std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("perf_event"));
            let info = format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy());
            // The kernel names the link type "perf" (6.1) or "perf_event".
            let link = |t: String| t.lines().any(|l| l.split_whitespace().eq(["link_type:", "perf"]) || l.split_whitespace().eq(["link_type:", "perf_event"]));
            perf || std::fs::read_to_string(info).is_ok_and(link)
        })
        .count())
}

/// The checks on the daemon `daemon` (a pid); the caller stops it.
fn checks(daemon: u32) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let watch = loop {
        let w = ctl(&["status"])?["integrity_watch"].clone();
        if w["mode"] != "starting" && w["mode"] != "" {
            break w;
        }
        if Instant::now() > deadline {
            return Err(format!("the watch did not start: {w}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // `lucid.family=NAME` on the command line: the family this boot must end up on
    // (the host leaves BPF out of the kernel's LSM list to get fentry).
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let family = cmdline.split_whitespace().find_map(|w| w.strip_prefix("lucid.family=")).unwrap_or("lsm").to_string();
    if watch["mode"] != format!("ebpf-{family}").as_str() {
        return Err(format!("the watch is not on the {family} family: {watch}; lucidd: {}", log_tail()));
    }
    approve()?;
    let m = |name: &str| format!("{MODEL}/{name}");
    judged("append", &["append", &m("w1.bin")], "open", |b| b["rehashed"] == serde_json::json!(["w1.bin"]) && b["changed"] == serde_json::json!(["w1.bin"]))?;
    std::fs::write("/tmp/outside.bin", b"replacement").map_err(|e| e.to_string())?;
    judged("rename in", &["rename", "/tmp/outside.bin", &m("w1.bin")], "rename", |b| b["changed"] == serde_json::json!(["w1.bin"]))?;
    judged("truncate", &["truncate", &m("w2.bin")], "truncate", |b| b["changed"] == serde_json::json!(["w2.bin"]))?;
    judged("chmod", &["chmod", &m("w2.bin")], "chmod", |b| b["attributes"].as_array().map(Vec::len) == Some(1))?;
    judged("unlink", &["unlink", &m("sub/config.json")], "unlink", |b| b["missing"] == serde_json::json!(["sub/config.json"]))?;

    // A file of four 1 MiB shards: the write-range programs find the write by its file
    // (not by fd, as the tracepoints do), so only the shard it landed in is read again;
    // a truncating open is read again whole.
    approve_model(BIG)?;
    // With ranges wanted, these families attach fentry programs, not the syscall
    // tracepoints (which would show as perf_event links among lucidd's fds).
    let perf_links = perf_event_links(daemon)?;
    if perf_links != 0 {
        return Err(format!("{perf_links} syscall tracepoint links are attached on the {family} family"));
    }
    let big = format!("{BIG}/big.bin");
    judged_in(BIG, "write into one shard", &["pwrite", &big, "2621440"], "open", |b| {
        b["bytes_hashed"] == 1 << 20
            && b["changed"] == serde_json::json!(["big.bin:2097152:3145728"])
            && b["written_ranges"]["big.bin"] == serde_json::json!([2621440, 2621450])
    })?;
    judged_in(BIG, "truncating open", &["truncate-open", &big], "open", |b| b["bytes_hashed"] == 4 << 20 && b["changed"].as_array().map(Vec::len) == Some(4))?;

    // Changes outside the model leave no record.
    let before = last_seq()?;
    std::fs::write("/tmp/elsewhere.bin", b"x").map_err(|e| e.to_string())?;
    std::fs::remove_file("/tmp/elsewhere.bin").map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs(2));
    let stray = records(before)?;
    if !stray.is_empty() {
        return Err(format!("changes outside the model were recorded: {stray:?}"));
    }
    let s = ctl(&["status", "--integrity"])?;
    if s["models"][0]["state"] != "verified" || ctl(&["status"])?["integrity_watch"]["lost"] != 0 {
        return Err(format!("at the end: {s}"));
    }
    Ok(format!("lucidd (static) watched through the {family} family ({}): append, rename from outside, truncate, chmod and unlink each judged unapproved with the writer's pid and executable, only the touched file re-hashed, a write into one 1 MiB shard of four re-hashing only that shard (its range from fentry, no syscall tracepoint attached) and a truncating open all four, nothing outside recorded, no event lost", watch["detail"].as_str().filter(|d| !d.is_empty()).unwrap_or("the first family tried")))
}

/// Runs the daemon checks and returns the result line's detail.
pub fn run() -> Result<String, String> {
    mount("devtmpfs", "/dev", "devtmpfs")?;
    lo_up()?;
    std::fs::create_dir_all(format!("{MODEL}/sub")).map_err(|e| e.to_string())?;
    std::fs::write(format!("{MODEL}/w1.bin"), vec![1u8; 200_000]).map_err(|e| e.to_string())?;
    std::fs::write(format!("{MODEL}/w2.bin"), vec![2u8; 300_000]).map_err(|e| e.to_string())?;
    std::fs::write(format!("{MODEL}/sub/config.json"), b"{}").map_err(|e| e.to_string())?;
    std::fs::create_dir_all(BIG).map_err(|e| e.to_string())?;
    std::fs::write(format!("{BIG}/big.bin"), vec![5u8; 4 << 20]).map_err(|e| e.to_string())?;
    std::fs::copy("/init", WRITER).map_err(|e| format!("copying /init: {e}"))?;
    let mut daemon = start(&[])?;
    let result = checks(daemon.id());
    let _ = daemon.kill();
    let _ = daemon.wait();
    result
}

/// `init act OP ARGS`: one change, made by this process (the writer the checks expect).
pub fn act(args: &[String]) -> Result<(), String> {
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or_else(|| format!("act: missing argument {i}"));
    let io = |e: std::io::Error| e.to_string();
    match arg(0)? {
        "append" => {
            let mut f = std::fs::OpenOptions::new().append(true).open(arg(1)?).map_err(io)?;
            f.write_all(b"x").map_err(io)
        }
        "rename" => std::fs::rename(arg(1)?, arg(2)?).map_err(io),
        "truncate" => super::nix_truncate(arg(1)?),
        "chmod" => std::fs::set_permissions(arg(1)?, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(io),
        "unlink" => std::fs::remove_file(arg(1)?).map_err(io),
        // Ten bytes at an offset, without truncating.
        "pwrite" => {
            let at: u64 = arg(2)?.parse().map_err(|e| format!("act pwrite: {e}"))?;
            let f = std::fs::OpenOptions::new().write(true).open(arg(1)?).map_err(io)?;
            std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 10], at).map_err(io)
        }
        // Cut to nothing by the open, then the last ten bytes written back.
        "truncate-open" => {
            let f = std::fs::OpenOptions::new().write(true).truncate(true).open(arg(1)?).map_err(io)?;
            std::os::unix::fs::FileExt::write_all_at(&f, &[5u8; 10], (4 << 20) - 10).map_err(io)
        }
        other => Err(format!("act: unknown operation {other}")),
    }
}
