#!/usr/bin/env bash
# GPU check: our train step, MFU and decoding against HF PyTorch on one NVIDIA GPU
# (see benchmarks/gpu_check.py). Installs nothing and needs no `pip install -e .`: the
# repository root goes on PYTHONPATH. Interpreter: $PYTHON, else python3.
#
#   bash benchmarks/gpu_check.sh [--out gpu_check.md] [--steps N] ...   # needs a GPU
#   bash benchmarks/gpu_check.sh --dry_run --out /tmp/x.md              # CPU, tiny dims
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"

needs_gpu=1
for arg in "$@"; do
  case "$arg" in
    --dry_run|-h|--help) needs_gpu=0 ;;
  esac
done

if [[ "$needs_gpu" == 1 ]]; then
  # A cheap first look; gpu_check.py then checks that JAX and PyTorch both see the GPU.
  if ! ls /dev/nvidia[0-9]* >/dev/null 2>&1 && ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: error: no NVIDIA GPU visible (no /dev/nvidia[0-9]*, no nvidia-smi); run it on a GPU machine, or pass --dry_run for the CPU smoke run" >&2
    exit 2
  fi
fi

export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$repo/benchmarks/gpu_check.py" "$@"
