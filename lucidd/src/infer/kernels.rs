//! Our CUDA kernels (`kernels/*.cu`), compiled by NVRTC at start-up and cached in the
//! state directory by (source hash, GPU architecture), so a restart on the same GPU
//! skips the compiler and an edited kernel is never served stale.
//!
//! NVRTC is loaded dynamically (cudarc's `dynamic-loading`); cudarc panics when a CUDA
//! library is missing, so [`nvrtc_available`] is asked first and a host without
//! libnvrtc gets an error here, never a panic.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::InferError;

/// One kernel source file and the entry points it defines.
pub struct KernelSource {
    /// File stem under `kernels/`.
    pub name: &'static str,
    /// CUDA C++ source.
    pub source: &'static str,
    /// `extern "C"` entry points, loaded by name.
    pub functions: &'static [&'static str],
}

/// Every kernel the `cuda` backend launches.
pub const KERNELS: &[KernelSource] = &[KernelSource {
    name: "encoder",
    source: include_str!("../../../kernels/encoder.cu"),
    functions: &["embed_layernorm", "bias_add", "bias_gelu", "bias_residual_layernorm", "deberta_relative_bias", "masked_softmax", "pool", "score_heads"],
}];

/// Whether libnvrtc can be loaded on this host.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen candidate library names; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Hex SHA-256 of a kernel's source (the cache key, with the architecture).
pub fn source_hash(source: &str) -> String {
    Sha256::digest(source.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Compiles a kernel to PTX for `compute_{arch}` (80 for A100, 90 for H100).
pub fn compile(kernel: &KernelSource, arch: u32) -> Result<String, InferError> {
    if !nvrtc_available() {
        return Err(InferError::Unsupported("libnvrtc not found (install the CUDA toolkit or the nvidia-cuda-nvrtc-cu12 wheel and put its lib directory on LD_LIBRARY_PATH)".into()));
    }
    let opts = cudarc::nvrtc::CompileOptions {
        options: vec![format!("--gpu-architecture=compute_{arch}"), "--std=c++17".into()],
        fmad: Some(true),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(kernel.source, opts)
        .map_err(|e| InferError::Unsupported(format!("kernels/{}.cu does not compile for compute_{arch}: {e:?}", kernel.name)))?;
    Ok(ptx.to_src())
}

/// The cache file of a kernel for an architecture.
pub fn cache_path(dir: &Path, kernel: &KernelSource, arch: u32) -> PathBuf {
    dir.join(format!("{}-{}-sm{arch}.ptx", kernel.name, &source_hash(kernel.source)[..16]))
}

/// PTX from the cache, or compiled and then cached (a cache that cannot be written is
/// only a slower start, so that error is logged, not returned).
pub fn compile_cached(dir: &Path, kernel: &KernelSource, arch: u32) -> Result<String, InferError> {
    let path = cache_path(dir, kernel, arch);
    if let Ok(ptx) = std::fs::read_to_string(&path) {
        return Ok(ptx);
    }
    let ptx = compile(kernel, arch)?;
    let written = std::fs::create_dir_all(dir).and_then(|_| {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &ptx)?;
        std::fs::rename(&tmp, &path)
    });
    if let Err(e) = written {
        tracing::warn!(error = %e, path = %path.display(), "could not cache compiled kernels");
    }
    Ok(ptx)
}
