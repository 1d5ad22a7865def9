#!/usr/bin/env bash
# The GPU checks of issue 6 as one script, for a lent GPU machine (the `device` tool's `run`):
# `bash benchmarks/gpu_check.sh` from the repository root. Writes logs and bench_gpu*.json
# under $OUT (else build/gpu-check). Each step has its own time limit so one failure leaves
# time for the next: 1) the tiny model on the GPU (the path works), 2) the 1b model with
# torch.compile (the benchmark), 3) only if 2 failed, the 1b model without compile.
set -u
OUT=${OUT:-build/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
$PY -c "import torch, pyarrow, numpy; print('torch', torch.__version__, 'pyarrow', pyarrow.__version__, 'numpy', numpy.__version__)"
echo "== tiny model on the GPU (path check)"
timeout 90 $PY benchmarks/bench_gpu.py --model tiny --seq-len 512 --micro-batch 8 --accum 1 --steps 5 --warmup 2 --out "$OUT/tiny" 2>&1 | tr "\r" "\n" | grep -v '^pretrain:' | tee "$OUT/tiny.log"
echo "== 1b, bf16, torch.compile"
timeout ${BENCH_TIMEOUT:-330} $PY benchmarks/bench_gpu.py --out "$OUT/compile" 2>&1 | tr '\r' '\n' | grep -v '^pretrain:' | tee "$OUT/1b-compile.log"
status=${PIPESTATUS[0]}
if [ "$status" != 0 ]; then
  echo "== 1b compile run failed ($status); 1b without compile, fewer steps"
  timeout 150 $PY benchmarks/bench_gpu.py --no-compile --steps 10 --warmup 3 --out "$OUT/eager" 2>&1 | tr '\r' '\n' | grep -v '^pretrain:' | tee "$OUT/1b-eager.log"
fi
