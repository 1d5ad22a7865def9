#!/usr/bin/env bash
# The GPU checks as one script, on a machine with an NVIDIA GPU and the project installed:
# `bash benchmarks/gpu_check.sh [tiny] [1b] [align] [chain]` from the repository root (default: all four).
# Writes logs and JSON under $OUT (else build/gpu-check). Each step has its own time limit, so
# one failure leaves time for the next:
#   tiny   the tiny model through the trainer on the GPU (the path works)
#   1b     the 1b model, bf16, torch.compile: tokens/s and MFU (`make bench-gpu`); without
#          compile, fewer steps, if that run fails
#   align  SFT then DPO through the trainer on the GPU, with checkpoints handed from one to the
#          next (`benchmarks/bench_align.py --no-throughput`): held-out figures before/after
#   chain  `pipelines run` of the demo config with the 125m model and `launcher: ray` for
#          pretrain, SFT and DPO (Ray Train, one GPU worker) on the bundled data, then
#          `benchmarks/bench_chain.py`: tokens/s and MFU per stage, attention FLOPs counted in full
#          (the trainer's figure, as the README's 51.6%) and halved for the causal mask
set -u
OUT=${OUT:-build/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
STEPS=${*:-tiny 1b align chain}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
$PY -c "import torch, pyarrow, numpy; print('torch', torch.__version__, 'pyarrow', pyarrow.__version__, 'numpy', numpy.__version__)"
quiet() { tr '\r' '\n' | grep -v -e '^pretrain:' -e '^sft:' -e '^dpo:'; }
for step in $STEPS; do
  case $step in
    tiny)
      echo "== tiny model on the GPU (path check)"
      timeout 90 $PY benchmarks/bench_gpu.py --model tiny --seq-len 512 --micro-batch 8 --accum 1 --steps 5 --warmup 2 --out "$OUT/tiny" 2>&1 | quiet | tee "$OUT/tiny.log" ;;
    1b)
      echo "== 1b, bf16, torch.compile"
      timeout "${BENCH_TIMEOUT:-330}" $PY benchmarks/bench_gpu.py --out "$OUT/compile" 2>&1 | quiet | tee "$OUT/1b-compile.log"
      status=${PIPESTATUS[0]}
      if [ "$status" != 0 ]; then
        echo "== 1b compile run failed ($status); 1b without compile, fewer steps"
        timeout 150 $PY benchmarks/bench_gpu.py --no-compile --steps 10 --warmup 3 --out "$OUT/eager" 2>&1 | quiet | tee "$OUT/1b-eager.log"
      fi ;;
    align)
      echo "== SFT and DPO through the trainer on the GPU"
      timeout 240 $PY benchmarks/bench_align.py --no-throughput 2>&1 | quiet | tee "$OUT/align.log" ;;
    chain)
      echo "== pretrain -> SFT -> DPO, 125m, launcher: ray (Ray Train on the GPU)"
      timeout "${CHAIN_TIMEOUT:-420}" $PY -m pipelines run --config configs/demo.yaml --no-report --set output="$OUT/chain" \
        --set pretrain.config.model=125m --set pretrain.launcher=ray --set pretrain.config.seq_len=2048 --set pretrain.config.micro_batch=8 \
        --set pretrain.config.batch_tokens=65536 --set pretrain.config.train_tokens=3932160 --set pretrain.config.lr=6.0e-4 --set pretrain.config.checkpoint_every=20 \
        --set sft.launcher=ray --set sft.config.seq_len=2048 --set sft.config.batch_rows=8 --set dpo.launcher=ray 2>&1 | quiet | tee "$OUT/chain.log"
      $PY benchmarks/bench_chain.py "$OUT/chain" --json "$OUT/chain.json" | tee "$OUT/chain-figures.md" ;;
    *) echo "unknown step: $step (tiny, 1b, align, chain)"; exit 2 ;;
  esac
done
