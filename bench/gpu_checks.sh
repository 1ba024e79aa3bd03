#!/usr/bin/env bash
# The GPU checks of one session, as one script for a lent GPU machine (the device tool), in priority
# order, each bounded: GPU tests, the capture benchmark on CUDA, the README's first command on CUDA.
# The machine has torch/timm/scikit-learn but not hdbscan or captum: their wheels travel in .whl/.
# Logs land in $OUT (or ./gpu-out when OUT is unset).
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; date -u; python3 -c 'import torch; print("torch", torch.__version__)'; } 2>&1 | tee "$out/machine.txt"
timeout "${GPU_TESTS_S:-60}" python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/gpu_tests.txt"
timeout "${CAPTURE_S:-60}" python3 bench/capture.py --device cuda --samples 5000 2>&1 | tee "$out/capture.txt"
( time timeout "${RUN_S:-60}" python3 -m bnprobe run resnet18 --device cuda --out /tmp/run-default ) 2>&1 \
  | tail -60 | tee "$out/run_default.txt"
