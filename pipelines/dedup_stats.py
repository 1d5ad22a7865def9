"""``python -m pipelines dedup-stats <dedup output>``: what deduplication did, for a person to check.

The figures, plots and pages are :mod:`curation.dedup.stats`; here its units run as Ray tasks, so
this process holds their small results only, whatever the size of the corpus. Writes
``<output>/dedup-stats/`` (``report.json``, PNGs, ``samples.html``, ``report.html``) and prints
the tables and the sample of clusters.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any, Callable

from curation.dedup import explain as ex
from curation.dedup import stats as st
from curation.dedup.stats import print_report, write_report  # noqa: F401 - with build_report, the report's API
from pipelines import runtime
from storage import io

NAME = "dedup-stats"
HELP = "report what dedup did: per-dump counts, cross-dump matrix, k-dump curve, clusters, domains, a sample of clusters"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", help="a dedup output folder (holds stats.json and duplicates.parquet)")
    p.add_argument("--report", help="where to write the report (default <output>/dedup-stats)")


def run(args: argparse.Namespace) -> int:
    report(args.output, args.report)
    return 0


def report(output: str, folder: str | None = None) -> None:
    """The report of the dedup output ``output``, written to ``folder`` (default
    ``<output>/dedup-stats``) and printed."""
    folder = folder or io.join(output, "dedup-stats")
    r, samples = build(output, folder)
    st.write_report(r, folder, samples)
    st.print_report(r, sys.stdout, samples)
    print(f"\nreport: {io.join(folder, 'report.html')}", file=sys.stderr)


def build_report(output: str) -> dict[str, Any]:
    """``report.json``'s figures (hand-off files in a scratch folder under the output)."""
    return build(output, io.join(output, "dedup-stats"))[0]


def _tasks(fn: Callable, units: list[dict], ctx: dict, desc: str) -> list[Any]:
    results = runtime.run_tasks(fn, units, desc=f"dedup-stats: {desc}", args=(ctx,)) if units else []
    for u, r in zip(units, results):
        if isinstance(r, runtime.TaskFailure):
            raise RuntimeError(f"dedup-stats: {desc} failed on {u['name']}: {r.error}")
    return results


def build(output: str, folder: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the report's figures, the sampled clusters side by side)."""
    stats = ex.read_stats(output)
    d = stats["dedup"]
    work = io.join(folder, "_work")
    units, rows = st.duplicate_units(output)
    R = st.key_partitions(rows)
    for u in units:
        u["out"] = io.join(work, u["name"] + ".arrow")
    counted = _tasks(st.count_unit, units, {"key_partitions": R}, "duplicates")
    matrix: Counter = Counter()
    for res in counted:
        for a, b, n in res["matrix"]:
            matrix[(a, b)] += n
    tops = _tasks(st.top_unit, [{"name": f"p{p:04d}", "p": p} for p in range(R)] if units else [],
                  {"key_files": [u["out"] for u in units]}, "most duplicated")
    dumps = list(d["per_dump"])
    curve = _tasks(st.curve_unit, [{"name": "graph"}], {"output": output, "dumps": dumps,
                                                         "ranks": {n: i for i, n in enumerate(d["dumps"])}}, "k-dump curve")[0]
    r = st.assemble(output, stats, matrix, st.k_dump_curve(curve["removed"], dumps, d["per_dump"]),
                    st.merge_top(tops, "domains"), st.merge_top(tops, "urls"))
    samples = _samples(output, counted)
    io.remove_tree(work)
    return r, samples


def _samples(output: str, counted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    picked = st.pick_samples(counted)
    if not picked:
        return []
    index, _ = ex.index_of(output)
    files = st.node_files(output)
    units = [{"name": f"nodes-{i:05d}", "files": files[i : i + 16]} for i in range(0, len(files), 16)]
    found: dict[str, int] = {}
    for res in _tasks(st.locate_unit, units, {"index": index, "ids": sorted({p[k] for p in picked for k in ("removed_id", "kept_id")})},
                      "sample: find documents"):
        for k, v in res["found"].items():
            found.setdefault(k, v)
    pairs = [{"name": f"sample-{i}", "pair": p, "removed_node": found[p["removed_id"]], "kept_node": found[p["kept_id"]]}
             for i, p in enumerate(picked) if p["removed_id"] in found and p["kept_id"] in found]
    return _tasks(st.sample_unit, pairs, {"output": output}, "sample: side by side")
