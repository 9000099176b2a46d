#!/usr/bin/env bash
# Installs what is missing and runs the benchmarks, each against its named peer in the
# same run: the ledger against SQLite, the audit chain against Presidio's pattern
# recognizers, detect-secrets and LLM Guard, the classifier engine against PyTorch and
# ONNX Runtime, model hashing against sha256sum and b3sum, the eBPF probes against no
# probes and a no-op program (here, and each program family in a VM), passport
# verification against tpm2_checkquote, gateway latency with the default pack, detection quality on the held-out set against
# Presidio and LLM Guard. Each prints one JSON line.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh

need_apt build-essential pkg-config libsqlite3-dev python3-venv b3sum libtss2-dev swtpm swtpm-tools tpm2-tools
need_rust
need_venv presidio-analyzer presidio-anonymizer detect-secrets structlog
# LLM Guard's Secrets scanner without the model stack the rest of llm-guard pulls in.
need_venv --no-deps llm-guard
# The classifier engine's peers: PyTorch CPU and ONNX Runtime on all-MiniLM-L6-v2.
need_torch_venv onnxruntime onnx
cargo bench --locked -p lucidd --bench ledger
cargo bench --locked -p lucidd --bench audit
cargo bench --locked -p lucidd --bench infer
cargo bench --locked -p lucidd --bench hash
# Detection quality: the default pack, the held-out set rebuilt from its pinned packages
# and checked against the committed split, and the peers in their own virtualenv.
. lucidd/benches/peers/quality_peers.sh
need_quality_peers
bash scripts/pack.sh >/dev/null
bash models/eval/build.sh >/dev/null
cargo bench --locked -p lucidd --bench quality
# A year of hourly passports from the real daemon on swtpm, verified offline.
cargo build --locked --release -p lucidd -p lucidctl
cargo bench --locked -p lucid-tests --bench passports
# Gateway latency at 1 KB and 4 KB with the default chain and pack.
cargo bench --locked -p lucid-tests --bench gateway
if [ "$(id -u)" -eq 0 ]; then
    need_ebpf_toolchain
    cargo bench --locked -p lucidd --bench probes
    # The LSM and fentry families, which this kernel refuses, measured in a VM.
    need_apt qemu-system-x86
    rustup target list --installed | grep -q x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
    bash scripts/vm-kernel.sh
    cargo build --locked --release --target x86_64-unknown-linux-musl -p lucid-vm-init
    cargo bench --locked -p lucid-tests --bench vm_probes
else
    say "the probes bench needs root (eBPF); skipped"
fi
