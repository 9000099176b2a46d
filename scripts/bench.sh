#!/usr/bin/env bash
# Installs what is missing and runs the benchmarks, each against its named peer in the
# same run: the ledger against SQLite, the audit chain against Presidio's pattern
# recognizers and detect-secrets. Each prints one JSON line.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh

need_apt build-essential pkg-config libsqlite3-dev python3-venv
need_rust
need_venv presidio-analyzer detect-secrets
cargo bench --locked -p lucidd --bench ledger
cargo bench --locked -p lucidd --bench audit
