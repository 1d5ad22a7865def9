"""``python -m pipelines tokenize``: text shards -> token shards, one Ray task per input shard.

Input: Parquet shards with a ``text`` column (and ``id``; remix, extract and dedup shards all
have both) or Dolma JSONL(.gz) files (``tokenizer.shards.text_shards``). Output:
``<output>/data/tokens-NNNNN.parquet``, one per input in sorted input order (so the names keep
the shard order), as ``tokenizer.shards.tokenize_file`` writes them: one row per document copy,
``id``, ``epoch``, ``input_ids`` (the document's ids then EOS). The trainer reads these directly.

One unit of work (:mod:`pipelines.stage`) per input shard; the SHA-256 of ``tokenizer.json`` is
the units' key, so a re-run keeps the shards made with the same tokenizer and redoes the rest.
"""

from __future__ import annotations

import argparse
import posixpath
import sys
import time
from typing import Any

from curation.schema import TOKEN_SHARD_SCHEMA
from curation.stats import StageStats
from storage import io
from tokenizer.shards import TokenizeConfig, read_tokenizer, text_shards, tokenize_file

NAME = "tokenize"
HELP = "Turn text shards into token shards (id, input_ids list<uint32> with EOS) with the trained tokenizer."


def tokenize_shard(unit: dict, tokenizer: dict) -> dict[str, Any]:
    """Tokenize one text shard (``unit["path"]``) into one token shard (``unit["out"]``); returns its stats."""
    return tokenize_file(unit["path"], unit["out"], tokenizer["json"], tokenizer["sha"], tokenizer["cfg"])


# ---------------------------------------------------------------- the stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines import cli

    parser.add_argument("--tokenizer", required=True, help="folder with tokenizer.json (from train-tokenizer)")
    parser.add_argument("--input", nargs="+", required=True, help="text shards: folders, files or globs (.parquet, .jsonl[.gz])")
    parser.add_argument("--output", required=True, help="folder for data/tokens-NNNNN.parquet and stats.json")
    cli.add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines import config

    cfg = config.load(TokenizeConfig, args.config, args.overrides)
    stats, _ = tokenize(args.tokenizer, args.input, args.output, cfg)
    return 1 if stats.failed_files else 0


def tokenize(tokenizer: str, inputs: list[str], output: str, cfg: TokenizeConfig) -> tuple[StageStats, int]:
    """Run the stage; returns the merged stats (also written to ``<output>/stats.json``) and the
    number of shards kept from an earlier run (done with the same tokenizer)."""
    from pipelines.stage import Resources, Runner

    tokenizer_json, sha = read_tokenizer(tokenizer)
    files, missing = text_shards(inputs)
    units = [{"name": f"tokens-{i:05d}", "path": src, "out": io.join(io.data_folder(output), f"tokens-{i:05d}.parquet")}
             for i, src in enumerate(files)]
    runner = Runner(NAME, output, failed=missing)
    runner.run(tokenize_shard, units, {"json": tokenizer_json, "sha": sha, "cfg": cfg}, phase="tokenize",
               key=io.json_digest({"tokenizer_sha256": sha, "columns": TOKEN_SHARD_SCHEMA.names}),
               resources=Resources(max_in_flight=cfg.max_workers or None))
    stats = runner.stats
    # Shards of an earlier run over more inputs (or in the folder's older layout, without data/)
    # are not ours any more: the trainer reads the folder.
    current = {io.filesystem(u["out"])[1] for u in units}
    for old in io.list_shards(output) if io.exists(output) else []:
        fs, p = io.filesystem(old)
        if posixpath.basename(p).startswith("tokens-") and p not in current:
            fs.delete_file(p)
    tokens = stats.counters.get("tokens", 0)
    seconds = time.perf_counter() - runner.timer.start
    runner.finish(
        {"shards": stats.counters.get("shards", 0), "tokens out (incl. EOS)": tokens, "text bytes in": stats.counters.get("text_bytes", 0),
         "tokens/s": tokens / seconds if seconds else 0},
        extra={"tokenizer_sha256": sha, "shards": {posixpath.basename(u["out"]): u["path"] for u in units}},
        card=("Token shards", [f"{stats.output:,} documents, {int(tokens):,} tokens (with EOS); columns id, epoch, input_ids (list<uint32>)."]))
    if tokens:
        print(f"  {'bytes per token':<24} {stats.counters['text_bytes'] / tokens:.3f}", file=sys.stderr)
    return stats, runner.skipped
