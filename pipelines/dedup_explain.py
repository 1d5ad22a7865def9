"""``python -m pipelines dedup-explain <dedup output> <id or URL>``: why dedup removed (or kept) a page.

:mod:`curation.dedup.explain` answers from the output's published files, the index's node tables
and the input shards; the first question about an output builds its lookup (ids, URLs, clusters,
components) as Ray tasks, every later one reads a few row groups.
"""

from __future__ import annotations

import argparse
import sys

from curation.dedup import explain as ex

NAME = "dedup-explain"
HELP = "why dedup removed (or kept) a document: decision, cluster, kept document, Jaccard, word diff"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", help="a dedup output folder (holds stats.json and duplicates.parquet)")
    p.add_argument("query", help="a document id, or a URL (every document of that URL is explained)")
    p.add_argument("--lookup", help="folder of the lookup (default <output>/lookup; built on the first question)")
    p.add_argument("--limit", type=int, default=5, help="documents explained at most for one URL")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")


def run(args: argparse.Namespace) -> int:
    ex.read_stats(args.output)  # a folder that is not a dedup output: one line
    if not ex.lookup_ready(args.output, args.lookup):
        print(f"dedup-explain: building the lookup of {args.output} (once; later questions read it)", file=sys.stderr)
        build_lookup(args.output, args.lookup)
    found = ex.explain(args.output, args.query, args.lookup, limit=args.limit)
    print(ex.explanations_json(found) if args.json else ex.format_explanation(found))
    return 0


def build_lookup(output: str, lookup: str | None = None) -> None:
    from pipelines import runtime  # Ray only when the lookup is built: a question starts in about a second

    plan = ex.lookup_plan(output, lookup)
    ctx = plan["ctx"]
    for fn, units, desc in ((ex.route_nodes_unit, plan["nodes"], "node tables"), (ex.route_clusters_unit, plan["duplicates"], "duplicates"),
                            (ex.write_partition_unit, plan["partitions"], "sorted tables"),
                            (ex.components_unit, [{"name": "graph"}], "components")):
        for u, r in zip(units, runtime.run_tasks(fn, units, desc=f"dedup-explain: {desc}", args=(ctx,)) if units else []):
            if isinstance(r, runtime.TaskFailure):
                raise RuntimeError(f"dedup-explain: {desc} failed on {u['name']}: {r.error}")
    ex.finish_lookup(ctx)
