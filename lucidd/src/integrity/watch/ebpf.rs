//! The eBPF source: loads `lucid-ebpf` (for file changes the LSM hooks, else fentry,
//! else tracepoints on the file-changing syscalls; tp_btf on exec, exit and fork), keeps
//! its maps in step with the watch set, and turns ring buffer events into [`Input`]s
//! with absolute paths.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use lucid_common::probe::{DevIno, Event, EventKind, Op, HIT_EXE, SOURCE_LSM, SOURCE_TRACEPOINT};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::{normalize, Input, Seen, Source, WatchSet, Who};
use crate::ledger::now_ns;

/// The compiled programs (empty where the eBPF toolchain was missing at build time).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lucid-ebpf"));

/// The syscalls traced: each has its own entry program (`enter_<name>`, `enter_open_`
/// for `open`), and shares an exit program with its family, so the verifier checks
/// each exit path once. `close` is traced at entry only.
const SYSCALLS: &[(&str, &str)] = &[
    ("open", "exit_opens"),
    ("openat", "exit_opens"),
    ("creat", "exit_opens"),
    ("openat2", "exit_opens"),
    ("ftruncate", "exit_fd_ops"),
    ("fchmod", "exit_fd_ops"),
    ("fchown", "exit_fd_ops"),
    ("rename", "exit_path_ops"),
    ("renameat", "exit_path_ops"),
    ("renameat2", "exit_path_ops"),
    ("unlink", "exit_path_ops"),
    ("unlinkat", "exit_path_ops"),
    ("rmdir", "exit_path_ops"),
    ("truncate", "exit_path_ops"),
    ("chmod", "exit_path_ops"),
    ("fchmodat", "exit_path_ops"),
    ("fchmodat2", "exit_path_ops"),
    ("chown", "exit_path_ops"),
    ("lchown", "exit_path_ops"),
    ("fchownat", "exit_path_ops"),
    ("link", "exit_path_ops"),
    ("linkat", "exit_path_ops"),
    ("symlink", "exit_path_ops"),
    ("symlinkat", "exit_path_ops"),
];

/// Where writes land, traced at entry (so a change re-hashes only the shards it
/// touched). Attached only while some approval has a file of more than one shard: for
/// the rest a changed file is re-hashed whole anyway, and these tracepoints put every
/// `write` on the host on the tracing path.
const RANGES: &[(&str, &str)] = &[
    ("enter_write", "sys_enter_write"),
    ("enter_pwrite64", "sys_enter_pwrite64"),
    ("enter_writev", "sys_enter_writev"),
    ("enter_pwritev", "sys_enter_pwritev"),
    ("enter_pwritev", "sys_enter_pwritev2"),
    ("enter_fallocate", "sys_enter_fallocate"),
    ("enter_copy_file_range", "sys_enter_copy_file_range"),
    ("enter_sendfile64", "sys_enter_sendfile64"),
];

/// Where writes land, for the LSM and fentry families: fentry on the check every read
/// and write path makes of its range (io_uring included), and on fallocate. Attached,
/// like [`RANGES`], only while an approval has a file of more than one shard; where
/// they cannot load, those families use [`RANGES`].
const RANGE_FENTRY: &[(&str, &str)] = &[("fentry_write_area", "rw_verify_area"), ("fentry_fallocate", "vfs_fallocate")];

/// The dup family: entry programs and their shared exit.
const DUPS: &[(&str, &str)] = &[("enter_dup_", "dup"), ("enter_dup2", "dup2"), ("enter_dup2", "dup3"), ("enter_fcntl", "fcntl")];

/// Which programs report file changes, best first: the LSM hooks, else fentry on the
/// `security_*` functions behind them (both cost only the operations that reach those
/// hooks), else the syscall tracepoints (which load on locked-down kernels, but put every
/// syscall on the host on the tracing path; see the probes bench).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// BPF LSM programs.
    Lsm,
    /// fentry programs.
    Fentry,
    /// Syscall tracepoints.
    Tracepoint,
}

impl Family {
    /// The name in the watch mode (`ebpf-<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Lsm => "lsm",
            Family::Fentry => "fentry",
            Family::Tracepoint => "tracepoint",
        }
    }

    /// The family's programs with their LSM hook or kernel function, and whether the
    /// family can do without one.
    fn programs(self) -> &'static [(&'static str, &'static str, bool)] {
        match self {
            Family::Lsm => lucid_common::probe::LSM_PROGRAMS,
            Family::Fentry => lucid_common::probe::FENTRY_PROGRAMS,
            Family::Tracepoint => &[],
        }
    }
}

/// Loads and attaches every program of an LSM or fentry `family`; on any refusal the
/// ones already attached are unloaded again and the reason returned.
fn attach_family(ebpf: &mut Ebpf, btf: &aya::Btf, family: Family) -> Result<(), String> {
    if family == Family::Lsm {
        bpf_lsm_active()?;
    }
    let mut done: Vec<&str> = Vec::new();
    let mut result = Ok(());
    for &(prog, target, optional) in family.programs() {
        let attached = match family {
            Family::Lsm => ebpf
                .program_mut(prog)
                .ok_or_else(|| format!("program {prog} missing"))
                .and_then(|p| <&mut aya::programs::Lsm>::try_from(p).map_err(|e| format!("{prog}: {e}")))
                .and_then(|p| p.load(target, btf).map_err(|e| format!("loading LSM {target}: {}", short(e))).and_then(|()| p.attach().map(drop).map_err(|e| format!("attaching LSM {target}: {e}")))),
            Family::Fentry => ebpf
                .program_mut(prog)
                .ok_or_else(|| format!("program {prog} missing"))
                .and_then(|p| <&mut aya::programs::FEntry>::try_from(p).map_err(|e| format!("{prog}: {e}")))
                .and_then(|p| p.load(target, btf).map_err(|e| format!("loading fentry {target}: {}", short(e))).and_then(|()| p.attach().map(drop).map_err(|e| format!("attaching fentry {target}: {e}")))),
            Family::Tracepoint => Ok(()),
        };
        match attached {
            Ok(()) => done.push(prog),
            Err(e) if optional => tracing::debug!(program = prog, error = %e, "an optional hook is not on this kernel"),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_err() {
        for prog in done {
            match ebpf.program_mut(prog) {
                Some(p) if family == Family::Lsm => {
                    let _ = <&mut aya::programs::Lsm>::try_from(p).map(|p| p.unload());
                }
                Some(p) => {
                    let _ = <&mut aya::programs::FEntry>::try_from(p).map(|p| p.unload());
                }
                None => {}
            }
        }
    }
    result
}

/// The loaded programs and the maps user space writes.
pub struct EbpfSource {
    /// Keeps the programs attached (dropping it detaches them).
    _ebpf: Ebpf,
    /// The file programs are attached too (not only the process ones).
    files: bool,
    /// Which family reports file changes.
    family: Family,
    /// Why the better families were refused (empty when the best one was used).
    why: String,
    watched: BpfHashMap<MapData, DevIno, u32>,
    ancestors: BpfHashMap<MapData, DevIno, u32>,
    exes: BpfHashMap<MapData, DevIno, u32>,
    generation: Array<MapData, u64>,
    protected: BpfHashMap<MapData, DevIno, u32>,
    allow: BpfHashMap<MapData, DevIno, u32>,
    /// Executables allowed to write approved files (enforcement on), by path.
    writers: Vec<PathBuf>,
    enforcement: String,
    /// The write-range tracepoints while attached.
    range_links: Vec<(&'static str, aya::programs::trace_point::TracePointLinkId)>,
    /// The [`RANGE_FENTRY`] programs loaded (LSM and fentry families only).
    range_fentry: bool,
    /// Those programs while attached.
    fentry_range_links: Vec<(&'static str, aya::programs::fentry::FEntryLinkId)>,
}

/// For the benchmark: a program that does nothing, attached to the same syscall
/// tracepoints as the real ones (with the write-range ones when `ranges`), to measure
/// what the tracepoints themselves cost. Dropping the result detaches it.
pub fn attach_noop(ranges: bool) -> Result<Ebpf, String> {
    if OBJECT.is_empty() {
        return Err("the eBPF programs were not built".into());
    }
    mount_tracefs();
    raise_memlock();
    let offsets = lucid_common::btf::Btf::from_sys().and_then(|b| b.offsets()).map_err(|e| format!("kernel BTF: {e}"))?;
    let mut ebpf = EbpfLoader::new().override_global("OFFSETS", &offsets, true).load(OBJECT).map_err(short)?;
    let p: &mut TracePoint = ebpf.program_mut("noop").ok_or("program noop missing")?.try_into().map_err(|e| format!("{e}"))?;
    p.load().map_err(short)?;
    for (name, _) in SYSCALLS {
        for side in ["enter", "exit"] {
            let tp = format!("sys_{side}_{name}");
            if Path::new("/sys/kernel/tracing/events/syscalls").join(&tp).exists() {
                p.attach("syscalls", &tp).map_err(|e| format!("attaching {tp}: {e}"))?;
            }
        }
    }
    let ranges = RANGES.iter().filter(|_| ranges).map(|(_, tp)| tp.to_string());
    for tp in ranges.chain(DUPS.iter().flat_map(|(_, n)| [format!("sys_enter_{n}"), format!("sys_exit_{n}")])) {
        if Path::new("/sys/kernel/tracing/events/syscalls").join(&tp).exists() {
            p.attach("syscalls", &tp).map_err(|e| format!("attaching {tp}: {e}"))?;
        }
    }
    Ok(ebpf)
}

/// For the benchmark: a program that does nothing on the raw `sys_enter` and `sys_exit`
/// tracepoints (every syscall), to compare with the per-syscall tracepoints.
pub fn attach_noop_raw() -> Result<Ebpf, String> {
    if OBJECT.is_empty() {
        return Err("the eBPF programs were not built".into());
    }
    raise_memlock();
    let offsets = lucid_common::btf::Btf::from_sys().and_then(|b| b.offsets()).map_err(|e| format!("kernel BTF: {e}"))?;
    let mut ebpf = EbpfLoader::new().override_global("OFFSETS", &offsets, true).load(OBJECT).map_err(short)?;
    let p: &mut aya::programs::RawTracePoint = ebpf.program_mut("noop_raw").ok_or("program noop_raw missing")?.try_into().map_err(|e| format!("{e}"))?;
    p.load().map_err(short)?;
    for tp in ["sys_enter", "sys_exit"] {
        p.attach(tp).map_err(|e| format!("attaching {tp}: {e}"))?;
    }
    Ok(ebpf)
}

/// An aya error in a line or a few: a verifier log is thousands of lines, of which the
/// last ones say what was refused.
fn short(e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    if std::env::var_os("LUCID_EBPF_VERBOSE").is_some() {
        return text;
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() <= 4 {
        return lines.join(" ");
    }
    let mut tail: Vec<&str> = lines
        .iter()
        .rev()
        .filter(|l| !l.starts_with("verification time") && !l.starts_with("stack depth") && !l.starts_with("processed "))
        .take(2)
        .copied()
        .collect();
    tail.reverse();
    format!("{} ... {}", lines[0], tail.join(" "))
}

fn mount_tracefs() {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("events").exists() {
        return;
    }
    // aya looks tracefs up once per process: it must be there before the first attach.
    let _ = nix::mount::mount(Some("tracefs"), dir, Some("tracefs"), nix::mount::MsFlags::empty(), None::<&str>);
}

fn raise_memlock() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid struct; failure only means older kernels may refuse maps.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK");
    }
}

/// Loads and attaches the programs and starts the reader. `Err` says why eBPF cannot
/// be used here (the caller falls back to fanotify).
pub fn start(set: Arc<RwLock<WatchSet>>, tx: mpsc::UnboundedSender<Input>, enforce: Option<Vec<PathBuf>>) -> Result<EbpfSource, String> {
    load(set, tx, enforce, true)
}

/// Only the process programs (tp_btf exec, exit and fork, which are off the syscall
/// path): for fanotify mode, which sees file changes at no cost to other files but
/// names only a pid, gone by the time a short-lived writer's event is read. With these,
/// the writer's executable, parent and cgroup are known from its exec, and execs of an
/// approved serving binary are still hashed and judged.
pub fn start_processes(set: Arc<RwLock<WatchSet>>, tx: mpsc::UnboundedSender<Input>) -> Result<EbpfSource, String> {
    load(set, tx, None, false)
}

fn load(set: Arc<RwLock<WatchSet>>, tx: mpsc::UnboundedSender<Input>, enforce: Option<Vec<PathBuf>>, files: bool) -> Result<EbpfSource, String> {
    if OBJECT.is_empty() {
        return Err("the eBPF programs were not built into this lucidd (no bpf-linker at build time)".into());
    }
    let offsets = lucid_common::btf::Btf::from_sys().and_then(|b| b.offsets()).map_err(|e| format!("kernel BTF: {e}"))?;
    mount_tracefs();
    raise_memlock();
    let mut loader = EbpfLoader::new();
    loader.override_global("OFFSETS", &offsets, true);
    // The ring buffer's size (bytes, a power of two of at least a page): only the test
    // that proves lost events are reported shrinks it.
    if let Some(bytes) = std::env::var("LUCID_EBPF_RINGBUF_BYTES").ok().and_then(|v| v.parse::<u32>().ok()) {
        loader.map_max_entries("EVENTS", bytes);
    }
    let mut ebpf = loader.load(OBJECT).map_err(|e| format!("loading: {}", short(e)))?;
    let kernel_btf = aya::Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    for (prog, tp) in [("sched_exec", "sched_process_exec"), ("sched_exit", "sched_process_exit"), ("sched_fork", "sched_process_fork")] {
        let p: &mut BtfTracePoint = ebpf
            .program_mut(prog)
            .ok_or_else(|| format!("program {prog} missing"))?
            .try_into()
            .map_err(|e| format!("{prog}: {e}"))?;
        p.load(tp, &kernel_btf).map_err(|e| format!("loading tp_btf/{tp}: {}", short(e)))?;
        p.attach().map_err(|e| format!("attaching tp_btf/{tp}: {e}"))?;
    }
    // The file programs: the best family the kernel allows (the reasons the better ones
    // were refused are logged).
    let mut family = Family::Tracepoint;
    let mut refused = Vec::new();
    if files {
        for f in [Family::Lsm, Family::Fentry] {
            match attach_family(&mut ebpf, &kernel_btf, f) {
                Ok(()) => {
                    family = f;
                    break;
                }
                Err(e) => {
                    tracing::info!(family = f.name(), reason = %e, "this kernel refuses a program family; trying the next");
                    refused.push(format!("{}: {e}", f.name()));
                }
            }
        }
    }
    let tracepoints = files && family == Family::Tracepoint;
    let mut loaded = std::collections::HashSet::new();
    let mut attach = |prog: String, tp: String| -> Result<(), String> {
        let p: &mut TracePoint = ebpf
            .program_mut(&prog)
            .ok_or_else(|| format!("program {prog} missing"))?
            .try_into()
            .map_err(|e| format!("{prog}: {e}"))?;
        if loaded.insert(prog.clone()) {
            p.load().map_err(|e| format!("loading {prog}: {}", short(e)))?;
        }
        // A syscall this kernel lacks (fchmodat2 before 6.6) is skipped.
        if !Path::new("/sys/kernel/tracing/events/syscalls").join(&tp).exists() {
            tracing::debug!(tracepoint = %tp, "not on this kernel");
            return Ok(());
        }
        p.attach("syscalls", &tp).map_err(|e| format!("attaching syscalls/{tp}: {e}"))?;
        Ok(())
    };
    for (name, exit) in SYSCALLS.iter().filter(|_| tracepoints) {
        let enter = if *name == "open" { "enter_open_".to_string() } else { format!("enter_{name}") };
        attach(enter, format!("sys_enter_{name}"))?;
        attach(exit.to_string(), format!("sys_exit_{name}"))?;
    }
    if tracepoints {
        attach("enter_close".into(), "sys_enter_close".into())?;
    }
    for (prog, name) in DUPS.iter().filter(|_| tracepoints) {
        attach(prog.to_string(), format!("sys_enter_{name}"))?;
        attach("exit_dups".to_string(), format!("sys_exit_{name}"))?;
    }
    // The write-range programs are loaded (verified) now, attached when needed.
    for (prog, _) in RANGES.iter().filter(|_| files) {
        let p: &mut TracePoint = ebpf.program_mut(prog).ok_or_else(|| format!("program {prog} missing"))?.try_into().map_err(|e| format!("{prog}: {e}"))?;
        if p.fd().is_err() {
            p.load().map_err(|e| format!("loading {prog}: {}", short(e)))?;
        }
    }
    let range_fentry = files
        && family != Family::Tracepoint
        && RANGE_FENTRY.iter().all(|(prog, func)| {
            let loaded = ebpf
                .program_mut(prog)
                .ok_or_else(|| format!("program {prog} missing"))
                .and_then(|p| <&mut aya::programs::FEntry>::try_from(p).map_err(|e| e.to_string()))
                .and_then(|p| p.load(func, &kernel_btf).map_err(short));
            if let Err(e) = &loaded {
                tracing::info!(program = prog, error = %e, "write ranges will come from the syscall tracepoints");
            }
            loaded.is_ok()
        });

    // Enforcement needs the BPF LSM; the kernel may refuse it (lockdown, or bpf not in
    // its LSM list), and then lucidd watches without refusing.
    let enforcement = match &enforce {
        None => "off".to_string(),
        // The LSM family's file_open program is attached already and refuses once
        // enforcement is set.
        Some(_) if family == Family::Lsm => "on (BPF LSM file_open)".to_string(),
        Some(_) => match enable_lsm(&mut ebpf, &kernel_btf) {
            Ok(()) => "on (BPF LSM file_open)".to_string(),
            Err(e) => format!("unavailable: {e}"),
        },
    };
    let map = |ebpf: &mut Ebpf, name: &str| ebpf.take_map(name).ok_or_else(|| format!("map {name} missing"));
    let watched = BpfHashMap::try_from(map(&mut ebpf, "WATCHED")?).map_err(|e| e.to_string())?;
    let ancestors = BpfHashMap::try_from(map(&mut ebpf, "ANCESTORS")?).map_err(|e| e.to_string())?;
    let exes = BpfHashMap::try_from(map(&mut ebpf, "EXES")?).map_err(|e| e.to_string())?;
    let generation = Array::try_from(map(&mut ebpf, "GENERATION")?).map_err(|e| e.to_string())?;
    let protected = BpfHashMap::try_from(map(&mut ebpf, "PROTECTED")?).map_err(|e| e.to_string())?;
    let allow = BpfHashMap::try_from(map(&mut ebpf, "ALLOW")?).map_err(|e| e.to_string())?;
    if enforcement.starts_with("on") {
        let mut settings: Array<MapData, u32> = Array::try_from(map(&mut ebpf, "SETTINGS")?).map_err(|e| e.to_string())?;
        // Elsewhere the other family reports the opens; the LSM program only its refusals.
        if family != Family::Lsm {
            settings.set(1, 1, 0).map_err(|e| format!("SETTINGS: {e}"))?;
        }
        settings.set(0, 1, 0).map_err(|e| format!("SETTINGS: {e}"))?;
    }
    let wfds: BpfHashMap<MapData, u64, DevIno> = BpfHashMap::try_from(map(&mut ebpf, "WFDS")?).map_err(|e| e.to_string())?;
    let lost: PerCpuArray<MapData, u64> = PerCpuArray::try_from(map(&mut ebpf, "LOST")?).map_err(|e| e.to_string())?;
    let dirty: BpfHashMap<MapData, DevIno, [u64; 2]> = BpfHashMap::try_from(map(&mut ebpf, "DIRTY")?).map_err(|e| e.to_string())?;
    let ring = RingBuf::try_from(map(&mut ebpf, "EVENTS")?).map_err(|e| e.to_string())?;
    // SAFETY: the ring buffer owns its map fd, which stays open as long as the AsyncFd
    // holds it.
    let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| format!("polling the ring buffer: {e}"))?;
    let wcount = BpfHashMap::try_from(map(&mut ebpf, "WCOUNT")?).map_err(|e| e.to_string())?;
    let offset_ns = now_ns() as i64 - monotonic_ns() as i64;
    let tracked = Array::try_from(map(&mut ebpf, "TRACKED")?).map_err(|e| e.to_string())?;
    let reader = Reader { set, tx, open: HashMap::new(), objects: HashMap::new(), dirty, wfds, wcount, tracked, offset_ns };
    tokio::spawn(read(ring, lost, reader));
    let why = refused.join("; ");
    Ok(EbpfSource { _ebpf: ebpf, files, family, why, watched, ancestors, exes, generation, protected, allow, writers: enforce.unwrap_or_default(), enforcement, range_links: Vec::new(), range_fentry, fentry_range_links: Vec::new() })
}

fn sync(map: &mut BpfHashMap<MapData, DevIno, u32>, want: &HashMap<DevIno, PathBuf>) -> Result<(), String> {
    let have: Vec<DevIno> = map.keys().filter_map(Result::ok).collect();
    for k in have.iter().filter(|k| !want.contains_key(k)) {
        let _ = map.remove(k);
    }
    for k in want.keys() {
        map.insert(k, 1, 0).map_err(|e| format!("updating the watch map: {e}"))?;
    }
    Ok(())
}

/// Loads and attaches the LSM `file_open` program (enforcement).
/// Whether the kernel runs the BPF LSM: a kernel built with it but started without
/// `bpf` in its LSM list (several distributions' default) loads and attaches LSM
/// programs and then never calls them, so an attach proves nothing. The active list is
/// in securityfs, mounted here if it is not yet.
fn bpf_lsm_active() -> Result<(), String> {
    let list = Path::new("/sys/kernel/security/lsm");
    if !list.exists() {
        let _ = nix::mount::mount(Some("securityfs"), "/sys/kernel/security", Some("securityfs"), nix::mount::MsFlags::empty(), None::<&str>);
    }
    let active = std::fs::read_to_string(list).map_err(|e| format!("cannot tell whether the BPF LSM is active ({}: {e})", list.display()))?;
    if active.trim().split(',').any(|m| m == "bpf") {
        Ok(())
    } else {
        Err(format!("the kernel's active LSMs ({}) leave out bpf (add it to the lsm= boot parameter)", active.trim()))
    }
}

fn enable_lsm(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<(), String> {
    bpf_lsm_active()?;
    let p: &mut aya::programs::Lsm = ebpf.program_mut("lsm_file_open").ok_or("program lsm_file_open missing")?.try_into().map_err(|e| format!("{e}"))?;
    p.load("file_open", btf).map_err(|e| format!("the kernel refused the BPF LSM program: {}", short(e)))?;
    p.attach().map_err(|e| format!("attaching the BPF LSM program: {e}"))?;
    Ok(())
}

/// One program's run statistics (the kernel counts them while
/// `kernel.bpf_stats_enabled` is 1).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgramStats {
    /// The program's name.
    pub name: String,
    /// How many times it ran.
    pub runs: u64,
    /// The time it ran, in all.
    pub ns: u64,
}

/// The run statistics of every program in `ebpf` that ran.
pub fn program_stats(ebpf: &Ebpf) -> Vec<ProgramStats> {
    ebpf.programs()
        .filter_map(|(name, p)| p.info().ok().map(|i| ProgramStats { name: name.to_string(), runs: i.run_count(), ns: i.run_time().as_nanos() as u64 }))
        .filter(|s| s.runs > 0)
        .collect()
}

impl EbpfSource {
    /// Which family reports file changes.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Why the better families were refused (empty when none was).
    pub fn why(&self) -> &str {
        &self.why
    }

    /// The run statistics of every loaded program that ran (for the benchmark: they
    /// show which program costs what, without the wall-clock noise of a whole loop).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        program_stats(&self._ebpf)
    }

    /// Attaches or detaches the write-range programs: for the LSM and fentry families
    /// the fentry ones where they loaded, else the syscall tracepoints.
    pub fn track_ranges(&mut self, on: bool) -> Result<(), String> {
        let attached = !self.range_links.is_empty() || !self.fentry_range_links.is_empty();
        if !self.files || on == attached {
            return Ok(());
        }
        if on && self.range_fentry {
            for (prog, _) in RANGE_FENTRY {
                let p: &mut aya::programs::FEntry = self._ebpf.program_mut(prog).ok_or("program missing")?.try_into().map_err(|e| format!("{prog}: {e}"))?;
                let link = p.attach().map_err(|e| format!("attaching fentry {prog}: {e}"))?;
                self.fentry_range_links.push((prog, link));
            }
        } else if on {
            for (prog, tp) in RANGES {
                if !Path::new("/sys/kernel/tracing/events/syscalls").join(tp).exists() {
                    continue;
                }
                let p: &mut TracePoint = self._ebpf.program_mut(prog).ok_or("program missing")?.try_into().map_err(|e| format!("{prog}: {e}"))?;
                let link = p.attach("syscalls", tp).map_err(|e| format!("attaching syscalls/{tp}: {e}"))?;
                self.range_links.push((prog, link));
            }
        } else {
            for (prog, link) in self.range_links.drain(..) {
                if let Some(p) = self._ebpf.program_mut(prog).and_then(|p| <&mut TracePoint>::try_from(p).ok()) {
                    let _ = p.detach(link);
                }
            }
            for (prog, link) in self.fentry_range_links.drain(..) {
                if let Some(p) = self._ebpf.program_mut(prog).and_then(|p| <&mut aya::programs::FEntry>::try_from(p).ok()) {
                    let _ = p.detach(link);
                }
            }
        }
        Ok(())
    }
}

impl Source for EbpfSource {
    fn enforcement(&self) -> String {
        self.enforcement.clone()
    }

    fn watch(&mut self, set: &WatchSet) -> Result<(), String> {
        if self.enforcement.starts_with("on") {
            sync(&mut self.protected, &set.protected)?;
            let writers: HashMap<DevIno, PathBuf> =
                self.writers.iter().filter_map(|p| std::fs::metadata(p).ok().map(|m| (DevIno::from_stat(m.dev(), m.ino()), p.clone()))).collect();
            sync(&mut self.allow, &writers)?;
        }
        self.track_ranges(set.needs_ranges)?;
        sync(&mut self.watched, &set.dirs)?;
        sync(&mut self.ancestors, &set.ancestors)?;
        sync(&mut self.exes, &set.files)?;
        // Cached "not watched" answers from before this set no longer hold.
        let next = self.generation.get(&0, 0).unwrap_or(0).wrapping_add(1);
        self.generation.set(0, next, 0).map_err(|e| format!("updating the watch generation: {e}"))
    }
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The file `name` in watched directory `dir` (checked against the inode the kernel
/// gave); else found by inode under `dir`.
fn locate(set: &WatchSet, dir: &DevIno, name: &str, file: &DevIno) -> Option<PathBuf> {
    let base = set.dirs.get(dir)?;
    let same = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| DevIno::from_stat(m.dev(), m.ino()) == *file);
    let direct = base.join(name);
    if same(&direct) {
        return Some(direct);
    }
    // In a subdirectory created after the watch was set up: search by inode.
    let mut stack = vec![base.clone()];
    let mut budget = 10_000;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            budget -= 1;
            if budget == 0 {
                return None;
            }
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            if same(&p) {
                return Some(p);
            }
        }
    }
    // Gone already (unlinked after the write): the name under the directory is the best
    // account of it.
    Some(direct)
}

/// One side of a path event as an absolute path.
fn resolve(set: &WatchSet, pid: u32, fd: i32, start: &DevIno, path: &str) -> Option<PathBuf> {
    if path.starts_with('/') {
        return Some(normalize(Path::new(path)));
    }
    let base = match set.path_of(start) {
        Some(p) => p.clone(),
        None if fd == lucid_common::probe::AT_FDCWD => std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?,
        None => std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?,
    };
    Some(normalize(&base.join(path)))
}

/// A file a process holds open for writing (possibly through several fds).
struct Held {
    path: PathBuf,
    /// Opened with O_TRUNC, or inherited across a fork (writes may have been missed):
    /// the whole file is re-hashed.
    whole: bool,
    /// Its fds in that process.
    fds: u32,
}

struct Reader {
    set: Arc<RwLock<WatchSet>>,
    tx: mpsc::UnboundedSender<Input>,
    /// Files held open for writing, by (process, file): the judge hears of the first
    /// open and the last close, whatever dups happen between.
    open: HashMap<(u32, DevIno), Held>,
    /// The LSM and fentry families' write-opens, by `struct file` address: which
    /// (process, file) in `open` each one counts in, and who opened it, until its
    /// release (which may come from another process the file was passed to).
    objects: HashMap<u64, (u32, DevIno, Who)>,
    /// Where writes landed, by file.
    dirty: BpfHashMap<MapData, DevIno, [u64; 2]>,
    /// The kernel's write fds (for exits and forks).
    wfds: BpfHashMap<MapData, u64, DevIno>,
    wcount: BpfHashMap<MapData, u32, u32>,
    tracked: Array<MapData, u64>,
    offset_ns: i64,
}

impl Reader {
    fn who(e: &Event) -> Who {
        Who { pid: e.tgid, ppid: e.ppid, uid: e.uid, comm: cstr(&e.comm), exe: None }
    }

    fn time(&self, e: &Event) -> u64 {
        (e.time_ns as i64 + self.offset_ns).max(0) as u64
    }

    /// One fd of `tgid` on `file` closed; the last one settles the change.
    fn closed(&mut self, e: &Event, tgid: u32, file: &DevIno) {
        let who = Who { pid: tgid, ..Self::who(e) };
        self.closed_by(who, self.time(e), tgid, file);
    }

    /// [`Self::closed`], with the process the change is attributed to.
    fn closed_by(&mut self, who: Who, time_ns: u64, tgid: u32, file: &DevIno) {
        let Some(held) = self.open.get_mut(&(tgid, *file)) else {
            return;
        };
        held.fds = held.fds.saturating_sub(1);
        if held.fds > 0 {
            return;
        }
        let Some(held) = self.open.remove(&(tgid, *file)) else {
            return;
        };
        let range = self.written(file, held.whole);
        let _ = self.tx.send(Input::Seen(Seen { op: Op::Close, paths: vec![held.path], who, time_ns, settled: true, range }));
        if self.open.is_empty() {
            self.close_gate();
        }
    }

    /// Nothing is held open for writing any more: closes the kernel's gate in front of
    /// the fd lookups (`TRACKED`) when `WFDS` is empty too, and opens it again if an
    /// entry arrived meanwhile. The kernel adds to `WFDS` before it sets the gate, so an
    /// entry added after the clear finds the gate set by its own open. One added in the
    /// microseconds between the first look and the clear is seen by the second look;
    /// should its close fall in the moment before that, the change is still judged, on
    /// the judge's patience instead of the close.
    fn close_gate(&mut self) {
        if self.wfds.keys().next().is_some() || self.tracked.set(0, 0, 0).is_err() {
            return;
        }
        if self.wfds.keys().next().is_some() {
            let _ = self.tracked.set(0, 1, 0);
        }
    }

    /// The exiting process's write fds are closed now.
    fn exited(&mut self, e: &Event) {
        let tgid = e.tgid;
        let stale: Vec<(u64, DevIno)> = self.wfds.iter().filter_map(Result::ok).filter(|(k, _)| (k >> 32) as u32 == tgid).collect();
        for (k, file) in stale {
            let _ = self.wfds.remove(&k);
            self.closed(e, tgid, &file);
        }
        let _ = self.wcount.remove(&tgid);
        // Whatever is left (fds the kernel did not list) is closed too.
        let left: Vec<DevIno> = self.open.keys().filter(|(t, _)| *t == tgid).map(|(_, f)| *f).collect();
        for file in left {
            if let Some(h) = self.open.get_mut(&(tgid, file)) {
                h.fds = 1;
            }
            self.closed(e, tgid, &file);
        }
    }

    /// A child shares its parent's write fds: they are tracked for it too (from now;
    /// what it wrote before this is covered by re-hashing those files whole).
    fn forked(&mut self, e: &Event, child: u32) {
        let parent = e.tgid;
        let inherited: Vec<(u64, DevIno)> = self.wfds.iter().filter_map(Result::ok).filter(|(k, _)| (k >> 32) as u32 == parent).collect();
        for (k, file) in &inherited {
            let _ = self.wfds.insert(((child as u64) << 32) | (k & 0xffff_ffff), *file, 0);
        }
        let _ = self.wcount.insert(child, inherited.len() as u32, 0);
        if !inherited.is_empty() {
            let _ = self.tracked.set(0, 1, 0);
        }
        let held: Vec<(DevIno, PathBuf)> = self.open.iter().filter(|((t, _), _)| *t == parent).map(|((_, f), h)| (*f, h.path.clone())).collect();
        for (file, path) in held {
            let fds = inherited.iter().filter(|(_, f)| *f == file).count() as u32;
            if let Some(h) = self.open.get_mut(&(parent, file)) {
                h.whole = true;
            }
            self.open.insert((child, file), Held { path: path.clone(), whole: true, fds: fds.max(1) });
            let who = Who { pid: child, ppid: parent, ..Self::who(e) };
            let _ = self.tx.send(Input::Seen(Seen { op: Op::Open, paths: vec![path], who, time_ns: self.time(e), settled: false, range: None }));
        }
    }

    /// The bytes written to `file` since it was opened (taken from the kernel's map);
    /// `None` (the whole file) after a truncating open, or where no write was seen (a
    /// shared mapping may have changed it).
    fn written(&mut self, file: &DevIno, whole: bool) -> Option<(u64, u64)> {
        let range = self.dirty.get(file, 0).ok();
        let _ = self.dirty.remove(file);
        match range {
            Some([lo, hi]) if !whole => Some((lo, hi)),
            _ => None,
        }
    }

    fn handle(&mut self, e: &Event) {
        let who = Self::who(e);
        let time_ns = self.time(e);
        let op = Op::from_u32(e.op);
        let set_lock = self.set.clone();
        let set = set_lock.read().unwrap_or_else(|p| p.into_inner());
        let seen = |paths: Vec<PathBuf>, settled: bool, range| Input::Seen(Seen { op, paths, who: who.clone(), time_ns, settled, range });
        let input = match EventKind::from_u32(e.kind) {
            Some(EventKind::Exec) => {
                let path = cstr(&e.path);
                let _ = self.tx.send(Input::Proc { who: who.clone(), exe: Some(path.clone()).filter(|p| p.starts_with('/')) });
                if e.hit & HIT_EXE == 0 {
                    return;
                }
                let exe = std::fs::read_link(format!("/proc/{}/exe", e.tgid)).unwrap_or_else(|_| PathBuf::from(path));
                Input::Exec { who, path: exe }
            }
            Some(EventKind::Exit) => {
                drop(set);
                self.exited(e);
                Input::Exit(e.tgid)
            }
            Some(EventKind::Fork) => {
                drop(set);
                self.forked(e, e.ret as u32);
                return;
            }
            Some(EventKind::Open) if op == Op::Dup => {
                if let Some(h) = self.open.get_mut(&(e.tgid, e.file)) {
                    h.fds += 1;
                }
                return;
            }
            Some(EventKind::Open) | Some(EventKind::Fd) => {
                let Some(path) = locate(&set, &e.dir, &cstr(&e.name), &e.file) else {
                    return;
                };
                if e.kind == EventKind::Fd as u32 {
                    seen(vec![path], true, None)
                } else if e.source == SOURCE_LSM && e.ret != 0 {
                    let _ = self.tx.send(Input::Refused { who, path });
                    return;
                } else if e.source != SOURCE_TRACEPOINT {
                    // An LSM or fentry write-open: counted until the file's release.
                    if self.objects.insert(e.object, (e.tgid, e.file, who.clone())).is_some() {
                        return;
                    }
                    let held = self.open.entry((e.tgid, e.file)).or_insert(Held { path: path.clone(), whole: false, fds: 0 });
                    held.fds += 1;
                    if held.fds > 1 {
                        return;
                    }
                    seen(vec![path], false, None)
                } else {
                    let truncated = e.flags & lucid_common::probe::oflags::TRUNC != 0;
                    let held = self.open.entry((e.tgid, e.file)).or_insert(Held { path: path.clone(), whole: false, fds: 0 });
                    held.fds += 1;
                    held.whole |= truncated;
                    if held.fds > 1 {
                        return;
                    }
                    seen(vec![path], false, None)
                }
            }
            Some(EventKind::Close) if e.source != SOURCE_TRACEPOINT => {
                drop(set);
                // The release of an LSM or fentry write-open: the change is the opener's.
                if let Some((tgid, file, opener)) = self.objects.remove(&e.object) {
                    self.closed_by(opener, time_ns, tgid, &file);
                }
                return;
            }
            Some(EventKind::Close) => {
                drop(set);
                self.closed(e, e.tgid, &e.file);
                return;
            }
            Some(EventKind::Path) if e.source != SOURCE_TRACEPOINT => {
                // LSM and fentry: each side is a name in a directory the kernel resolved.
                let sides = [(e.file, cstr(&e.path)), (e.dir, cstr(&e.path2))];
                let paths: Vec<PathBuf> = sides.iter().filter(|(_, n)| !n.is_empty()).filter_map(|(d, n)| set.path_of(d).map(|p| p.join(n))).collect();
                if paths.is_empty() {
                    Input::Unresolved(format!("{} {:?} {:?} by pid {} ({})", op.name(), sides[0].1, sides[1].1, e.tgid, who.comm))
                } else {
                    seen(paths, true, None)
                }
            }
            Some(EventKind::Path) => {
                let mut paths = Vec::new();
                let first = cstr(&e.path);
                let second = cstr(&e.path2);
                let mut unresolved = false;
                match resolve(&set, e.tgid, e.fd, &e.file, &first) {
                    Some(p) => paths.push(p),
                    None => unresolved = true,
                }
                if !second.is_empty() && e.fd2 != i32::MIN {
                    match resolve(&set, e.tgid, e.fd2, &e.dir, &second) {
                        Some(p) => paths.push(p),
                        None => unresolved = true,
                    }
                }
                if unresolved {
                    Input::Unresolved(format!("{} {first:?} {second:?} by pid {} ({})", op.name(), e.tgid, who.comm))
                } else {
                    seen(paths, true, None)
                }
            }
            None => return,
        };
        let _ = self.tx.send(input);
    }
}

async fn read(mut ring: AsyncFd<RingBuf<MapData>>, lost: PerCpuArray<MapData, u64>, mut reader: Reader) {
    let tx = reader.tx.clone();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut lost_seen = 0u64;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = match guard {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!(error = %e, "the eBPF ring buffer failed; changes are now found by periodic re-verification only");
                        let _ = tx.send(Input::Lost { count: 0, source: "ebpf" });
                        return;
                    }
                };
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    if item.len() < std::mem::size_of::<Event>() {
                        continue;
                    }
                    // SAFETY: the kernel wrote a whole `Event` (checked size); read unaligned.
                    let event: Event = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) };
                    drop(item);
                    reader.handle(&event);
                }
                guard.clear_ready();
            }
            _ = tick.tick() => {
                let total: u64 = lost.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0);
                if total > lost_seen {
                    let _ = tx.send(Input::Lost { count: total - lost_seen, source: "ebpf" });
                    lost_seen = total;
                }
            }
        }
    }
}
