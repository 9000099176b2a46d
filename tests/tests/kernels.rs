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
            let ptx = kernels::compile(k, arch).unwrap_or_else(|e| panic!("{e}"));
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

/// Issue 13: the kernels are compiled to machine code for the GPU's own architecture, so
/// a driver older than NVRTC (which refuses newer PTX) can still load them; the cache is
/// keyed by NVRTC's and the driver's versions as well as the source and architecture.
#[test]
fn kernels_compile_to_cubins_for_the_gpus_own_architecture_and_cache_by_version() {
    const NAME: &str = "kernels_compile_to_cubins_for_the_gpus_own_architecture_and_cache_by_version";
    if !kernels::nvrtc_available() {
        return skip(NAME, "libnvrtc not on the library path (scripts/test.sh installs nvidia-cuda-nvrtc-cu12 and sets LD_LIBRARY_PATH)");
    }
    let tmp = tempfile::tempdir().unwrap();
    for k in KERNELS {
        let mut images = Vec::new();
        for arch in [80u32, 90] {
            let image = kernels::compile_cached(tmp.path(), k, arch, Some(12080)).unwrap_or_else(|e| panic!("{e}"));
            let kernels::Image::Cubin(bytes) = &image else { panic!("{} sm_{arch}: NVRTC made PTX, not a cubin", k.name) };
            assert_eq!(&bytes[..4], b"\x7fELF", "a cubin is an ELF image");
            for f in k.functions {
                assert!(bytes.windows(f.len()).any(|w| w == f.as_bytes()), "{} sm_{arch}: no {f}", k.name);
            }
            let path = kernels::cache_path(tmp.path(), k, arch, Some(12080), "cubin");
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (major, minor) = kernels::nvrtc_version().unwrap();
            assert!(name.contains(&format!("sm{arch}-nvrtc{major}.{minor}-driver12080.cubin")), "{name}");
            assert_eq!(std::fs::read(&path).unwrap(), *bytes, "cached");
            // Read back from the cache; another driver version is another entry.
            assert_eq!(kernels::compile_cached(tmp.path(), k, arch, Some(12080)).unwrap(), image);
            assert_ne!(kernels::cache_path(tmp.path(), k, arch, Some(12090), "cubin"), path);
            images.push(image);
        }
        assert_ne!(images[0], images[1], "sm_80 and sm_90 get their own machine code");
    }
}
