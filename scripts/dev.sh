#!/usr/bin/env bash
# Installs what is missing and runs lucidd in dev mode, in the foreground, with its
# embedded defaults (the soc2 profile) and the default classifier pack. State and the
# control socket are in ./.lucid; talk to it with:
#   target/release/lucidctl --dev-state .lucid status
# Extra arguments go to lucidd, e.g.  scripts/dev.sh --config examples/soc2-environment.yaml
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh

# libtss2: lucidd talks to the TPM through tpm2-tss (without a TPM it runs and says so).
need_apt build-essential pkg-config libtss2-dev libtss2-tcti-device0
need_rust
# The eBPF model watch; without it lucidd builds and watches with fanotify instead.
( need_ebpf_toolchain ) || say "no eBPF toolchain: lucidd will watch models with fanotify"
say "assembling the default classifier pack (target/lucid-pack/guard)"
bash scripts/pack.sh >/dev/null
say "building lucidd and lucidctl (release)"
cargo build --release --locked -p lucidd -p lucidctl
say "starting lucidd --dev (Ctrl-C stops it; state in $ROOT/.lucid)"
exec target/release/lucidd --dev --state-dir "$ROOT/.lucid" "$@"
