"""What the ``sft`` and ``dpo`` stages share: the fine-tuning stage on Ray and the launchers.

A fine-tuning stage (:class:`Finetune`; ``pipelines.sft`` and ``pipelines.dpo`` each declare
one) runs in two steps, each resumable:

1. Ray tasks, one per input file (JSONL, JSONL.gz or Parquet): adapt each record, tokenise it
   with the answer mask (the stage's ``examples``), drop examples longer than the context
   (``too_long``) and records that share a 13-gram with an evaluation set (``contamination``,
   ``curation.decontam``: the bundled GSM8K test by default; ``--set
   decontamination.enabled=false`` turns it off), mark a held-out share by a hash of each key;
   written to ``<run>/<prepared>/<file>.parquet``, its stats in ``<run>/_stats/<file>.json``. A
   re-run skips files already prepared. (A stage may add a step here: DPO's reference log-probs.)
2. The trainer's loop from the checkpoint (the recipe's ``training.<name>.main``), through the
   pre-training launchers (in-process, torchrun, or Ray Train with ``RAY_ADDRESS``).

``<run>/stats.json`` counts examples (in = trained + held out + dropped by reason) and holds the
recipe's summary (``<run>/<name>.json``: held-out figures before and after).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Callable

from curation.decontam import contamination_index
from curation.stats import StageStats
from pipelines.cli import add_config_arguments
from pipelines.pretrain import Launch, add_launcher_arguments
from pipelines.runtime import Timer, merge_results, print_summary, run_tasks
from storage import io
from training.prepare import SUFFIXES, check_tokenizer, prepare_chat_file, shard_name

_DECONT = "decontamination."


@dataclass(frozen=True)
class Finetune:
    """A fine-tuning stage's own parts; the rest of the stage is :func:`run`."""

    name: str  # the stage and its recipe: training.<name>.main writes <run>/<name>.json
    noun: str  # what it trains on, for messages ("conversations", "pairs")
    prepared: str  # the folder of the run that holds the tokenised shards
    examples: Callable  # (tokenizer, record) -> (items, drop reason): see training.prepare.prepare_chat_file
    table: Callable  # (keys, examples, held_out) -> the shard's pyarrow table
    # (cfg, shards, checkpoint, pad_id, stats) -> extra launch settings, or None when it failed.
    before_training: Callable | None = None
    # (result, stats) -> the summary's own lines
    report: Callable | None = None


def add_arguments(p: argparse.ArgumentParser, what: str, default_data: str) -> None:
    """The options every fine-tuning stage takes."""
    p.add_argument("--checkpoint", required=True, help=f"checkpoint folder (or run folder: its latest) that {what} starts from")
    p.add_argument("--data", nargs="+", default=[default_data], help="JSONL/JSONL.gz/Parquet files or folders")
    p.add_argument("--tokenizer", required=True, help="the project tokenizer's folder (or its tokenizer.json)")
    p.add_argument("--output", required=True, help="run folder (prepared data, checkpoints, log.jsonl, stats.json)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--micro-batch", type=int)
    p.add_argument("--seq-len", type=int, help="tokens per example row; longer examples are dropped (default: the starting run's)")
    p.add_argument("--held-out-fraction", type=float, help="share of examples held out for the before/after figures")
    add_launcher_arguments(p)
    add_config_arguments(p)


def build_config(args: argparse.Namespace, cls, extra: dict[str, Any]):
    """The stage's config (a ``training.finetune.FinetuneConfig``): defaults, then ``--config``,
    then flags, then ``--set`` overrides (``decontamination.*`` ones excepted:
    :func:`contamination_index` takes those). ``--dry-run`` checks the same."""
    from pipelines import config as config_mod

    over: dict[str, Any] = {"run_dir": args.output, "init_from": args.checkpoint}
    for flag in ("epochs", "lr", "micro_batch", "seq_len", "held_out_fraction"):
        if getattr(args, flag, None) is not None:
            over[flag] = getattr(args, flag)
    over.update({k: v for k, v in extra.items() if v is not None})
    over.update({k: v for k, v in config_mod.parse_overrides(args.overrides).items() if not k.startswith(_DECONT)})
    return config_mod.load(cls, args.config, over)


def decontamination_config(args: argparse.Namespace):
    """The command line's ``--set decontamination.*`` as a ``curation.decontam.DecontaminationConfig``
    (the filter's settings; the stage's own config takes every other override)."""
    from curation.decontam import DecontaminationConfig
    from pipelines import config as config_mod

    over = {k[len(_DECONT):]: v for k, v in config_mod.parse_overrides(args.overrides).items() if k.startswith(_DECONT)}
    return config_mod.load(DecontaminationConfig, None, over)




def run(stage: Finetune, cfg: Any, data: list[str], tokenizer: str, how: Launch, decontamination: Any) -> int:
    """Fine-tune with ``cfg`` (the recipe's ``training.finetune.FinetuneConfig``) on the chat
    files ``data``: prepare them (Ray tasks; records checked against ``decontamination``'s
    evaluation sets), train (the launchers, ``how``), write stats.json, print the summary."""
    from curation import decontam
    from pipelines.config import to_dict
    from pipelines.pretrain import launch
    from training.checkpoint import CheckpointError, resolve_checkpoint
    from training.finetune import context_length
    from tokenizer import tokenizer_json

    try:
        ckpt, run_cfg = resolve_checkpoint(cfg.init_from)
    except CheckpointError as e:
        raise CheckpointError(f"--checkpoint {e}") from None
    tok_path = tokenizer_json(tokenizer)
    pad_id = check_tokenizer(tok_path, run_cfg)
    files, missing = io.expand_inputs(data, SUFFIXES)
    # The run's one sequence length: too_long here, packing and batches in training agree.
    max_len = context_length(run_cfg, cfg.seq_len)
    data_dir = io.join(cfg.run_dir, stage.prepared)
    contamination = contamination_index(decontamination)
    with Timer() as t:
        stats = merge_results(StageStats(), files, run_tasks(
            prepare_chat_file, files, desc=f"{stage.name}: tokenise {stage.noun}",
            args=(data_dir, tok_path, max_len, cfg.held_out_fraction, cfg.seed, stage.examples, stage.table, contamination)))
        stats.failed_files.update(missing)
        stats.check()
        shards = [io.join(data_dir, shard_name(f) + ".parquet") for f in files if f not in stats.failed_files]
        if stats.output == 0:
            print(f"{stage.name}: no {stage.noun} to train on", file=sys.stderr)
            for f, e in sorted(stats.failed_files.items()):
                print(f"  {f}: {e}", file=sys.stderr)
            return 1
        extra = stage.before_training(cfg, shards, ckpt, pad_id, stats) if stage.before_training else {}
        if extra is None:
            return 1
        launch_cfg = {**to_dict(cfg), "seq_len": max_len, "data": shards, "pad_id": pad_id, "init_from": ckpt, **extra}
        rc = launch(launch_cfg, how.nproc, how.launcher, entry_module=f"training.{stage.name}", max_failures=how.max_failures)
    if rc != 0:
        print(f"{stage.name}: training exited with status {rc}", file=sys.stderr)
        return rc
    result = io.read_json(io.join(cfg.run_dir, f"{stage.name}.json"))
    stats.add("steps", result["steps"])
    stats.add("seconds", t.seconds)
    io.write_json({**stats.to_dict(), "decontamination": decontam.summary(stats, contamination), stage.name: result},
                  io.join(cfg.run_dir, "stats.json"))
    trained = stats.output - stats.counters.get("held_out", 0)
    print_summary(stage.name, stats, t.seconds, {f"{stage.noun} trained": trained, "steps": result["steps"]})
    for line in stage.report(result, stats) if stage.report else []:
        print(f"  {line}", file=sys.stderr)
    print(f"  checkpoint               {result['checkpoint']}", file=sys.stderr)
    return 1 if stats.failed_files else 0
