//! The LSM and fentry variants of lucid-ebpf, proven in a VM: this machine's kernel
//! refuses those program types (lockdown), so Debian's stock 6.1 kernel boots under qemu
//! (TCG) with `lucid-vm-init` (a static musl binary, `tests/vm-init`) as `/init` and the
//! eBPF object lucidd embeds beside it. The init loads the programs, makes changes in a
//! watched directory, checks what they saw and that enforcement refuses a writer not on
//! the allow-list with EPERM, prints one result line and powers off. qemu exits 0 either
//! way, so the result line is what is checked.
//!
//! A second test boots the same kernel with static builds of lucidd and lucidctl beside
//! the init, which runs the real daemon there and checks its judgments of changes seen
//! through the LSM family.
//!
//! scripts/test.sh provides qemu, the kernel, the init and the static binaries and sets
//! `LUCID_REQUIRE_VM=1`; elsewhere a missing piece skips the tests, saying which (see
//! `lucid_tests::vm`).

use std::time::Duration;

use lucid_tests::skip;
use lucid_tests::vm::Vm;

#[test]
fn lsm_and_fentry_programs_see_changes_and_enforce_in_a_vm() {
    let vm = match Vm::find() {
        Ok(vm) => vm,
        Err(what) if std::env::var_os("LUCID_REQUIRE_VM").is_some_and(|v| v == "1") => panic!("the VM test cannot run: {what}"),
        Err(what) => return skip("lsm_and_fentry_programs_see_changes_and_enforce_in_a_vm", &what),
    };
    let boot = vm.boot("", &[], Duration::from_secs(300)).expect("booting the VM");
    let result = boot.line("LUCID-VM-RESULT:").unwrap_or("no result line").to_string();
    eprintln!("VM ({}, {:.1} s): {result}", vm.kernel.display(), boot.elapsed.as_secs_f64());
    assert!(result.starts_with("PASS"), "{result}\nconsole:\n{}", boot.console);
}

/// The real daemon (built static) under that kernel: there the LSM family (and, with BPF
/// LSM off, the fentry family) is what reports changes, and each kind of change must be
/// judged as on the host (see `tests/vm-init/src/daemon.rs` for the checks).
#[test]
fn the_daemon_judges_changes_through_the_lsm_and_fentry_families_in_a_vm() {
    let name = "the_daemon_judges_changes_through_the_lsm_and_fentry_families_in_a_vm";
    let found = Vm::find().and_then(|vm| Vm::daemon_binaries().map(|files| (vm, files)));
    let (vm, files) = match found {
        Ok(found) => found,
        Err(what) if std::env::var_os("LUCID_REQUIRE_VM").is_some_and(|v| v == "1") => panic!("the VM test cannot run: {what}"),
        Err(what) => return skip(name, &what),
    };
    // As booted, the kernel allows BPF LSM; with BPF left out of its LSM list, lucidd
    // must fall back to the fentry family and judge the same.
    for append in ["lucid.daemon", "lucid.daemon lucid.family=fentry lsm=lockdown,capability,yama"] {
        let boot = vm.boot_with(append, &[], &files, Duration::from_secs(600)).expect("booting the VM");
        let result = boot.line("LUCID-VM-RESULT:").unwrap_or("no result line").to_string();
        eprintln!("VM ({}, {append}, {:.1} s): {result}", vm.kernel.display(), boot.elapsed.as_secs_f64());
        assert!(result.starts_with("PASS"), "{result}\nconsole:\n{}", boot.console);
        if append.contains("fentry") {
            // Status says why the LSM family was passed over.
            assert!(result.contains("leave out bpf"), "{result}");
        }
    }
}
