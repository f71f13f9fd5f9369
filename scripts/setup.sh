#!/usr/bin/env bash
# Create .venv and install napari-crii with its test tools. Safe to run again.
# torch is pinned by constraints.txt (2.13.0); see README for the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[gui,test]"
echo "napari-crii installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
