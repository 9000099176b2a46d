//! `/init` of the VM test (`tests/tests/vm.rs`): the build machine's kernel refuses LSM
//! and fentry programs, so they are proven under Debian's stock 6.1 kernel in qemu.
//!
//! It mounts proc, sysfs and a tmpfs, reads the kernel's struct offsets from BTF, loads
//! lucid-ebpf's LSM and fentry programs, watches a directory, and then:
//! * creates, writes (through a dup), truncates (by fd and by path), chmods, chowns,
//!   links, symlinks, renames (within, from outside into it, and of an ancestor),
//!   unlinks and rmdirs there, and checks that both program families reported each of
//!   those with the right names and directories, paired the write-open with the file's
//!   release, and reported nothing done outside;
//! * turns enforcement on for one approved file: a write-open by `/init` (on the
//!   allow-list) succeeds, one by a copy of it (another executable, not on the list)
//!   fails with EPERM, and the LSM program reported the refusal.
//!
//! It prints `LUCID-VM-RESULT: PASS <detail>` or `LUCID-VM-RESULT: FAIL <why>` on the
//! console and powers the VM off. With `lucid.daemon` on the kernel command line it runs
//! the real daemon instead (`daemon.rs`; `init act ...` is its writer), and with
//! `lucid.bench` it measures what each program family costs other files' syscalls
//! (`bench.rs`). With `lucid.attest` (a measured boot: OVMF with swtpm as the TPM) it
//! runs the glibc lucidd on the TPM and the firmware's event log, issues a passport and
//! prints it for the host to verify (`attest.rs`).
//! Run as `init write PATH` it only tries to open PATH
//! for writing and exits 0 (opened), 1 (EPERM) or 2 (another error).

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use aya::maps::{Array, HashMap, MapData, RingBuf};
use aya::programs::{FEntry, Lsm};
use aya::{Btf, EbpfLoader};
use lucid_common::probe::{DevIno, Event, EventKind, Op, FENTRY_PROGRAMS, LSM_PROGRAMS, SOURCE_FENTRY, SOURCE_LSM};

mod attest;
mod bench;
mod daemon;

fn mount(src: &str, target: &str, fstype: &str) -> Result<(), String> {
    let _ = std::fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).map_err(|e| e.to_string());
    let (s, t, f) = (c(src)?, c(target)?, c(fstype)?);
    // SAFETY: valid NUL-terminated strings; no data argument.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        return Err(format!("mount {target}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn key(path: &str) -> Result<DevIno, String> {
    let m = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    Ok(DevIno::from_stat(m.dev(), m.ino()))
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The mounts both modes need.
fn mount_all() -> Result<(), String> {
    mount("proc", "/proc", "proc")?;
    mount("sysfs", "/sys", "sysfs")?;
    mount("tmpfs", "/tmp", "tmpfs")
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

/// lucid-ebpf, loaded with this kernel's struct offsets.
fn load() -> Result<(aya::Ebpf, Btf), String> {
    let offsets = lucid_common::btf::Btf::from_sys().and_then(|b| b.offsets()).map_err(|e| e.to_string())?;
    let object = std::fs::read("/lucid-ebpf.o").map_err(|e| format!("/lucid-ebpf.o: {e}"))?;
    let ebpf = EbpfLoader::new().override_global("OFFSETS", &offsets, true).load(&object).map_err(|e| format!("load: {e}"))?;
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    Ok((ebpf, btf))
}

/// Loads and attaches every program of both families (a hook the kernel lacks is
/// skipped where the family can do without it); returns those skipped.
fn attach_families(ebpf: &mut aya::Ebpf, btf: &Btf) -> Result<Vec<&'static str>, String> {
    let mut skipped = Vec::new();
    for &(name, hook, optional) in LSM_PROGRAMS {
        let p: &mut Lsm = ebpf.program_mut(name).ok_or(format!("{name} missing"))?.try_into().map_err(|e| format!("{name}: {e}"))?;
        match p.load(hook, btf).map_err(|e| format!("loading LSM {hook}: {e}")).and_then(|()| p.attach().map(drop).map_err(|e| format!("attaching LSM {hook}: {e}"))) {
            Ok(()) => {}
            Err(_) if optional => skipped.push(hook),
            Err(e) => return Err(e),
        }
    }
    for &(name, func, optional) in FENTRY_PROGRAMS {
        let p: &mut FEntry = ebpf.program_mut(name).ok_or(format!("{name} missing"))?.try_into().map_err(|e| format!("{name}: {e}"))?;
        match p.load(func, btf).map_err(|e| format!("loading fentry {func}: {e}")).and_then(|()| p.attach().map(drop).map_err(|e| format!("attaching fentry {func}: {e}"))) {
            Ok(()) => {}
            Err(_) if optional => skipped.push(func),
            Err(e) => return Err(e),
        }
    }
    Ok(skipped)
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn run() -> Result<String, String> {
    let release = release();
    for d in ["/tmp/models/w/sub", "/tmp/outside"] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    std::fs::write("/tmp/models/w/approved.bin", b"v1").map_err(|e| e.to_string())?;
    std::fs::write("/tmp/outside/incoming.bin", b"in").map_err(|e| e.to_string())?;
    std::fs::copy("/init", "/tmp/other-writer").map_err(|e| format!("copying /init: {e}"))?;

    let (mut ebpf, btf) = load()?;
    let skipped = attach_families(&mut ebpf, &btf)?;
    let set = |ebpf: &mut aya::Ebpf, map: &str, k: DevIno| -> Result<(), String> {
        let mut m: HashMap<&mut MapData, DevIno, u32> = HashMap::try_from(ebpf.map_mut(map).ok_or(format!("{map} missing"))?).map_err(|e| e.to_string())?;
        m.insert(k, 1, 0).map_err(|e| format!("{map}: {e}"))
    };
    set(&mut ebpf, "WATCHED", key("/tmp/models/w")?)?;
    set(&mut ebpf, "WATCHED", key("/tmp/models/w/sub")?)?;
    set(&mut ebpf, "ANCESTORS", key("/tmp/models")?)?;
    set(&mut ebpf, "PROTECTED", key("/tmp/models/w/approved.bin")?)?;
    set(&mut ebpf, "ALLOW", key("/init")?)?;
    let mut settings: Array<&mut MapData, u32> = Array::try_from(ebpf.map_mut("SETTINGS").ok_or("SETTINGS missing")?).map_err(|e| e.to_string())?;
    settings.set(0, 1, 0).map_err(|e| format!("SETTINGS: {e}"))?;

    // What the programs should see: every kind of change, in the watched directory and
    // (for the rename) from outside into it.
    let w = |name: &str| format!("/tmp/models/w/{name}");
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(w("a.bin")).map_err(io("create"))?;
        std::io::Write::write_all(&mut f, b"new").map_err(io("write"))?;
        let dup = f.try_clone().map_err(io("dup"))?;
        drop(f);
        // Released only with its last fd.
        dup.set_len(1).map_err(io("ftruncate"))?;
    }
    nix_truncate(&w("a.bin"))?;
    std::fs::set_permissions(w("a.bin"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(io("chmod"))?;
    std::os::unix::fs::chown(w("a.bin"), Some(0), Some(0)).map_err(io("chown"))?;
    std::fs::hard_link(w("a.bin"), w("linked.bin")).map_err(io("link"))?;
    std::os::unix::fs::symlink("a.bin", w("sym.bin")).map_err(io("symlink"))?;
    std::fs::rename(w("a.bin"), w("b.bin")).map_err(io("rename"))?;
    std::fs::rename("/tmp/outside/incoming.bin", w("incoming.bin")).map_err(io("rename in"))?;
    std::fs::remove_file(w("b.bin")).map_err(io("unlink"))?;
    std::fs::create_dir(w("sub/gone")).map_err(io("mkdir"))?;
    std::fs::remove_dir(w("sub/gone")).map_err(io("rmdir"))?;
    std::fs::rename("/tmp/models", "/tmp/models-moved").map_err(io("rename an ancestor"))?;
    std::fs::rename("/tmp/models-moved", "/tmp/models").map_err(io("rename back"))?;
    // Outside every watched directory: nothing may be reported.
    std::fs::write("/tmp/outside/quiet.bin", b"x").map_err(io("outside"))?;
    std::fs::remove_file("/tmp/outside/quiet.bin").map_err(io("outside unlink"))?;
    // Enforcement: the allow-listed /init may write the approved file; another
    // executable may not.
    OpenOptions::new().write(true).open(w("approved.bin")).map_err(|e| format!("the allow-listed writer was refused: {e}"))?;
    let status = std::process::Command::new("/tmp/other-writer").args(["write", &w("approved.bin")]).status().map_err(|e| e.to_string())?;
    if status.code() != Some(1) {
        return Err(format!("a writer not on the allow-list got {status:?}, not EPERM"));
    }

    let mut ring = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or("EVENTS missing")?).map_err(|e| e.to_string())?;
    let mut seen = Vec::new();
    while let Some(item) = ring.next() {
        if item.len() >= std::mem::size_of::<Event>() {
            // SAFETY: a whole Event, read unaligned.
            seen.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) });
        }
    }
    let (w_key, sub_key, outside_key) = (key("/tmp/models/w")?, key("/tmp/models/w/sub")?, key("/tmp/outside")?);
    let mut missing = Vec::new();
    for (source, family) in [(SOURCE_LSM, "lsm"), (SOURCE_FENTRY, "fentry")] {
        let ev = |kind: EventKind, ops: &[Op], test: &dyn Fn(&Event) -> bool| {
            seen.iter().any(|e| e.source == source && e.kind == kind as u32 && ops.iter().any(|op| e.op == *op as u32) && test(e))
        };
        let open = seen.iter().find(|e| e.source == source && e.kind == EventKind::Open as u32 && cstr(&e.name) == "a.bin" && e.dir == w_key);
        let checks: [(&str, bool); 12] = [
            ("create", open.is_some()),
            // The release pairs with the open by the file object, after the dup's close.
            ("release", open.is_some_and(|o| ev(EventKind::Close, &[Op::Close], &|e| e.object == o.object && e.object != 0 && e.file == o.file))),
            ("ftruncate", ev(EventKind::Fd, &[Op::Ftruncate, Op::Truncate], &|e| cstr(&e.name) == "a.bin" && e.dir == w_key)),
            ("truncate", ev(EventKind::Fd, &[Op::Truncate], &|e| cstr(&e.name) == "a.bin")),
            ("chmod", ev(EventKind::Fd, &[Op::Chmod], &|e| cstr(&e.name) == "a.bin")),
            ("chown", ev(EventKind::Fd, &[Op::Chown], &|e| cstr(&e.name) == "a.bin")),
            ("link", ev(EventKind::Path, &[Op::Link], &|e| cstr(&e.path) == "a.bin" && cstr(&e.path2) == "linked.bin" && e.dir == w_key)),
            ("symlink", ev(EventKind::Path, &[Op::Symlink], &|e| cstr(&e.path) == "sym.bin" && e.file == w_key)),
            ("rename", ev(EventKind::Path, &[Op::Rename], &|e| cstr(&e.path) == "a.bin" && cstr(&e.path2) == "b.bin" && e.file == w_key && e.dir == w_key)),
            ("rename from outside", ev(EventKind::Path, &[Op::Rename], &|e| e.file == outside_key && cstr(&e.path2) == "incoming.bin" && e.dir == w_key)),
            ("unlink and rmdir", ev(EventKind::Path, &[Op::Unlink], &|e| cstr(&e.path) == "b.bin") && ev(EventKind::Path, &[Op::Rmdir], &|e| cstr(&e.path) == "gone" && e.file == sub_key)),
            ("rename of an ancestor", ev(EventKind::Path, &[Op::Rename], &|e| cstr(&e.path) == "models" && cstr(&e.path2) == "models-moved")),
        ];
        for (what, ok) in checks {
            if !ok {
                missing.push(format!("{family} {what}"));
            }
        }
        if seen.iter().any(|e| e.source == source && (cstr(&e.name) == "quiet.bin" || cstr(&e.path) == "quiet.bin")) {
            missing.push(format!("{family}: a change outside the watched directory was reported"));
        }
    }
    let refused = seen.iter().any(|e| e.source == SOURCE_LSM && e.ret == -1 && cstr(&e.name) == "approved.bin");
    if !refused {
        missing.push("the LSM refusal event".into());
    }
    if !missing.is_empty() {
        return Err(format!("kernel {release}: not seen: {} ({} events)", missing.join(", "), seen.len()));
    }
    let skipped = if skipped.is_empty() { String::new() } else { format!(" (hooks not on this kernel: {})", skipped.join(", ")) };
    Ok(format!(
        "kernel {release}: LSM and fentry saw create, release, ftruncate, truncate, chmod, chown, link, symlink, rename (within, from outside, of an ancestor), unlink and rmdir, and nothing outside{skipped}; LSM refused a write by an executable not on the allow-list (EPERM) and allowed /init; {} events",
        seen.len()
    ))
}

/// `truncate(2)` by path (std has only `set_len` on an open file).
fn nix_truncate(path: &str) -> Result<(), String> {
    let c = CString::new(path).map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::truncate(c.as_ptr(), 0) } != 0 {
        return Err(format!("truncate {path}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("write") {
        let code = match args.get(2).map(|p| OpenOptions::new().write(true).open(Path::new(p))) {
            Some(Ok(_)) => 0,
            Some(Err(e)) if e.raw_os_error() == Some(libc::EPERM) => 1,
            _ => 2,
        };
        std::process::exit(code);
    }
    if args.get(1).map(String::as_str) == Some("act") {
        match daemon::act(&args[2..]) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1)
            }
        }
    }
    let mounted = mount_all();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.split_whitespace().any(|w| w == "lucid.daemon") {
        match mounted.and_then(|()| daemon::run()) {
            Ok(detail) => println!("LUCID-VM-RESULT: PASS {detail}"),
            Err(why) => println!("LUCID-VM-RESULT: FAIL {why}"),
        }
    } else if cmdline.split_whitespace().any(|w| w == "lucid.attest") {
        match mounted.and_then(|()| attest::run()) {
            Ok(detail) => println!("LUCID-VM-RESULT: PASS {detail}"),
            Err(why) => println!("LUCID-VM-RESULT: FAIL {why}"),
        }
    } else if cmdline.split_whitespace().any(|w| w == "lucid.bench") {
        match mounted.and_then(|()| bench::run()) {
            Ok(json) => println!("LUCID-VM-BENCH: {json}"),
            Err(why) => println!("LUCID-VM-BENCH: FAIL {why}"),
        }
    } else {
        match mounted.and_then(|()| run()) {
            Ok(detail) => println!("LUCID-VM-RESULT: PASS {detail}"),
            Err(why) => println!("LUCID-VM-RESULT: FAIL {why}"),
        }
    }
    // SAFETY: flush and power off; this process is the VM's init.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}
