"""Throughput of a finished pretrain -> SFT -> DPO chain: tokens/s and MFU of each training stage.

``python benchmarks/bench_chain.py <run folder of pipelines run>`` (local or an object-store URI)
reads each stage's ``config.json`` and ``log.jsonl`` (the trainer's own per-step figures) and
prints, per stage, the median tokens/s over the steps after ``--warmup`` and MFU two ways:

- attention counted in full: ``training.model.flops_per_token``, 6 x (layer weights + output
  head) + 12 n_layer d l_seq per token, the report's attention term. This is what the trainer
  logs and what the README's 51.6% (1b on an H200) is;
- attention halved for the causal mask: 6 n_layer d l_seq instead (a causal kernel skips the
  upper triangle), as PaLM's and torchtitan's MFU count it.

For SFT and DPO the trainer counts a step's tokens as rows x seq_len (padding included), so
their figures are an upper bound of the useful work. ``benchmarks/gpu_check.sh chain`` runs the
chain (125m, ``launcher: ray``) on a GPU machine and then this.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage import io  # noqa: E402
from training.model import ModelConfig, flops_per_token  # noqa: E402


def stage_figures(run_dir: str, warmup: int) -> dict | None:
    if not io.exists(io.join(run_dir, "log.jsonl")):
        return None
    cfg = io.read_json(io.join(run_dir, "config.json"))
    r = cfg["resolved"]
    mcfg = ModelConfig(**r["model"])
    with io.open_input(io.join(run_dir, "log.jsonl")) as f:
        recs = [json.loads(line) for line in f.read().decode().splitlines() if '"tokens_per_s"' in line]
    by_step = {rec["step"]: rec for rec in recs}  # a step logged again after a restart: the later record
    timed = [by_step[s] for s in sorted(by_step)][warmup:] or [by_step[s] for s in sorted(by_step)]
    tps = statistics.median(rec["tokens_per_s"] for rec in timed)
    full = flops_per_token(mcfg, r["seq_len"])
    causal = full - 6 * mcfg.n_layers * mcfg.dim * r["seq_len"]
    mfu_full = statistics.median(rec["mfu"] for rec in timed) if timed[0].get("mfu") is not None else None
    return {"model": cfg["model"], "seq_len": r["seq_len"], "world_size": r["world_size"], "steps": len(by_step), "timed_steps": len(timed),
            "tokens_per_s": tps, "flops_per_token_full": full, "flops_per_token_causal": causal,
            "mfu_full": mfu_full, "mfu_causal": mfu_full * causal / full if mfu_full is not None else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="the run folder of `pipelines run` (holding pretrain/, sft/, dpo/)")
    ap.add_argument("--warmup", type=int, default=5, help="first steps left out (allocation, compilation)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    out = {}
    print("| stage | model | world | seq_len | steps timed | tokens/s | MFU (attention in full) | MFU (causal: attention halved) |")
    print("|---|---|---|---|---|---|---|---|")
    for stage in ("pretrain", "sft", "dpo"):
        fig = stage_figures(io.join(args.run, stage), args.warmup)
        if fig is None:
            print(f"| {stage} | (no log) | | | | | | |")
            continue
        out[stage] = fig
        pct = lambda x: f"{100 * x:.1f}%" if x is not None else "n/a"  # noqa: E731
        print(f"| {stage} | {fig['model']} | {fig['world_size']} | {fig['seq_len']} | {fig['timed_steps']} | {fig['tokens_per_s']:,.0f} | "
              f"{pct(fig['mfu_full'])} | {pct(fig['mfu_causal'])} |")
    if args.json:
        io.write_json(out, args.json)
    return 0 if out else 1


if __name__ == "__main__":
    raise SystemExit(main())
