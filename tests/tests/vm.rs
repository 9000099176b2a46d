//! The LSM and fentry variants of lucid-ebpf, proven in a VM: this machine's kernel
//! refuses those program types (lockdown), so Debian's stock 6.1 kernel boots under qemu
//! (TCG) with `lucid-vm-init` (a static musl binary, `tests/vm-init`) as `/init` and the
//! eBPF object lucidd embeds beside it. The init loads the programs, makes changes in a
//! watched directory, checks what they saw and that enforcement refuses a writer not on
//! the allow-list with EPERM, prints one result line and powers off. qemu exits 0 either
//! way, so the result line is what is checked.
//!
//! Needs: `qemu-system-x86_64`, the kernel (`LUCID_VM_KERNEL`, or `target/vm/vmlinuz-*`
//! from `scripts/vm-kernel.sh`) and the init (`cargo build --release --target
//! x86_64-unknown-linux-musl -p lucid-vm-init`). scripts/test.sh provides all three and
//! sets `LUCID_REQUIRE_VM=1`; elsewhere a missing piece skips the test, saying which.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lucid_tests::{repo_root, skip};

/// A cpio "newc" archive, as the kernel unpacks an initramfs.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [self.ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        self.bytes.extend_from_slice(b"070701");
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.bytes
    }
}

fn kernel() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("LUCID_VM_KERNEL") {
        return Some(PathBuf::from(k));
    }
    let dir = repo_root().join("target/vm");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))).collect();
    found.sort();
    found.pop()
}

fn missing(what: &str) {
    if std::env::var_os("LUCID_REQUIRE_VM").is_some_and(|v| v == "1") {
        panic!("the VM test cannot run: {what}");
    }
    skip("lsm_and_fentry_programs_see_changes_and_enforce_in_a_vm", what);
}

#[test]
fn lsm_and_fentry_programs_see_changes_and_enforce_in_a_vm() {
    let qemu = "qemu-system-x86_64";
    if Command::new(qemu).arg("--version").output().is_err() {
        return missing("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    }
    let Some(kernel) = kernel() else {
        return missing("no kernel: run scripts/vm-kernel.sh or set LUCID_VM_KERNEL");
    };
    let init = repo_root().join("target/x86_64-unknown-linux-musl/release/lucid-vm-init");
    if !init.exists() {
        return missing("no init: cargo build --release --target x86_64-unknown-linux-musl -p lucid-vm-init");
    }
    let object = lucidd::integrity::watch::ebpf::OBJECT;
    assert!(!object.is_empty(), "lucidd was built without its eBPF programs");

    let mut cpio = Cpio::default();
    for dir in ["dev", "proc", "sys", "tmp"] {
        cpio.entry(dir, 0o040755, (0, 0), &[]);
    }
    cpio.entry("dev/console", 0o020600, (5, 1), &[]);
    cpio.entry("init", 0o100755, (0, 0), &std::fs::read(&init).unwrap());
    cpio.entry("lucid-ebpf.o", 0o100644, (0, 0), object);
    let tmp = tempfile::tempdir().unwrap();
    let initrd = tmp.path().join("initramfs.cpio");
    std::fs::write(&initrd, cpio.finish()).unwrap();

    let started = Instant::now();
    let mut child = Command::new(qemu)
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-nographic", "-no-reboot", "-kernel"])
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting qemu");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let deadline = started + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let console = reader.join().unwrap_or_default();
    let result = console.lines().find(|l| l.contains("LUCID-VM-RESULT:")).unwrap_or("no result line").to_string();
    eprintln!("VM ({}, {:.1} s): {result}", Path::new(&kernel).display(), started.elapsed().as_secs_f64());
    assert!(result.contains("LUCID-VM-RESULT: PASS"), "{result}\nconsole:\n{console}");
}
