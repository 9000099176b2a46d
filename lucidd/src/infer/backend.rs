//! Which backend runs the classifiers, chosen once per model load and reported by
//! `lucidctl status --detailed` with the reason, so an operator can tell a host that
//! fell back to the CPU from one that was told to use it.
//!
//! The CUDA driver is loaded dynamically; cudarc panics when a CUDA library is
//! missing, so its presence is checked before any call, and a host without one gets a
//! `cpu` choice and one log line, never a panic. A model put on a GPU must first score
//! a few probe texts as the CPU backend does (`Model::attach_cuda`).

use serde::Serialize;

use super::InferError;
use crate::config::values::BackendChoice;

/// The backend a model runs on, where, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// `cpu` or `cuda`.
    pub backend: &'static str,
    /// The processor or GPU, as the operator would recognise it.
    pub device: String,
    /// Why this backend (what was asked, what was found).
    pub reason: String,
}

/// What a CUDA probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gpu {
    /// A usable device: its name and compute capability.
    Usable {
        /// Device name.
        name: String,
        /// Compute capability, e.g. 90 for sm_90.
        arch: u32,
    },
    /// No usable device, and why.
    Unusable(String),
}

/// Which CUDA library the `cuda` backend needs and cannot load, if any (cudarc panics
/// on first use of a missing one, so this is asked before).
pub fn missing_library() -> Option<String> {
    // SAFETY: each only tries to dlopen candidate library names; no symbol is called.
    let (driver, blas) = unsafe { (cudarc::driver::sys::is_culib_present(), cudarc::cublas::sys::is_culib_present()) };
    let nvrtc = super::kernels::nvrtc_available();
    match (driver, blas, nvrtc) {
        (false, ..) => Some("no CUDA driver library (libcuda.so) on this host".into()),
        (true, false, _) => Some("the CUDA driver is present but cuBLAS (libcublas.so) is not".into()),
        (true, true, false) => Some("the CUDA driver is present but NVRTC (libnvrtc.so) is not".into()),
        _ => None,
    }
}

/// Looks for GPU 0 through the CUDA driver, without panicking where there is none.
pub fn probe_gpu() -> Gpu {
    // SAFETY: only tries to dlopen candidate library names; no symbol is called.
    if let Some(why) = missing_library() {
        return Gpu::Unusable(why);
    }
    let found = std::panic::catch_unwind(|| {
        let ctx = cudarc::driver::CudaContext::new(0).map_err(|e| format!("CUDA driver present, no usable GPU: {e:?}"))?;
        let name = ctx.name().map_err(|e| format!("GPU 0: {e:?}"))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| format!("GPU 0: {e:?}"))?;
        Ok::<_, String>((name, (major * 10 + minor).max(0) as u32))
    });
    match found {
        Ok(Ok((name, arch))) => Gpu::Usable { name, arch },
        Ok(Err(why)) => Gpu::Unusable(why),
        Err(_) => Gpu::Unusable("the CUDA driver library failed to load".into()),
    }
}

/// The CPU, as `/proc/cpuinfo` names it, with its thread count and vector width.
pub fn cpu_device() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| info.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let simd = simd_level();
    format!("{model}, {threads} threads, {simd}")
}

fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return "AVX2+FMA";
        }
        "SSE2"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "NEON"
    }
}

/// Chooses the backend for `wanted`, given what the GPU probe found: `cuda` where a
/// GPU is usable and `auto` or `cuda` was asked for, else `cpu` with the reason. `cuda`
/// asked for explicitly where no GPU is usable is an error, so a configuration that
/// demands the GPU is refused rather than silently slower. (Loading may still move an
/// `auto` choice back to the CPU: see `service::load`.)
pub fn choose(wanted: BackendChoice, gpu: &Gpu) -> Result<Choice, InferError> {
    let cpu = |reason: String| Choice { backend: "cpu", device: cpu_device(), reason };
    match (wanted, gpu) {
        (BackendChoice::Cpu, _) => Ok(cpu("CLASSIFIER_BACKEND=cpu".into())),
        (BackendChoice::Auto, Gpu::Unusable(why)) => Ok(cpu(format!("auto: {why}"))),
        (BackendChoice::Cuda, Gpu::Unusable(why)) => Err(InferError::Unsupported(format!("CLASSIFIER_BACKEND=cuda: {why}"))),
        (BackendChoice::Auto, Gpu::Usable { name, arch }) => {
            Ok(Choice { backend: "cuda", device: format!("{name} (sm_{arch})"), reason: "auto: a CUDA driver and GPU are usable".into() })
        }
        (BackendChoice::Cuda, Gpu::Usable { name, arch }) => {
            Ok(Choice { backend: "cuda", device: format!("{name} (sm_{arch})"), reason: "CLASSIFIER_BACKEND=cuda".into() })
        }
    }
}

/// The CPU choice after the GPU failed to take a model that `auto` would have put
/// there.
pub fn fall_back(why: &str) -> Choice {
    Choice { backend: "cpu", device: cpu_device(), reason: format!("auto: the GPU could not take the model ({why})") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_with_the_reason_and_an_explicit_cuda_is_refused() {
        let none = Gpu::Unusable("no CUDA driver library (libcuda.so) on this host".into());
        let c = choose(BackendChoice::Auto, &none).unwrap();
        assert_eq!(c.backend, "cpu");
        assert!(c.reason.contains("libcuda"), "{}", c.reason);
        assert!(choose(BackendChoice::Cuda, &none).is_err());
        assert_eq!(choose(BackendChoice::Cpu, &none).unwrap().reason, "CLASSIFIER_BACKEND=cpu");
    }

    #[test]
    fn a_usable_gpu_is_chosen_unless_the_cpu_is_asked_for() {
        let gpu = Gpu::Usable { name: "NVIDIA H100".into(), arch: 90 };
        let c = choose(BackendChoice::Auto, &gpu).unwrap();
        assert_eq!((c.backend, c.device.as_str()), ("cuda", "NVIDIA H100 (sm_90)"));
        assert_eq!(choose(BackendChoice::Cuda, &gpu).unwrap().backend, "cuda");
        assert_eq!(choose(BackendChoice::Cpu, &gpu).unwrap().backend, "cpu");
        assert!(fall_back("self-check failed").reason.contains("self-check failed"));
    }

    /// The probe agrees with what the host has, checked another way: the driver's
    /// device node for a usable GPU, the library check for its reason (issue 13: this
    /// test used to pass on either branch).
    #[test]
    fn probing_a_host_agrees_with_what_it_has() {
        let node = std::path::Path::new("/dev/nvidiactl").exists();
        match (missing_library(), probe_gpu()) {
            (Some(missing), Gpu::Unusable(why)) => assert_eq!(why, missing),
            (Some(missing), Gpu::Usable { name, .. }) => panic!("the probe found {name} although {missing}"),
            (None, Gpu::Usable { name, arch }) => {
                assert!(node, "a usable GPU ({name}) without /dev/nvidiactl");
                assert!(!name.is_empty() && arch >= 50, "{name} sm_{arch}");
            }
            (None, Gpu::Unusable(why)) => assert!(why.starts_with("CUDA driver present") || why.starts_with("GPU 0") || why.contains("failed to load"), "{why}"),
        }
        if !node {
            assert!(matches!(probe_gpu(), Gpu::Unusable(_)), "no NVIDIA device node, yet a GPU");
        }
        let cpu = cpu_device();
        assert!(cpu.contains(" threads, ") || cpu.contains(" thread, "), "{cpu}");
    }
}
