"""Same behaviour, proved: the content digest of every curation output of a small demo-shaped run
(import, extract, dedup with dedup-stats, filter, remix, train-tokenizer, tokenize) against the
digests recorded in ``tests/golden/curation.json`` before the stages were moved onto one runner.

Digests are of contents, not bytes: a Parquet/Arrow file is its schema (without metadata) and
its rows; a JSON file is its data with timings, memory and host figures left out and the run
folder written as ``<run>``. Bookkeeping (per-shard stats, completion markers, ``_run/``, work
folders) is not an output and is not compared. ``GOLDEN_REGENERATE=1`` records the digests anew:
only ever on code whose behaviour is the reference, never after changing it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from test_pipeline import CURATION_STAGES, small_config, write_config

GOLDEN = REPO / "tests" / "golden" / "curation.json"
# Folders under a stage's output that are bookkeeping or scratch, not outputs.
SKIPPED_DIRS = {"_stats", "_run", "_shuffle", "work", "_done", "_markers"}
# JSON figures that measure the machine, not the data; and digests over absolute paths.
VARYING = re.compile(r"seconds|rss|_mb($|_)|threads|cpu|peak|host|node|^run_key$", re.I)


def _without_checkout(arr: pa.Array) -> pa.Array:
    """Strings with the checkout's folder written as ``<repo>`` (``metadata.source_file`` names the
    input's absolute path), inside structs too: the digests hold wherever the repository lives."""
    if pa.types.is_string(arr.type):
        return pc.replace_substring(arr, str(REPO), "<repo>")
    if pa.types.is_struct(arr.type):
        fields = [arr.type.field(i) for i in range(arr.type.num_fields)]
        return pa.StructArray.from_arrays([_without_checkout(arr.field(i)) for i in range(len(fields))], fields=fields,
                                          mask=arr.is_null() if arr.null_count else None)
    return arr


def table_digest(table: pa.Table) -> str:
    """sha256 over the schema (no metadata) and the rows, as one-chunk Arrow IPC."""
    table = table.replace_schema_metadata(None).combine_chunks()
    table = pa.Table.from_arrays([_without_checkout(c.combine_chunks()) for c in table.columns], schema=table.schema)
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _clean(value, run: str):
    if isinstance(value, dict):
        return {k: _clean(v, run) for k, v in value.items() if not VARYING.search(str(k))}
    if isinstance(value, list):
        return [_clean(v, run) for v in value]
    if isinstance(value, str):
        return value.replace(run, "<run>").replace(str(REPO), "<repo>")
    return value


def json_digest(path: Path, run: str) -> str:
    data = _clean(json.loads(path.read_text()), run)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def content_digests(run: Path) -> dict[str, str]:
    """{path relative to the run folder: content digest} of every curation output."""
    out: dict[str, str] = {}
    for folder in ("imported", "extracted", "dedup", "filtered", "remix", "tokenizer", "tokens"):
        for f in sorted((run / folder).rglob("*")):
            rel = f.relative_to(run)
            if not f.is_file() or f.name.startswith(".") or SKIPPED_DIRS & set(rel.parts):
                continue
            if f.suffix == ".parquet":
                out[str(rel)] = table_digest(pq.read_table(f))
            elif f.suffix == ".arrow":
                with pa.memory_map(str(f)) as src:
                    out[str(rel)] = table_digest(ipc.open_file(src).read_all())
            elif f.suffix == ".json":
                out[str(rel)] = json_digest(f, str(run))
            elif f.suffix in (".md", ".txt"):
                out[str(rel)] = hashlib.sha256(f.read_text().replace(str(run), "<run>").replace(str(REPO), "<repo>").encode()).hexdigest()
    return out


@pytest.fixture(scope="module")
def curation_run(tmp_path_factory, ray_session):
    """The curation stages of the small demo-shaped config, in this process (the session's Ray)."""
    from pipelines.cli import main

    base = tmp_path_factory.mktemp("same")
    cfg = small_config(base / "run", stages=CURATION_STAGES)
    cfg["extract"]["prefilter"] = True  # the demo's pre-pass
    config = write_config(base / "small.yaml", cfg)
    cwd = os.getcwd()
    os.chdir(REPO)  # the config's relative paths (blocklist, quality model) are the repository's
    try:
        assert main(["run", "--config", str(config), "--no-report"]) == 0
    finally:
        os.chdir(cwd)
    return base / "run"


def test_every_curation_output_is_unchanged(curation_run):
    mine = content_digests(curation_run)
    assert any(k.startswith("dedup/documents/") for k in mine) and any(k.startswith("tokens/data/") for k in mine)
    assert "dedup/dedup-stats/report.json" in mine and "tokenizer/tokenizer.json" in mine
    if os.environ.get("GOLDEN_REGENERATE") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(mine, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(mine) == sorted(golden), "outputs added or missing"
    assert sorted(k for k in mine if mine[k] != golden[k]) == []
