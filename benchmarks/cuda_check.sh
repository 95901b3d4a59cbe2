#!/usr/bin/env bash
# The CUDA checks of book.optim, in one go, on a machine with an NVIDIA GPU and a Python whose torch
# sees it (no `make install`: the kernels need only torch; the reference packages are optional).
#
#   1. the optimizer and kernel tests, only their CUDA cases (`-k cuda`), and the whole of the test
#      files that choose a device inside the test;
#   2. the benchmark on CUDA: book.optim's default, foreach and compiled (flat buffer) steps against
#      torch.optim's loop, foreach and fused steps, and each step's share of the measured memory
#      bandwidth (a STREAM triad on the GPU).
#
#   OUT=results/cuda bash benchmarks/cuda_check.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cuda_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
PY=${PY:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"

echo "== 1. tests on CUDA"
XDIST=""; $PY -c "import xdist" 2>/dev/null && XDIST="-n 8"
timeout "${TEST_TIMEOUT:-200}" $PY -m pytest -o addopts="" -p no:cacheprovider -q $XDIST -k cuda \
    tests/test_optim_*.py tests/test_gd.py tests/test_gd_momentum.py tests/test_normalization.py \
    tests/test_layers.py tests/test_losses.py tests/test_sharpness.py 2>&1 | tail -25 | tee "$OUT/tests_cuda.txt"
timeout 120 $PY -m pytest -o addopts="" -p no:cacheprovider -q $XDIST \
    tests/test_precision.py tests/test_utils.py tests/test_train.py tests/test_regularization.py 2>&1 \
    | tail -15 | tee -a "$OUT/tests_cuda.txt"

echo "== 2. the benchmark on CUDA"
timeout "${BENCH_TIMEOUT:-300}" $PY benchmarks/bench_optim.py --device cuda --optimizers adam,adamw,sgd \
    --sizes "${SIZES:-1M,16M,64M}" --layouts flat,mixed --repeats "${REPEATS:-15}" \
    --json "$OUT/bench_cuda.json" 2>&1 | tee "$OUT/bench_cuda.txt"
