"""``python -m pipelines train-tokenizer``: train the byte-level BPE on text shards, as a Ray job.

One Ray task holding every CPU of a node (the BPE trainer is one multi-threaded process) streams
the shards in record batches through ``tokenizer.training_texts`` (hashed sample, byte cap) into
``tokenizer.train``; memory grows with the number of distinct pre-tokens, not with the text.
The task writes ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``, the
runner (:mod:`pipelines.stage`) ``stats.json`` (documents used and dropped by reason, training
time and peak memory per MB), each atomically. The inputs and config are the unit's key: a re-run
with the same ones keeps the existing tokenizer.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any

from curation.stats import StageStats
from storage import io
from pipelines import runtime
from tokenizer import TokenizerConfig
from tokenizer.bpe import tokenizer_files
from tokenizer.shards import iter_shards, text_shards
from storage.errors import UserError

NAME = "train-tokenizer"
HELP = "Train the byte-level BPE tokenizer (100,000 ordinary + 15 special tokens by default) on text shards."

_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def train_job(unit: dict, cfg: TokenizerConfig) -> dict[str, Any]:
    """The stage's one unit of work: read, select, train, write the tokenizer files into
    ``unit["output"]``; returns the stats, figures and vocabulary size."""
    from tokenizer import train, training_texts

    files = unit["files"]
    stats = StageStats()
    runtime.reset_peak_rss()
    rss_before = runtime.proc_status("VmRSS") or 0

    start = time.perf_counter()
    try:
        tok = train(training_texts(iter_shards(files, stats, cfg.batch_size), cfg, stats), cfg)
    except UserError as e:  # the corpus is too small for the vocabulary: the driver says so in one line
        return {"user_error": str(e)}
    seconds = time.perf_counter() - start
    peak = runtime.proc_status("VmHWM")
    mb = stats.counters.get("text_bytes", 0) / 1e6
    figures = {
        "train_seconds": round(seconds, 3),
        "text_mb": round(mb, 3),
        "seconds_per_mb": round(seconds / mb, 4) if mb else None,
        "peak_rss_mb": round(peak / 1e6, 1) if peak else None,
        "peak_rss_increase_mb": round((peak - rss_before) / 1e6, 1) if peak else None,
        "peak_rss_increase_mb_per_mb": round((peak - rss_before) / 1e6 / mb, 3) if peak and mb else None,
        # The trainer's thread pool: RAYON_NUM_THREADS if set, else every core of the node.
        "threads": int(os.environ.get("RAYON_NUM_THREADS") or os.cpu_count() or 1),
    }
    for name, data in tokenizer_files(tok).items():
        io.write_bytes(data, io.join(unit["output"], name))
    return {"stats": stats.to_dict(), "figures": figures, "vocab_size": tok.get_vocab_size()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines import cli

    parser.add_argument("--input", nargs="+", required=True, help="text shards: folders, files or globs (.parquet, .jsonl[.gz])")
    parser.add_argument("--output", required=True, help="tokenizer folder to write")
    parser.add_argument("--force", action="store_true", help="retrain even if the output holds a tokenizer trained on the same inputs and config")
    cli.add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines import config

    cfg = config.load(TokenizerConfig, args.config, args.overrides)
    stats, _ = train_tokenizer(args.input, args.output, cfg, force=args.force)
    return 1 if stats.failed_files else 0


def train_tokenizer(inputs: list[str], output: str, cfg: TokenizerConfig, force: bool = False) -> tuple[StageStats, dict[str, Any]]:
    """Run the stage; returns the stats (also in ``<output>/stats.json``) and the training figures.
    A tokenizer trained on the same inputs and settings is kept (``force`` trains it again)."""
    import ray

    from pipelines.runtime import init_ray
    from pipelines.stage import Resources, Runner

    files, missing = text_shards(inputs)
    settings = {"inputs": files, "config": dataclasses.asdict(cfg)}
    runner = Runner(NAME, output, failed=missing)
    if not files:
        return runner.stats, {}
    if force:
        runner.clear_markers()
    init_ray()
    # The whole of the largest node: the trainer is one process with one thread per core.
    cpus = max([int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] + [1])
    unit = {"name": "bpe", "files": files, "output": output, "out": io.join(output, _FILES[0])}
    [result] = runner.run(train_job, [unit], cfg, phase="train", key=io.json_digest(settings),
                          resources=Resources(num_cpus=cpus, max_retries=1), merge=False, required=True)
    if "user_error" in result:
        runner.clear_markers()  # nothing was trained: a re-run with a smaller vocabulary must train
        raise UserError(f"{result['user_error']} (--set vocab_size=N)")
    if runner.skipped:
        print(f"{NAME}: {output} already holds a tokenizer trained on these inputs and settings; skipped (--force retrains)", file=sys.stderr)
    runner.stats.merge(StageStats.from_dict(result["stats"]))
    figures = {**result["figures"], "vocab_size": result["vocab_size"]}
    runner.finish({"text bytes used": runner.stats.counters.get("text_bytes", 0), "vocabulary (incl. specials)": result["vocab_size"]},
                  extra={"vocab_size": result["vocab_size"], "training": result["figures"], "settings": settings})
    if figures.get("train_seconds") is not None:
        print(
            f"  {'training':<24} {figures['train_seconds']:.1f} s, {figures['seconds_per_mb']} s/MB, "
            f"peak RSS {figures['peak_rss_mb']} MB (+{figures['peak_rss_increase_mb']} MB, "
            f"{figures['peak_rss_increase_mb_per_mb']} MB per MB of text)",
            file=sys.stderr,
        )
    return runner.stats, figures
