"""A fine-tune's first step: chat files in, tokenised example shards out (one per file).

Each record of a JSONL, JSONL.gz or Parquet file is adapted and tokenised with its answer mask
by the recipe's ``examples(tok, record)`` (``training.sft.record_examples``,
``training.dpo.record_examples``); examples longer than the run's context are dropped
(``too_long``), and so is every example of a record that shares an n-gram with an evaluation
set (``contamination``, a ``curation.decontam.ContaminationIndex``). A hash of each example's key
marks the held-out share. :func:`prepare_chat_file` writes ``<out_dir>/<file>.parquet`` and its
stats beside it; a file already prepared is skipped.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

from curation import decontam
from curation.stats import StageStats
from storage import io
from storage.errors import UserError
from training.chat import read_file_records

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


def shard_name(path: str) -> str:
    """The prepared shard's name for an input file: its base name without the suffix, only
    ``[A-Za-z0-9._-]`` (a name from the data never leaves the output folder)."""
    base = os.path.basename(path)
    for suf in SUFFIXES:
        if base.endswith(suf):
            base = base[: -len(suf)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base)


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
    for lineno, rec in enumerate(read_file_records(path)):
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


def check_tokenizer(tokenizer_path: str, run_cfg: dict[str, Any]) -> int:
    """The end (= pad) id; :class:`UserError` when the tokenizer is missing or not the checkpoint's."""
    from tokenizer import EOS, load, special_id

    tok = load(tokenizer_path)  # a missing or unreadable one is a UserError naming it
    try:
        eos = special_id(tok, EOS)
    except KeyError:
        raise UserError(f"{tokenizer_path} is not a project tokenizer (no {EOS} token); build one with `make tokenizer`") from None
    if tok.get_vocab_size() != run_cfg["vocab_size"]:
        raise UserError(f"tokenizer has {tok.get_vocab_size():,} tokens but the checkpoint's model was built for {run_cfg['vocab_size']:,}")
    return eos
