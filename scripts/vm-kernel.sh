#!/usr/bin/env bash
# Fetches Debian 12's stock 6.1 kernel image (the newest linux-image-6.1.0-*-amd64-unsigned)
# for the VM test of the LSM and fentry programs, keeping only its vmlinuz in
# target/vm/. The package is downloaded, not installed. Idempotent.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh

mkdir -p target/vm
if ls target/vm/vmlinuz-* >/dev/null 2>&1; then
    exit 0
fi
pick() { apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -1; }
pkg=$(pick)
if [ -z "$pkg" ]; then
    as_root apt-get update -qq
    pkg=$(pick)
fi
[ -n "$pkg" ] || die "no linux-image-6.1.0-*-amd64-unsigned package in the apt sources"
say "fetching $pkg (vmlinuz only) for the VM test"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "$pkg" 2>/dev/null)
dpkg-deb --fsys-tarfile "$work"/*.deb | tar -x -C "$work" --wildcards './boot/vmlinuz-*'
mv "$work"/boot/vmlinuz-* target/vm/
