"""What deduplication did, for a person to check: ``pipelines dedup-stats`` and the run report.

Everything comes from what a dedup output publishes (``curation/dedup/layout.py``): its
``stats.json``, ``duplicates.parquet`` (sorted by ``removed_id``) and the candidate graph
(``graph/``), plus, for the sample of clusters, the index's node tables and the input shards the
index lists. The work is split into units that read a bounded slice of those files, so whoever
runs them (Ray tasks in ``pipelines/dedup_stats.py``, or a loop in a test) holds only their small
results, never the corpus's rows:

- :func:`count_unit` (a run of row groups of ``duplicates.parquet``): the cross-dump counts, the
  removed copies by domain and by kept URL (routed by key to :func:`top_unit`), the unit's largest
  cluster and its seeded sample of clusters;
- :func:`top_unit` (a key partition): the most duplicated domains and URLs of its keys, exactly
  as a ``Counter.most_common`` over the whole file orders them (count, then first appearance);
- :func:`curve_unit` (the graph): the DeepSeek report's curve, documents removed when the first
  k dumps are deduplicated together, for every k at once - one union-find over the edges in the
  order of the newer dump of their two ends;
- :func:`locate_unit` (node tables) and :func:`sample_unit` (one pair): the sampled clusters'
  kept and removed documents side by side, their true Jaccard and a word diff.

:func:`assemble` puts the figures together as ``report.json`` holds them; :func:`print_report`,
:func:`plots` and :func:`html_page` show them.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from typing import Any, Iterable
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from curation.dedup import explain as ex
from curation.dedup import layout
from reporting import html as rh
from reporting.plots import png, pyplot
from storage import io

# DeepSeek LLM report, Table 1: documents removed when the first k dumps are deduplicated together.
REPORT_CURVE = {1: 0.222, 2: 0.467, 6: 0.557, 12: 0.699, 16: 0.757, 22: 0.763, 41: 0.816, 91: 0.898}
TOP = 15
# Rows of duplicates.parquet one counting unit reads (a few tens of MB of strings).
ROWS_PER_UNIT = 200_000
# Distinct keys (domains, URLs) per key partition.
KEYS_PER_PARTITION = 1_000_000
# Clusters in the report's sample besides the largest one, and the seed that picks them.
SAMPLE_CLUSTERS = 4
SAMPLE_SEED = 0
KEY_SCHEMA = pa.schema([("kind", pa.int8()), ("key", pa.string()), ("count", pa.int64()), ("first", pa.int64())])
DOMAIN, URL = 0, 1
PAIR_FIELDS = ("removed_id", "kept_id", "removed_dump", "kept_dump", "removed_url", "kept_url", "reason", "similarity", "cluster_size")


def domain(url: str) -> str:
    host = urlsplit(url).hostname or ""
    return host[4:] if host.startswith("www.") else host


# ---- units over duplicates.parquet ----------------------------------------------------------


def duplicate_units(output: str, rows_per_unit: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """(units of whole row groups of ``duplicates.parquet``, its row count); each unit knows the
    file position of its first row."""
    rows_per_unit = rows_per_unit or ROWS_PER_UNIT
    path = io.join(output, layout.DUPLICATES_FILE)
    fs, p = io.filesystem(path)
    with fs.open_input_file(p) as f:
        md = pq.ParquetFile(f).metadata
    units: list[dict[str, Any]] = []
    start = rows = 0
    for g in range(md.num_row_groups):
        n = md.row_group(g).num_rows
        if not units or rows >= rows_per_unit:
            units.append({"name": f"rows-{len(units):05d}", "path": path, "row_groups": [], "first_row": start})
            rows = 0
        units[-1]["row_groups"].append(g)
        rows += n
        start += n
    return units, start


def key_partitions(rows: int) -> int:
    return max(1, math.ceil(rows / KEYS_PER_PARTITION))


def _cluster_hash(kept_id: str, seed: int) -> int:
    return xxhash.xxh64_intdigest(kept_id.encode("utf-8"), seed=seed)


def count_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Row groups ``unit["row_groups"]`` of duplicates.parquet: cross-dump counts, the keys to
    count (to ``unit["out"]``, routed over ``ctx["key_partitions"]``), the largest cluster and
    the seeded sample candidates."""
    fs, p = io.filesystem(unit["path"])
    with fs.open_input_file(p) as f:
        t = pq.ParquetFile(f).read_row_groups(unit["row_groups"], columns=list(PAIR_FIELDS))
    first = unit["first_row"]
    removed_dump, kept_dump = t.column("removed_dump").to_pylist(), t.column("kept_dump").to_pylist()
    matrix = Counter(zip((d or "" for d in removed_dump), (d or "" for d in kept_dump)))
    keys: dict[tuple[int, str], list[int]] = {}  # (kind, key) -> [count, first row]
    for kind, col in ((DOMAIN, "removed_url"), (URL, "kept_url")):
        for i, u in enumerate(t.column(col).to_pylist()):
            if not u:
                continue
            k = (kind, domain(u) if kind == DOMAIN else u)
            hit = keys.get(k)
            if hit is None:
                keys[k] = [1, first + i]
            else:
                hit[0] += 1
    R = ctx["key_partitions"]
    kinds = [k[0] for k in keys]
    names = [k[1] for k in keys]
    table = pa.table([pa.array(kinds, pa.int8()), pa.array(names, pa.string()), pa.array([v[0] for v in keys.values()], pa.int64()),
                      pa.array([v[1] for v in keys.values()], pa.int64())], schema=KEY_SCHEMA)
    dest = np.array([xxhash.xxh64_intdigest(n.encode("utf-8")) % R for n in names], dtype=np.int64)
    layout.write_routed(table, dest, R, unit["out"])
    return {"matrix": [[a, b, n] for (a, b), n in matrix.items()], "rows": t.num_rows,
            **sample_candidates(t, ctx.get("sample_seed", SAMPLE_SEED), ctx.get("sample_clusters", SAMPLE_CLUSTERS))}


def sample_candidates(t: pa.Table, seed: int, n: int) -> dict[str, Any]:
    """The rows a sample of clusters may come from: the largest cluster (by size, then kept id,
    then removed id), and the ``n + 1`` clusters of smallest seeded hash of their kept id, each
    with its smallest removed id. Merging units' candidates gives the same as one pass over all."""
    if not t.num_rows:
        return {"largest": None, "random": []}
    rows = t.to_pylist()
    largest = min(rows, key=lambda r: (-(r["cluster_size"] or 0), r["kept_id"], r["removed_id"]))
    best: dict[str, dict] = {}
    for r in rows:
        cur = best.get(r["kept_id"])
        if cur is None or r["removed_id"] < cur["removed_id"]:
            best[r["kept_id"]] = r
    ranked = sorted(best.values(), key=lambda r: (_cluster_hash(r["kept_id"], seed), r["kept_id"]))[: n + 1]
    return {"largest": largest, "random": ranked}


def pick_samples(candidates: Iterable[dict[str, Any]], seed: int = SAMPLE_SEED, n: int = SAMPLE_CLUSTERS) -> list[dict[str, Any]]:
    """From the units' candidates: the largest cluster, then ``n`` seeded random others."""
    cands = [c for c in candidates if c and c.get("largest")]
    if not cands:
        return []
    largest = min((c["largest"] for c in cands), key=lambda r: (-(r["cluster_size"] or 0), r["kept_id"], r["removed_id"]))
    best: dict[str, dict] = {}
    for r in (r for c in cands for r in c["random"]):
        cur = best.get(r["kept_id"])
        if cur is None or r["removed_id"] < cur["removed_id"]:
            best[r["kept_id"]] = r
    others = sorted((r for k, r in best.items() if k != largest["kept_id"]), key=lambda r: (_cluster_hash(r["kept_id"], seed), r["kept_id"]))
    return [dict(largest, why="largest cluster")] + [dict(r, why="random cluster") for r in others[:n]]


def top_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Key partition ``unit["p"]``: its keys summed over every counting unit, the ``TOP`` of each
    kind by count, then first appearance."""
    t = layout.read_routed(ctx["key_files"], unit["p"], KEY_SCHEMA)
    g = t.group_by(["kind", "key"]).aggregate([("count", "sum"), ("first", "min")])
    out = {}
    for kind, name in ((DOMAIN, "domains"), (URL, "urls")):
        k = g.filter(pc.equal(g.column("kind"), kind))
        k = k.take(pc.sort_indices(k, sort_keys=[("count_sum", "descending"), ("first_min", "ascending")])).slice(0, TOP)
        out[name] = [list(r) for r in zip(k.column("key").to_pylist(), k.column("count_sum").to_pylist(), k.column("first_min").to_pylist())]
    return out


def merge_top(results: Iterable[dict[str, Any]], name: str) -> list[list[Any]]:
    """The partitions' tops as one: [key, count] by count, then first appearance."""
    rows = sorted((r for res in results for r in res[name]), key=lambda r: (-r[1], r[2]))
    return [[k, n] for k, n, _ in rows[:TOP]]


# ---- the k-dump curve and the graph's components ---------------------------------------------


def union_find(u: np.ndarray, v: np.ndarray, stage: np.ndarray | None = None, stages: int = 1
               ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Connected components of the edges ``u - v`` taken in ``stage`` order (edges of stage -1
    left out): (every node with an edge, sorted; its component's smallest node; the number of
    merges after each stage 0 .. stages-1). Merges = nodes - components: the documents plain
    components would remove."""
    stage = np.zeros(len(u), np.int64) if stage is None else np.asarray(stage, np.int64)
    keep = stage >= 0
    u, v, stage = np.asarray(u)[keep], np.asarray(v)[keep], stage[keep]
    nodes, inv = np.unique(np.concatenate([u, v]), return_inverse=True)
    m = len(u)
    order = np.argsort(stage, kind="stable")
    a, b, s = inv[:m][order].tolist(), inv[m:][order].tolist(), stage[order]
    ends = np.searchsorted(s, np.arange(stages), side="right").tolist()
    parent = list(range(len(nodes)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    merges, done, i = [], 0, 0
    for end in ends:
        while i < end:
            x, y = find(a[i]), find(b[i])
            if x != y:
                parent[max(x, y)] = min(x, y)  # the root is the smallest index: the smallest node
                done += 1
            i += 1
        merges.append(done)
    roots = np.array([find(x) for x in range(len(nodes))], dtype=np.int64)
    return nodes, nodes[roots] if len(nodes) else nodes, merges


def curve_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Documents removed when the first k of the run's dumps (oldest first) are deduplicated
    together, for every k: plain components of this run's candidate graph restricted to those
    dumps (no chain check, so a little above what the stage removes)."""
    edges = layout.read_graph_edges(ctx["output"])
    if edges is None:
        return {"removed": []}
    u, v, ur, vr = (edges.column(c).to_numpy().astype(np.int64) for c in layout.GRAPH_EDGE_SCHEMA.names)
    # position of each dump rank in the run's dump list; ranks of other generations' dumps never enter
    pos = np.full(max(ctx["ranks"].values(), default=0) + 2, len(ctx["dumps"]) + 1, np.int64)
    for k, name in enumerate(ctx["dumps"]):
        pos[ctx["ranks"][name]] = k
    stage = np.maximum(pos[np.minimum(ur, len(pos) - 1)], pos[np.minimum(vr, len(pos) - 1)])
    stage[stage >= len(ctx["dumps"])] = -1
    _, _, merges = union_find(u, v, stage, len(ctx["dumps"]))
    return {"removed": merges}


def k_dump_curve(removed: list[int], dumps: list[str], per_dump: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for k in range(1, len(removed) + 1):
        total = sum(per_dump[x]["input"] for x in dumps[:k])
        out.append({"k": k, "dumps": dumps[:k][-1], "documents": total, "removed": int(removed[k - 1]),
                    "removed_fraction": round(removed[k - 1] / total, 4) if total else 0.0})
    return out


# ---- the sample of clusters -----------------------------------------------------------------


def node_files(output: str) -> list[tuple[int, int]]:
    """(generation, shard) of every node table of the output's index, up to its generation."""
    index, gen = ex.index_of(output)
    out = []
    for g in range(gen + 1):
        shards = io.read_json(io.join(index, layout.gen_dir(g), "shards.json")) if io.exists(io.join(index, layout.gen_dir(g), "shards.json")) else []
        out.extend((g, s) for s in range(len(shards)))
    return out


def locate_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Node tables ``unit["files"]`` ((generation, shard) pairs): the node of each id of
    ``ctx["ids"]`` found there."""
    wanted = pa.array(sorted(ctx["ids"]), pa.string())
    found: dict[str, int] = {}
    for gen, shard in unit["files"]:
        t = io.read_parquet(layout.shard_file(ctx["index"], "nodes", gen, shard), columns=["id"])
        hit = np.flatnonzero(pc.is_in(t.column("id"), value_set=wanted).to_numpy(zero_copy_only=False))
        nodes = layout.node_ids(gen, shard, t.num_rows)[hit]
        for node, i in zip(nodes.tolist(), t.column("id").take(pa.array(hit)).to_pylist()):
            found.setdefault(i, node)
    return {"found": found}


def sample_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """One sampled cluster: its kept and removed document side by side (true Jaccard, word diff)."""
    pair = unit["pair"]
    view = ex.pair_view(ctx["output"], unit["removed_node"], unit["kept_node"])
    return {**pair, "true_jaccard": view["true_jaccard"], "estimated_jaccard": view["estimated_jaccard"], "spans": view["spans"]}


# ---- the report -----------------------------------------------------------------------------


def assemble(output: str, stats: dict[str, Any], matrix: Counter, curve: list[dict[str, Any]],
             top_domains: list[list[Any]], top_urls: list[list[Any]]) -> dict[str, Any]:
    """``report.json``: the figures of the units put together with the stage's own stats."""
    d = stats["dedup"]
    per_dump = d["per_dump"]
    dumps = list(per_dump)  # by crawl date (the stage's dump order)
    order = {name: i for i, name in enumerate(d["dumps"])}
    cols = sorted(set(dumps) | {k for _, k in matrix}, key=lambda x: order.get(x, -1))
    c = stats["counters"]
    return {
        "output": output,
        "config": d["config"],
        "totals": {"input": stats["input"], "output": stats["output"], **stats["dropped"],
                   "removed_fraction": round(1 - stats["output"] / stats["input"], 4) if stats["input"] else 0.0},
        "per_dump": per_dump,
        "cross_dump": {"rows": dumps, "cols": cols, "counts": [[matrix.get((i, j), 0) for j in cols] for i in dumps]},
        "k_dump_curve": curve,
        "report_curve": REPORT_CURVE,
        # Clusters this run touched, each counted with its members of every generation.
        "cluster_sizes": d.get("cluster_sizes", {}),
        "chain_check": {"min_similarity": d["config"].get("min_similarity"), "measure": d["similarity_histogram"]["measure"],
                        "chains_split": c.get("chain_split", 0), "retracted_from_index": c.get("retracted_from_index", 0),
                        "restored_from_index": c.get("restored_from_index", 0)},
        "similarity": d["similarity_histogram"],
        "top_domains": top_domains,
        "top_urls": top_urls,
        "counters": stats["counters"],
        "lsh_curve": d.get("lsh_curve"),
    }


def print_report(r: dict[str, Any], out, samples: list[dict[str, Any]] | None = None) -> None:
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
    if samples:
        print("\nsample of clusters (kept document, a removed copy, the first difference; `pipelines dedup-explain` says more):", file=out)
        for s in samples:
            print(f"  {s['why']}: {s['cluster_size']} documents; kept {s['kept_url'] or s['kept_id']} ({s['kept_dump']}), removed "
                  f"{s['removed_url'] or s['removed_id']} ({s['removed_dump']}) as {s['reason']}; Jaccard {s['true_jaccard']:.3f} "
                  f"(estimate {s['estimated_jaccard']:.3f})", file=out)
            for line in ex.passages(s["spans"], limit=1):
                print(f"      {line}", file=out)


def plots(r: dict[str, Any]) -> dict[str, bytes]:
    """{file name: PNG}: per dump, the k-dump curve, the cross-dump matrix, cluster sizes, similarity."""
    plt = pyplot()
    figs: dict[str, bytes] = {}

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
    figs["per_dump.png"] = _labelled(fig, ax, None, "documents", "per dump", legend=True)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    curve = r["k_dump_curve"]
    ax.plot([p["k"] for p in curve], [100 * p["removed_fraction"] for p in curve], "o-", label="this corpus")
    ax.plot(list(REPORT_CURVE), [100 * v for v in REPORT_CURVE.values()], "s--", alpha=0.6, label="DeepSeek LLM report")
    ax.set_xscale("log")
    figs["k_dump_curve.png"] = _labelled(fig, ax, "dumps deduplicated together (k)", "% documents removed",
                                         "removed fraction vs number of dumps", legend=True)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    cd = r["cross_dump"]
    m = np.array(cd["counts"], dtype=float)
    im = ax.imshow(m if m.size else np.zeros((1, 1)), cmap="viridis")
    ax.set_yticks(range(len(cd["rows"])), cd["rows"], fontsize=7)
    ax.set_xticks(range(len(cd["cols"])), cd["cols"], fontsize=7, rotation=30, ha="right")
    fig.colorbar(im)
    figs["cross_dump.png"] = _labelled(fig, ax, "kept in", "removed from", "cross-dump duplicates")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    sizes = {int(k): v for k, v in r["cluster_sizes"].items()}
    ax.bar(list(sizes), list(sizes.values()))
    ax.set_yscale("log")
    figs["cluster_sizes.png"] = _labelled(fig, ax, "cluster size (documents, every generation)", "clusters", "cluster sizes")

    h = r["similarity"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(h["bins"][:-1], h["counts"], width=np.diff(h["bins"]), align="edge")
    ax.axvline(h["min_similarity"], color="k", ls="--", lw=1)
    figs["similarity.png"] = _labelled(fig, ax, f"removed-to-kept similarity ({h['measure']})", "removed documents",
                                       "similarity of each removal to its kept document")
    return figs


def _labelled(fig, ax, x: str | None, y: str, title: str, legend: bool = False) -> bytes:
    if x:
        ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    if legend:
        ax.legend(fontsize=8)
    return png(fig)


def samples_html(samples: list[dict[str, Any]]) -> str:
    """The sampled clusters, each as its kept document beside a removed copy with their
    differences marked (struck: only in the removed copy; marked: only in the kept document)."""
    if not samples:
        return ""
    parts = ["<h2>A sample of clusters</h2><p>The largest cluster and a seeded random few: the kept document and a removed copy. "
             "<del>Struck</del> words are only in the removed copy, <ins>marked</ins> words only in the kept document; long "
             "identical passages are shortened. <code>python -m pipelines dedup-explain &lt;dedup output&gt; &lt;id or URL&gt;</code> "
             "explains any document.</p>"]
    for s in samples:
        parts.append(f"<h3>{s['why']}: {s['cluster_size']:,} documents</h3>" + rh.table(
            ["", "removed copy", "kept document"],
            [["id", s["removed_id"], s["kept_id"]], ["URL", s["removed_url"], s["kept_url"]], ["dump", s["removed_dump"], s["kept_dump"]],
             ["decision", s["reason"], "kept"]]) + f"<p>Jaccard of the two texts {s['true_jaccard']:.3f}, MinHash estimate {s['estimated_jaccard']:.3f}.</p>")
        parts.append(rh.marked_pair("removed copy", "kept document", ex.shorten(s["spans"])))
    return "".join(parts)


def html_page(r: dict[str, Any], figs: dict[str, bytes], samples: str = "") -> str:
    t = r["totals"]
    cd = r["cross_dump"]
    body = [
        f"<h1>Deduplication report</h1><p>{html.escape(r['output'])}: {t['input']:,} documents in, {t['output']:,} kept "
        f"({100 * t['removed_fraction']:.1f}% removed). MinHash {r['config']['minhash']['bands']} bands x "
        f"{r['config']['minhash']['rows']} rows on word {r['config']['shingles']['ngram']}-grams, keep rule: {r['config']['keep']}.</p>",
        "<h2>Per dump</h2>",
        rh.table(["dump", "in", "exact duplicates", "near duplicates", "boilerplate only", "kept"],
                 [[k or "(no dump)", v["input"], v["exact_duplicate"], v["near_duplicate"], v.get("boilerplate_only", 0), v["kept"]]
                  for k, v in r["per_dump"].items()]),
        "<h2>Chain check</h2>", rh.table(["figure", "value"], [[k, v] for k, v in r["chain_check"].items()]),
        "<h2>Cross-dump matrix</h2><p>Documents of the row's dump removed as duplicates of a document kept in the column's dump.</p>",
        rh.table(["removed from \\ kept in", *cd["cols"]], [[name, *row] for name, row in zip(cd["rows"], cd["counts"])]),
        "<h2>First k dumps together</h2>",
        rh.table(["k", "up to dump", "documents", "removed", "removed %", "DeepSeek report %"],
                 [[p["k"], p["dumps"], p["documents"], p["removed"], f"{100 * p['removed_fraction']:.1f}",
                   f"{100 * REPORT_CURVE[p['k']]:.1f}" if p["k"] in REPORT_CURVE else ""] for p in r["k_dump_curve"]]),
        "<h2>Plots</h2>", *(rh.img(b, n) for n, b in figs.items()),
        samples,
        "<h2>Most duplicated domains</h2>", rh.table(["domain", "removed copies"], [list(x) for x in r["top_domains"]]),
        "<h2>Most duplicated URLs</h2>", rh.table(["kept URL", "removed copies"], [list(x) for x in r["top_urls"]]),
        "<h2>Counters</h2>", rh.table(["counter", "value"], [[k, v] for k, v in r["counters"].items() if not k.startswith(("input_docs:", "kept_docs:"))]),
    ]
    return rh.page("dedup report", body)


def write_report(r: dict[str, Any], folder: str, samples: list[dict[str, Any]] | None = None) -> None:
    """``report.json``, the PNGs, ``samples.html`` (the clusters side by side, which the run
    report embeds too) and ``report.html`` into ``folder``."""
    io.write_json(r, io.join(folder, "report.json"))
    figs = plots(r)
    for name, data in figs.items():
        io.write_bytes(data, io.join(folder, name))
    fragment = samples_html(samples or [])
    io.write_bytes(fragment.encode("utf-8"), io.join(folder, "samples.html"))
    io.write_bytes(html_page(r, figs, fragment).encode("utf-8"), io.join(folder, "report.html"))
