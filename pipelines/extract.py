"""``python -m pipelines extract``: WARC/WET/ARC files in, documents (zstd Parquet) out.

The inputs are files (``--input``), the files of a Common Crawl dump read whole (``--cc-dump``),
or the records an index of Common Crawl selects, read by byte ranges (``--cc-index``,
:mod:`curation.sources.commoncrawl`). One unit of work (:mod:`pipelines.stage`) per WARC file
writes one shard, ``<output>/data/<file>.parquet``, and its stats ``<output>/_stats/<file>.json``;
the runner merges them, in input order, into ``<output>/stats.json``, and a re-run skips the files
already done. Record order and ids do not depend on scheduling, so the output is byte-identical
whatever the number of workers; a record read through the index gives the same row as read from
the whole file.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
import sys

from typing import Any

import yaml

from curation.extract import ExtractConfig, Extractor, NotAnArchive, dump_name, iter_records
from curation.schema import DOCUMENT_SCHEMA
from curation.sources import commoncrawl
from curation.stats import StageStats
from pipelines import config
from storage import io, remote
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
    g = p.add_argument_group(
        "Common Crawl input",
        "Read straight from Common Crawl: --cc-dump names the crawl, --cc-first/--cc-files a contiguous range of its "
        "warc.paths.gz listing (the same files on every run), read whole; --cc-index reads only the records its index "
        "selects (settings: --set cc_index.languages=[en,zh], cc_index.gap=..., see docs/commoncrawl.md), of the "
        "--cc-dump range's files when one is given.",
    )
    g.add_argument("--cc-dump", metavar="NAME", help="crawl to read, e.g. CC-MAIN-2024-22 (list: commoncrawl.org/overview); None: no listing")
    g.add_argument(
        "--cc-base-url", metavar="URL", default=None,
        help="where crawl-data/ lives: https://data.commoncrawl.org/, s3://commoncrawl/ (from AWS us-east-1), "
        "or a local folder mirroring it; None: https://data.commoncrawl.org/",
    )
    g.add_argument("--cc-first", metavar="N", type=_non_negative, default=0, help="index of the first file in the listing (0-based)")
    g.add_argument(
        "--cc-files", metavar="N", type=_non_negative, default=None,
        help="number of files to read from --cc-first on; None: the rest of the listing (a whole dump is "
        "tens of thousands of ~1 GB files)",
    )
    g.add_argument(
        "--cc-index", nargs="+", default=[], metavar="INDEX",
        help="files or folders of Common Crawl's columnar index (Parquet, cc-index/table/cc-main/warc/crawl=<dump>/subset=warc/) "
        "or CDXJ files (cc-index/collections/<dump>/indexes/cdx-*.gz); local or object-store URIs",
    )
    p.add_argument("--dry-run", action="store_true",
                   help="show what would be read (with --cc-index: records selected, bytes to fetch, bytes a whole-file read "
                   "would fetch) and stop")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config.load(ExtractConfig, args.config, args.overrides)
    except (config.ConfigError, OSError, yaml.YAMLError) as e:
        print(f"extract: bad config: {e}", file=sys.stderr)
        return 2
    try:
        inputs, missing, cc_cfg, selection = resolve_inputs(args.input, args.cc_dump, args.cc_base_url, args.cc_first, args.cc_files,
                                                            args.cc_index, cfg.cc_index)
    except (OSError, ValueError) as e:
        if isinstance(e, UserError):
            raise
        print(f"extract: cannot list Common Crawl files: {e}", file=sys.stderr)
        return 2
    if not inputs and not missing and selection is None:
        print("extract: no input given (use --input, --cc-dump or --cc-index)", file=sys.stderr)
        return 2
    if args.dry_run:
        for line in dry_run_lines(inputs, selection, cfg.cc_index, cc_cfg or commoncrawl.CommonCrawlConfig()):
            print(f"extract: dry run: {line}")
        return 0
    return extract(inputs, args.output, cfg, dump=args.dump or args.cc_dump, cc=cc_cfg, workers=args.workers, missing=missing,
                   selection=selection)


def resolve_inputs(specs: list[str], cc_dump: str | None = None, cc_base_url: str | None = None, cc_first: int = 0,
                   cc_files: int | None = None, cc_index: list[str] | None = None,
                   index_cfg: commoncrawl.CCIndexConfig | None = None) -> tuple[list[str], dict[str, str], Any, commoncrawl.Selection | None]:
    """(input files read whole, {spec: why missing}, the Common Crawl config or None, the index's
    selection, its ``files`` keyed by WARC file URL, or None): the files ``specs`` expand to; then
    the ``cc_files`` files of ``cc_dump``'s listing from ``cc_first`` on, read whole, or with
    ``cc_index`` the records the index selects (of those files only, where a dump is named)."""
    inputs, missing = io.expand_inputs(specs, SUFFIXES) if specs else ([], {})
    if not cc_dump and not cc_index:
        return inputs, missing, None, None
    cfg = commoncrawl.CommonCrawlConfig(base_url=cc_base_url) if cc_base_url else commoncrawl.CommonCrawlConfig()
    retry = dict(retries=cfg.retries, backoff_s=cfg.backoff_s, timeout_s=cfg.timeout_s)
    names = commoncrawl.listing(cc_dump, cfg.base_url, cc_first, cc_files, **retry) if cc_dump else None
    if not cc_index:
        return inputs + [commoncrawl.resolve(cfg.base_url, n) for n in names], missing, cfg, None
    index_cfg = index_cfg or commoncrawl.CCIndexConfig()
    sel = commoncrawl.read_index(cc_index, index_cfg, names, cfg.retries, cfg.backoff_s)
    commoncrawl.check_selection(sel, index_cfg, cc_dump)
    return inputs, missing, cfg, dataclasses.replace(sel, files={commoncrawl.resolve(cfg.base_url, n): r for n, r in sel.files.items()})


def dry_run_lines(inputs: list[str], selection: commoncrawl.Selection | None, cfg: commoncrawl.CCIndexConfig, cc_cfg: commoncrawl.CommonCrawlConfig) -> list[str]:
    """What a run would read: the files read whole, and the index's selection with what it costs."""
    lines = [f"{len(inputs)} file(s) read whole"] if inputs else []
    if selection is not None:
        whole, unknown = commoncrawl.whole_file_bytes(list(selection.files), cc_cfg)
        lines += commoncrawl.describe(selection, cfg, whole)
        lines += [f"size unknown: {url}: {why}" for url, why in sorted(unknown.items())[:5]]
    return lines


def extract(inputs: list[str], output: str, cfg: ExtractConfig, *, dump: str | None = None, cc: Any = None,
            workers: int | None = None, missing: dict[str, str] | None = None, selection: commoncrawl.Selection | None = None) -> int:
    """Run the stage on the expanded ``inputs`` (read whole) and the index's ``selection``
    (:func:`resolve_inputs`, read by byte ranges); returns the exit status."""
    indexed = list(selection.files) if selection else []
    paths = inputs + indexed
    units = [{"name": name, "path": path, "out": shard, "stats": io.shard_stats_path(shard)}
             for path, name in zip(paths, shard_names(paths))
             for shard in [io.join(io.data_folder(output), name + ".parquet")]]
    for unit in units[len(inputs):]:
        unit["ranges"] = selection.files[unit["path"]]
    settings = {"cfg": dataclasses.asdict(cfg), "dump": dump, "cc": dataclasses.asdict(cc) if cc else None}
    runner = Runner(NAME, output, failed=missing)
    runner.run(extract_file, units, settings, phase="extract", key=io.json_digest(settings), resources=Resources(max_in_flight=workers))
    total = runner.stats
    shown = {"files": len(units) + len(missing or {}), "files failed": len(total.failed_files), "KB read": total.counters["bytes_read"] / 1e3}
    if indexed:
        shown.update({"requests": total.counters["requests"], "retries": total.counters["retries"]})
    return runner.finish(shown, card=("Extracted documents", [f"{total.output:,} documents from {len(units)} archive files."]))


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
    cannot be read is named in their ``failed_files``. ``unit``: {"path", "out", "stats"} and,
    for records an index selected, "ranges" [(offset, length), ...], with ``settings`` {"cfg",
    "dump", "cc"}; or the tuple (path, out, stats, cfg, dump, cc) of a whole file."""
    if isinstance(unit, tuple):
        path, out_path, stats_path, cfg_dict, dump, cc_cfg = unit
        ranges = None
    else:
        path, out_path, stats_path, ranges = unit["path"], unit["out"], unit["stats"], unit.get("ranges")
        cfg_dict, dump, cc_cfg = settings["cfg"], settings["dump"], settings["cc"]
    stats = StageStats()
    extractor = _extractor(cfg_dict)
    if ranges is not None:
        warc = commoncrawl.IndexedWarc(path, [tuple(r) for r in ranges], extractor.cfg.cc_index, commoncrawl.CommonCrawlConfig(**cc_cfg), with_warcinfo=not dump)
        source = _IndexedSource(warc, path)
    else:
        try:
            source = _CountingStream(_open(path, cc_cfg))
        except (OSError, ValueError) as e:
            stats.failed_files[path] = f"cannot open: {e}"
            return stats.to_dict()
    try:
        with source, io.ShardWriter(out_path, DOCUMENT_SCHEMA) as writer:
            for doc in extractor.documents(source.records(stats), stats, path, source.dump(dump)):
                writer.add(doc)
            source.count(stats)
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
        return remote.open_remote(path, cc_cfg["retries"], cc_cfg["backoff_s"], cc_cfg["timeout_s"])
    if path.startswith(("http://", "https://")):
        return remote.open_remote(path)
    return io.open_input(path) if io.is_uri(path) else open(path, "rb")


class _CountingStream:
    """A whole file's records; counts the bytes read through it (WARC MB/s in the summary)."""

    def __init__(self, inner):
        self.inner, self.bytes = inner, 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.bytes += len(data)
        return data

    def records(self, stats: StageStats):
        return iter_records(self)

    def dump(self, explicit: str | None) -> str | None:
        return explicit  # the extractor takes it from the file's warcinfo record as it reads

    def count(self, stats: StageStats) -> None:
        stats.add("bytes_read", self.bytes)

    def __enter__(self) -> "_CountingStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.close()


class _IndexedSource:
    """The records an index selected in one file, read by byte ranges."""

    def __init__(self, warc: commoncrawl.IndexedWarc, path: str):
        self.warc, self.path = warc, path

    def records(self, stats: StageStats):
        return self.warc.records(stats)

    def dump(self, explicit: str | None) -> str:
        return explicit or dump_name(None, self.warc.warcinfo(), self.path)

    def count(self, stats: StageStats) -> None:
        r = self.warc.reader
        stats.add("bytes_read", r.bytes_read)
        stats.add("requests", r.requests)
        stats.add("retries", r.retries)

    def __enter__(self) -> "_IndexedSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.warc.reader.close()


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value
