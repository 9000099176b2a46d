//! Model-watch probe benchmark (root; prints one JSON line).
//!
//! 1. Overhead: an open(O_WRONLY|O_CREAT)/write/close loop over files outside every
//!    watched directory, with lucid's eBPF programs attached and detached in alternating
//!    rounds in the same process (the peer is the same loop without probes), and with a
//!    program that does nothing attached to the same tracepoints (what the syscall
//!    tracepoints cost by themselves, which no program can go below). Also: a no-op on
//!    the raw `sys_enter`/`sys_exit` tracepoints, and lucidd's fanotify mode. "on" is the
//!    family lucidd picks on this kernel (`family`): where LSM and fentry are refused,
//!    the tracepoints; `cargo bench -p lucid-tests --bench vm_probes` measures all three
//!    families under a kernel that allows them.
//! 2. Event-to-ledger latency: the real `lucidd` (eBPF mode) on a temp state dir with an
//!    approved model; each write to it becomes a ledger record whose body carries the
//!    kernel's event time, so the latency is the record's time minus the event's.
//! 3. No loss under load: the same writes while another thread opens unwatched files as
//!    fast as it can (at least 50,000 opens/s is required); every write must be
//!    recorded and the lost-event counter must stay 0.
//!
//! `cargo bench -p lucidd --bench probes` (as root).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use lucidd::integrity::watch::{ebpf, fanotify, Source, WatchSet};
use serde_json::{json, Value};

mod common;

fn fail(msg: &str) -> ! {
    common::fail("probes", msg)
}

/// This thread's CPU time: unlike the wall clock it leaves out time this 2-vCPU VM
/// spends on other work or stolen by the host, which here varies more than the effect.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// open/write/close loop for `dur`: operations per second of the thread's CPU time.
fn churn(dir: &Path, dur: Duration) -> f64 {
    let start = Instant::now();
    let cpu = thread_cpu();
    let mut n = 0u64;
    while start.elapsed() < dur {
        for i in 0..256 {
            let path = dir.join(format!("f{}", i % 64));
            match std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(&path) {
                Ok(mut f) => {
                    let _ = f.write_all(b"0123456789abcdef0123456789abcdef");
                }
                Err(e) => fail(&format!("{}: {e}", path.display())),
            }
            n += 1;
        }
    }
    n as f64 / (thread_cpu() - cpu).as_secs_f64()
}

/// The loop once more with the kernel's per-program accounting on (it costs two clock
/// reads per run, so it is kept out of the timed rounds), added to `stats` by program.
fn program_stats(stats: &mut Stats, scratch: &Path, read: impl Fn() -> Vec<ebpf::ProgramStats>, suffix: &str) {
    if std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").is_err() {
        return;
    }
    churn(scratch, Duration::from_millis(200));
    for p in read() {
        let e = stats.entry(format!("{}{suffix}", p.name)).or_insert((0, 0));
        e.0 += p.runs;
        e.1 += p.ns;
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
}

/// Runs and nanoseconds by program.
type Stats = std::collections::BTreeMap<String, (u64, u64)>;

fn overhead(rt: &tokio::runtime::Runtime, watched: &Path, scratch: &Path) -> Value {
    let set = Arc::new(RwLock::new(WatchSet::default()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Drain what the reader sends (execs and exits of other processes).
    rt.spawn(async move { while rx.recv().await.is_some() {} });
    let mut ws = WatchSet::default();

    if let Ok(m) = std::fs::metadata(watched) {
        use std::os::unix::fs::MetadataExt;
        ws.dirs.insert(lucid_common::probe::DevIno::from_stat(m.dev(), m.ino()), watched.to_path_buf());
    }
    let round = Duration::from_millis(700);
    churn(scratch, Duration::from_millis(300));
    // Each configuration is timed next to a probe-less round of the same length, in
    // turn before and after it, and reported as the median of those pairs' ratios: a
    // round's speed here drifts by more than the effect (and the round after a detach
    // is slower), so only neighbours are compared. The configurations: a no-op program
    // on the same tracepoints; lucid's programs; each with and without the write-range
    // tracepoints (attached only while an approval has a file of more than one shard);
    // a no-op on the raw `sys_enter`/`sys_exit` tracepoints (why lucid uses the
    // per-syscall ones); and lucidd's fanotify mode on the same watched directory.
    let names = ["noop", "on", "noop_ranges", "on_ranges", "noop_raw", "fanotify"];
    let mut speed: Vec<Vec<f64>> = vec![Vec::new(); names.len() + 1];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut stats = Stats::default();
    let mut family = "";
    for iter in 0..9 {
        for (c, name) in names.iter().enumerate() {
            let off_first = (iter + c) % 2 == 0;
            let off_before = if off_first { Some(churn(scratch, round)) } else { None };
            let ranges = name.ends_with("_ranges");
            let v = match *name {
                "noop" | "noop_ranges" => {
                    let noop = ebpf::attach_noop(ranges).unwrap_or_else(|e| fail(&format!("loading the no-op program: {e}")));
                    let v = churn(scratch, round);
                    if !ranges {
                        program_stats(&mut stats, scratch, || ebpf::program_stats(&noop), "");
                    }
                    v
                }
                "noop_raw" => {
                    let _noop = ebpf::attach_noop_raw().unwrap_or_else(|e| fail(&format!("loading the raw no-op program: {e}")));
                    churn(scratch, round)
                }
                "fanotify" => {
                    let mut src = {
                        let _g = rt.enter();
                        fanotify::start(tx.clone()).unwrap_or_else(|e| fail(&format!("fanotify: {e}")))
                    };
                    src.watch(&ws).unwrap_or_else(|e| fail(&e));
                    churn(scratch, round)
                }
                _ => {
                    let mut src = {
                        let _g = rt.enter();
                        ebpf::start(set.clone(), tx.clone(), None).unwrap_or_else(|e| fail(&format!("loading the probes: {e}")))
                    };
                    ws.needs_ranges = ranges;
                    src.watch(&ws).unwrap_or_else(|e| fail(&e));
                    family = src.family().name();
                    let v = churn(scratch, round);
                    program_stats(&mut stats, scratch, || src.program_stats(), if ranges { "+ranges" } else { "" });
                    v
                }
            };
            let off = off_before.unwrap_or_else(|| churn(scratch, round));
            speed[0].push(off);
            speed[c + 1].push(v);
            ratios[c].push(off / v);
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let pct = |name: &str| {
        let c = names.iter().position(|n| *n == name).unwrap_or(0);
        ((median(&ratios[c]) - 1.0) * 100.0 * 100.0).round() / 100.0
    };
    json!({
        "ops_per_cpu_s": std::iter::once("off").chain(names).zip(&speed).map(|(n, v)| (n.to_string(), json!(median(v).round()))).collect::<serde_json::Map<_, _>>(),
        "family": family,
        "overhead_pct": pct("on"),
        "tracepoint_floor_pct": pct("noop"),
        "overhead_pct_with_ranges": pct("on_ranges"),
        "tracepoint_floor_pct_with_ranges": pct("noop_ranges"),
        "raw_tracepoint_floor_pct": pct("noop_raw"),
        "fanotify_mode_pct": pct("fanotify"),
        "ns_per_run": stats.iter().map(|(n, (runs, ns))| (n.clone(), json!((*ns as f64 / (*runs).max(1) as f64).round()))).collect::<serde_json::Map<_, _>>(),
        "ratios": names.iter().zip(&ratios).map(|(n, r)| (n.to_string(), json!(r.iter().map(|v| (v * 1000.0).round() / 1000.0).collect::<Vec<_>>()))).collect::<serde_json::Map<_, _>>(),
        "target_pct": 5.0,
    })
}

/// One HTTP/1.0 request to the control socket (HTTP/1.0: the body is not chunked).
fn request(socket: &Path, method: &str, path: &str, body: &str) -> String {
    let mut s = UnixStream::connect(socket).unwrap_or_else(|e| fail(&format!("control socket: {e}")));
    let req = format!("{method} {path} HTTP/1.0\r\nHost: lucid\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).unwrap_or_else(|e| fail(&e.to_string()));
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

fn call(socket: &Path, method: &str, path: &str, body: &str) -> Value {
    serde_json::from_str(&request(socket, method, path, body)).unwrap_or(Value::Null)
}

fn records(socket: &Path) -> Vec<Value> {
    request(socket, "GET", "/v1/logs?kind=integrity", "").lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn daemon_runs(tmp: &Path, scratch: &Path) -> Value {
    let state = tmp.join("state");
    let socket = state.join("lucidd.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lucidd"))
        .args(["--dev", "--state-dir"])
        .arg(&state)
        .args(["--listen", "127.0.0.1:0"])
        .env("LUCID_MODEL_PACK", "none")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("starting lucidd: {e}")));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = if socket.exists() { call(&socket, "GET", "/v1/status", "") } else { Value::Null };
        let mode = s["integrity_watch"]["mode"].as_str().unwrap_or("").to_string();
        if mode.starts_with("ebpf-") {
            break;
        }
        if !mode.is_empty() && mode != "starting" || Instant::now() > deadline {
            let _ = child.kill();
            fail(&format!("lucidd's watch is {mode:?}, not eBPF: {}", s["integrity_watch"]));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let model = tmp.join("model");
    std::fs::create_dir_all(&model).unwrap_or_else(|e| fail(&e.to_string()));
    std::fs::write(model.join("weights.bin"), vec![7u8; 4096]).unwrap_or_else(|e| fail(&e.to_string()));
    let approved = call(&socket, "POST", "/v1/models/approve", &json!({ "path": model, "method": "files" }).to_string());
    if approved["state"] != "verified" {
        fail(&format!("approve: {approved}"));
    }
    let writes = |n: usize, gap: Duration| {
        for i in 0..n {
            let path = model.join("weights.bin");
            let _ = std::fs::write(path, format!("{i:08}").repeat(512));
            std::thread::sleep(gap);
        }
    };
    let latencies = |recs: &[Value], from_seq: u64| -> (Vec<f64>, usize) {
        let mut lat = Vec::new();
        let mut closes = 0;
        for r in recs.iter().filter(|r| r["seq"].as_u64().unwrap_or(0) >= from_seq && r["body"]["event"] == "model_change") {
            if let (Some(t), Some(o)) = (r["time_ns"].as_u64(), r["body"]["observed_ns"].as_u64()) {
                lat.push(t.saturating_sub(o) as f64 / 1e6);
            }
            closes += r["body"]["operations"].as_array().map(|ops| ops.iter().filter(|o| o["op"] == "close").count()).unwrap_or(0);
        }
        lat.sort_by(f64::total_cmp);
        (lat, closes)
    };
    let pct = |v: &[f64], p: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[((v.len() as f64 - 1.0) * p).round() as usize]
        }
    };
    let next_seq = |recs: &[Value]| recs.iter().filter_map(|r| r["seq"].as_u64()).max().unwrap_or(0) + 1;

    // Latency, idle machine.
    let n = 200;
    let from = next_seq(&records(&socket));
    writes(n, Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(500));
    let (idle, idle_closes) = latencies(&records(&socket), from);

    // The same under a flood of unwatched opens.
    let stop = Arc::new(AtomicBool::new(false));
    let opens = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, opens, scratch) = (stop.clone(), opens.clone(), scratch.to_path_buf());
        std::thread::spawn(move || {
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let r = churn(&scratch, Duration::from_millis(100));
                opens.fetch_add((r * 0.1) as u64, Ordering::Relaxed);
            }
            t.elapsed()
        })
    };
    let from = next_seq(&records(&socket));
    writes(n, Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let flood_time = flood.join().unwrap_or_default();
    std::thread::sleep(Duration::from_millis(500));
    let (loaded, loaded_closes) = latencies(&records(&socket), from);
    let status = call(&socket, "GET", "/v1/status", "");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    let open_rate = opens.load(Ordering::Relaxed) as f64 / flood_time.as_secs_f64();
    json!({
        "writes": n,
        "latency_ms_idle": { "p50": pct(&idle, 0.5), "p99": pct(&idle, 0.99), "max": pct(&idle, 1.0), "records": idle.len(), "closes_recorded": idle_closes },
        "latency_ms_flooded": { "p50": pct(&loaded, 0.5), "p99": pct(&loaded, 0.99), "max": pct(&loaded, 1.0), "records": loaded.len(), "closes_recorded": loaded_closes },
        "unwatched_opens_per_s_during_flood": open_rate.round(),
        "events_lost": status["integrity_watch"]["lost"],
        "target_p99_ms": 50,
        "no_loss": idle_closes == n && loaded_closes == n && status["integrity_watch"]["lost"] == 0 && open_rate >= 50_000.0,
    })
}

fn main() {
    if !nix::unistd::getuid().is_root() {
        println!("{}", json!({ "bench": "probes", "skipped": "loading eBPF programs needs root" }));
        return;
    }
    let tmp = tempfile::tempdir().unwrap_or_else(|e| fail(&e.to_string()));
    let scratch: PathBuf = tmp.path().join("unwatched");
    let watched = tmp.path().join("watched-model");
    for d in [&scratch, &watched] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| fail(&e.to_string()));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap_or_else(|e| fail(&e.to_string()));
    let overhead = overhead(&rt, &watched, &scratch);
    drop(rt);
    let daemon = daemon_runs(tmp.path(), &scratch);
    println!("{}", json!({ "bench": "probes", "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(), "overhead": overhead, "daemon": daemon }));
}
