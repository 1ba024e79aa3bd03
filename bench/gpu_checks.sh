#!/usr/bin/env bash
# Every check that needs a GPU, as one script for a lent GPU machine (the device tool), each step
# bounded by its own timeout and logged to $OUT (or ./gpu-out).  Steps, in priority order:
#
#   tests      tests/test_gpu.py: CUDA graph step = eager step, capture on CUDA, whole study (issues 4, 6, 9)
#   study      bench/study_speed.py, the full MNIST-shaped study: goal <= 30 s and >= 5x the plain loop (9)
#   capture    bench/capture.py with vectors on the device (default) and on the host path (4)
#   reproduce  bnprobe reproduce potgieter2025 --dataset fashion-mnist, the full preset, timed (8)
#   run        bnprobe run resnet18 --device cuda, the README's first command
#
# With no arguments every step runs: about 8 minutes on an H100, but up to 13 at the steps' time
# limits, more than the 10 minutes one device command may run.  So name the steps, in two calls:
#   bash bench/gpu_checks.sh tests study capture      # ~6 min, at most 9 (120 + 300 + 2 x 60 s)
#   bash bench/gpu_checks.sh reproduce run            # ~3 min, at most 4.5 (200 + 60 s)
# The machine has torch, timm and scikit-learn but not hdbscan or captum: their cp312 wheels travel in
# .whl/ (see the device tool's README).  The reproduce step reads the four Fashion-MNIST idx files
# from .data/fashion-mnist/ (copy them from /usr/share/datasets/fashion-mnist/).  Both folders are
# ignored by git and must be carried:  run(command="bash bench/gpu_checks.sh ...", carry=[".whl", ".data"])
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(tests study capture reproduce run)

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; date -u; nproc
  python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__)'; } 2>&1 \
  | tee -a "$out/machine.txt"

for step in "${steps[@]}"; do
  echo "=== $step $(date -u +%T)" | tee -a "$out/machine.txt"
  case $step in
    tests)
      timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/gpu_tests.txt" ;;
    study)
      timeout 300 python3 bench/study_speed.py --device cuda --rounds 1 2>&1 | tee "$out/study_speed.txt" ;;
    capture)
      { timeout 60 python3 bench/capture.py --device cuda --samples 5000
        timeout 60 python3 bench/capture.py --device cuda --samples 5000 --max-device-memory 0; } 2>&1 \
        | tee "$out/capture.txt" ;;
    reproduce)
      ( time timeout 200 python3 -m bnprobe reproduce potgieter2025 --dataset fashion-mnist \
          --data-root .data/fashion-mnist --out /tmp/repro-fashion --overwrite ) 2>&1 | tee "$out/reproduce.txt" ;;
    run)
      ( time timeout 60 python3 -m bnprobe run resnet18 --device cuda --out /tmp/run-default --overwrite ) 2>&1 \
        | tail -60 | tee "$out/run_default.txt" ;;
    *) echo "unknown step $step (tests, study, capture, reproduce, run)" | tee -a "$out/machine.txt" ;;
  esac
done
echo "=== done $(date -u +%T)" | tee -a "$out/machine.txt"
