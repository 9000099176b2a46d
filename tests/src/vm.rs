//! Booting Debian's stock kernel under qemu (TCG) with `lucid-vm-init` as `/init` and the
//! eBPF object lucidd embeds beside it: the build machines' kernel refuses LSM and
//! fentry programs, so the VM test proves them there and the VM bench measures them.
//!
//! Needs `qemu-system-x86_64`, the kernel (`LUCID_VM_KERNEL`, or `target/vm/vmlinuz-*`
//! from `scripts/vm-kernel.sh`) and the init (`cargo build --release --target
//! x86_64-unknown-linux-musl -p lucid-vm-init`); [`Vm::find`] says which is missing.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::repo_root;

const QEMU: &str = "qemu-system-x86_64";

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

/// What one boot needs, found.
pub struct Vm {
    /// The kernel image booted.
    pub kernel: PathBuf,
    init: PathBuf,
}

/// What one boot printed.
pub struct Boot {
    /// Everything on the serial console.
    pub console: String,
    /// How long qemu ran.
    pub elapsed: Duration,
}

impl Boot {
    /// The rest of the first console line carrying `marker` (the init's result line).
    pub fn line(&self, marker: &str) -> Option<&str> {
        self.console.lines().find_map(|l| l.find(marker).map(|i| l[i + marker.len()..].trim()))
    }
}

impl Vm {
    /// The kernel and init, or what is missing (with how to provide it).
    pub fn find() -> Result<Vm, String> {
        if Command::new(QEMU).arg("--version").output().is_err() {
            return Err("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into());
        }
        let Some(kernel) = kernel() else {
            return Err("no kernel: run scripts/vm-kernel.sh or set LUCID_VM_KERNEL".into());
        };
        let init = repo_root().join("target/x86_64-unknown-linux-musl/release/lucid-vm-init");
        if !init.exists() {
            return Err("no init: cargo build --release --target x86_64-unknown-linux-musl -p lucid-vm-init".into());
        }
        Ok(Vm { kernel, init })
    }

    /// Boots with `append` added to the kernel command line (and `qemu_args` to qemu's)
    /// and waits (at most `limit`) for the init to power the VM off. qemu exits 0
    /// whatever the init found, so callers read the init's result line from the console.
    pub fn boot(&self, append: &str, qemu_args: &[&str], limit: Duration) -> Result<Boot, String> {
        self.boot_with(append, qemu_args, &[], limit)
    }

    /// The static `lucidd` and `lucidctl` (for the init's daemon mode), or how to build
    /// them.
    pub fn daemon_binaries() -> Result<Vec<(&'static str, PathBuf)>, String> {
        let dir = repo_root().join("target/x86_64-unknown-linux-musl/release");
        let found: Vec<(&str, PathBuf)> = ["lucidd", "lucidctl"].into_iter().map(|b| (b, dir.join(b))).collect();
        if found.iter().any(|(_, p)| !p.exists()) {
            return Err("no static lucidd and lucidctl: cargo build --release --target x86_64-unknown-linux-musl -p lucidd -p lucidctl".into());
        }
        Ok(found)
    }

    /// [`Vm::boot`] with more files in the VM's root (name, file on this machine).
    pub fn boot_with(&self, append: &str, qemu_args: &[&str], files: &[(&str, PathBuf)], limit: Duration) -> Result<Boot, String> {
        let object = lucidd::integrity::watch::ebpf::OBJECT;
        if object.is_empty() {
            return Err("lucidd was built without its eBPF programs".into());
        }
        let init = std::fs::read(&self.init).map_err(|e| format!("{}: {e}", self.init.display()))?;
        let mut cpio = Cpio::default();
        for dir in ["dev", "proc", "sys", "tmp"] {
            cpio.entry(dir, 0o040755, (0, 0), &[]);
        }
        cpio.entry("dev/console", 0o020600, (5, 1), &[]);
        cpio.entry("init", 0o100755, (0, 0), &init);
        cpio.entry("lucid-ebpf.o", 0o100644, (0, 0), object);
        for (name, path) in files {
            let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            cpio.entry(name, 0o100755, (0, 0), &data);
        }
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let initrd = tmp.path().join("initramfs.cpio");
        std::fs::write(&initrd, cpio.finish()).map_err(|e| e.to_string())?;

        let started = Instant::now();
        let mut child = Command::new(QEMU)
            .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-nographic", "-no-reboot", "-kernel"])
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(format!("console=ttyS0 panic=-1 quiet {append}"))
            .args(qemu_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting qemu: {e}"))?;
        let mut out = child.stdout.take().ok_or("qemu's stdout")?;
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let deadline = started + limit;
        while child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let console = reader.join().unwrap_or_default();
        Ok(Boot { console, elapsed: started.elapsed() })
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
