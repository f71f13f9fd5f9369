#!/usr/bin/env bash
# The GPU checks as one script, for a machine with an NVIDIA GPU and PyTorch with CUDA.
# Prints and writes: CUDA training speed (fp32 and mixed precision) beside the CPU, whole-volume
# inference time, peak GPU memory; then the CUDA cases of the loss tests.
# If nibabel is missing there, bring its wheel in .whl/ (pip download --no-deps nibabel).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
if ! python3 -c "import nibabel" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
export PYTHONUNBUFFERED=1
python3 benchmarks/gpu_check.py --out "$out/gpu_check.json"
python3 -m pytest -q -p no:cacheprovider tests/test_losses.py -k cuda 2>&1 | tail -3
