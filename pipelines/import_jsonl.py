"""``python -m pipelines import``: already-extracted documents (Dolma/CCNet JSONL(.gz)) in,
document shards out, to be deduplicated together with the extracted pages.

One unit of work (:mod:`pipelines.stage`) per input file writes one shard,
``<output>/data/<file>.parquet``, and its stats ``<output>/_stats/<file>.json``.
"""

from __future__ import annotations

import argparse
import os
import re

from curation.schema import documents_to_table
from curation.sources import read_dolma_jsonl
from curation.stats import StageStats
from pipelines.stage import Runner
from storage import io

NAME = "import"
HELP = "Turn already-extracted Dolma/CCNet JSONL(.gz) documents into document shards."
SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="JSONL(.gz) files, globs or folders")
    p.add_argument("--output", required=True, help="folder for the document shards and stats.json")


def run(args: argparse.Namespace) -> int:
    return import_jsonl(args.input, args.output)


def import_jsonl(specs: list[str], output: str) -> int:
    """Run the stage; returns the exit status (non-zero when an input could not be read)."""
    files, missing = io.expand_inputs(specs, SUFFIXES)
    units = [{"name": n, "path": f, "out": s, "stats": io.shard_stats_path(s)}
             for f, n in zip(files, unique_names(files)) for s in [io.join(io.data_folder(output), n + ".parquet")]]
    runner = Runner(NAME, output, failed=missing)
    runner.run(import_file, units, phase="import")
    return runner.finish({"files": len(files) + len(missing)},
                         card=("Imported documents", [f"{runner.stats.output:,} documents from {len(files)} JSONL files."]))


def import_file(unit: dict, _config: None = None) -> dict:
    stats = StageStats()
    with io.open_input(unit["path"]) as f:
        docs = list(read_dolma_jsonl(f, os.path.basename(unit["path"]), stats))
    stats.check()
    io.write_json(stats.to_dict(), unit["stats"])  # before the shard: a shard implies its stats
    io.write_parquet(documents_to_table(docs), unit["out"])
    return stats.to_dict()


def unique_names(files: list[str]) -> list[str]:
    """Shard names from input file names: only [A-Za-z0-9._-], so a name from the data never
    leaves the output folder (no '/', no '..' prefix); clashes get a numeric suffix."""
    out, seen = [], set()
    for f in files:
        base = re.sub(r"\.(jsonl|json|parquet)(\.gz)?$", "", os.path.basename(f.rstrip("/")))
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".") or "part"
        name, k = base, 1
        while name in seen:
            name, k = f"{base}-{k}", k + 1
        seen.add(name)
        out.append(name)
    return out
