//! Builds the kernel programs (`lucid-ebpf`) for `bpfel-unknown-none` with aya-build, so
//! `lucidd` can embed the object (`$OUT_DIR/lucid-ebpf`).
//!
//! The eBPF toolchain (nightly with rust-src, bpf-linker) is installed by the scripts.
//! Where it is missing the daemon still builds: an empty object is embedded, cargo warns,
//! and at run time lucidd says the probes were not built and watches with fanotify
//! instead. `LUCID_REQUIRE_EBPF=1` (set by scripts/test.sh) turns that into an error.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LUCID_REQUIRE_EBPF");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let object = out.join("lucid-ebpf");
    match build() {
        Ok(()) if object.exists() => {}
        result => {
            let why = match result {
                Err(e) => format!("{e:#}"),
                Ok(()) => "skipped (AYA_BUILD_SKIP)".to_string(),
            };
            if std::env::var_os("LUCID_REQUIRE_EBPF").is_some_and(|v| v == "1") {
                eprintln!("the eBPF programs did not build: {why}");
                std::process::exit(1);
            }
            println!("cargo:warning=eBPF programs not built ({why}); lucidd will watch models with fanotify");
            let _ = std::fs::write(&object, b"");
        }
    }
}

fn build() -> anyhow::Result<()> {
    let meta = cargo_metadata::MetadataCommand::new().no_deps().exec()?;
    let pkg = meta
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "lucid-ebpf")
        .ok_or_else(|| anyhow::anyhow!("lucid-ebpf is not in the workspace"))?;
    let root = pkg.manifest_path.parent().map(|p| p.to_string()).unwrap_or_default();
    aya_build::build_ebpf(
        [aya_build::Package { name: "lucid-ebpf", root_dir: &root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
