"""``python -m pipelines dpo --checkpoint <sft> --data <files> --tokenizer <dir> --output <run>``

Three steps, each resumable:
1. Ray tasks, one per input file (orca pairs, hh-rlhf dialogues, or ``prompt``/``chosen``/
   ``rejected`` records): adapt, tokenise chosen and rejected conversations with the answer
   mask, drop pairs longer than the context (``too_long``) and pairs sharing a 13-gram with an
   evaluation set (``contamination``, as SFT), mark a held-out share by hash;
   ``<run>/pairs/<file>.parquet``.
2. With ``--reference precomputed`` (default): Ray tasks, one per pair shard, run the frozen
   starting checkpoint once over its pairs and write the summed answer log-probs beside them,
   ``<run>/reference/<file>.parquet`` (``key``, ``ref_chosen``, ``ref_rejected``). With
   ``--reference on_the_fly`` the reference runs inside every training step instead; both
   go through ``training.dpo.pair_logps``.
3. The trainer's loop with the DPO loss (``training.dpo.main``), through the pre-training
   launchers.

``<run>/stats.json`` counts pairs (in = trained + held out + dropped by reason) and holds the
held-out loss, reward accuracy, margin and log-probs before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from storage import io
from pipelines.runtime import TaskFailure, Timer, print_summary, run_tasks
from pipelines.sft import (
    SUFFIXES, _resolve, add_common_arguments, check_tokenizer, contamination_index, prepare_chat_file, prepare_files, shard_name,
    tokenizer_file,
)

NAME = "dpo"
HELP = "direct preference optimisation of an SFT checkpoint against its frozen self (sigmoid loss, beta 0.1)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, "DPO", "data/sample/preference")
    p.add_argument("--beta", type=float)
    p.add_argument("--batch-pairs", type=int, help="pairs per optimizer step (report: 512)")
    p.add_argument("--reference", choices=["precomputed", "on_the_fly"], default="precomputed",
                   help="reference log-probs computed once up front by a Ray job, or in every step")
    p.add_argument("--held-out-fraction", type=float, default=0.1, help="share of pairs held out for the before/after metrics")


def pair_examples(tok, rec: Any) -> tuple[list[tuple], str | None]:
    """The chosen and rejected conversations of one preference record (the longer one counts for ``too_long``)."""
    from training.chat import pair_from_record, tokenize_pair

    pair, reason = pair_from_record(rec)
    if pair is None:
        return [], reason
    c, r = tokenize_pair(tok, pair)
    # One example of two rows: too_long looks at the longer, the token counts cover both.
    return [("", (c, r), max(len(c.input_ids), len(r.input_ids)), int(c.loss_mask.sum() + r.loss_mask.sum()))], None


def _reference_shard(pair_shard: str, out_dir: str, checkpoint: str, pad_id: int, micro_batch: int) -> int:
    """The frozen reference's log-probs for one pair shard, written beside it; returns pairs."""
    import pyarrow as pa
    import torch

    from training.dpo import REFERENCE_SCHEMA, read_pairs, reference_logps
    from training.sft import load_model

    out = io.join(out_dir, os.path.basename(pair_shard))
    if io.exists(out):
        return io.read_parquet(out).num_rows
    torch.set_num_threads(1)  # one task per CPU
    keys, pairs, _ = read_pairs(pair_shard)
    model, _ = load_model(checkpoint)
    c, r = reference_logps(model, pairs, pad_id, micro_batch) if pairs else ([], [])
    io.write_parquet(pa.table({"key": keys, "ref_chosen": list(c), "ref_rejected": list(r)}, schema=REFERENCE_SCHEMA), out)
    return len(keys)


def build_config(args: argparse.Namespace):
    """The run's ``training.dpo.DPOConfig`` from the command line (``--dry-run`` checks the same)."""
    from training.dpo import DPOConfig

    return _resolve(args, DPOConfig, {"beta": args.beta, "batch_pairs": args.batch_pairs})


def run(args: argparse.Namespace) -> int:
    from pipelines.config import to_dict
    from pipelines.pretrain import launch
    from training.dpo import pairs_table
    from training.sft import context_length, resolve_checkpoint

    cfg = build_config(args)
    try:
        ckpt, run_cfg = resolve_checkpoint(cfg.init_from)
    except FileNotFoundError as e:
        print(f"dpo: --checkpoint {e}", file=sys.stderr)
        return 2
    tok_path = tokenizer_file(args.tokenizer)
    pad_id, err = check_tokenizer(tok_path, run_cfg)
    if err:
        print(f"dpo: {err}", file=sys.stderr)
        return 2
    files, missing = io.expand_inputs(args.data, SUFFIXES)
    max_len = context_length(run_cfg, cfg.max_seq_len)
    pair_dir, ref_dir = io.join(cfg.run_dir, "pairs"), io.join(cfg.run_dir, "reference")
    contamination = contamination_index(args)
    with Timer() as t:
        stats = prepare_files(files, pair_dir, prepare_chat_file,
                              (tok_path, max_len, args.held_out_fraction, cfg.seed, pair_examples, pairs_table, contamination), "dpo: tokenise pairs")
        stats.failed_files.update(missing)
        stats.check()
        shards = [io.join(pair_dir, shard_name(f) + ".parquet") for f in files if f not in stats.failed_files]
        if stats.output == 0:
            print("dpo: no pairs to train on", file=sys.stderr)
            for f, e in sorted(stats.failed_files.items()):
                print(f"  {f}: {e}", file=sys.stderr)
            return 1
        ref_shards: list[str] = []
        with Timer() as tr:
            if args.reference == "precomputed":
                done = run_tasks(_reference_shard, shards, desc="dpo: reference log-probs", args=(ref_dir, ckpt, pad_id, 8))
                for s, d in zip(shards, done):
                    if isinstance(d, TaskFailure):
                        print(f"dpo: reference log-probs failed for {s}: {d.error}", file=sys.stderr)
                        return 1
                ref_shards = [io.join(ref_dir, os.path.basename(s)) for s in shards]
        launch_cfg = {**to_dict(cfg), "max_seq_len": max_len, "data": shards, "reference_data": ref_shards, "pad_id": pad_id, "init_from": ckpt}
        rc = launch(launch_cfg, args.nproc, args.launcher, entry_module="training.dpo", max_failures=args.max_failures)
    if rc != 0:
        print(f"dpo: training exited with status {rc}", file=sys.stderr)
        return rc
    result = io.read_json(io.join(cfg.run_dir, "dpo.json"))
    stats.add("steps", result["steps"])
    stats.add("seconds", t.seconds)
    stats.add("reference_seconds", tr.seconds)
    from curation import decontam

    io.write_json({**stats.to_dict(), "decontamination": decontam.summary(stats, contamination), "dpo": result}, io.join(cfg.run_dir, "stats.json"))
    print_summary(NAME, stats, t.seconds, {"pairs trained": result["train_pairs"], "steps": result["steps"]})
    b, a = result.get("held_out_before"), result.get("held_out_after")
    if b and a:
        for k in ("loss", "reward_accuracy", "reward_margin", "chosen_logps", "rejected_logps", "logps_accuracy"):
            print(f"  held-out {k:<16} {b[k]:9.4f} -> {a[k]:9.4f}", file=sys.stderr)
    print(f"  reference               {result['reference']} ({tr.seconds:.1f} s up front)", file=sys.stderr)
    print(f"  checkpoint              {result['checkpoint']}", file=sys.stderr)
    return 1 if stats.failed_files else 0
