#!/usr/bin/env bash
# The GPU checks as one script, for a machine with an NVIDIA GPU and PyTorch with CUDA.
#  1. CUDA training speed (fp32 and mixed precision) beside the CPU, whole-volume inference time
#     and peak GPU memory on the synthetic phantom (benchmarks/gpu_check.py);
#  2. the CUDA cases of the loss tests;
#  3. with the hippocampus data: the speed table on CUDA (benchmarks/speed.py) and the quick
#     interactive protocol on CUDA (rates measured there, so each method gets its CUDA
#     iterations for the same wall-clock budget).
# If nibabel is missing there, bring its wheel in .whl/ (pip download --no-deps nibabel).
# The data folder is found beside the repository (../shared/data/hippocampus) or where
# CRII_HIPPOCAMPUS points (a copy in the ignored .data/hippocampus, say).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
if ! python3 -c "import nibabel" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
if [ -z "${CRII_HIPPOCAMPUS:-}" ] && [ -f .data/hippocampus/split.json ]; then
  export CRII_HIPPOCAMPUS="$PWD/.data/hippocampus"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
export PYTHONUNBUFFERED=1
python3 benchmarks/gpu_check.py --out "$out/gpu_check.json"
python3 -m pytest -q -p no:cacheprovider tests/test_losses.py -k cuda 2>&1 | tail -3
python3 -m benchmarks.speed --device cuda --seconds 15 --out "$out/cuda/speed.json"
python3 -m benchmarks.real_data --setting quick --protocol interactive --device cuda \
  --out "$out/cuda"
python3 -m benchmarks.report --setting quick --results "$out/cuda" --label quick-cuda
