//! A measured boot, end to end: Debian's stock kernel boots under OVMF (UEFI) in qemu
//! with a fresh swtpm as the VM's TPM, so the firmware measures the boot into PCRs 0-7
//! and the guest kernel exposes the event log. There the init (`tests/vm-init`, in its
//! `lucid.attest` mode) runs the real lucidd (the glibc debug build, stripped, with its
//! shared libraries) on `/dev/tpmrm0` and that log; lucidd enrols its AK and issues an
//! anchored passport, and the init prints the passport, the enrolment and the event log
//! on the console. On this machine lucidctl verifies the passport offline with nothing
//! but those files and swtpm's local CA, and the test replays the event log itself
//! against the quoted PCRs and compares them with what the guest kernel read.
//!
//! With Secure Boot (OVMF's Secure Boot build, Debian's snakeoil key enrolled and the
//! kernel signed with it) every claim affirms and verify exits 0; without it the
//! `secure_boot` claim warns that Secure Boot is disabled and verify exits 9.
//!
//! Needs what `tests/tests/vm.rs` needs (`lucid_tests::vm::Vm::find`) and, for the measured
//! boot, ovmf, sbsigntool, openssl, binutils, libtss2-tcti-device0, swtpm and swtpm-tools
//! (`lucid_tests::vm::measured_boot_missing`); a missing piece skips the tests, saying
//! which, except under `LUCID_REQUIRE_VM=1`. Each boot takes about a minute under TCG.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use lucid_common::dsse::Envelope;
use lucid_common::tpm::eventlog::{EventLog, SecureBoot};
use lucid_tests::skip;
use lucid_tests::tpm::{self, detail, status};
use lucid_tests::vm::{self, Firmware, Vm};
use serde_json::Value;

/// At most this per boot (about a minute here under TCG, most of it OVMF and hashing the
/// initrd in software).
const LIMIT: Duration = Duration::from_secs(400);

/// `lucidctl passport verify --ak ENROLMENT --ek-ca CA PASSPORT`, offline.
fn verify(dir: &Path, enroll: &Path, ek_ca: &Path, passport: &Path) -> (i32, Vec<Value>) {
    tpm::verify_offline(dir, &[format!("--ak={}", enroll.display()), format!("--ek-ca={}", ek_ca.display()), passport.display().to_string()])
}

/// What one measured boot gave, verified on this machine.
struct Verified {
    /// lucidctl's exit code.
    code: i32,
    /// The passport's appraisal.
    appraisal: Value,
    /// The event log the guest kernel exposed (and the passport carries).
    log: EventLog,
}

/// Boots under `firmware`, checks what holds with or without Secure Boot, and returns
/// the appraisal for the caller's Secure Boot checks; `None` when the test is skipped.
fn boot_and_verify(test: &str, firmware: Firmware) -> Option<Verified> {
    let found = Vm::find().and_then(|found| vm::measured_boot_missing().map_or(Ok(found), Err));
    let vm = match found {
        Ok(vm) => vm,
        Err(what) if std::env::var_os("LUCID_REQUIRE_VM").is_some_and(|v| v == "1") => panic!("the measured-boot VM test cannot run: {what}"),
        Err(what) => {
            skip(test, &what);
            return None;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let files = Vm::dynamic_daemon_files(dir).unwrap_or_else(|e| panic!("the daemon's files for the VM: {e}"));
    let boot = vm.measured_boot(firmware, &files, LIMIT).unwrap_or_else(|e| panic!("booting the VM ({firmware:?}): {e}"));
    let result = boot.line("LUCID-VM-RESULT:").unwrap_or("no result line").to_string();
    eprintln!("VM ({firmware:?}, {}, {:.1} s): {result}", vm.kernel.display(), boot.elapsed.as_secs_f64());
    assert!(result.starts_with("PASS"), "{result}\nqemu: {}\nconsole:\n{}", boot.qemu_stderr, boot.console);

    for f in ["passport.json", "enroll.json", "binary_bios_measurements"] {
        let bytes = boot.file(f).unwrap_or_else(|| panic!("no {f} on the console:\n{}", boot.console));
        std::fs::write(dir.join(f), bytes).unwrap();
    }
    let passport = dir.join("passport.json");
    let env: Envelope = serde_json::from_slice(&std::fs::read(&passport).unwrap()).unwrap();
    let statement: Value = serde_json::from_slice(&env.payload_unverified().unwrap()).unwrap();
    let quoted: BTreeMap<u32, String> = (0..8u32)
        .map(|i| {
            let v = statement["predicate"]["tpm"]["pcrs"][i.to_string()].as_str().unwrap_or_else(|| panic!("PCR {i} was not quoted: {}", statement["predicate"]["tpm"]));
            (i, v.to_lowercase())
        })
        .collect();

    // The quoted PCRs 0-7 are the ones the guest's kernel read (`pcrs 0=HEX,...,7=HEX`
    // at the end of the result line).
    let guest: BTreeMap<u32, String> = result
        .split_once("pcrs ")
        .unwrap_or_else(|| panic!("no PCRs in the result line: {result}"))
        .1
        .trim()
        .split(',')
        .map(|kv| {
            let (i, v) = kv.split_once('=').unwrap_or_else(|| panic!("{kv:?} in the result line: {result}"));
            (i.parse::<u32>().unwrap_or_else(|e| panic!("{i:?}: {e}")), v.to_lowercase())
        })
        .collect();
    assert_eq!(guest, quoted, "the PCRs the guest kernel read are not the ones quoted");

    // The passport carries the log the kernel exposed, and it replays to the quote
    // (checked here directly, besides lucidctl's boot claim).
    let log_bytes = std::fs::read(dir.join("binary_bios_measurements")).unwrap();
    let carried = statement["predicate"]["boot"]["event_log"].as_str().and_then(|b| B64.decode(b).ok());
    assert!(carried.as_deref() == Some(log_bytes.as_slice()), "the passport's event log is not the one the guest kernel exposed: {}", statement["predicate"]["boot"]);
    let log = EventLog::parse(&log_bytes).unwrap_or_else(|e| panic!("the guest's event log: {e}"));
    let replayed = log.replay_sha256().unwrap_or_else(|e| panic!("replaying the guest's event log: {e}"));
    for (i, value) in replayed.iter().enumerate().take(8) {
        assert_eq!(lucid_common::hex::encode(value), quoted[&(i as u32)], "PCR {i}: the event log ({} events) does not replay to the quoted value", log.events.len());
    }

    // Offline, with the enrolment and swtpm's CA: the EK chains, the AK is the enrolled
    // one, the quote and the boot replay hold.
    let ek_ca = tpm::swtpm_ca(dir);
    let (code, appraisals) = verify(dir, &dir.join("enroll.json"), &ek_ca, &passport);
    assert_eq!(appraisals.len(), 1, "{appraisals:?}");
    let a = appraisals.into_iter().next().unwrap();
    for c in ["signature", "ledger", "ek", "ak", "quote", "boot", "launch", "anchor"] {
        assert_eq!(status(&a, c), "affirming", "{firmware:?} {c}: {}\n{a}", detail(&a, c));
    }
    assert!(detail(&a, "boot").contains("replay to the quoted PCRs 0-7"), "{}", detail(&a, "boot"));
    // Every other claim affirms too; only the Secure Boot state is the caller's.
    for c in a["claims"].as_array().into_iter().flatten() {
        if c["claim"] != "secure_boot" {
            assert_eq!(c["status"], "affirming", "{firmware:?}: {c}");
        }
    }
    Some(Verified { code, appraisal: a, log })
}

#[test]
fn a_passport_issued_in_a_vm_after_a_secure_boot_verifies_offline_with_every_claim_affirming() {
    let name = "a_passport_issued_in_a_vm_after_a_secure_boot_verifies_offline_with_every_claim_affirming";
    let Some(v) = boot_and_verify(name, Firmware::OvmfSecureBoot) else {
        return;
    };
    assert_eq!(v.log.secure_boot(), SecureBoot::Enabled);
    let a = &v.appraisal;
    assert_eq!(status(a, "secure_boot"), "affirming", "{}", detail(a, "secure_boot"));
    assert!(detail(a, "secure_boot").contains("enabled"), "{}", detail(a, "secure_boot"));
    assert_eq!(v.code, 0, "every claim affirming exits 0: {a}");
}

#[test]
fn a_passport_issued_in_a_vm_after_a_measured_boot_without_secure_boot_warns_that_it_is_disabled() {
    let name = "a_passport_issued_in_a_vm_after_a_measured_boot_without_secure_boot_warns_that_it_is_disabled";
    let Some(v) = boot_and_verify(name, Firmware::Ovmf) else {
        return;
    };
    assert_eq!(v.log.secure_boot(), SecureBoot::Disabled);
    let a = &v.appraisal;
    assert_eq!(status(a, "secure_boot"), "warning", "{}", detail(a, "secure_boot"));
    assert!(detail(a, "secure_boot").contains("disabled"), "{}", detail(a, "secure_boot"));
    assert_eq!(v.code, 9, "warnings exit 9: {a}");
}
