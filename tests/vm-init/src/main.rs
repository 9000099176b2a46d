//! `/init` of the VM test (`tests/tests/vm.rs`): the build machine's kernel refuses LSM
//! and fentry programs, so they are proven under Debian's stock 6.1 kernel in qemu.
//!
//! It mounts proc, sysfs and a tmpfs, reads the kernel's struct offsets from BTF, loads
//! lucid-ebpf's LSM and fentry programs, watches a directory, and then:
//! * creates, renames and unlinks a file there, and checks that both program families
//!   reported each of those (with the right names);
//! * turns enforcement on for one approved file: a write-open by `/init` (on the
//!   allow-list) succeeds, one by a copy of it (another executable, not on the list)
//!   fails with EPERM, and the LSM program reported the refusal.
//!
//! It prints `LUCID-VM-RESULT: PASS <detail>` or `LUCID-VM-RESULT: FAIL <why>` on the
//! console and powers the VM off. Run as `init write PATH` it only tries to open PATH
//! for writing and exits 0 (opened), 1 (EPERM) or 2 (another error).

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use aya::maps::{Array, HashMap, MapData, RingBuf};
use aya::programs::{FEntry, Lsm};
use aya::{Btf, EbpfLoader};
use lucid_common::probe::{DevIno, Event, EventKind, Op, SOURCE_FENTRY, SOURCE_LSM};

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

fn run() -> Result<String, String> {
    mount("proc", "/proc", "proc")?;
    mount("sysfs", "/sys", "sysfs")?;
    mount("tmpfs", "/tmp", "tmpfs")?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    std::fs::create_dir_all("/tmp/w").map_err(|e| e.to_string())?;
    std::fs::write("/tmp/w/approved.bin", b"v1").map_err(|e| e.to_string())?;
    std::fs::copy("/init", "/tmp/other-writer").map_err(|e| format!("copying /init: {e}"))?;

    let offsets = lucid_common::btf::Btf::from_sys().and_then(|b| b.offsets()).map_err(|e| e.to_string())?;
    let object = std::fs::read("/lucid-ebpf.o").map_err(|e| format!("/lucid-ebpf.o: {e}"))?;
    let mut ebpf = EbpfLoader::new().override_global("OFFSETS", &offsets, true).load(&object).map_err(|e| format!("load: {e}"))?;
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    for (name, hook) in [("lsm_file_open", "file_open"), ("lsm_path_rename", "path_rename"), ("lsm_path_unlink", "path_unlink")] {
        let p: &mut Lsm = ebpf.program_mut(name).ok_or(format!("{name} missing"))?.try_into().map_err(|e| format!("{name}: {e}"))?;
        p.load(hook, &btf).map_err(|e| format!("loading LSM {hook}: {e}"))?;
        p.attach().map_err(|e| format!("attaching LSM {hook}: {e}"))?;
    }
    for (name, func) in [("fentry_file_open", "security_file_open"), ("fentry_path_rename", "security_path_rename"), ("fentry_path_unlink", "security_path_unlink")] {
        let p: &mut FEntry = ebpf.program_mut(name).ok_or(format!("{name} missing"))?.try_into().map_err(|e| format!("{name}: {e}"))?;
        p.load(func, &btf).map_err(|e| format!("loading fentry {func}: {e}"))?;
        p.attach().map_err(|e| format!("attaching fentry {func}: {e}"))?;
    }
    let set = |ebpf: &mut aya::Ebpf, map: &str, k: DevIno| -> Result<(), String> {
        let mut m: HashMap<&mut MapData, DevIno, u32> = HashMap::try_from(ebpf.map_mut(map).ok_or(format!("{map} missing"))?).map_err(|e| e.to_string())?;
        m.insert(k, 1, 0).map_err(|e| format!("{map}: {e}"))
    };
    set(&mut ebpf, "WATCHED", key("/tmp/w")?)?;
    set(&mut ebpf, "PROTECTED", key("/tmp/w/approved.bin")?)?;
    set(&mut ebpf, "ALLOW", key("/init")?)?;
    let mut settings: Array<&mut MapData, u32> = Array::try_from(ebpf.map_mut("SETTINGS").ok_or("SETTINGS missing")?).map_err(|e| e.to_string())?;
    settings.set(0, 1, 0).map_err(|e| format!("SETTINGS: {e}"))?;

    // What the programs should see.
    std::fs::write("/tmp/w/a.bin", b"new").map_err(|e| e.to_string())?;
    std::fs::rename("/tmp/w/a.bin", "/tmp/w/b.bin").map_err(|e| e.to_string())?;
    std::fs::remove_file("/tmp/w/b.bin").map_err(|e| e.to_string())?;
    // Enforcement: the allow-listed /init may write the approved file; another
    // executable may not.
    OpenOptions::new().write(true).open("/tmp/w/approved.bin").map_err(|e| format!("the allow-listed writer was refused: {e}"))?;
    let status = std::process::Command::new("/tmp/other-writer").args(["write", "/tmp/w/approved.bin"]).status().map_err(|e| e.to_string())?;
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
    let has = |source: u32, kind: EventKind, op: Op, name: &str, other: &str| {
        seen.iter().any(|e| {
            e.source == source
                && e.kind == kind as u32
                && e.op == op as u32
                && (cstr(&e.name) == name || cstr(&e.path) == name)
                && (other.is_empty() || cstr(&e.path2) == other)
        })
    };
    let mut missing = Vec::new();
    for (source, family) in [(SOURCE_LSM, "lsm"), (SOURCE_FENTRY, "fentry")] {
        for (kind, op, name, other, what) in [
            (EventKind::Open, Op::Open, "a.bin", "", "create"),
            (EventKind::Path, Op::Rename, "a.bin", "b.bin", "rename"),
            (EventKind::Path, Op::Unlink, "b.bin", "", "unlink"),
        ] {
            if !has(source, kind, op, name, other) {
                missing.push(format!("{family} {what}"));
            }
        }
    }
    let refused = seen.iter().any(|e| e.source == SOURCE_LSM && e.ret == -1 && cstr(&e.name) == "approved.bin");
    if !refused {
        missing.push("the LSM refusal event".into());
    }
    if !missing.is_empty() {
        return Err(format!("kernel {release}: not seen: {} ({} events)", missing.join(", "), seen.len()));
    }
    Ok(format!("kernel {release}: LSM and fentry saw create, rename and unlink; LSM refused a write by an executable not on the allow-list (EPERM) and allowed /init; {} events", seen.len()))
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
    match run() {
        Ok(detail) => println!("LUCID-VM-RESULT: PASS {detail}"),
        Err(why) => println!("LUCID-VM-RESULT: FAIL {why}"),
    }
    // SAFETY: flush and power off; this process is the VM's init.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}
