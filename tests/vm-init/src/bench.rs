//! The benchmark mode of the VM init: what each program family costs the syscalls of
//! files outside every watched directory, on a kernel that allows all of them.
//!
//! The build machines' kernel refuses LSM and fentry programs, so there the probes bench
//! can only measure the tracepoint family. Here the same open/write/close loop runs with
//! nothing attached and with, in turn, lucid's LSM family (alone, and with the write-range
//! programs it adds while an approval has a file of more than one shard), its fentry
//! family (every program lucidd attaches in those modes), its tracepoint programs on the syscalls the
//! loop makes, and no-op programs on those tracepoints and on the LSM and fentry hooks
//! the loop reaches (what each mechanism costs by itself). Each configuration is timed
//! beside a probe-less round (alternating which goes first) and reported as the median
//! of the pairs' ratios, as the host bench does. Times are this thread's CPU time.
//!
//! The bench boots qemu with `-icount shift=0`: this thread's CPU time is then the
//! instructions it executed (kernel and programs included), so the ratios compare the
//! families' instruction counts on one kernel, in one boot, on the same loop.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use aya::maps::{HashMap, MapData};
use aya::programs::fentry::FEntryLinkId;
use aya::programs::lsm::LsmLinkId;
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::{FEntry, Lsm, TracePoint};
use aya::{Btf, Ebpf};
use lucid_common::probe::{DevIno, FENTRY_PROGRAMS, LSM_PROGRAMS};

use super::{load, mount, release};

/// The tracepoints this loop's syscalls hit, with the programs lucidd attaches there
/// (it attaches more, on syscalls the loop does not make).
const TRACEPOINTS: &[(&str, &str)] = &[
    ("enter_openat", "sys_enter_openat"),
    ("exit_opens", "sys_exit_openat"),
    // musl's open() is the open syscall, not openat.
    ("enter_open_", "sys_enter_open"),
    ("exit_opens", "sys_exit_open"),
    ("enter_close", "sys_enter_close"),
];

/// Pairs per configuration, and each round's length (in instructions, under the
/// bench's `-icount shift=0`: 300 ms is 300 million).
const PAIRS: usize = 5;
const ROUND: Duration = Duration::from_millis(300);

enum Link {
    Lsm(&'static str, LsmLinkId),
    FEntry(&'static str, FEntryLinkId),
    Tp(&'static str, TracePointLinkId),
}

/// The no-op programs on the hooks the loop reaches (LSM, then fentry).
const NOOP_LSM: &[(&str, &str)] = &[("noop_lsm_open", "file_open"), ("noop_lsm_free", "file_free_security")];
const NOOP_FENTRY: &[(&str, &str)] = &[("noop_fentry_open", "security_file_open"), ("noop_fentry_free", "security_file_free")];
/// The write-range programs of the LSM and fentry families (attached while an approval
/// has a file of more than one shard).
const RANGE_FENTRY: &[(&str, &str)] = &[("fentry_write_area", "rw_verify_area"), ("fentry_fallocate", "vfs_fallocate")];

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Lsm,
    /// The LSM family with the write-range programs.
    LsmRanges,
    Fentry,
    Tracepoint,
    Noop,
    NoopLsm,
    NoopFentry,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Lsm => "lsm",
            Config::LsmRanges => "lsm_with_ranges",
            Config::Fentry => "fentry",
            Config::Tracepoint => "tracepoint",
            Config::Noop => "noop_tracepoint",
            Config::NoopLsm => "noop_lsm",
            Config::NoopFentry => "noop_fentry",
        }
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name).ok_or(format!("{name} missing"))?.try_into().map_err(|_| format!("{name}: wrong program type"))
}

/// Verifies every program the configurations use, once (a hook this kernel lacks is
/// left out where the family can do without it, as lucidd does).
fn load_all(ebpf: &mut Ebpf, btf: &Btf) -> Result<Loaded, String> {
    let mut loaded = Loaded::default();
    for &(name, hook, optional) in LSM_PROGRAMS {
        match program::<Lsm>(ebpf, name)?.load(hook, btf) {
            Ok(()) => loaded.lsm.push(name),
            Err(_) if optional => {}
            Err(e) => return Err(format!("loading LSM {hook}: {e}")),
        }
    }
    for &(name, func, optional) in FENTRY_PROGRAMS {
        match program::<FEntry>(ebpf, name)?.load(func, btf) {
            Ok(()) => loaded.fentry.push(name),
            Err(_) if optional => {}
            Err(e) => return Err(format!("loading fentry {func}: {e}")),
        }
    }
    for (name, func) in RANGE_FENTRY {
        program::<FEntry>(ebpf, name)?.load(func, btf).map_err(|e| format!("loading {name}: {e}"))?;
    }
    for (name, hook) in NOOP_LSM {
        program::<Lsm>(ebpf, name)?.load(hook, btf).map_err(|e| format!("loading {name}: {e}"))?;
    }
    for (name, func) in NOOP_FENTRY {
        program::<FEntry>(ebpf, name)?.load(func, btf).map_err(|e| format!("loading {name}: {e}"))?;
    }
    let mut names: Vec<&str> = TRACEPOINTS.iter().map(|(n, _)| *n).chain(["noop"]).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        program::<TracePoint>(ebpf, name)?.load().map_err(|e| format!("loading {name}: {e}"))?;
    }
    Ok(loaded)
}

/// The LSM and fentry programs that loaded.
#[derive(Default)]
struct Loaded {
    lsm: Vec<&'static str>,
    fentry: Vec<&'static str>,
}

fn attach(ebpf: &mut Ebpf, loaded: &Loaded, config: Config) -> Result<Vec<Link>, String> {
    let mut links = Vec::new();
    match config {
        Config::Lsm | Config::LsmRanges => {
            for &name in &loaded.lsm {
                links.push(Link::Lsm(name, program::<Lsm>(ebpf, name)?.attach().map_err(|e| format!("attaching {name}: {e}"))?));
            }
            if config == Config::LsmRanges {
                for (name, _) in RANGE_FENTRY {
                    links.push(Link::FEntry(name, program::<FEntry>(ebpf, name)?.attach().map_err(|e| format!("attaching {name}: {e}"))?));
                }
            }
        }
        Config::Fentry => {
            for &name in &loaded.fentry {
                links.push(Link::FEntry(name, program::<FEntry>(ebpf, name)?.attach().map_err(|e| format!("attaching {name}: {e}"))?));
            }
        }
        Config::NoopLsm => {
            for (name, _) in NOOP_LSM {
                links.push(Link::Lsm(name, program::<Lsm>(ebpf, name)?.attach().map_err(|e| format!("attaching {name}: {e}"))?));
            }
        }
        Config::NoopFentry => {
            for (name, _) in NOOP_FENTRY {
                links.push(Link::FEntry(name, program::<FEntry>(ebpf, name)?.attach().map_err(|e| format!("attaching {name}: {e}"))?));
            }
        }
        Config::Tracepoint | Config::Noop => {
            for (name, tp) in TRACEPOINTS {
                let name = if config == Config::Noop { "noop" } else { name };
                links.push(Link::Tp(name, program::<TracePoint>(ebpf, name)?.attach("syscalls", tp).map_err(|e| format!("attaching {tp}: {e}"))?));
            }
        }
    }
    Ok(links)
}

fn detach(ebpf: &mut Ebpf, links: Vec<Link>) -> Result<(), String> {
    for link in links {
        match link {
            Link::Lsm(name, id) => program::<Lsm>(ebpf, name)?.detach(id),
            Link::FEntry(name, id) => program::<FEntry>(ebpf, name)?.detach(id),
            Link::Tp(name, id) => program::<TracePoint>(ebpf, name)?.detach(id),
        }
        .map_err(|e| format!("detaching: {e}"))?;
    }
    Ok(())
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The host bench's loop: open for writing (creating), write 32 bytes, close, over 64
/// files outside the watched directory. Operations per second of CPU time.
fn churn(dir: &Path, dur: Duration) -> Result<f64, String> {
    let paths: Vec<_> = (0..64).map(|i| dir.join(format!("f{i}"))).collect();
    let start = Instant::now();
    let cpu = thread_cpu();
    let mut n = 0u64;
    while start.elapsed() < dur {
        for path in &paths {
            let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let _ = f.write_all(b"0123456789abcdef0123456789abcdef");
            n += 1;
        }
    }
    Ok(n as f64 / (thread_cpu() - cpu).as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs every configuration and returns the result as one JSON object.
pub fn run() -> Result<String, String> {
    mount("tracefs", "/sys/kernel/tracing", "tracefs")?;
    let (watched, scratch) = (Path::new("/tmp/w"), Path::new("/tmp/s"));
    for d in [watched, scratch] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    let (mut ebpf, btf) = load()?;
    let loaded = load_all(&mut ebpf, &btf)?;
    let m = std::fs::metadata(watched).map_err(|e| e.to_string())?;
    {
        let mut map: HashMap<&mut MapData, DevIno, u32> = HashMap::try_from(ebpf.map_mut("WATCHED").ok_or("WATCHED missing")?).map_err(|e| e.to_string())?;
        map.insert(DevIno::from_stat(m.dev(), m.ino()), 1, 0).map_err(|e| format!("WATCHED: {e}"))?;
    }

    churn(scratch, ROUND)?;
    let configs = [Config::Lsm, Config::LsmRanges, Config::Fentry, Config::Tracepoint, Config::Noop, Config::NoopLsm, Config::NoopFentry];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut off_speeds = Vec::new();
    for pair in 0..PAIRS {
        for (c, &config) in configs.iter().enumerate() {
            let off_first = (pair + c) % 2 == 0;
            let before = if off_first { Some(churn(scratch, ROUND)?) } else { None };
            let links = attach(&mut ebpf, &loaded, config)?;
            let on = churn(scratch, ROUND);
            detach(&mut ebpf, links)?;
            let on = on?;
            let off = match before {
                Some(v) => v,
                None => churn(scratch, ROUND)?,
            };
            off_speeds.push(off);
            ratios[c].push(off / on - 1.0);
        }
    }
    // Each program's own cost: the kernel's run statistics (off during the timed rounds:
    // they read the clock twice per run), in a pass per configuration. Under icount a
    // nanosecond is an instruction.
    let per_run = program_costs(&mut ebpf, &loaded, scratch, &configs)?;
    let overhead: Vec<String> = configs.iter().zip(ratios).map(|(c, r)| format!("\"{}\":{:.4}", c.name(), median(r))).collect();
    Ok(format!(
        "{{\"kernel\":\"{}\",\"loop\":\"open(O_WRONLY|O_CREAT)/write 32 B/close on tmpfs, outside the watched directory\",\"pairs\":{PAIRS},\"round_ms\":{},\"ops_per_cpu_s_without\":{:.0},\"overhead\":{{{}}},\"ns_per_run\":{{{}}}}}",
        release(),
        ROUND.as_millis(),
        median(off_speeds),
        overhead.join(","),
        per_run.iter().map(|(n, v)| format!("\"{n}\":{v:.0}")).collect::<Vec<_>>().join(",")
    ))
}

/// Runs and run time of every loaded program, by name.
fn run_stats(ebpf: &Ebpf) -> std::collections::BTreeMap<String, (u64, u64)> {
    ebpf.programs().filter_map(|(n, p)| p.info().ok().map(|i| (n.to_string(), (i.run_count(), i.run_time().as_nanos() as u64)))).collect()
}

/// Mean run time of each program that ran, with the kernel's statistics on, over a
/// short pass of the loop per configuration.
fn program_costs(ebpf: &mut Ebpf, loaded: &Loaded, scratch: &Path, configs: &[Config]) -> Result<Vec<(String, f64)>, String> {
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").map_err(|e| format!("bpf_stats_enabled: {e}"))?;
    let mut out = Vec::new();
    for &config in configs {
        let before = run_stats(ebpf);
        let links = attach(ebpf, loaded, config)?;
        let done = churn(scratch, ROUND / 3);
        detach(ebpf, links)?;
        done?;
        for (name, (runs, ns)) in run_stats(ebpf) {
            let (runs0, ns0) = before.get(&name).copied().unwrap_or((0, 0));
            if runs > runs0 {
                out.push((format!("{}/{name}", config.name()), (ns - ns0) as f64 / (runs - runs0) as f64));
            }
        }
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    Ok(out)
}
