"""``python -m pipelines extract``: WARC/WET/ARC files in, documents (zstd Parquet) out.

One unit of work (:mod:`pipelines.stage`) per input file writes one shard,
``<output>/data/<file>.parquet``, and its stats ``<output>/_stats/<file>.json``; the runner merges
them, in input order, into ``<output>/stats.json``, and a re-run skips the files already done. Record order and ids do not depend on scheduling, so the
output is byte-identical whatever the number of workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
import sys

from typing import Any

import yaml

from curation.extract import ExtractConfig, Extractor, NotAnArchive, iter_records
from curation.schema import DOCUMENT_SCHEMA
from curation.stats import StageStats
from pipelines import commoncrawl, config
from storage import io
from storage.errors import UserError
from pipelines.cli import add_config_arguments
from pipelines.stage import Resources, Runner

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
    try:
        cfg = config.load(ExtractConfig, args.config, args.overrides)
    except (config.ConfigError, OSError, yaml.YAMLError) as e:
        print(f"extract: bad config: {e}", file=sys.stderr)
        return 2
    try:
        inputs, missing, cc_cfg = resolve_inputs(args.input, args.cc_dump, args.cc_base_url, args.cc_first, args.cc_files)
    except UserError:  # an input that is not there: cli says it
        raise
    except (OSError, ValueError) as e:
        print(f"extract: cannot list Common Crawl files: {e}", file=sys.stderr)
        return 2
    if not inputs and not missing:
        print("extract: no input given (use --input or --cc-dump)", file=sys.stderr)
        return 2
    return extract(inputs, args.output, cfg, dump=args.dump or args.cc_dump, cc=cc_cfg, workers=args.workers, missing=missing)


def resolve_inputs(specs: list[str], cc_dump: str | None = None, cc_base_url: str | None = None, cc_first: int = 0,
                   cc_files: int | None = None) -> tuple[list[str], dict[str, str], Any]:
    """(input files, {spec: why missing}, the Common Crawl config or None): the files ``specs``
    expand to, then the ``cc_files`` files of ``cc_dump``'s listing from ``cc_first`` on."""
    inputs, missing = io.expand_inputs(specs, SUFFIXES) if specs else ([], {})
    if not cc_dump:
        return inputs, missing, None
    cc = commoncrawl.CommonCrawlConfig(base_url=cc_base_url) if cc_base_url else commoncrawl.CommonCrawlConfig()
    urls = commoncrawl.warc_paths(cc_dump, cc.base_url, cc_first, cc_files, retries=cc.retries, backoff_s=cc.backoff_s, timeout_s=cc.timeout_s)
    return inputs + urls, missing, cc


def extract(inputs: list[str], output: str, cfg: ExtractConfig, *, dump: str | None = None, cc: Any = None,
            workers: int | None = None, missing: dict[str, str] | None = None) -> int:
    """Run the stage on the expanded ``inputs``; returns the exit status."""
    units = [{"name": name, "path": path, "out": shard, "stats": io.shard_stats_path(shard)}
             for path, name in zip(inputs, shard_names(inputs))
             for shard in [io.join(io.data_folder(output), name + ".parquet")]]
    settings = {"cfg": dataclasses.asdict(cfg), "dump": dump, "cc": dataclasses.asdict(cc) if cc else None}
    runner = Runner(NAME, output, failed=missing)
    runner.run(extract_file, units, settings, phase="extract", key=io.json_digest(settings), resources=Resources(max_in_flight=workers))
    total = runner.stats
    return runner.finish(
        {"files": len(units) + len(missing or {}), "files failed": len(total.failed_files), "KB read": total.counters["bytes_read"] / 1e3},
        card=("Extracted documents", [f"{total.output:,} documents from {len(units)} archive files."]))


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


def extract_file(unit: dict | tuple, settings: dict | None = None) -> dict:
    """One input file -> one shard (the stage's unit of work). Returns its stats; an input that
    cannot be read is named in their ``failed_files``. ``unit``: {"path", "out", "stats"} with
    ``settings`` {"cfg", "dump", "cc"}, or the tuple (path, out, stats, cfg, dump, cc)."""
    if isinstance(unit, tuple):
        path, out_path, stats_path, cfg_dict, dump, cc_cfg = unit
    else:
        path, out_path, stats_path = unit["path"], unit["out"], unit["stats"]
        cfg_dict, dump, cc_cfg = settings["cfg"], settings["dump"], settings["cc"]
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
        _EXTRACTORS[key] = Extractor(config.build(ExtractConfig, cfg_dict))
    return _EXTRACTORS[key]


def _open(path: str, cc_cfg: dict | None):
    if cc_cfg and path.startswith(("http://", "https://", "s3://")):
        return commoncrawl.open_remote(path, cc_cfg["retries"], cc_cfg["backoff_s"], cc_cfg["timeout_s"])
    if path.startswith(("http://", "https://")):
        return commoncrawl.open_remote(path)
    return io.open_input(path) if io.is_uri(path) else open(path, "rb")


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



