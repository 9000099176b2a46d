//! Builds the CUDA kernels (`kernels/encoder.cu`, unchanged) for the host, with the
//! shim and fiber scheduler of `tests/cuda-host`, so the tests can run the cuda
//! backend's launch plans on the CPU (`src/cuda_host.rs`). Besides the kernels as they
//! are, two deliberately broken copies are built (a barrier removed, an off-by-one), to
//! show that the tests catch such faults; a change to the kernel that one of the
//! mutations no longer applies to fails this build, saying which.

use std::path::{Path, PathBuf};

/// (exported-name prefix, what is broken, the text replaced, its replacement).
const MUTANTS: [(&str, &str, &str, &str); 2] = [
    (
        "lucid_nosync_",
        "block_reduce reads the warps' partial results without waiting for them",
        "    if (lane == 0) scratch[warp] = v;\n    __syncthreads();\n",
        "    if (lane == 0) scratch[warp] = v;\n",
    ),
    (
        "lucid_offbyone_",
        "masked_softmax lets the first padded key into the softmax",
        "const float e = j < len ? __expf(s[j] * scale - m) : 0.0f;",
        "const float e = j <= len ? __expf(s[j] * scale - m) : 0.0f;",
    ),
];

const KERNELS: [&str; 8] = ["embed_layernorm", "bias_add", "bias_gelu", "bias_residual_layernorm", "deberta_relative_bias", "masked_softmax", "pool", "score_heads"];

#[allow(clippy::expect_used, clippy::panic)]
fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let host = here.join("cuda-host");
    let kernel = here.join("../kernels/encoder.cu");
    for f in [&kernel, &host.join("shim.h"), &host.join("runtime.cpp"), &host.join("switch.cpp")] {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let source = std::fs::read_to_string(&kernel).expect("reading kernels/encoder.cu");
    build(&host, &kernel, "", "lucid_kernels_host");
    for (prefix, what, from, to) in MUTANTS {
        let found = source.matches(from).count();
        if found != 1 {
            panic!("tests/build.rs: the mutation '{what}' expects its text once in kernels/encoder.cu, found it {found} times; update MUTANTS");
        }
        let path = out.join(format!("encoder-{}.cu", prefix.trim_end_matches('_')));
        std::fs::write(&path, source.replace(from, to)).expect("writing a mutated kernel");
        build(&host, &path, prefix, &format!("{prefix}kernels"));
    }
    cc::Build::new().cpp(true).std("c++17").file(host.join("switch.cpp")).compile("lucid_fiber_switch");
}

/// One build of the kernels in `source`, its entry points' names prefixed.
fn build(host: &Path, source: &Path, prefix: &str, lib: &str) {
    let mut b = cc::Build::new();
    b.cpp(true).std("c++17").opt_level(2).include(host).file(host.join("runtime.cpp"));
    b.define("LUCID_KERNEL_SOURCE", format!("\"{}\"", source.display()).as_str());
    if !prefix.is_empty() {
        b.define("LUCID_PREFIX", prefix);
        // The kernels have C linkage: each build gets names of its own.
        for k in KERNELS {
            b.define(k, format!("{prefix}{k}").as_str());
        }
    }
    b.warnings(true).compile(lib);
}
