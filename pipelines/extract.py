"""``python -m pipelines extract``: WARC/WET/ARC files in, documents (zstd Parquet) out.

One Ray task per input file writes one shard, ``<output>/data/<file>.parquet``, and its stats
``<output>/_stats/<file>.json``; the stage merges them, in input order, into
``<output>/stats.json``. A shard appears only when complete (temporary name, then rename), so a
re-run skips the files already done. Record order and ids do not depend on scheduling, so the
output is byte-identical whatever the number of workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
import sys

from curation.extract import ExtractConfig, Extractor, NotAnArchive, iter_records
from curation.schema import DOCUMENT_SCHEMA
from curation.stats import StageStats
from pipelines import commoncrawl, config, runtime
from storage import io
from pipelines.cli import add_config_arguments

NAME = "extract"
HELP = "Extract main text, language and metadata from WARC/WET/ARC files into document shards."

SUFFIXES = (".warc", ".warc.gz", ".wet", ".wet.gz", ".arc", ".arc.gz")
_ARCHIVE_SUFFIX = re.compile(r"(\.(warc|wet|arc))?(\.gz)?$", re.I)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", default=[], metavar="PATH",
                   help="WARC/WET/ARC files, globs or folders (searched recursively); local paths or URIs (s3://, gs://, https://)")
    p.add_argument("--output", required=True, help="folder (or URI) for document shards and stats.json")
    p.add_argument("--dump", help="crawl name for the `dump` column (default: the warcinfo's isPartOf, else the file name)")
    p.add_argument("--workers", type=int, default=None,
                   help="files processed at once (default: one per CPU of the Ray instance)")
    add_config_arguments(p)
    commoncrawl.add_cc_arguments(p)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(ExtractConfig, args.config, args.overrides)
    inputs, missing = io.expand_inputs(args.input, SUFFIXES) if args.input else ([], {})
    dump = args.dump
    try:
        cc_urls = commoncrawl.urls_from_args(args)
    except (OSError, ValueError) as e:
        print(f"extract: cannot list Common Crawl files: {e}", file=sys.stderr)
        return 2
    if cc_urls is not None:
        inputs += cc_urls
        dump = dump or args.cc_dump
    if not inputs and not missing:
        print("extract: no input given (use --input or --cc-dump)", file=sys.stderr)
        return 2
    cc_cfg = commoncrawl.config_from_args(args) if args.cc_dump else None
    shards = [io.join(io.data_folder(args.output), name + ".parquet") for name in shard_names(inputs)]
    tasks = [
        (path, shard, io.shard_stats_path(shard), dataclasses.asdict(cfg), dump, dataclasses.asdict(cc_cfg) if cc_cfg else None)
        for path, shard in zip(inputs, shards)
    ]
    runtime.init_ray()
    with runtime.Timer() as timer:
        results = runtime.run_tasks(extract_file, tasks, desc="extract", max_in_flight=args.workers)
    total = runtime.merge_results(StageStats(), [t[0] for t in tasks], results)
    total.failed_files.update(missing)
    total.check()
    io.write_json(total.to_dict(), io.join(args.output, "stats.json"))
    io.write_dataset_card(args.output, "Extracted documents", [f"{total.output:,} documents from {len(tasks)} archive files."])
    runtime.print_summary(
        NAME, total, timer.seconds,
        {"files": len(tasks) + len(missing), "files failed": len(total.failed_files), "KB read": total.counters["bytes_read"] / 1e3},
    )
    return 1 if total.failed_files else 0


def shard_names(inputs: list[str]) -> list[str]:
    """One output name per input: its file name without archive suffixes, made unique."""
    names = [_ARCHIVE_SUFFIX.sub("", p.rstrip("/").rsplit("/", 1)[-1]) or "input" for p in inputs]
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    return [
        n if seen[n] == 1 else f"{n}-{hashlib.blake2b(p.encode(), digest_size=4).hexdigest()}"
        for n, p in zip(names, inputs)
    ]


def extract_file(task: tuple) -> dict:
    """One input file -> one shard. Returns its stats (read back if the shard is already done)."""
    path, out_path, stats_path, cfg_dict, dump, cc_cfg = task
    if io.exists(out_path) and io.exists(stats_path):
        return io.read_json(stats_path)
    stats = StageStats()
    try:
        stream = _open(path, cc_cfg)
    except (OSError, ValueError) as e:
        stats.failed_files[path] = f"cannot open: {e}"
        return stats.to_dict()
    counted = _CountingStream(stream)
    try:
        extractor = _extractor(cfg_dict)
        with counted, io.ShardWriter(out_path, DOCUMENT_SCHEMA) as writer:
            for doc in extractor.documents(iter_records(counted), stats, path, dump):
                writer.add(doc)
            stats.add("bytes_read", counted.bytes)
            stats.check()
            io.write_json(stats.to_dict(), stats_path)  # before the shard's rename: a shard implies its stats
    except NotAnArchive as e:
        stats = StageStats(failed_files={path: str(e)})
    except io.WriteError as e:
        io.remove(stats_path)  # written just before the shard: without the shard it must not stay
        stats = StageStats(failed_files={path: str(e)})
    except OSError as e:
        stats = StageStats(failed_files={path: f"read error: {e}"})
    return stats.to_dict()


_EXTRACTORS: dict[str, Extractor] = {}


def _extractor(cfg_dict: dict) -> Extractor:
    """One extractor (and sandbox process) per worker process and config, reused across files:
    starting the sandbox's interpreter costs about a second of CPU."""
    key = repr(sorted(cfg_dict.items()))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = Extractor(ExtractConfig(**_tuples(cfg_dict)))
    return _EXTRACTORS[key]


def _open(path: str, cc_cfg: dict | None):
    if cc_cfg and path.startswith(("http://", "https://", "s3://")):
        return commoncrawl.open_remote(path, cc_cfg["retries"], cc_cfg["backoff_s"], cc_cfg["timeout_s"])
    if path.startswith(("http://", "https://")):
        return commoncrawl.open_remote(path)
    return io.open_input(path) if io.is_uri(path) else open(path, "rb")


def _tuples(d: dict) -> dict:
    # asdict() turns tuples into lists; the dataclass wants its declared types back.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


class _CountingStream:
    """Counts the bytes read through it (WARC MB/s in the summary)."""

    def __init__(self, inner):
        self.inner, self.bytes = inner, 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.bytes += len(data)
        return data

    def __enter__(self) -> "_CountingStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.close()



