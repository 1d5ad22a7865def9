"""`make bench-train`: the trainer against a minimal plain PyTorch loop, side by side in one run.

On the same model config, seed, token shards (the bundled Common Crawl sample through a small
BPE), global batch and AdamW settings:
  (a) ``training.trainer.train`` in this process: FSDP2 over a world of one, the token-shard
      loader, gradient accumulation, clipping, schedule, JSONL logs;
  (b) a plain loop: the same ``Transformer``, the same loader batches, forward + cross-entropy +
      backward, ``clip_grad_norm_``, ``AdamW.step`` - nothing else.
Both are timed per optimizer step after warm-up steps, alternating (a, b, a, b) so load from
other processes hits both alike; the best round of each is reported with their ratio (target
>= 0.9). Then the loader alone (tokens/s of ``next_batch``) against what the trainer consumes
(target >= 10x).
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

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from training.data import TokenShardLoader, list_token_shards  # noqa: E402
from training.model import Transformer, model_config  # noqa: E402
from training.optim import build_optimizer  # noqa: E402
from training.sample_data import write_token_shards  # noqa: E402
from training.trainer import TrainConfig, train  # noqa: E402


def shards(cache: str) -> str:
    if not list(Path(cache).glob("shard-*.parquet")):
        print(f"building token shards from data/sample/text into {cache} ...", flush=True)
        write_token_shards(cache, vocab_size=2048, n_shards=4, row_group_size=64)
    return cache


def trainer_round(args, data: str, workdir: str) -> float:
    run = os.path.join(workdir, f"trainer-{time.monotonic_ns()}")
    steps = args.warmup + args.steps
    cfg = TrainConfig(run_dir=run, data=[data], holdout_shards=0, model=args.model, vocab_size=2048, seq_len=args.seq_len,
                      micro_batch=args.micro_batch, batch_tokens=args.seq_len * args.micro_batch * args.accum,
                      train_tokens=args.seq_len * args.micro_batch * args.accum * steps, lr=1e-3, warmup_steps=2,
                      checkpoint_every=0, eval_every=0, progress=False, seed=0)
    train(cfg)
    recs = [json.loads(line) for line in open(os.path.join(run, "log.jsonl")) if '"loss"' in line][args.warmup:]
    shutil.rmtree(run, ignore_errors=True)
    return sum(r["tokens"] - p["tokens"] for p, r in zip(recs, recs[1:])) / sum(r["step_time_s"] for r in recs[1:])


def plain_round(args, data: str) -> float:
    torch.manual_seed(0)
    model = Transformer(model_config(args.model, vocab_size=2048))
    opt = build_optimizer(model, 1e-3)
    loader = TokenShardLoader(list_token_shards([data]), args.seq_len, args.micro_batch, seed=0)
    times = []
    for step in range(args.warmup + args.steps):
        t = time.perf_counter()
        n = 0
        for _ in range(args.accum):
            b = loader.next_batch()
            logits = model(b["input_ids"])
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), b["labels"].view(-1), reduction="sum")
            loss.backward()
            n += b["labels"].numel()
        for p in model.parameters():
            p.grad.div_(n)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    tokens = args.seq_len * args.micro_batch * args.accum
    return tokens * args.steps / sum(times[args.warmup:])


def loader_rate(data: str, seq_len: int, micro_batch: int, seconds: float = 3.0) -> float:
    loader = TokenShardLoader(list_token_shards([data]), seq_len, micro_batch, seed=0)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        n += loader.next_batch()["input_ids"].numel()
    return n / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both (1: stable on a shared 2-core box)")
    ap.add_argument("--cache", default=str(REPO / "build" / "bench-train" / "tokens"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = shards(args.cache)
    workdir = tempfile.mkdtemp(prefix="bench-train-")
    print(f"model {args.model} (vocab 2048), seq {args.seq_len}, micro-batch {args.micro_batch} x accum {args.accum} "
          f"= {args.seq_len * args.micro_batch * args.accum:,} tokens/step, {args.steps} timed steps after {args.warmup}, "
          f"{args.threads} thread(s), {args.rounds} rounds alternating", flush=True)
    trainer, plain = [], []
    for r in range(args.rounds):
        trainer.append(trainer_round(args, data, workdir))
        plain.append(plain_round(args, data))
        print(f"  round {r + 1}: trainer {trainer[-1]:,.0f} tokens/s, plain loop {plain[-1]:,.0f} tokens/s", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    best_t, best_p = max(trainer), max(plain)
    load = loader_rate(data, args.seq_len, args.micro_batch)
    print()
    print(f"{'':<34}{'tokens/s':>12}")
    print(f"{'trainer (FSDP2 world 1, best)':<34}{best_t:>12,.0f}")
    print(f"{'plain PyTorch loop (best)':<34}{best_p:>12,.0f}")
    print(f"{'ratio trainer / plain':<34}{best_t / best_p:>12.3f}   (target >= 0.9; median ratio {statistics.median(t / p for t, p in zip(trainer, plain)):.3f})")
    print(f"{'loader alone':<34}{load:>12,.0f}")
    print(f"{'ratio loader / trainer':<34}{load / best_t:>12.1f}   (target >= 10)")
    from benchmarks.results import record

    record("train", {
        "model": args.model, "seq_len": args.seq_len, "micro_batch": args.micro_batch, "accum": args.accum, "timed_steps": args.steps,
        "threads": args.threads, "rounds": {"trainer_tokens_per_s": trainer, "plain_tokens_per_s": plain},
        "trainer_tokens_per_s": best_t, "plain_tokens_per_s": best_p, "ratio": best_t / best_p,
        "median_ratio": statistics.median(t / p for t, p in zip(trainer, plain)),
        "loader_tokens_per_s": load, "loader_vs_trainer": load / best_t,
    }, headline={"stage": f"pretrain step ({args.model} model, CPU)", "figure": best_t,
                 "peer": {"name": "minimal plain PyTorch loop, same model and batches", "figure": best_p},
                 "ratio": best_t / best_p, "unit": "tokens per second"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
