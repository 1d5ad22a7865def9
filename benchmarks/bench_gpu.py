"""`make bench-gpu`: the trainer on one GPU - the ``1b`` config, bf16, torch.compile - tokens/s and MFU.

Token shards of uniformly random ids over the report's 100,015-token vocabulary are written to
a temporary folder (throughput does not depend on what the tokens say, and the GPU machine needs
no tokenizer or corpus). ``training.trainer.train`` then runs ``--steps`` optimizer steps of
``seq_len x micro_batch x accum`` tokens with FSDP2 over a world of one (bf16 parameters, fp32
gradient reduction), ``torch.compile`` per block, and optionally activation checkpointing. The
first ``--warmup`` steps (compilation) are left out of the figures. MFU uses
``training.model.flops_per_token`` (the report's 72 n d^2 + 12 n d l with exact layer widths,
plus the output head) and the device's dense bf16 peak (989 TFLOP/s for H100/H200).

Sized to finish in under 5 minutes on one H200 (about 1 minute of compilation). On a CPU it runs
the same path with ``--model tiny`` for a check: ``python benchmarks/bench_gpu.py --model tiny
--seq-len 128 --micro-batch 2 --accum 1 --steps 3 --warmup 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from curation.schema import TOKEN_SHARD_SCHEMA  # noqa: E402
from training.model import flops_per_token, model_config  # noqa: E402
from training.trainer import TrainConfig, device_peak_flops, train  # noqa: E402

VOCAB = 100_015


def random_shards(out: str, tokens: int, doc_len: int = 2048, n_shards: int = 2) -> None:
    rng = np.random.default_rng(0)
    per = tokens // n_shards // doc_len + 1
    for s in range(n_shards):
        ids = rng.integers(0, VOCAB, size=(per, doc_len), dtype=np.uint32)
        arr = pa.ListArray.from_arrays(pa.array(np.arange(0, per * doc_len + 1, doc_len, dtype=np.int32)), pa.array(ids.ravel()))
        table = pa.table({"id": [f"r{s}-{i}" for i in range(per)], "epoch": pa.array(np.zeros(per, np.int32)),
                          "input_ids": arr.cast(pa.list_(pa.uint32()))}, schema=TOKEN_SHARD_SCHEMA)
        pq.write_table(table, os.path.join(out, f"shard-{s:05d}.parquet"), compression="zstd", row_group_size=256)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="1b")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "build" / "bench-gpu"))
    args = ap.parse_args()

    gpu = torch.cuda.is_available()
    print(f"device: {torch.cuda.get_device_name() if gpu else 'CPU (no GPU: a path check, not the benchmark)'}; torch {torch.__version__}", flush=True)
    tokens_per_step = args.seq_len * args.micro_batch * args.accum
    steps = args.warmup + args.steps
    work = tempfile.mkdtemp(prefix="bench-gpu-")
    try:
        data = os.path.join(work, "tokens")
        os.makedirs(data)
        t = time.perf_counter()
        random_shards(data, tokens_per_step * (steps + 2))
        print(f"random token shards: {time.perf_counter() - t:.1f} s", flush=True)
        run = os.path.join(work, "run")
        cfg = TrainConfig(run_dir=run, data=[data], holdout_shards=0, model=args.model, vocab_size=VOCAB, seq_len=args.seq_len,
                          micro_batch=args.micro_batch, batch_tokens=tokens_per_step, train_tokens=tokens_per_step * steps,
                          lr=3e-4, warmup_steps=5, checkpoint_every=0, eval_every=0, compile=not args.no_compile,
                          activation_checkpointing=args.activation_checkpointing, progress=True)
        t = time.perf_counter()
        summary = train(cfg)
        wall = time.perf_counter() - t
        recs = [json.loads(line) for line in open(os.path.join(run, "log.jsonl")) if '"loss"' in line]
        timed = recs[args.warmup:]
        tps = tokens_per_step * len(timed) / sum(r["step_time_s"] for r in timed)
        mcfg = model_config(args.model, vocab_size=VOCAB)
        peak, src = device_peak_flops(torch.device("cuda") if gpu else torch.device("cpu"))
        fpt = flops_per_token(mcfg, args.seq_len)
        mem = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
        os.makedirs(args.out, exist_ok=True)
        result = {"model": args.model, "seq_len": args.seq_len, "micro_batch": args.micro_batch, "accum": args.accum,
                  "compile": not args.no_compile, "activation_checkpointing": args.activation_checkpointing,
                  "tokens_per_step": tokens_per_step, "timed_steps": len(timed), "tokens_per_s": tps,
                  "median_step_s": statistics.median(r["step_time_s"] for r in timed), "flops_per_token": fpt,
                  "peak_flops": peak, "peak_source": src, "mfu": fpt * tps / peak if peak else None,
                  "max_memory_gib": mem, "wall_s": wall, "first_loss": recs[0]["loss"], "last_loss": recs[-1]["loss"],
                  "steps": summary["steps"]}
        with open(os.path.join(args.out, "bench_gpu.json"), "w") as f:
            json.dump(result, f, indent=2)
        record_figures(result, args.out)
        print()
        print(f"model {args.model}: {tokens_per_step:,} tokens/step ({args.micro_batch} x {args.seq_len} x accum {args.accum}), "
              f"compile {not args.no_compile}, AC {args.activation_checkpointing}")
        print(f"  tokens/s        {tps:,.0f}   (steps {args.warmup + 1}-{steps}; compile/warm-up steps excluded)")
        print(f"  FLOPs/token     {fpt:.3e}")
        print(f"  MFU             {100 * result['mfu']:.1f}%   of {peak:.3e} FLOP/s ({src}); target >= 45%" if peak else "  MFU             n/a")
        print(f"  peak memory     {mem:.1f} GiB")
        print(f"  loss            {recs[0]['loss']:.3f} -> {recs[-1]['loss']:.3f} (random tokens: stays near ln(vocab))")
        print(f"  wall            {wall:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def record_figures(result: dict, out: str) -> None:
    """benchmarks/results/gpu-<device>-<model>[-compile][-ac].json, and a copy in ``out`` (a GPU
    machine hands back only that folder)."""
    from benchmarks.results import accelerator, record

    extra = accelerator()
    gpu = bool(extra)
    slug = extra.pop("slug", "cpu")
    name = f"gpu-{slug}-{result['model']}" + ("-compile" if result["compile"] else "") + ("-ac" if result["activation_checkpointing"] else "")
    headline = None
    if gpu and result["mfu"]:
        headline = {"stage": f"pretrain {result['model']} on one {extra['gpu']} (bf16"
                             + (", torch.compile" if result["compile"] else "") + (", activation checkpointing" if result["activation_checkpointing"] else "") + ")",
                    "figure": 100 * result["mfu"], "peer": None, "ratio": None,
                    "unit": f"% MFU ({result['tokens_per_s']:,.0f} tokens/s; attention FLOPs counted in full)"}
    for folder in ((None, out) if gpu else (out,)):  # a CPU path check is not a figure of the project
        record(name, result, headline=headline, folder=folder, device=extra or {"gpu": None})


if __name__ == "__main__":
    raise SystemExit(main())
