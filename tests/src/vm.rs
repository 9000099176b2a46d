//! Booting Debian's stock kernel under qemu (TCG) with `lucid-vm-init` as `/init` and the
//! eBPF object lucidd embeds beside it: the build machines' kernel refuses LSM and
//! fentry programs, so the VM test proves them there and the VM bench measures them.
//!
//! Needs `qemu-system-x86_64`, the kernel (`LUCID_VM_KERNEL`, or `target/vm/vmlinuz-*`
//! from `scripts/vm-kernel.sh`) and the init (`cargo build --release --target
//! x86_64-unknown-linux-musl -p lucid-vm-init`); [`Vm::find`] says which is missing.
//!
//! A measured boot ([`Vm::measured_boot`]) boots the same kernel under OVMF (UEFI, with
//! or without Secure Boot) with a fresh swtpm as the VM's TPM, so that the firmware
//! measures the boot into PCRs 0-7 and the kernel exposes the event log; the glibc lucidd
//! and lucidctl of the tests run there ([`Vm::dynamic_daemon_files`]).
//! [`measured_boot_missing`] says what else that needs.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::repo_root;

const QEMU: &str = "qemu-system-x86_64";

/// OVMF without Secure Boot, and its variable store (Debian's `ovmf`).
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF with Secure Boot (needs SMM), and variables with Debian's snakeoil key enrolled in
/// PK, KEK and db.
const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_VARS_SNAKEOIL: &str = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
/// The snakeoil key (encrypted; its password is "snakeoil", says the package's
/// README.Debian) and certificate, to sign the kernel with.
const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
/// The TCTI libtss2-tctildr dlopen()s for `device:` (not among ldd's libraries).
const TCTI_DEVICE: [&str; 2] = ["/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0", "/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0"];

/// A cpio "newc" archive, as the kernel unpacks an initramfs.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    ino: u32,
    /// The directories written so far.
    dirs: BTreeSet<String>,
}

impl Cpio {
    /// A directory entry, once.
    fn dir(&mut self, name: &str) {
        if self.dirs.insert(name.to_string()) {
            self.entry(name, 0o040755, (0, 0), &[]);
        }
    }

    /// A regular file, after an entry for each parent directory not written yet (the
    /// kernel's unpacker creates none).
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        let name = name.trim_start_matches('/');
        for (i, _) in name.match_indices('/') {
            self.dir(&name[..i]);
        }
        self.entry(name, mode, (0, 0), data);
    }

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
    /// What qemu itself printed on stderr (why it did not start, for one).
    pub qemu_stderr: String,
    /// How long qemu ran.
    pub elapsed: Duration,
}

impl Boot {
    /// The rest of the first console line carrying `marker` (the init's result line).
    pub fn line(&self, marker: &str) -> Option<&str> {
        self.console.lines().find_map(|l| l.find(marker).map(|i| l[i + marker.len()..].trim()))
    }

    /// A file the init printed as one `LUCID-VM-FILE: NAME BASE64` line.
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        let marker = format!("LUCID-VM-FILE: {name} ");
        let b64 = self.line(&marker)?;
        B64.decode(b64).ok()
    }
}

/// The firmware of a measured boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// OVMF, Secure Boot off.
    Ovmf,
    /// OVMF with Secure Boot, Debian's snakeoil key enrolled (PK, KEK and db) and the
    /// kernel signed with it.
    OvmfSecureBoot,
}

/// What a measured boot needs beyond [`Vm::find`] (OVMF, sbsign, openssl, strip, ldd,
/// the device TCTI and swtpm), or `None` when nothing is missing.
pub fn measured_boot_missing() -> Option<String> {
    for f in [OVMF_CODE, OVMF_VARS, OVMF_CODE_SECBOOT, OVMF_VARS_SNAKEOIL, SNAKEOIL_KEY, SNAKEOIL_CERT] {
        if !Path::new(f).exists() {
            return Some(format!("{f} is missing (apt-get install ovmf)"));
        }
    }
    for (tool, arg, package) in [("sbsign", "--help", "sbsigntool"), ("openssl", "version", "openssl"), ("strip", "--version", "binutils"), ("ldd", "--version", "libc-bin")] {
        if Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return Some(format!("{tool} is not installed (apt-get install {package})"));
        }
    }
    if tcti_device().is_none() {
        return Some("libtss2-tcti-device.so.0 is missing (apt-get install libtss2-tcti-device0)".into());
    }
    crate::tpm::missing()
}

fn tcti_device() -> Option<PathBuf> {
    TCTI_DEVICE.iter().map(|p| PathBuf::from(*p)).find(|p| p.exists())
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
        self.boot_with::<&str>(append, qemu_args, &[], limit)
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

    /// The glibc `lucidd` and `lucidctl` the tests run (target/debug), stripped into
    /// `dir`, with every shared library they load (the loader included) and the TCTI that
    /// libtss2-tctildr dlopen()s for `device:`: (name in the VM's root, file here). The
    /// static init execs them as they are; ld.so finds the libraries in
    /// /lib/x86_64-linux-gnu by default.
    pub fn dynamic_daemon_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        let mut libs: BTreeSet<PathBuf> = BTreeSet::new();
        for b in ["lucidd", "lucidctl"] {
            let src = crate::bin(b);
            let dst = dir.join(b);
            let out = Command::new("strip").arg("-o").arg(&dst).arg(&src).output().map_err(|e| format!("strip (binutils): {e}"))?;
            if !out.status.success() {
                return Err(format!("strip {} failed ({}): {}", src.display(), out.status, String::from_utf8_lossy(&out.stderr).trim()));
            }
            libs.extend(ldd(&src)?);
            files.push((b.to_string(), dst));
        }
        let tcti = tcti_device().ok_or("libtss2-tcti-device.so.0 is missing (apt-get install libtss2-tcti-device0)")?;
        libs.extend(ldd(&tcti)?);
        libs.insert(tcti);
        for lib in libs {
            let name = lib.to_string_lossy().trim_start_matches('/').to_string();
            files.push((name, lib));
        }
        Ok(files)
    }

    /// [`Vm::boot`] with more files in the VM's root (name, file on this machine).
    pub fn boot_with<N: AsRef<str>>(&self, append: &str, qemu_args: &[&str], files: &[(N, PathBuf)], limit: Duration) -> Result<Boot, String> {
        let cpio = self.initramfs(true, files)?;
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let initrd = tmp.path().join("initramfs.cpio");
        std::fs::write(&initrd, cpio).map_err(|e| e.to_string())?;
        run_qemu(&self.kernel, &initrd, append, qemu_args, limit)
    }

    /// A measured boot: OVMF (`firmware`) with a fresh swtpm as the VM's TPM (tpm-tis),
    /// so the firmware measures the boot and the kernel exposes the event log, and the
    /// init in its `lucid.attest` mode with `files` (see [`Vm::dynamic_daemon_files`])
    /// beside it, in a zstd-compressed initramfs (the EFI stub hashes the initrd in
    /// software under TCG, so its size is time). Waits at most `limit`; as [`Vm::boot`],
    /// the init's result line says what happened.
    pub fn measured_boot<N: AsRef<str>>(&self, firmware: Firmware, files: &[(N, PathBuf)], limit: Duration) -> Result<Boot, String> {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        // Absolute paths for swtpm (a relative --tpmstate fails CMD_INIT) and qemu.
        let dir = tmp.path().canonicalize().map_err(|e| format!("{}: {e}", tmp.path().display()))?;
        let secure = firmware == Firmware::OvmfSecureBoot;
        let (code, vars) = if secure { (OVMF_CODE_SECBOOT, OVMF_VARS_SNAKEOIL) } else { (OVMF_CODE, OVMF_VARS) };
        // OVMF writes its variables: a copy per boot.
        let vars_copy = dir.join("vars.fd");
        std::fs::copy(vars, &vars_copy).map_err(|e| format!("copying {vars}: {e}"))?;
        let kernel = if secure { sign_snakeoil(&self.kernel, &dir)? } else { self.kernel.clone() };
        let cpio = self.initramfs(false, files)?;
        let initrd = dir.join("initramfs.cpio.zst");
        let compressed = zstd::encode_all(&cpio[..], 3).map_err(|e| format!("compressing the initramfs: {e}"))?;
        drop(cpio);
        std::fs::write(&initrd, compressed).map_err(|e| format!("{}: {e}", initrd.display()))?;

        let tpm = VmTpm::start(&dir.join("tpm"))?;
        let machine = if secure { "q35,smm=on" } else { "q35" };
        let mut args: Vec<String> = vec!["-machine".to_string(), machine.to_string()];
        if secure {
            // Secure Boot's variables live in SMM-protected flash.
            args.push("-global".to_string());
            args.push("driver=cfi.pflash01,property=secure,value=on".to_string());
        }
        for (option, value) in [
            ("-drive", format!("if=pflash,format=raw,unit=0,file={code},readonly=on")),
            ("-drive", format!("if=pflash,format=raw,unit=1,file={}", vars_copy.display())),
            ("-chardev", format!("socket,id=chrtpm,path={}", tpm.sock.display())),
            ("-tpmdev", "emulator,id=tpm0,chardev=chrtpm".to_string()),
            ("-device", "tpm-tis,tpmdev=tpm0".to_string()),
        ] {
            args.push(option.to_string());
            args.push(value);
        }
        let boot = run_qemu(&kernel, &initrd, "lucid.attest", &args, limit);
        // swtpm ends by itself when qemu closes the connection (--terminate); killed
        // here in any case, before its state directory goes.
        drop(tpm);
        boot
    }

    /// The initramfs (a newc cpio, uncompressed): the init, the eBPF object lucidd embeds
    /// (with `ebpf`) and `files` (name in the VM's root, file here), each after its
    /// parent directories.
    fn initramfs<N: AsRef<str>>(&self, ebpf: bool, files: &[(N, PathBuf)]) -> Result<Vec<u8>, String> {
        let object = lucidd::integrity::watch::ebpf::OBJECT;
        if ebpf && object.is_empty() {
            return Err("lucidd was built without its eBPF programs".into());
        }
        let init = std::fs::read(&self.init).map_err(|e| format!("{}: {e}", self.init.display()))?;
        let mut cpio = Cpio::default();
        for dir in ["dev", "proc", "sys", "tmp"] {
            cpio.dir(dir);
        }
        cpio.entry("dev/console", 0o020600, (5, 1), &[]);
        cpio.entry("init", 0o100755, (0, 0), &init);
        if ebpf {
            cpio.entry("lucid-ebpf.o", 0o100644, (0, 0), object);
        }
        for (name, path) in files {
            let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            cpio.file(name.as_ref(), 0o100755, &data);
        }
        Ok(cpio.finish())
    }
}

/// Runs qemu (TCG) on `kernel` and `initrd` with `append` added to the kernel command line
/// and `qemu_args` to qemu's, and waits (at most `limit`) for it to exit.
fn run_qemu<S: AsRef<OsStr>>(kernel: &Path, initrd: &Path, append: &str, qemu_args: &[S], limit: Duration) -> Result<Boot, String> {
    let started = Instant::now();
    let mut child = Command::new(QEMU)
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-nographic", "-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=-1 quiet {append}"))
        .args(qemu_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting qemu: {e}"))?;
    let out = child.stdout.take().ok_or("qemu's stdout")?;
    let err = child.stderr.take().ok_or("qemu's stderr")?;
    let (reader, err_reader) = (drain(out), drain(err));
    let deadline = started + limit;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let console = reader.join().unwrap_or_default();
    let qemu_stderr = err_reader.join().unwrap_or_default();
    Ok(Boot { console, qemu_stderr, elapsed: started.elapsed() })
}

/// Reads `pipe` to its end on a thread of its own.
fn drain<R: Read + Send + 'static>(mut pipe: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        // Firmware may print bytes that are not UTF-8; keep the rest.
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The absolute paths `ldd` resolves for `path` (the loader included; not the vDSO).
fn ldd(path: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd").arg(path).output().map_err(|e| format!("ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not found") {
        return Err(format!("ldd {} ({}): {}{}", path.display(), out.status, text.trim(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(text
        .lines()
        .filter_map(|l| l.split("=>").last()?.split_whitespace().next().filter(|p| p.starts_with('/')).map(PathBuf::from))
        .collect())
}

/// `kernel` signed with Debian's snakeoil key into `dir`, for OVMF's Secure Boot.
fn sign_snakeoil(kernel: &Path, dir: &Path) -> Result<PathBuf, String> {
    let key = dir.join("snakeoil.key");
    let signed = dir.join("vmlinuz.signed");
    let run = |what: &str, c: &mut Command| -> Result<(), String> {
        let o = c.output().map_err(|e| format!("{what}: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("{what} failed ({}): {}{}", o.status, String::from_utf8_lossy(&o.stdout).trim(), String::from_utf8_lossy(&o.stderr).trim()))
        }
    };
    // sbsign cannot read the encrypted key: decrypt it first.
    run("openssl rsa", Command::new("openssl").args(["rsa", "-in", SNAKEOIL_KEY, "-passin", "pass:snakeoil", "-out"]).arg(&key))?;
    run("sbsign", Command::new("sbsign").arg("--key").arg(&key).args(["--cert", SNAKEOIL_CERT, "--output"]).arg(&signed).arg(kernel))?;
    Ok(signed)
}

/// A swtpm serving one measured boot on a unix control socket. QEMU's tpm-emulator
/// backend connects there and sends CMD_INIT, and OVMF sends TPM2_Startup, so no
/// `--flags`; with `--terminate` it ends when QEMU closes the connection, and it is
/// killed on drop in any case.
struct VmTpm {
    /// The control socket (for qemu's `-chardev socket,path=`).
    sock: PathBuf,
    child: Child,
}

impl VmTpm {
    /// Manufactures a TPM in `dir` (an absolute path; EK and platform certificates from
    /// swtpm's local CA) and starts it.
    fn start(dir: &Path) -> Result<VmTpm, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out = Command::new("swtpm_setup")
            .args(["--tpm2", "--tpmstate"])
            .arg(dir)
            .args(["--create-ek-cert", "--create-platform-cert", "--overwrite"])
            .output()
            .map_err(|e| format!("swtpm_setup: {e}"))?;
        if !out.status.success() {
            return Err(format!("swtpm_setup failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
        }
        let sock = dir.join("sock");
        let mut child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", dir.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", sock.display()))
            .arg("--terminate")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning swtpm: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("swtpm exited ({status}) before creating {}", sock.display()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("swtpm did not create {} in 10 s", sock.display()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(VmTpm { sock, child })
    }
}

impl Drop for VmTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
