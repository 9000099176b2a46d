//! Every CUDA kernel compiles with NVRTC for sm_80 and sm_90 and assembles with
//! `ptxas -v` without register spills; the register counts are recorded in
//! `kernels/registers.txt` and a change to them fails here until the file is updated
//! (`LUCID_UPDATE_KERNEL_REGISTERS=1`). No GPU is needed: NVRTC and ptxas come from the
//! nvidia-cuda-nvrtc-cu12 and nvidia-cuda-nvcc-cu12 wheels (scripts/test.sh).

use std::path::PathBuf;
use std::process::Command;

use lucid_tests::{repo_root, skip, venv_file};
use lucidd::infer::kernels::{self, KERNELS};

/// ptxas: `LUCID_PTXAS`, or the nvcc wheel's in `.venv`.
fn ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LUCID_PTXAS") {
        return Some(PathBuf::from(p));
    }
    venv_file("nvidia/cuda_nvcc/bin/ptxas")
}

#[test]
fn kernels_compile_for_sm80_and_sm90_without_spills() {
    const NAME: &str = "kernels_compile_for_sm80_and_sm90_without_spills";
    if !kernels::nvrtc_available() {
        return skip(NAME, "libnvrtc not on the library path (scripts/test.sh installs nvidia-cuda-nvrtc-cu12 and sets LD_LIBRARY_PATH)");
    }
    let Some(ptxas) = ptxas() else {
        return skip(NAME, "ptxas not found (scripts/test.sh installs nvidia-cuda-nvcc-cu12)");
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut table = String::from("# kernel function arch registers (ptxas -v; checked by tests/tests/kernels.rs)\n");
    for k in KERNELS {
        for arch in [80u32, 90] {
            // Through the cache: the second read must give the same PTX.
            let ptx = kernels::compile_cached(tmp.path(), k, arch).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(kernels::compile_cached(tmp.path(), k, arch).unwrap(), ptx);
            assert!(kernels::cache_path(tmp.path(), k, arch).exists());
            for f in k.functions {
                assert!(ptx.contains(&format!(".entry {f}(")), "{}.cu lacks entry {f}", k.name);
            }
            let ptx_path = tmp.path().join(format!("{}-{arch}.ptx", k.name));
            std::fs::write(&ptx_path, &ptx).unwrap();
            let out = Command::new(&ptxas)
                .args(["-v", "--gpu-name", &format!("sm_{arch}"), "-o"])
                .arg(tmp.path().join("out.cubin"))
                .arg(&ptx_path)
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", ptxas.display()));
            let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "ptxas failed for {} sm_{arch}:\n{log}", k.name);
            let mut function = String::new();
            let mut seen = 0;
            for line in log.lines() {
                if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                    function = rest.split('\'').next().unwrap_or_default().to_string();
                }
                if line.contains("spill stores") {
                    assert!(line.contains(" 0 bytes spill stores") && line.contains(" 0 bytes spill loads"), "{function} sm_{arch} spills: {line}");
                }
                if let Some(rest) = line.split("Used ").nth(1) {
                    let regs: u32 = rest.split(' ').next().unwrap().parse().unwrap();
                    table.push_str(&format!("{} {function} sm_{arch} {regs}\n", k.name));
                    seen += 1;
                }
            }
            assert_eq!(seen, k.functions.len(), "ptxas reported every entry of {} for sm_{arch}:\n{log}", k.name);
        }
    }
    let recorded = repo_root().join("kernels/registers.txt");
    if std::env::var_os("LUCID_UPDATE_KERNEL_REGISTERS").is_some() {
        std::fs::write(&recorded, &table).unwrap();
    }
    let committed = std::fs::read_to_string(&recorded).unwrap_or_default();
    assert_eq!(committed, table, "register counts changed: rerun with LUCID_UPDATE_KERNEL_REGISTERS=1 and commit kernels/registers.txt");
}
