//! Probe overhead by program family, in a VM (prints one JSON line).
//!
//! The probes bench (`cargo bench -p lucidd --bench probes`) measures the tracepoint
//! programs on this machine, whose kernel refuses LSM and fentry programs. This one boots
//! Debian's stock kernel under qemu (TCG) with `lucid.bench` on its command line: the VM
//! init runs the same open/write/close loop on files outside the watched directory with
//! nothing attached and with lucid's LSM, fentry and tracepoint programs (and a no-op on
//! those tracepoints) in turn, each beside a probe-less round, and prints the medians of
//! the pairs' ratios. qemu runs with `-icount shift=0`, so the guest's CPU time counts
//! instructions (one per nanosecond): like callgrind's counts, repeatable, blind to cache
//! and pipeline effects, and comparable across the families on one kernel in one boot.
//!
//! `cargo bench -p lucid-tests --bench vm_probes` (needs what the VM test needs:
//! scripts/test.sh sets it up).

use std::time::Duration;

use lucid_tests::vm::Vm;

fn fail(msg: &str) -> ! {
    println!("{}", serde_json::json!({ "bench": "vm_probes", "error": msg }));
    std::process::exit(1)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let vm = Vm::find().unwrap_or_else(|e| fail(&e));
    // `-icount shift=0`: the guest's clock advances one nanosecond per instruction
    // executed, so the times the init reads count instructions, whatever else this
    // machine is doing (wall-clock times under emulation varied by more than the effect).
    let boot = vm.boot("lucid.bench", &["-icount", "shift=0,sleep=off"], Duration::from_secs(900)).unwrap_or_else(|e| fail(&e));
    let Some(line) = boot.line("LUCID-VM-BENCH:") else {
        fail(&format!("no result line after {:.0} s; console: {}", boot.elapsed.as_secs_f64(), boot.console))
    };
    let mut result: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| fail(line));
    result["bench"] = "vm_probes".into();
    result["vm_seconds"] = serde_json::json!((boot.elapsed.as_secs_f64() * 10.0).round() / 10.0);
    println!("{result}");
}
