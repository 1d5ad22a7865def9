"""``python -m pipelines dedup-stats <dedup output>``: what deduplication did, for a person to check.

Reads only what the dedup stage publishes (``curation/dedup/layout.py``): its ``stats.json``,
``duplicates.parquet`` and candidate graph (``graph/``, ``GRAPH_EDGE_SCHEMA``), and writes
``<output>/dedup-stats/`` with ``report.json``, PNG plots and a self-contained ``report.html``
(plots inlined), and prints the tables:

- per dump: documents in, exact duplicates, near duplicates, kept;
- the cross-dump matrix: documents of dump i removed as duplicates of documents kept in dump j;
- the DeepSeek report's curve: the fraction removed when the first k dumps are deduplicated
  together (recomputed here from the candidate graph restricted to those dumps), beside the
  report's own figures;
- the chain check: members split off their component's kept document (``chain_split``),
  earlier documents retracted or restored, and the distribution of removed-to-kept similarity
  (MinHash estimate, or true Jaccard with ``--verify``);
- the cluster-size histogram (every generation of the index counted), the most duplicated
  domains and URLs.
"""

from __future__ import annotations

import argparse
import base64
import html
import sys
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from curation.dedup import components as comp
from curation.dedup import layout
from curation.dedup.removals import DUPLICATES_SCHEMA
from storage import io

NAME = "dedup-stats"
HELP = "report what dedup did: per-dump counts, cross-dump matrix, k-dump curve, clusters, domains"

# DeepSeek LLM report, Table 1: documents removed when the first k dumps are deduplicated together.
REPORT_CURVE = {1: 0.222, 2: 0.467, 6: 0.557, 12: 0.699, 16: 0.757, 22: 0.763, 41: 0.816, 91: 0.898}
TOP = 15


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", help="a dedup output folder (holds stats.json and duplicates.parquet)")
    p.add_argument("--report", help="where to write the report (default <output>/dedup-stats)")


def run(args: argparse.Namespace) -> int:
    report(args.output, args.report)
    return 0


def report(output: str, folder: str | None = None) -> None:
    """The report of the dedup output ``output``, written to ``folder`` (default
    ``<output>/dedup-stats``) and printed."""
    r = build_report(output)
    folder = folder or io.join(output, "dedup-stats")
    write_report(r, folder)
    print_report(r, sys.stdout)
    print(f"\nreport: {io.join(folder, 'report.html')}", file=sys.stderr)


def build_report(output: str) -> dict[str, Any]:
    stats = io.read_json(io.join(output, "stats.json"))
    d = stats["dedup"]
    dup = io.read_parquet(io.join(output, layout.DUPLICATES_FILE), columns=DUPLICATES_SCHEMA.names).to_pydict()
    per_dump = d["per_dump"]
    dumps = list(per_dump)  # by crawl date (the stage's dump order)
    matrix = Counter(zip((d or "" for d in dup["removed_dump"]), (d or "" for d in dup["kept_dump"])))
    order = {name: i for i, name in enumerate(d["dumps"])}
    cols = sorted(set(dumps) | {k for _, k in matrix}, key=lambda x: order.get(x, -1))
    c = stats["counters"]
    domains = Counter(_domain(u) for u in dup["removed_url"] if u)
    urls = Counter(u for u in dup["kept_url"] if u)
    return {
        "output": output,
        "config": d["config"],
        "totals": {"input": stats["input"], "output": stats["output"], **stats["dropped"],
                   "removed_fraction": round(1 - stats["output"] / stats["input"], 4) if stats["input"] else 0.0},
        "per_dump": per_dump,
        "cross_dump": {"rows": dumps, "cols": cols,
                       "counts": [[matrix.get((i, j), 0) for j in cols] for i in dumps]},
        "k_dump_curve": _curve(output, d, dumps, per_dump),
        "report_curve": REPORT_CURVE,
        # Clusters this run touched, each counted with its members of every generation.
        "cluster_sizes": d.get("cluster_sizes", {}),
        "chain_check": {"min_similarity": d["config"].get("min_similarity"), "measure": d["similarity_histogram"]["measure"],
                        "chains_split": c.get("chain_split", 0), "retracted_from_index": c.get("retracted_from_index", 0),
                        "restored_from_index": c.get("restored_from_index", 0)},
        "similarity": d["similarity_histogram"],
        "top_domains": domains.most_common(TOP),
        "top_urls": urls.most_common(TOP),
        "counters": stats["counters"],
        "lsh_curve": d.get("lsh_curve"),
    }


def _domain(url: str) -> str:
    host = urlsplit(url).hostname or ""
    return host[4:] if host.startswith("www.") else host


def _curve(output: str, d: dict[str, Any], dumps: list[str], per_dump: dict[str, Any]) -> list[dict[str, Any]]:
    """Fraction removed when the first k dumps (oldest first) are deduplicated together: connected
    components of this run's candidate graph restricted to those dumps (no chain check, so a
    little above what the stage removes)."""
    edges = layout.read_graph_edges(output)
    if edges is None:
        return []
    u, v, ur, vr = (edges.column(c).to_numpy().astype(np.int64) for c in layout.GRAPH_EDGE_SCHEMA.names)
    rank = {name: i for i, name in enumerate(d["dumps"])}
    out = []
    for k in range(1, len(dumps) + 1):
        ranks = np.array([rank[x] for x in dumps[:k]])
        sel = np.isin(ur, ranks) & np.isin(vr, ranks)
        nodes, labels = comp.connected_components(u[sel], v[sel])
        removed = len(nodes) - (labels.max() + 1 if len(labels) else 0)
        total = sum(per_dump[x]["input"] for x in dumps[:k])
        out.append({"k": k, "dumps": dumps[:k][-1], "documents": total, "removed": int(removed),
                    "removed_fraction": round(removed / total, 4) if total else 0.0})
    return out


# ---- output ---------------------------------------------------------------------------------


def print_report(r: dict[str, Any], out) -> None:
    t = r["totals"]
    print(f"dedup of {r['output']}: {t['input']:,} documents in, {t['output']:,} kept "
          f"({100 * t['removed_fraction']:.1f}% removed)", file=out)
    print(f"\n{'dump':<20} {'in':>9} {'exact':>9} {'near':>9} {'boilerplate':>11} {'kept':>9}", file=out)
    for dump, c in r["per_dump"].items():
        print(f"{dump or '(no dump)':<20} {c['input']:>9,} {c['exact_duplicate']:>9,} {c['near_duplicate']:>9,} "
              f"{c.get('boilerplate_only', 0):>11,} {c['kept']:>9,}", file=out)
    cd = r["cross_dump"]
    print("\nremoved from dump (row) as duplicate of a document kept in dump (column)", file=out)
    print(" " * 20 + "".join(f"{c[-7:]:>10}" for c in cd["cols"]), file=out)
    for name, row in zip(cd["rows"], cd["counts"]):
        print(f"{name or '(no dump)':<20}" + "".join(f"{x:>10,}" for x in row), file=out)
    print("\nfirst k dumps deduplicated together (components of the candidate graph; the DeepSeek report in brackets)", file=out)
    for p in r["k_dump_curve"]:
        ref = REPORT_CURVE.get(p["k"])
        print(f"  k={p['k']:<3} {p['documents']:>9,} docs  {100 * p['removed_fraction']:5.1f}% removed"
              + (f"   [{100 * ref:.1f}%]" if ref else ""), file=out)
    print("\ncluster size (every generation): clusters  " + "  ".join(f"{k}:{v}" for k, v in r["cluster_sizes"].items()), file=out)
    cc, sim = r["chain_check"], r["similarity"]
    print(f"\nchain check ({cc['measure']} >= {cc['min_similarity']}): {cc['chains_split']:,} members split off their "
          f"component's kept document; {cc['retracted_from_index']:,} earlier documents retracted, "
          f"{cc['restored_from_index']:,} restored", file=out)
    print("removed-to-kept similarity: " + "  ".join(f"{lo:.2f}+:{n}" for lo, n in zip(sim["bins"], sim["counts"]) if n), file=out)
    print("\nmost duplicated domains (removed copies):", file=out)
    for dom, n in r["top_domains"][:10]:
        print(f"  {n:>7,}  {dom}", file=out)
    print("most duplicated URLs (removed copies of the kept page):", file=out)
    for url, n in r["top_urls"][:10]:
        print(f"  {n:>7,}  {url}", file=out)


def _plots(r: dict[str, Any]) -> dict[str, bytes]:
    import io as _io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: dict[str, bytes] = {}

    def save(name: str, fig) -> None:
        buf = _io.BytesIO()
        fig.tight_layout()
        # No timestamps in the PNG so the report is reproducible.
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
        plt.close(fig)
        figs[name] = buf.getvalue()

    fig, ax = plt.subplots(figsize=(6, 3.5))
    dumps = list(r["per_dump"])
    x = np.arange(len(dumps))
    kept = [r["per_dump"][d]["kept"] for d in dumps]
    exact = [r["per_dump"][d]["exact_duplicate"] for d in dumps]
    near = [r["per_dump"][d]["near_duplicate"] for d in dumps]
    ax.bar(x, kept, label="kept")
    ax.bar(x, exact, bottom=kept, label="exact duplicate")
    ax.bar(x, near, bottom=np.add(kept, exact), label="near duplicate")
    ax.set_xticks(x, dumps, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("documents")
    ax.legend(fontsize=8)
    ax.set_title("per dump")
    save("per_dump.png", fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    curve = r["k_dump_curve"]
    ax.plot([p["k"] for p in curve], [100 * p["removed_fraction"] for p in curve], "o-", label="this corpus")
    ax.plot(list(REPORT_CURVE), [100 * v for v in REPORT_CURVE.values()], "s--", alpha=0.6, label="DeepSeek LLM report")
    ax.set_xscale("log")
    ax.set_xlabel("dumps deduplicated together (k)")
    ax.set_ylabel("% documents removed")
    ax.legend(fontsize=8)
    ax.set_title("removed fraction vs number of dumps")
    save("k_dump_curve.png", fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    cd = r["cross_dump"]
    m = np.array(cd["counts"], dtype=float)
    im = ax.imshow(m if m.size else np.zeros((1, 1)), cmap="viridis")
    ax.set_yticks(range(len(cd["rows"])), cd["rows"], fontsize=7)
    ax.set_xticks(range(len(cd["cols"])), cd["cols"], fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("removed from")
    ax.set_xlabel("kept in")
    fig.colorbar(im)
    ax.set_title("cross-dump duplicates")
    save("cross_dump.png", fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    sizes = {int(k): v for k, v in r["cluster_sizes"].items()}
    ax.bar(list(sizes), list(sizes.values()))
    ax.set_yscale("log")
    ax.set_xlabel("cluster size (documents, every generation)")
    ax.set_ylabel("clusters")
    ax.set_title("cluster sizes")
    save("cluster_sizes.png", fig)

    h = r["similarity"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(h["bins"][:-1], h["counts"], width=np.diff(h["bins"]), align="edge")
    ax.axvline(h["min_similarity"], color="k", ls="--", lw=1)
    ax.set_xlabel(f"removed-to-kept similarity ({h['measure']})")
    ax.set_ylabel("removed documents")
    ax.set_title("similarity of each removal to its kept document")
    save("similarity.png", fig)
    return figs


def write_report(r: dict[str, Any], folder: str) -> None:
    io.write_json(r, io.join(folder, "report.json"))
    figs = _plots(r)
    for name, png in figs.items():
        io.write_bytes(png, io.join(folder, name))
    io.write_bytes(_html(r, figs).encode("utf-8"), io.join(folder, "report.html"))


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(f'{c:,}' if isinstance(c, int) else str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _html(r: dict[str, Any], figs: dict[str, bytes]) -> str:
    t = r["totals"]
    img = "".join(f'<img alt="{n}" src="data:image/png;base64,{base64.b64encode(b).decode()}">' for n, b in figs.items())
    cd = r["cross_dump"]
    parts = [
        "<!doctype html><meta charset='utf-8'><title>dedup report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:2px 8px;text-align:right}"
        "table{border-collapse:collapse;margin:1em 0}tr:nth-child(even){background:#f3f3f3}img{max-width:540px}</style>",
        f"<h1>Deduplication report</h1><p>{html.escape(r['output'])}: {t['input']:,} documents in, {t['output']:,} kept "
        f"({100 * t['removed_fraction']:.1f}% removed). MinHash {r['config']['minhash']['bands']} bands x "
        f"{r['config']['minhash']['rows']} rows on word {r['config']['shingles']['ngram']}-grams, keep rule: {r['config']['keep']}.</p>",
        "<h2>Per dump</h2>",
        _table(["dump", "in", "exact duplicates", "near duplicates", "boilerplate only", "kept"],
               [[k or "(no dump)", v["input"], v["exact_duplicate"], v["near_duplicate"], v.get("boilerplate_only", 0), v["kept"]]
                for k, v in r["per_dump"].items()]),
        "<h2>Chain check</h2>", _table(["figure", "value"], [[k, v] for k, v in r["chain_check"].items()]),
        "<h2>Cross-dump matrix</h2><p>Documents of the row's dump removed as duplicates of a document kept in the column's dump.</p>",
        _table(["removed from \\ kept in", *cd["cols"]], [[name, *row] for name, row in zip(cd["rows"], cd["counts"])]),
        "<h2>First k dumps together</h2>",
        _table(["k", "up to dump", "documents", "removed", "removed %", "DeepSeek report %"],
               [[p["k"], p["dumps"], p["documents"], p["removed"], f"{100 * p['removed_fraction']:.1f}",
                 f"{100 * REPORT_CURVE[p['k']]:.1f}" if p["k"] in REPORT_CURVE else ""] for p in r["k_dump_curve"]]),
        "<h2>Plots</h2>", img,
        "<h2>Most duplicated domains</h2>", _table(["domain", "removed copies"], [list(x) for x in r["top_domains"]]),
        "<h2>Most duplicated URLs</h2>", _table(["kept URL", "removed copies"], [list(x) for x in r["top_urls"]]),
        "<h2>Counters</h2>", _table(["counter", "value"], [[k, v] for k, v in r["counters"].items() if not k.startswith(("input_docs:", "kept_docs:"))]),
    ]
    return "\n".join(parts)
