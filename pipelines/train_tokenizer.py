"""``python -m pipelines train-tokenizer``: train the byte-level BPE on text shards, as a Ray job.

One Ray task holding every CPU of a node (the BPE trainer is one multi-threaded process) streams
the shards in record batches through ``tokenizer.training_texts`` (hashed sample, byte cap) into
``tokenizer.train``; memory grows with the number of distinct pre-tokens, not with the text.
The driver writes ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json`` and
``stats.json`` (documents used and dropped by reason, training time and peak memory per MB)
atomically. A re-run with the same inputs and config keeps the existing tokenizer.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Iterator

from curation.stats import StageStats
from storage import io
from pipelines.tokenize import iter_documents, text_shards
from tokenizer import TokenizerConfig
from tokenizer.bpe import tokenizer_files

NAME = "train-tokenizer"
HELP = "Train the byte-level BPE tokenizer (100,000 ordinary + 15 special tokens by default) on text shards."

_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


# Peak memory of this process, measured from /proc (Linux): VmHWM after resetting it.
def _proc_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def train_job(job: tuple[list[str], TokenizerConfig]) -> dict[str, Any]:
    """The Ray task: read, select, train; returns the tokenizer files, stats and figures."""
    from tokenizer import train, training_texts

    files, cfg = job
    stats = StageStats()
    _reset_peak_rss()
    rss_before = _proc_status("VmRSS") or 0

    def batches() -> Iterator[list[tuple[str, str | None]]]:
        for path in files:
            try:
                yield from iter_documents(path, stats, cfg.batch_size)
            except (OSError, ValueError) as e:  # an unreadable shard is named; the rest is used
                stats.failed_files[path] = f"{type(e).__name__}: {e}"[:500]

    start = time.perf_counter()
    tok = train(training_texts(batches(), cfg, stats), cfg)
    seconds = time.perf_counter() - start
    peak = _proc_status("VmHWM")
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
    return {"files": tokenizer_files(tok), "stats": stats.to_dict(), "figures": figures, "vocab_size": tok.get_vocab_size()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines import cli

    parser.add_argument("--input", nargs="+", required=True, help="text shards: folders, files or globs (.parquet, .jsonl[.gz])")
    parser.add_argument("--output", required=True, help="tokenizer folder to write")
    parser.add_argument("--force", action="store_true", help="retrain even if the output holds a tokenizer trained on the same inputs and config")
    cli.add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines import config
    from pipelines.runtime import Timer, print_summary

    cfg = config.load(TokenizerConfig, args.config, args.overrides)
    with Timer() as timer:
        stats, figures = train_tokenizer(args.input, args.output, cfg, force=args.force)
    units = {"text bytes used": stats.counters.get("text_bytes", 0), "vocabulary (incl. specials)": figures.get("vocab_size") or 0}
    print_summary(NAME, stats, timer.seconds, units)
    if figures.get("train_seconds") is not None:
        print(
            f"  {'training':<24} {figures['train_seconds']:.1f} s, {figures['seconds_per_mb']} s/MB, "
            f"peak RSS {figures['peak_rss_mb']} MB (+{figures['peak_rss_increase_mb']} MB, "
            f"{figures['peak_rss_increase_mb_per_mb']} MB per MB of text)",
            file=sys.stderr,
        )
    return 1 if stats.failed_files else 0


def train_tokenizer(inputs: list[str], output: str, cfg: TokenizerConfig, force: bool = False) -> tuple[StageStats, dict[str, Any]]:
    """Run the stage; returns the stats (also in ``<output>/stats.json``) and the training figures."""
    from pipelines.runtime import TaskFailure, init_ray, run_tasks

    files, missing = text_shards(inputs)
    settings = {"inputs": files, "config": dataclasses.asdict(cfg)}
    stats_path = io.join(output, "stats.json")
    if not force and all(io.exists(io.join(output, n)) for n in _FILES + ("stats.json",)):
        previous = io.read_json(stats_path)
        if previous.get("settings") == settings:
            print(f"{NAME}: {output} already holds a tokenizer trained on these inputs and settings; skipped (--force retrains)", file=sys.stderr)
            return StageStats.from_dict(previous), {**previous.get("training", {}), "vocab_size": previous.get("vocab_size")}
    if not files:
        stats = StageStats(failed_files=dict(missing))
        return stats, {}
    init_ray()
    import ray

    # The whole of the largest node: the trainer is one process with one thread per core.
    cpus = max([int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] + [1])
    [result] = run_tasks(train_job, [(files, cfg)], desc=NAME, num_cpus=cpus, max_retries=1)
    if isinstance(result, TaskFailure):
        raise RuntimeError(f"{NAME} failed: {result.error}")
    stats = StageStats.from_dict(result["stats"])
    stats.failed_files.update(missing)
    stats.check()
    for name, data in result["files"].items():
        io.write_bytes(data, io.join(output, name))
    figures = {**result["figures"], "vocab_size": result["vocab_size"]}
    summary = stats.to_dict()
    summary.update({"vocab_size": result["vocab_size"], "training": result["figures"], "settings": settings})
    io.write_json(summary, stats_path)  # last: its presence marks the folder complete
    return stats, figures
