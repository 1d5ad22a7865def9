"""`make bench-checkpoint`: training step time with asynchronous checkpoints against synchronous ones.

The same run three times per store, side by side and alternating (``--repeat``): no intermediate
checkpoints (the baseline), synchronous DCP saves every ``--every`` steps, and asynchronous ones
(``dcp.async_save``: the state is staged to CPU memory, a thread writes it while training goes on,
the manifest is written once every rank is done). Every mode ends with the same synchronous final
checkpoint, so the work is equal but for the intermediate saves. Stores: a local folder and an
S3-compatible server on loopback (moto, ``tests/s3server.py``; reached through the AWS variables).

Printed per store and mode: wall seconds per step including checkpointing (the figure that
matters), the checkpoint overhead per save against the baseline, and the final loss (identical in
every mode: checkpoints never change the maths). The model is the tiny one with the report's
100,015-token vocabulary, so a checkpoint (weights + two Adam moments, fp32) is about 150 MB while
a step takes a fraction of a second: a CPU stand-in for a GPU step and a multi-GB checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from benchmarks.bench_gpu import VOCAB, random_shards  # noqa: E402
from storage import io  # noqa: E402
from training.trainer import TrainConfig, train  # noqa: E402


def one_run(data: str, run_dir: str, mode: str, args) -> dict:
    tokens = args.seq_len * args.micro_batch
    cfg = TrainConfig(run_dir=run_dir, data=[data], holdout_shards=0, model="tiny", vocab_size=VOCAB, seq_len=args.seq_len,
                      micro_batch=args.micro_batch, batch_tokens=tokens, train_tokens=tokens * args.steps, lr=1e-3, warmup_steps=2,
                      checkpoint_every=0 if mode == "none" else args.every, async_checkpoint=mode == "async", keep_checkpoints=2,
                      eval_every=0, progress=False, cpu_threads=args.threads)
    t = time.perf_counter()
    out = train(cfg)
    wall = time.perf_counter() - t
    with io.open_input(io.join(run_dir, "log.jsonl")) as f:
        recs = [json.loads(line) for line in f.read().decode().splitlines()]
    compute = sum(r["step_time_s"] for r in recs if "step_time_s" in r)
    return {"wall": wall, "compute": compute, "last_loss": out["losses"][-1], "saves": 0 if mode == "none" else (args.steps - 1) // args.every}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--stores", default="local,s3")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="bench-ckpt-")
    server = None
    try:
        data = os.path.join(work, "tokens")
        os.makedirs(data)
        random_shards(data, args.seq_len * args.micro_batch * (args.steps + 4), doc_len=args.seq_len * 4)
        roots = {}
        for store in args.stores.split(","):
            if store == "local":
                roots[store] = os.path.join(work, "runs")
            elif store == "s3":
                from s3server import S3Server

                server = S3Server()
                os.environ.update(server.env)
                roots[store] = server.create_bucket("bench-checkpoint") + "/runs"
        results: dict[tuple[str, str], list[dict]] = {}
        for r in range(args.repeat):
            for store, root in roots.items():
                for mode in ("none", "sync", "async"):
                    run_dir = io.join(root, f"{mode}-{r}")
                    res = one_run(data, run_dir, mode, args)
                    results.setdefault((store, mode), []).append(res)
                    print(f"  {store:<5} {mode:<5} run {r}: {res['wall']:.2f} s wall, {res['compute']:.2f} s in steps", file=sys.stderr, flush=True)
                    if io.is_object_store(run_dir):
                        io.remove_tree(run_dir)
                    else:
                        shutil.rmtree(run_dir, ignore_errors=True)
        ckpt_mb = 12 * 2 * 64 * 102_400 / 1e6  # fp32 weights + 2 Adam moments of the two embedding matrices (the bulk)
        print(f"\ncheckpoint every {args.every} of {args.steps} steps (~{ckpt_mb:.0f} MB each), tiny model, vocab {VOCAB:,}, "
              f"{args.seq_len} x {args.micro_batch} tokens per step, {args.threads} thread(s); best of {args.repeat}\n")
        print("| store | mode | s/step incl. checkpoints | overhead per save | final loss |")
        print("|---|---|---|---|---|")
        figures: dict = {"steps": args.steps, "every": args.every, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
                         "threads": args.threads, "repeat": args.repeat, "checkpoint_mb": ckpt_mb, "stores": {}}
        for store in roots:
            base = min(x["wall"] for x in results[(store, "none")])
            for mode in ("none", "sync", "async"):
                best = min(results[(store, mode)], key=lambda x: x["wall"])
                saves = best["saves"]
                over = f"{(best['wall'] - base) / saves:.3f} s" if saves else "-"
                print(f"| {store} | {mode} | {best['wall'] / args.steps:.3f} | {over} | {best['last_loss']:.6f} |")
            sync = min(x["wall"] for x in results[(store, "sync")])
            asyn = min(x["wall"] for x in results[(store, "async")])
            hidden = (f"{1 - (asyn - base) / (sync - base):.0%} of the save time hidden" if sync - base > 0.05 * base
                      else "saves cost no measurable time here")
            print(f"| {store} | async vs sync | {sync / asyn:.2f}x the speed of the sync run | {hidden} | |")
            figures["stores"][store] = {
                "s_per_step": {m: min(x["wall"] for x in results[(store, m)]) / args.steps for m in ("none", "sync", "async")},
                "save_s": {m: (min(x["wall"] for x in results[(store, m)]) - base) / max(1, results[(store, m)][0]["saves"]) for m in ("sync", "async")},
                "async_vs_sync": sync / asyn, "hidden_share": 1 - (asyn - base) / (sync - base) if sync > base else None}
        losses = {round(x["last_loss"], 6) for v in results.values() for x in v}
        print(f"\nfinal losses identical in every mode and store: {len(losses) == 1}")
        figures["final_losses_identical"] = len(losses) == 1
        from benchmarks.results import record

        store = "s3" if "s3" in figures["stores"] else next(iter(figures["stores"]))
        f = figures["stores"][store]
        record("checkpoint", figures, headline={
            "stage": f"pretrain with asynchronous checkpoints ({'S3 on loopback' if store == 's3' else 'local disk'})",
            "figure": f["s_per_step"]["async"], "peer": {"name": "synchronous DCP checkpoints", "figure": f["s_per_step"]["sync"]},
            "ratio": f["async_vs_sync"], "unit": "seconds per step incl. saves (lower is better)"})
    finally:  # (SIGTERM/SIGKILL skip this: stop the moto_server process group by hand then)
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
