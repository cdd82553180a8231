#!/usr/bin/env bash
# Create the DGL side environment used by parity tests and benchmarks (DGL is never a dependency
# of the toolkit itself).
#
#   bash benchmarks/make_dgl_env.sh                 # -> .venv-dgl at the repository root
#   DGL_ENV=/some/dir bash benchmarks/make_dgl_env.sh
#   .venv-dgl/bin/python benchmarks/dgl_side/smoke.py   # what the script runs to verify the env
#
# DGL 2.1.0 (the newest on the index) imports only with torch <= 2.2.1. The only torch 2.2.1 build
# on PyPI for linux x86_64 is the CUDA 12.1 one. Its shared libraries list the CUDA libraries as
# DT_NEEDED (libtorch_cpu.so alone needs libcudart and libcupti; libtorch_python.so needs libcudnn),
# so `import torch` fails without the nvidia-* wheels even on a CPU-only machine; they are
# installed at the exact versions torch pins. What is skipped: triton (only used by
# torch.compile on a GPU). torch, dgl and torchdata are installed with --no-deps and their runtime
# dependencies listed explicitly, so pip never resolves anything else (about 2 GB downloaded,
# 4.5 GB on disk; under a minute with a fast index).
#
# Idempotent: when the env already imports dgl 2.1.0 on torch 2.2.1 it only re-runs the smoke test.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_DIR="${DGL_ENV:-$REPO/.venv-dgl}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
SMOKE="$REPO/benchmarks/dgl_side/smoke.py"
export DGLBACKEND=pytorch

env_ok() {
    [ -x "$ENV_DIR/bin/python" ] && "$ENV_DIR/bin/python" - <<'PY' >/dev/null 2>&1
import torch, dgl
assert torch.__version__.split("+")[0] == "2.2.1", torch.__version__
assert dgl.__version__ == "2.1.0", dgl.__version__
PY
}

if env_ok; then
    echo "make_dgl_env: $ENV_DIR already imports dgl 2.1.0 on torch 2.2.1"
    exec "$ENV_DIR/bin/python" "$SMOKE"
fi

echo "make_dgl_env: creating $ENV_DIR with $($PYTHON --version 2>&1)"
[ -x "$ENV_DIR/bin/python" ] || "$PYTHON" -m venv "$ENV_DIR"
PIP=("$ENV_DIR/bin/python" -m pip --disable-pip-version-check -q)

# 1. The three pinned packages, without their declared dependencies (torch would add triton).
#    pip then reports "torch 2.2.1 requires triton==2.2.0, which is not installed": expected.
"${PIP[@]}" install --no-deps torch==2.2.1 dgl==2.1.0 torchdata==0.7.1

# 2. Their runtime dependencies, resolved together so that numpy stays < 2.
#    CUDA libraries: exactly the versions torch 2.2.1 pins (needed to load its .so files).
#    pandas, pyyaml, pydantic: imported by `import dgl` (graphbolt, data) but not declared by it.
"${PIP[@]}" install \
    "numpy<2" "pandas<3" scipy "pyarrow<20" psutil pytest pytest-timeout hypothesis \
    filelock "typing-extensions>=4.8.0" sympy networkx jinja2 fsspec \
    requests urllib3 tqdm pyyaml pydantic \
    nvidia-cuda-nvrtc-cu12==12.1.105 nvidia-cuda-runtime-cu12==12.1.105 \
    nvidia-cuda-cupti-cu12==12.1.105 nvidia-cudnn-cu12==8.9.2.26 \
    nvidia-cublas-cu12==12.1.3.1 nvidia-cufft-cu12==11.0.2.54 \
    nvidia-curand-cu12==10.3.2.106 nvidia-cusolver-cu12==11.4.5.107 \
    nvidia-cusparse-cu12==12.1.0.106 nvidia-nccl-cu12==2.19.3 \
    nvidia-nvtx-cu12==12.1.105 nvidia-nvjitlink-cu12==12.1.105

if ! env_ok; then
    echo "make_dgl_env: $ENV_DIR does not import dgl 2.1.0 on torch 2.2.1:" >&2
    "$ENV_DIR/bin/python" -c "import torch, dgl" >&2
    exit 1
fi
exec "$ENV_DIR/bin/python" "$SMOKE"
