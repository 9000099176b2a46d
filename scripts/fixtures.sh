#!/usr/bin/env bash
# Regenerates the classifier-engine parity fixtures (tests/fixtures/infer) with PyTorch
# `transformers` in a separate virtualenv (.venv-torch, shared with the engine benchmark's peers). Not part of the test run:
# the fixtures are committed. torch comes from PyPI without its CUDA dependencies
# (several GB, unused on the CPU).
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh

need_apt python3-venv
need_torch_venv
"$ROOT/.venv-torch/bin/python" tests/fixtures/infer/make_fixtures.py
