"""``python -m pipelines dpo --checkpoint <sft> --data <files> --tokenizer <dir> --output <run>``

Direct preference optimisation (``training.dpo``) as a fine-tuning stage (``pipelines.finetune``):
orca pairs, hh-rlhf dialogues or ``prompt``/``chosen``/``rejected`` records are tokenised into
``<run>/pairs/``. With ``--reference precomputed`` (default) Ray tasks, one per pair shard, then
run the frozen starting checkpoint once over its pairs and write the summed answer log-probs
beside them, ``<run>/reference/<file>.parquet`` (``key``, ``ref_chosen``, ``ref_rejected``); with
``--reference on_the_fly`` the reference runs inside every training step instead (both go
through ``training.dpo.pair_logps``). ``<run>/stats.json`` counts pairs and holds the held-out
loss, reward accuracy, margin and log-probs before and after.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any

from pipelines import finetune
from pipelines.pretrain import Launch
from pipelines.runtime import TaskFailure, Timer, run_tasks
from storage import io

NAME = "dpo"
REFERENCES = ("precomputed", "on_the_fly")  # where the reference log-probs come from
HELP = "direct preference optimisation of an SFT checkpoint against its frozen self (sigmoid loss, beta 0.1)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    finetune.add_arguments(p, "DPO", "data/sample/preference")
    p.add_argument("--beta", type=float)
    p.add_argument("--batch-pairs", type=int, help="pairs per optimizer step (report: 512)")
    p.add_argument("--reference", choices=REFERENCES, default="precomputed",
                   help="reference log-probs computed once up front by a Ray job, or in every step")


def _references(reference: str, cfg, shards: list[str], checkpoint: str, pad_id: int, stats) -> dict[str, Any] | None:
    """Ray tasks, one per pair shard: the frozen start's log-probs beside it (``reference`` precomputed)."""
    from training.dpo import reference_shard

    ref_dir, ref_shards = io.join(cfg.run_dir, "reference"), []
    with Timer() as t:
        if reference == "precomputed":
            done = run_tasks(reference_shard, shards, desc="dpo: reference log-probs", args=(ref_dir, checkpoint, pad_id, 8))
            for s, d in zip(shards, done):
                if isinstance(d, TaskFailure):
                    print(f"dpo: reference log-probs failed for {s}: {d.error}", file=sys.stderr)
                    return None
            ref_shards = [io.join(ref_dir, io.basename(s)) for s in shards]
    stats.add("reference_seconds", t.seconds)
    return {"reference_data": ref_shards}


def _report(result: dict[str, Any], stats) -> list[str]:
    b, a = result.get("held_out_before"), result.get("held_out_after")
    keys = ("loss", "reward_accuracy", "reward_margin", "chosen_logps", "rejected_logps", "logps_accuracy") if b and a else ()
    return [f"held-out {k:<16} {b[k]:9.4f} -> {a[k]:9.4f}" for k in keys] + [
        f"reference               {result['reference']} ({stats.counters['reference_seconds']:.1f} s up front)"]


def build_config(args: argparse.Namespace):
    """The run's ``training.config.DPOConfig`` from the command line (``--dry-run`` checks the same)."""
    from training.config import DPOConfig

    return finetune.build_config(args, DPOConfig, {"beta": args.beta, "batch_pairs": args.batch_pairs})


def dpo(cfg, data: list[str], tokenizer: str, how: Launch, decontamination, reference: str = "precomputed") -> int:
    """DPO with ``cfg`` (a ``training.config.DPOConfig``) on the preference files ``data``; the
    reference log-probs ``precomputed`` by Ray tasks up front, or ``on_the_fly`` in every step."""
    from pipelines import config as config_mod
    from training.dpo import pairs_table, record_examples

    if reference not in REFERENCES:
        raise config_mod.ConfigError(f"bad option reference={reference!r}; choose one of {', '.join(REFERENCES)}")
    stage = finetune.Finetune(NAME, "pairs", "pairs", record_examples, pairs_table,
                              before_training=functools.partial(_references, reference), report=_report)
    return finetune.run(stage, cfg, data, tokenizer, how, decontamination)


def run(args: argparse.Namespace) -> int:
    return dpo(build_config(args), args.data, args.tokenizer, Launch(args.nproc, args.launcher, args.max_failures),
               finetune.decontamination_config(args), args.reference)
