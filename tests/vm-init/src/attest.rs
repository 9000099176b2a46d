//! The attest mode of the VM init (`lucid.attest` on the kernel command line): the VM
//! booted under OVMF with swtpm as its TPM, so the firmware measured the boot into PCRs
//! 0-7 and the kernel exposes the event log in securityfs. The real lucidd (the glibc
//! build, with its shared libraries beside it) runs on the real `/dev/tpmrm0` and that
//! event log, enrols its AK, issues an anchored passport, and this prints the passport
//! envelope, the AK enrolment and the event log (`LUCID-VM-FILE: NAME BASE64`, one line
//! each) for the host to verify offline, with the kernel's own view of PCRs 0-7 in the
//! result line.

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::{daemon, mount};

const EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
const STATE: &str = "/tmp/state";
const CONFIG: &str = "apiVersion: lucid.io/v1alpha1
kind: LucidEnvironment
metadata:
  name: vm-attest
spec:
  agents:
    - name: dev-agent
      model:
        id: dev-model
      profile: soc2
  attestation:
    tpm: required
    tcti: device:/dev/tpmrm0
    eventLog: /sys/kernel/security/tpm0/binary_bios_measurements
    passportIntervalMinutes: 60
    anchorEveryCheckpoints: 100000
";

/// `lucidctl --dev-state STATE ARGS`: its stdout, raw (`passport show --envelope` prints
/// the envelope itself, not JSON about it).
fn ctl_raw(args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("/lucidctl").arg("--dev-state").arg(STATE).args(args).output().map_err(|e| format!("lucidctl: {e}"))?;
    if !out.status.success() {
        return Err(format!("lucidctl {args:?}: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(out.stdout)
}

/// One file for the host, on one console line.
fn emit(name: &str, bytes: &[u8]) {
    println!("LUCID-VM-FILE: {name} {}", B64.encode(bytes));
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

/// The kernel's view of the boot PCRs (SHA-256 bank): `0=hex,1=hex,...,7=hex`.
fn boot_pcrs() -> Result<String, String> {
    let mut pcrs = Vec::new();
    for i in 0..8 {
        let path = format!("/sys/class/tpm/tpm0/pcr-sha256/{i}");
        let value = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        pcrs.push(format!("{i}={}", value.trim().to_lowercase()));
    }
    Ok(pcrs.join(","))
}

/// The steps after lucidd is up; the caller stops it.
fn issue() -> Result<String, String> {
    ctl_raw(&["attest", "enroll", "-f", "/tmp/enroll.json"])?;
    ctl_raw(&["annotate", "-m", "measured boot in a VM"])?;
    let issued = daemon::ctl(&["passport", "issue"])?;
    if issued["anchored"] != true {
        return Err(format!("the passport is not anchored: {issued}; lucidd: {}", daemon::log_tail()));
    }
    let n = issued["number"].as_u64().ok_or_else(|| format!("no passport number in {issued}"))?.to_string();
    emit("passport.json", &ctl_raw(&["passport", "show", &n, "--envelope"])?);
    emit("enroll.json", &read("/tmp/enroll.json")?);
    emit("binary_bios_measurements", &read(EVENT_LOG)?);
    Ok(format!("passport {n} issued and anchored; pcrs {}", boot_pcrs()?))
}

/// Runs lucidd on the measured boot's TPM and returns the result line's detail.
pub fn run() -> Result<String, String> {
    mount("devtmpfs", "/dev", "devtmpfs")?;
    // The kernel does not mount securityfs by itself; the event log lives there.
    mount("securityfs", "/sys/kernel/security", "securityfs")?;
    daemon::lo_up()?;
    for p in ["/dev/tpmrm0", EVENT_LOG] {
        if !Path::new(p).exists() {
            return Err(format!("{p} is missing: no TPM, or firmware that kept no event log"));
        }
    }
    std::fs::write("/tmp/lucid.yaml", CONFIG).map_err(|e| format!("/tmp/lucid.yaml: {e}"))?;
    let mut lucidd = daemon::start(&["--config", "/tmp/lucid.yaml"])?;
    let result = issue();
    let _ = lucidd.kill();
    let _ = lucidd.wait();
    result
}
