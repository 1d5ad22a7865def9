"""``python -m pipelines sft --checkpoint <pretrained> --data <files> --tokenizer <dir> --output <run>``

Two steps, each resumable:
1. Ray tasks, one per input file (JSONL, JSONL.gz or Parquet of ``messages`` / GSM8K /
   self-instruct records): adapt, render in the report's chat format, tokenise with the answer
   mask, drop conversations longer than the context (``too_long``) and records that share a
   13-gram with an evaluation set (``contamination``, ``curation.decontam``: the bundled GSM8K
   test by default; ``--set decontamination.enabled=false`` turns it off), mark a held-out share
   by a hash of each conversation's key; written to ``<run>/data/<file>.parquet``, its stats in
   ``<run>/_stats/<file>.json``. A re-run skips files already prepared.
2. The trainer's loop from the pre-trained checkpoint (``training.sft.main``), through the same
   launchers as pre-training (in-process, torchrun, or Ray Train with ``RAY_ADDRESS``).

``<run>/stats.json`` counts conversations (in = trained + held out + dropped by reason) and
holds the held-out answer loss before and after. The second SFT stage of the report (on
conversational data only) is another run: ``--checkpoint <this run> --data <chat files>``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Callable

from curation.stats import StageStats
from storage import io
from pipelines.cli import add_config_arguments
from pipelines.pretrain import add_launcher_arguments
from pipelines.runtime import Timer, merge_results, print_summary, run_tasks

NAME = "sft"
HELP = "supervised fine-tuning of a checkpoint on chat data (loss on answers only), on the pre-training loop"

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


def add_common_arguments(p: argparse.ArgumentParser, what: str, default_data: str) -> None:
    p.add_argument("--checkpoint", required=True, help=f"checkpoint folder (or run folder: its latest) that {what} starts from")
    p.add_argument("--data", nargs="+", default=[default_data], help="JSONL/JSONL.gz/Parquet files or folders")
    p.add_argument("--tokenizer", required=True, help="the project tokenizer's folder (or its tokenizer.json)")
    p.add_argument("--output", required=True, help="run folder (data, checkpoints, log.jsonl, stats.json)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--micro-batch", type=int)
    add_launcher_arguments(p)
    add_config_arguments(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, "SFT", "data/sample/sft")
    p.add_argument("--seq-len", type=int, help="tokens per packed row; longer conversations are dropped (default: the starting run's)")
    p.add_argument("--batch-rows", type=int, help="packed rows per optimizer step")
    p.add_argument("--no-packing", action="store_true", help="one conversation per row")


def tokenizer_file(path: str) -> str:
    from tokenizer import tokenizer_json

    return tokenizer_json(path)


def shard_name(path: str) -> str:
    base = os.path.basename(path)
    for suf in SUFFIXES:
        if base.endswith(suf):
            base = base[: -len(suf)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base)


def read_records(path: str):
    """Records of a JSONL(.gz) or Parquet file; a line that is not JSON is ``None``."""
    if path.endswith(".parquet"):
        yield from io.read_parquet(path).to_pylist()
        return
    from training.chat import iter_jsonl_records

    with io.open_input(path) as f:
        yield from iter_jsonl_records(f)


def prepare_files(files: list[str], out_dir: str, task: Callable, task_args: tuple, desc: str) -> StageStats:
    """Run ``task(file, out_dir, *task_args)`` per file (skipping prepared ones), merge stats."""
    return merge_results(StageStats(), files, run_tasks(task, files, desc=desc, args=(out_dir, *task_args)))


def prepare_chat_file(path: str, out_dir: str, tokenizer_path: str, max_len: int, held_out_fraction: float, seed: int,
                      examples: Callable, table: Callable, contamination: Any = None) -> dict:
    """Tokenise one JSONL/Parquet file of chat records into ``<out_dir>/<file>.parquet``; its stats.

    ``examples(tok, record)`` gives ``(items, reason)``: ``items`` is a list of
    ``(key_suffix, example, tokens, answer_tokens)``, one per training example the record holds,
    and ``reason`` names the drop when it holds none. Examples longer than ``max_len`` are dropped
    (``too_long``); a hash of each key marks the held-out share. ``table(keys, examples, held_out)``
    builds the shard. A record any of whose strings shares an n-gram with an evaluation set of
    ``contamination`` (a ``curation.decontam.ContaminationIndex``) has each of its examples
    dropped as ``contamination``. A file already prepared is skipped (its stats are read back).
    """
    from curation import decontam
    from tokenizer import load
    from training.sft import split_held_out

    name = shard_name(path)
    shard = io.join(out_dir, name + ".parquet")
    stats_path = io.shard_stats_path(shard)
    if io.exists(shard) and io.exists(stats_path):
        return io.read_json(stats_path)
    tok = load(tokenizer_path)
    stats = StageStats()
    keys, exs = [], []
    for lineno, rec in enumerate(read_records(path)):
        items, reason = examples(tok, rec) if rec is not None else ([], "invalid_json")
        if not items:
            stats.seen()
            stats.drop(reason or "empty")
            continue
        match = contamination.find(decontam.strings_of(rec)) if contamination is not None else None
        for suffix, ex, tokens, answer_tokens in items:
            stats.seen()
            if match is not None:
                decontam.count(stats, match, file=os.path.basename(path), record=lineno)
                continue
            if tokens > max_len:
                stats.drop("too_long")
                continue
            stats.kept()
            stats.add("answer_tokens", answer_tokens)
            stats.add("tokens", tokens)
            keys.append(f"{name}:{lineno}{suffix}")
            exs.append(ex)
    held = split_held_out(keys, held_out_fraction, seed)
    stats.add("held_out", int(held.sum()))
    io.write_parquet(table(keys, exs, held.tolist()), shard)
    io.write_json(stats.to_dict(), stats_path)
    return stats.to_dict()


def sft_examples(tok, rec: Any) -> tuple[list[tuple], str | None]:
    """Each conversation of an SFT record, tokenised with its answer mask (keys ``:<n>``)."""
    from training.chat import conversations_from_record, tokenize_conversation

    convs, reason = conversations_from_record(rec)
    items = []
    for k, conv in enumerate(convs):
        ex = tokenize_conversation(tok, conv)
        items.append((f":{k}", ex, len(ex.input_ids), int(ex.loss_mask.sum())))
    return items, reason


_DECONT = "decontamination."


def _resolve(args: argparse.Namespace, cls, extra: dict[str, Any]):
    """The stage's config: defaults, then ``--config``, then flags, then ``--set`` overrides
    (``decontamination.*`` ones excepted: :func:`contamination_index` takes those)."""
    from pipelines import config as config_mod

    over: dict[str, Any] = {"run_dir": args.output, "init_from": args.checkpoint}
    for flag, key in (("epochs", "epochs"), ("lr", "lr"), ("micro_batch", "micro_batch")):
        if getattr(args, flag, None) is not None:
            over[key] = getattr(args, flag)
    over.update({k: v for k, v in extra.items() if v is not None})
    over.update({k: v for k, v in config_mod.parse_overrides(args.overrides).items() if not k.startswith(_DECONT)})
    return config_mod.load(cls, args.config, over)


def contamination_index(args: argparse.Namespace):
    """The evaluation-set index the records are checked against, from ``--set decontamination.*``
    (the filter's settings, ``curation.decontam.DecontaminationConfig``); None when switched off."""
    from curation.decontam import ContaminationIndex, DecontaminationConfig
    from pipelines import config as config_mod

    over = {k[len(_DECONT):]: v for k, v in config_mod.parse_overrides(args.overrides).items() if k.startswith(_DECONT)}
    cfg = config_mod.load(DecontaminationConfig, None, over)
    if not cfg.enabled:
        return None

    def read(path: str) -> bytes:
        with io.open_input(path) as f:
            return f.read()

    try:
        return ContaminationIndex.from_files(cfg, read=read)
    except (OSError, ValueError) as e:
        raise config_mod.ConfigError(str(e)) from None


def check_tokenizer(tokenizer_path: str, run_cfg: dict[str, Any]) -> tuple[int, str | None]:
    """The end (= pad) id, or an error when the tokenizer is not the checkpoint's."""
    from tokenizer import EOS, load, special_id

    tok = load(tokenizer_path)
    try:
        eos = special_id(tok, EOS)
    except KeyError:
        return -1, f"{tokenizer_path} is not a project tokenizer (no {EOS} token); build one with `make tokenizer`"
    if tok.get_vocab_size() != run_cfg["vocab_size"]:
        return -1, f"tokenizer has {tok.get_vocab_size():,} tokens but the checkpoint's model was built for {run_cfg['vocab_size']:,}"
    return eos, None


def build_config(args: argparse.Namespace):
    """The run's ``training.sft.SFTConfig`` from the command line (``--dry-run`` checks the same)."""
    from training.sft import SFTConfig

    return _resolve(args, SFTConfig, {"seq_len": args.seq_len, "batch_rows": args.batch_rows, "packing": False if args.no_packing else None})


def run(args: argparse.Namespace) -> int:
    from pipelines.config import to_dict
    from pipelines.pretrain import launch
    from training.sft import context_length, examples_table, resolve_checkpoint

    cfg = build_config(args)
    try:
        ckpt, run_cfg = resolve_checkpoint(cfg.init_from)
    except FileNotFoundError as e:
        print(f"sft: --checkpoint {e}", file=sys.stderr)
        return 2
    tok_path = tokenizer_file(args.tokenizer)
    pad_id, err = check_tokenizer(tok_path, run_cfg)
    if err:
        print(f"sft: {err}", file=sys.stderr)
        return 2
    files, missing = io.expand_inputs(args.data, SUFFIXES)
    # The run's one sequence length: too_long here, packing and batches in training agree.
    max_len = context_length(run_cfg, cfg.seq_len)
    data_dir = io.join(cfg.run_dir, "data")
    contamination = contamination_index(args)
    with Timer() as t:
        stats = prepare_files(files, data_dir, prepare_chat_file,
                              (tok_path, max_len, cfg.held_out_fraction, cfg.seed, sft_examples, examples_table, contamination), "sft: tokenise")
        stats.failed_files.update(missing)
        stats.check()
        shards = [io.join(data_dir, shard_name(f) + ".parquet") for f in files if f not in stats.failed_files]
        if stats.output == 0:
            print("sft: no conversations to train on", file=sys.stderr)
            for f, e in sorted(stats.failed_files.items()):
                print(f"  {f}: {e}", file=sys.stderr)
            return 1
        launch_cfg = {**to_dict(cfg), "seq_len": max_len, "data": shards, "pad_id": pad_id, "init_from": ckpt}
        rc = launch(launch_cfg, args.nproc, args.launcher, entry_module="training.sft", max_failures=args.max_failures)
    if rc != 0:
        print(f"sft: training exited with status {rc}", file=sys.stderr)
        return rc
    result = io.read_json(io.join(cfg.run_dir, "sft.json"))
    stats.add("steps", result["steps"])
    stats.add("seconds", t.seconds)
    from curation import decontam

    io.write_json({**stats.to_dict(), "decontamination": decontam.summary(stats, contamination), "sft": result}, io.join(cfg.run_dir, "stats.json"))
    print_summary(NAME, stats, t.seconds, {"conversations trained": stats.output - stats.counters["held_out"], "steps": result["steps"]})
    print(f"  held-out answer loss     {result['held_out_answer_loss_before']:.4f} -> {result['held_out_answer_loss_after']:.4f}"
          if result.get("held_out_answer_loss_before") is not None else "  (no held-out conversations)", file=sys.stderr)
    print(f"  checkpoint               {result['checkpoint']}", file=sys.stderr)
    return 1 if stats.failed_files else 0
