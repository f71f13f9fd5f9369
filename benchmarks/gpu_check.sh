#!/usr/bin/env bash
# The GPU checks as one script, for a machine with an NVIDIA GPU and PyTorch with CUDA. It ends
# by itself within GPU_CHECK_SECONDS (default 540) and writes under benchmarks/results/gpu/.
#
# Timed alone, one after the other:
#  1. training speed on CUDA (fp32 and mixed precision) beside the CPU, whole-volume inference
#     time and peak GPU memory on the synthetic phantom (benchmarks/gpu_check.py);
#  2. with the hippocampus data, the speed table on CUDA (benchmarks/speed.py);
#  3. the rates of the learned methods on CUDA (real_data --rates-only; the rates.json already
#     in benchmarks/results/gpu/ is kept, so a rerun on the same kind of GPU skips this step and
#     goes on with the same rows: move the folder away for another card);
#  4. where a training step's time goes on CUDA (benchmarks/profile_step.py).
# Then side by side until the deadline (their results do not depend on the time they take):
#  5. the interactive protocol of the `gpu` setting (15 s rounds at the CUDA rates, k = 2 and 3)
#     in SHARDS processes sharing the GPU; rows a process leaves unfinished are simply not
#     written, and the same script started again goes on from there;
#  6. the backend tests with CUDA as the automatic device (the CUDA cases of the loss tests);
#  7. `crii train` under torchrun with more processes than GPUs (which must stop with advice,
#     at once), `crii demo` on CUDA, and `crii train` under torchrun in one process.
# Finally the report (docs/results-gpu.md). If nibabel is missing there, bring its wheel in
# .whl/ (pip download --no-deps nibabel). The data folder is found beside the repository
# (../shared/data/hippocampus) or where CRII_HIPPOCAMPUS points (a copy in the ignored
# .data/hippocampus, say).
set -uo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
deadline=$((started + ${GPU_CHECK_SECONDS:-540}))
shards=${SHARDS:-8}
device=${GPU_CHECK_DEVICE:-cuda}  # cpu only to try the script's plumbing on a machine without one
out=benchmarks/results/gpu
logs=$out/logs
rm -rf "$logs" && mkdir -p "$logs"
stop_at=$((deadline - 50))  # what is left after it: the summary and the report (30 s)
step() { echo "== $(date -u +%H:%M:%S) (+$((SECONDS - started)) s) $*"; }
# run "$@" for at most $1 seconds and never past stop_at (nothing when under 10 s are left);
# SIGKILL 10 s after SIGTERM, since training takes SIGTERM as "stop after this step"
bounded() {
  local limit=$1 seconds=$((stop_at - SECONDS))
  shift
  ((limit < seconds)) && seconds=$limit
  if ((seconds < 10)); then echo "no time left for: $*"; return 124; fi
  timeout -k 10 "$seconds" "$@"
}

if ! python3 -c "import nibabel" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
if [ -z "${CRII_HIPPOCAMPUS:-}" ] && [ -f .data/hippocampus/split.json ]; then
  export CRII_HIPPOCAMPUS="$PWD/.data/hippocampus"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

step "1. phantom: CUDA fp32 and mixed precision beside the CPU"
bounded 150 python3 benchmarks/gpu_check.py --out "$out/gpu_check.json"
step "2. speed table on CUDA"
bounded 200 python3 -m benchmarks.speed --device "$device" --seconds "${SPEED_SECONDS:-10}" \
  --out "$out/speed.json"
step "3. rates on CUDA"
bounded 200 python3 -m benchmarks.real_data --setting gpu --device "$device" --rates-only \
  --out benchmarks/results
step "4. where a step's time goes on CUDA"
bounded 150 python3 -m benchmarks.profile_step --device "$device" --out "$out/profile.json" |
  grep '^{'

step "5-7. interactive protocol in $shards shards, tests, demo and torchrun, until the deadline"
if [ ! -f "$out/rates.json" ]; then shards=0; echo "no rates: the shards do not start"; fi
for ((index = 0; index < shards; index++)); do
  OMP_NUM_THREADS=2 bounded 9999 python3 -m benchmarks.real_data --setting gpu \
    --device "$device" --protocol interactive --shard "$index/$shards" --out benchmarks/results \
    >"$logs/shard-$index.log" 2>&1 &
done
(
  parallel=""
  if python3 -c "import xdist" 2>/dev/null; then parallel="-n 4"; fi
  # shellcheck disable=SC2086  # $parallel is empty or two words
  bounded 9999 python3 -m pytest -v -p no:cacheprovider $parallel tests \
    --ignore=tests/test_widget.py --ignore=tests/test_training_process.py \
    --ignore=tests/test_manifest.py
  echo "pytest exit $?"
) >"$logs/pytest.log" 2>&1 &
(
  demo=/tmp/crii-gpu-demo
  bounded 120 python3 -m training_backend demo --out "$demo" --seconds 10 --device "$device"
  echo "demo exit $?"
  # more processes than GPUs: refused with advice, and every process ends at once (NCCL between
  # processes needs a GPU each, so it is not exercised on a one-GPU machine); then one process
  gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
  for processes in $((gpus + 1)) 1; do
    echo "-- $(date -u +%T) torchrun, $processes process(es)"
    bounded 120 python3 -m torch.distributed.run --standalone --nproc-per-node "$processes" \
      -m training_backend train --image "$demo/image.nii.gz" --device "$device" \
      --labels "$demo/annotations.nii.gz" --iterations 200 --out "/tmp/crii-gpu-torchrun-$processes"
    status=$?
    echo "$(date -u +%T) torchrun with $processes process(es) exit $status"
  done
) >"$logs/demo-torchrun.log" 2>&1 &
wait
rows=$(cat "$logs"/shard-*.log 2>/dev/null | grep -c '^interactive ')
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
echo "gpu interactive ($shards shards sharing the GPU until they finished or the script's" \
  "deadline stopped them): $rows rows in $(((SECONDS - started) / 60)) min of the script" \
  "on GPU ${gpu:-none}" >>"$out/runtime.txt"
echo "tests passed: $(grep -c ' PASSED ' "$logs/pytest.log")"
grep ' FAILED \| ERROR ' "$logs/pytest.log" | sed 's/^\[gw[0-9]*\] *\[ *[0-9]*%\] *//'
tail -n 2 "$logs/pytest.log"
grep -h "exit\|error" "$logs/demo-torchrun.log"
echo "interactive rows made: $rows"

step "report"
timeout -k 5 30 python3 -m benchmarks.report --setting gpu --results benchmarks/results
step "done"
