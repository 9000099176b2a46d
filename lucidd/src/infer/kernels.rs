//! Our CUDA kernels (`kernels/*.cu`), compiled by NVRTC at start-up to machine code for
//! the GPU's own architecture (a cubin; PTX only where NVRTC cannot make one), and cached
//! in the state directory by (source hash, architecture, NVRTC and driver versions), so a
//! restart on the same GPU skips the compiler, an edited kernel is never served stale,
//! and an NVRTC newer than the driver cannot break the load (the driver would refuse its
//! PTX, not its cubin).
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

/// Hex SHA-256 of a kernel's source (the cache key, with the architecture and the
/// compiler's and driver's versions).
pub fn source_hash(source: &str) -> String {
    Sha256::digest(source.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A kernel compiled for one GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Image {
    /// Machine code for the device's own architecture (`-arch=sm_XY`): the driver loads
    /// it as it is, whatever its own version.
    Cubin(Vec<u8>),
    /// PTX for `compute_XY`, where NVRTC could not produce machine code: the driver
    /// compiles it at load, and refuses PTX from an NVRTC newer than itself.
    Ptx(String),
}

impl Image {
    /// `cubin` or `ptx`, as `status` shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            Image::Cubin(_) => "cubin",
            Image::Ptx(_) => "ptx",
        }
    }
}

/// NVRTC's version, `(major, minor)`.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_available() {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: libnvrtc is present (checked above); the call writes two ints.
    let rc = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (rc == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
}

/// What NVRTC should produce.
#[derive(Clone, Copy)]
enum Output {
    Cubin,
    Ptx,
}

/// Runs NVRTC on a kernel with `arch_option` and returns the cubin or PTX bytes; the
/// compiler's log is in the error.
fn nvrtc(kernel: &KernelSource, arch_option: &str, output: Output) -> Result<Vec<u8>, InferError> {
    use cudarc::nvrtc::{result, sys};
    if !nvrtc_available() {
        return Err(InferError::Unsupported("libnvrtc not found (install the CUDA toolkit or the nvidia-cuda-nvrtc-cu12 wheel and put its lib directory on LD_LIBRARY_PATH)".into()));
    }
    let fail = |what: &str, detail: String| InferError::Unsupported(format!("kernels/{}.cu {arch_option}: {what}: {detail}", kernel.name));
    let src = std::ffi::CString::new(kernel.source).map_err(|e| fail("source", e.to_string()))?;
    let prog = result::create_program(&src, None).map_err(|e| fail("creating the program", format!("{e:?}")))?;
    let options = [arch_option, "--std=c++17", "--fmad=true"];
    // SAFETY: `prog` was just created and is destroyed once, below; `src` outlives it.
    let compiled = unsafe { result::compile_program(prog, &options) };
    let out = match compiled {
        Err(e) => {
            // SAFETY: as above.
            let log = unsafe { result::get_program_log(prog) }
                .map(|l| l.iter().map(|c| *c as u8).take_while(|b| *b != 0).collect::<Vec<u8>>())
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            Err(fail("does not compile", format!("{e:?}\n{log}")))
        }
        Ok(()) => match output {
            // SAFETY: as above.
            Output::Ptx => unsafe { result::get_ptx(prog) }
                .map(|p| p.iter().map(|c| *c as u8).take_while(|b| *b != 0).collect())
                .map_err(|e| fail("reading the PTX", format!("{e:?}"))),
            Output::Cubin => {
                let mut size = 0usize;
                // SAFETY: as above; the size is written, then that many bytes.
                let rc = unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) };
                if rc != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
                    Err(fail("no machine code", format!("nvrtcGetCUBINSize: {rc:?}")))
                } else {
                    let mut cubin = vec![0u8; size];
                    // SAFETY: `cubin` holds `size` bytes, as NVRTC asked.
                    let rc = unsafe { sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()) };
                    (rc == sys::nvrtcResult::NVRTC_SUCCESS).then_some(cubin).ok_or_else(|| fail("no machine code", format!("nvrtcGetCUBIN: {rc:?}")))
                }
            }
        },
    };
    // SAFETY: created above, not destroyed before.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// Compiles a kernel to PTX for `compute_{arch}` (80 for A100, 90 for H100).
pub fn compile(kernel: &KernelSource, arch: u32) -> Result<String, InferError> {
    let bytes = nvrtc(kernel, &format!("--gpu-architecture=compute_{arch}"), Output::Ptx)?;
    String::from_utf8(bytes).map_err(|e| InferError::Unsupported(format!("kernels/{}.cu: PTX is not text: {e}", kernel.name)))
}

/// Compiles a kernel to machine code for `sm_{arch}` (a cubin, an ELF file).
pub fn compile_cubin(kernel: &KernelSource, arch: u32) -> Result<Vec<u8>, InferError> {
    nvrtc(kernel, &format!("--gpu-architecture=sm_{arch}"), Output::Cubin)
}

/// A cubin for `sm_{arch}`, or PTX where NVRTC cannot make one (logged: the driver must
/// then be at least as new as NVRTC).
pub fn compile_image(kernel: &KernelSource, arch: u32) -> Result<Image, InferError> {
    match compile_cubin(kernel, arch) {
        Ok(cubin) => Ok(Image::Cubin(cubin)),
        Err(cubin) => {
            tracing::warn!(kernel = kernel.name, arch, error = %cubin, "NVRTC made no cubin for this GPU; loading PTX (the driver compiles it)");
            compile(kernel, arch).map(Image::Ptx)
        }
    }
}

/// The cache file of a kernel image: keyed by the source, the architecture, and the
/// versions of NVRTC and of the driver that will load it, so that neither an edited
/// kernel nor a new compiler or driver is served an old image.
pub fn cache_path(dir: &Path, kernel: &KernelSource, arch: u32, driver: Option<i32>, kind: &str) -> PathBuf {
    let nvrtc = nvrtc_version().map(|(a, b)| format!("{a}.{b}")).unwrap_or_else(|| "none".into());
    let driver = driver.map(|d| d.to_string()).unwrap_or_else(|| "none".into());
    dir.join(format!("{}-{}-sm{arch}-nvrtc{nvrtc}-driver{driver}.{kind}", kernel.name, &source_hash(kernel.source)[..16]))
}

/// The kernel image from the cache, or compiled and then cached (a cache that cannot be
/// written is only a slower start, so that error is logged, not returned). `driver` is
/// the CUDA driver's version (`cuDriverGetVersion`) where one is loaded.
pub fn compile_cached(dir: &Path, kernel: &KernelSource, arch: u32, driver: Option<i32>) -> Result<Image, InferError> {
    let (cubin, ptx) = (cache_path(dir, kernel, arch, driver, "cubin"), cache_path(dir, kernel, arch, driver, "ptx"));
    if let Ok(bytes) = std::fs::read(&cubin) {
        return Ok(Image::Cubin(bytes));
    }
    if let Ok(text) = std::fs::read_to_string(&ptx) {
        return Ok(Image::Ptx(text));
    }
    let image = compile_image(kernel, arch)?;
    let (path, bytes) = match &image {
        Image::Cubin(b) => (cubin, b.as_slice()),
        Image::Ptx(t) => (ptx, t.as_bytes()),
    };
    let written = std::fs::create_dir_all(dir).and_then(|_| {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    });
    if let Err(e) = written {
        tracing::warn!(error = %e, path = %path.display(), "could not cache compiled kernels");
    }
    Ok(image)
}
