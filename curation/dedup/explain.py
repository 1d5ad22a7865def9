"""Why was this page removed: the decision dedup took for one document, read back from its output.

``pipelines dedup-explain <dedup output> <id or URL>`` (:func:`explain`, :func:`format_explanation`)
says, for each document of that id or URL:

- the decision: kept, exact duplicate or near duplicate, and whether the chain check split it off
  (``chain split``: its connected component's best document was not similar enough, so it was
  judged against another kept document, or kept itself);
- the cluster: the kept document and the documents removed for it, its size across every
  generation of the index and the dumps it spans;
- the kept document (id, URL, dump);
- the MinHash estimate of their Jaccard (from the signatures dedup compared) and the true Jaccard
  (from the two texts, as dedup normalised and shingled them, repeated lines removed);
- a word diff: the first differing passages, shortened.

What it reads: the output's ``stats.json`` and ``duplicates.parquet`` (sorted by ``removed_id``:
one row group per question), one shard's ids under ``documents/``, the index's node tables and the
input shards the index lists (the row groups holding the two documents), and a lookup built once
per output by :func:`lookup_plan` and the ``*_unit`` steps (``pipelines dedup-explain`` runs them
as Ray tasks): ids and URLs to node ids, kept ids to the documents removed for them (every
generation's ``duplicates.parquet``) and the components of this run's candidate graph, every file
sorted by its key in small row groups with statistics, so a question reads a few row groups
(locally or on an object store) instead of the corpus.
"""

from __future__ import annotations

import difflib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from curation.dedup import layout
from curation.dedup import minhash as mh
from storage import io
from storage.errors import MissingInput, UserError

LOOKUP = "lookup"
LOOKUP_ROW_GROUP = 2048
KEYS_PER_PARTITION = 2_000_000
# Members of a component read to find its best document (chain split); larger ones are not checked.
MAX_COMPONENT = 5000
# Words compared by the diff (a page longer than this is diffed on its beginning).
MAX_DIFF_WORDS = 5000
KEY_ROUTE = pa.schema([("kind", pa.int8()), ("key", pa.string()), ("node", pa.int64())])
KEY_TABLE = pa.schema([("key", pa.string()), ("node", pa.int64())])
CLUSTER_TABLE = pa.schema([("kept_id", pa.string()), ("removed_id", pa.string()), ("removed_dump", pa.string()), ("gen", pa.int32())])
IDS, URLS = 0, 1


# ---- the output and its index ----------------------------------------------------------------


def read_stats(output: str) -> dict[str, Any]:
    path = io.join(output, "stats.json")
    if not io.exists(path):
        raise MissingInput(f"{output} is not a complete dedup output (no stats.json): give the folder `pipelines dedup --output` wrote")
    stats = io.read_json(path)
    if "dedup" not in stats:
        raise MissingInput(f"{output} is not a dedup output (its stats.json has no dedup section)")
    return stats


def index_of(output: str) -> tuple[str, int]:
    """(the index folder, the output's generation in it)."""
    d = read_stats(output)["dedup"]
    return d["index"], int(d["generation"])


def generations(index: str) -> list[dict[str, Any]]:
    path = io.join(index, "generations.json")
    return io.read_json(path) if io.exists(path) else []


def _partition(key: str, P: int) -> int:
    return xxhash.xxh64_intdigest(key.encode("utf-8")) % P


# ---- reading a few rows ----------------------------------------------------------------------


def read_rows(path: str, rows: Sequence[int], columns: list[str]) -> pa.Table:
    """Rows ``rows`` (positions in the file) of a Parquet file, in that order: only the row groups
    that hold them are read."""
    fs, p = io.filesystem(path)
    try:
        f = fs.open_input_file(p)
    except FileNotFoundError:
        raise MissingInput(f"{path}: no such file (dedup-explain reads the index's node tables and the input shards it lists; "
                           "they must stay where dedup read them)") from None
    with f:
        pf = pq.ParquetFile(f)
        starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)])
        rows = np.asarray(rows, np.int64)
        groups = sorted(set((np.searchsorted(starts, rows, side="right") - 1).tolist()))
        t = pf.read_row_groups(groups, columns=columns)
    offsets = np.cumsum([0] + [starts[g + 1] - starts[g] for g in groups])
    at = {g: o for g, o in zip(groups, offsets[:-1].tolist())}
    local = [at[int(np.searchsorted(starts, r, side="right") - 1)] + int(r - starts[np.searchsorted(starts, r, side="right") - 1]) for r in rows.tolist()]
    return t.take(pa.array(local, pa.int64()))


def find_rows(path: str, column: str, value: str, columns: list[str] | None = None) -> pa.Table:
    """The rows whose ``column`` equals ``value`` in a Parquet file sorted by that column: only
    the row groups whose statistics admit the value are read."""
    fs, p = io.filesystem(path)
    with fs.open_input_file(p) as f:
        pf = pq.ParquetFile(f)
        j = pf.schema_arrow.get_field_index(column)
        groups = []
        for g in range(pf.metadata.num_row_groups):
            st = pf.metadata.row_group(g).column(j).statistics
            if st is None or not st.has_min_max or st.min <= value <= st.max:
                groups.append(g)
        t = pf.read_row_groups(groups, columns=columns) if groups else pf.schema_arrow.empty_table().select(columns or pf.schema_arrow.names)
    return t.filter(pc.equal(t.column(column), value))


def _by_file(nodes: np.ndarray) -> dict[int, np.ndarray]:
    keys = layout.file_key(nodes)
    return {int(k): np.flatnonzero(keys == k) for k in np.unique(keys)}


def node_rows(index: str, nodes: Sequence[int], columns: list[str]) -> pa.Table:
    """The node-table rows of ``nodes`` (in that order), files read in parallel."""
    nodes = np.asarray(nodes, np.int64)
    groups = _by_file(nodes)

    def one(fk: int) -> tuple[np.ndarray, pa.Table]:
        gen, shard = layout.file_of(fk)
        return groups[fk], read_rows(layout.shard_file(index, "nodes", gen, shard), layout.row_of(nodes[groups[fk]]), columns)

    with ThreadPoolExecutor(8) as pool:
        parts = list(pool.map(one, groups))
    if not parts:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    order = np.concatenate([idx for idx, _ in parts])
    t = pa.concat_tables([t for _, t in parts])
    return t.take(pa.array(np.argsort(order, kind="stable")))


def document_texts(index: str, nodes: Sequence[int]) -> list[str]:
    """The texts dedup compared: the input shard's row, with the lines the string level removed
    taken out (the index's ``stripped`` table)."""
    out: list[str] = [""] * len(nodes)
    nodes = np.asarray(nodes, np.int64)
    shards_of: dict[int, list[str]] = {}
    for fk, idx in _by_file(nodes).items():
        gen, shard = layout.file_of(fk)
        if gen not in shards_of:
            shards_of[gen] = io.read_json(io.join(index, layout.gen_dir(gen), "shards.json"))
        rows = layout.row_of(nodes[idx])
        texts = read_rows(shards_of[gen][shard], rows, ["text"]).column("text").to_pylist()
        stripped = layout.shard_file(index, "stripped", gen, shard)
        changed = {}
        if io.exists(stripped):
            s = io.read_parquet(stripped)
            changed = dict(zip(s.column("row").to_pylist(), s.column("text").to_pylist()))
        for i, row, text in zip(idx.tolist(), rows.tolist(), texts):
            out[i] = changed.get(row, text) or ""
    return out


# ---- comparing two documents -----------------------------------------------------------------


def true_jaccard(a: str, b: str, shingles: dict[str, Any]) -> float:
    """The Jaccard of the two texts' shingle sets, normalised as dedup normalises them."""
    cfg = mh.ShingleConfig(**shingles)
    sa, sb = mh.shingle_sets([mh.normalize(a, cfg), mh.normalize(b, cfg)], cfg.ngram)
    return mh.jaccard(sa, sb)


def estimated_jaccard(sig_a: bytes, sig_b: bytes) -> float:
    """The MinHash estimate from two node-table signatures (the fraction of equal values)."""
    a, b = np.frombuffer(sig_a, np.uint32), np.frombuffer(sig_b, np.uint32)
    return float(mh.estimated_jaccard(a, b))


def word_diff(a: str, b: str) -> list[tuple[str, str, str]]:
    """``(op, words of a, words of b)`` spans from ``a`` to ``b`` (op: equal, replace, delete,
    insert), on whitespace-separated words; long texts on their first ``MAX_DIFF_WORDS``."""
    aw, bw = a.split()[:MAX_DIFF_WORDS], b.split()[:MAX_DIFF_WORDS]
    sm = difflib.SequenceMatcher(None, aw, bw, autojunk=False)
    return [(op, " ".join(aw[i1:i2]), " ".join(bw[j1:j2])) for op, i1, i2, j1, j2 in sm.get_opcodes()]


def _clip(words: str, n: int, end: bool = False) -> str:
    w = words.split()
    if len(w) <= n:
        return words
    return ("… " + " ".join(w[-n:])) if end else (" ".join(w[:n]) + " …")


def shorten(spans: Sequence[Sequence[str]], context: int = 12, longest: int = 80) -> list[tuple[str, str, str]]:
    """The spans with long identical passages cut to their ends and long changes clipped."""
    out = []
    for op, a, b in spans:
        if op == "equal":
            w = a.split()
            if len(w) > 2 * context + 3:
                a = f"{' '.join(w[:context])} … ({len(w) - 2 * context:,} identical words left out) … {' '.join(w[-context:])}"
            out.append((op, a, a))
        else:
            out.append((op, _clip(a, longest), _clip(b, longest)))
    return out


def passages(spans: Sequence[Sequence[str]], limit: int = 3, context: int = 8, longest: int = 30) -> list[str]:
    """The first ``limit`` differing passages as lines: a little context, what only the first
    text has (``-``) and what only the second has (``+``)."""
    lines = []
    before = ""
    for op, a, b in spans:
        if op == "equal":
            before = a
            continue
        if len(lines) >= 3 * limit:
            break
        lines.append(f"at: {_clip(before, context, end=True) or '(the start)'}")
        lines.append(f"  - {_clip(a, longest) or '(nothing)'}")
        lines.append(f"  + {_clip(b, longest) or '(nothing)'}")
    return lines or ["(the two texts have the same words)"]


def pair_view(output: str, removed_node: int, kept_node: int) -> dict[str, Any]:
    """Two documents side by side: MinHash estimate, true Jaccard, word diff spans (removed -> kept)."""
    stats = read_stats(output)
    index = stats["dedup"]["index"]
    sig = node_rows(index, [removed_node, kept_node], ["signature"]).column("signature").to_pylist()
    a, b = document_texts(index, [removed_node, kept_node])
    return {"estimated_jaccard": estimated_jaccard(sig[0], sig[1]),
            "true_jaccard": true_jaccard(a, b, stats["dedup"]["config"]["shingles"]),
            "spans": shorten(word_diff(a, b))}


# ---- the lookup: built once per output -------------------------------------------------------


def lookup_folder(output: str, lookup: str | None = None) -> str:
    return lookup or io.join(output, LOOKUP)


def lookup_key(output: str) -> str:
    """What a lookup was built from: the output's stats and the index's generations."""
    index, _ = index_of(output)
    return io.json_digest({"stats": read_stats(output), "generations": generations(index)})


def lookup_ready(output: str, lookup: str | None = None) -> bool:
    path = io.join(lookup_folder(output, lookup), "lookup.json")
    return io.exists(path) and io.read_json(path).get("key") == lookup_key(output)


def lookup_plan(output: str, lookup: str | None = None) -> dict[str, Any]:
    """The units that build the lookup, and its context: node tables of every generation up to
    the output's, every generation's ``duplicates.parquet`` (by row groups), the partitions."""
    index, gen = index_of(output)
    folder = lookup_folder(output, lookup)
    work = io.join(folder, "_work")
    gens = {g["gen"]: g for g in generations(index)}
    node_units, docs = [], 0
    for g in range(gen + 1):
        shards = io.read_json(io.join(index, layout.gen_dir(g), "shards.json"))
        docs += int(gens.get(g, {}).get("docs", 0))
        node_units += [{"name": f"nodes-g{g:03d}-{s:05d}", "gen": g, "shard": s, "out": io.join(work, f"keys-g{g:03d}-{s:05d}.arrow")}
                       for s in range(len(shards))]
    dup_units = []
    for g in range(gen + 1):
        out = output if g == gen else gens.get(g, {}).get("output")
        path = io.join(out, layout.DUPLICATES_FILE) if out else None
        if not path or not io.exists(path):
            continue
        fs, p = io.filesystem(path)
        with fs.open_input_file(p) as f:
            n_groups = pq.ParquetFile(f).metadata.num_row_groups
        for lo in range(0, n_groups, 20):
            dup_units.append({"name": f"dups-g{g:03d}-{lo:05d}", "gen": g, "path": path, "row_groups": list(range(lo, min(n_groups, lo + 20))),
                              "out": io.join(work, f"clusters-g{g:03d}-{lo:05d}.arrow")})
    P = max(1, -(-max(docs, 1) // KEYS_PER_PARTITION))
    ctx = {"index": index, "output": output, "folder": folder, "partitions": P, "key": lookup_key(output),
           "key_files": [u["out"] for u in node_units], "cluster_files": [u["out"] for u in dup_units]}
    parts = [{"name": f"p{p:04d}", "p": p} for p in range(P)]
    return {"ctx": ctx, "nodes": node_units, "duplicates": dup_units, "partitions": parts}


def route_nodes_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """One node table: (id -> node) and (URL -> node) rows, routed by key to the partitions."""
    t = io.read_parquet(layout.shard_file(ctx["index"], "nodes", unit["gen"], unit["shard"]), columns=["id", "url"])
    nodes = layout.node_ids(unit["gen"], unit["shard"], t.num_rows)
    ids, urls = t.column("id").to_pylist(), t.column("url").to_pylist()
    keep = [i for i, u in enumerate(urls) if u]
    keys = ids + [urls[i] for i in keep]
    table = pa.table([pa.array([IDS] * len(ids) + [URLS] * len(keep), pa.int8()), pa.array(keys, pa.string()),
                      pa.array(np.concatenate([nodes, nodes[keep]]) if keep else nodes)], schema=KEY_ROUTE)
    P = ctx["partitions"]
    layout.write_routed(table, np.array([_partition(k or "", P) for k in keys], np.int64), P, unit["out"])
    return {"rows": table.num_rows}


def route_clusters_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Row groups of one generation's duplicates.parquet: (kept id -> removed id, its dump), routed by kept id."""
    fs, p = io.filesystem(unit["path"])
    with fs.open_input_file(p) as f:
        t = pq.ParquetFile(f).read_row_groups(unit["row_groups"], columns=["kept_id", "removed_id", "removed_dump"])
    t = pa.table([t.column("kept_id"), t.column("removed_id"), pc.fill_null(t.column("removed_dump"), ""),
                  pa.array(np.full(t.num_rows, unit["gen"], np.int32))], schema=CLUSTER_TABLE)
    P = ctx["partitions"]
    layout.write_routed(t, np.array([_partition(k, P) for k in t.column("kept_id").to_pylist()], np.int64), P, unit["out"])
    return {"rows": t.num_rows}


def _write_sorted(t: pa.Table, key: str, path: str) -> None:
    t = t.take(pc.sort_indices(t, sort_keys=[(key, "ascending"), (t.column_names[1], "ascending")]))
    io.write_parquet(t, path, row_group_size=LOOKUP_ROW_GROUP)


def write_partition_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Partition ``p``: its ids, URLs and clusters, each sorted by key."""
    p, folder = unit["p"], ctx["folder"]
    keys = layout.read_routed(ctx["key_files"], p, KEY_ROUTE)
    kind = keys.column("kind").to_numpy()
    for k, name in ((IDS, "ids"), (URLS, "urls")):
        sel = keys.filter(pa.array(kind == k))
        _write_sorted(pa.table([sel.column("key"), sel.column("node")], schema=KEY_TABLE), "key", io.join(folder, f"{name}-p={p:04d}.parquet"))
    clusters = layout.read_routed(ctx["cluster_files"], p, CLUSTER_TABLE) if ctx["cluster_files"] else CLUSTER_TABLE.empty_table()
    _write_sorted(clusters, "kept_id", io.join(folder, f"clusters-p={p:04d}.parquet"))
    return {"keys": keys.num_rows, "clusters": clusters.num_rows}


def components_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """The components of this run's candidate graph: node -> label and label -> node tables."""
    from curation.dedup.stats import union_find

    edges = layout.read_graph_edges(ctx["output"])
    u = edges.column("u").to_numpy() if edges is not None else np.zeros(0, np.int64)
    v = edges.column("v").to_numpy() if edges is not None else np.zeros(0, np.int64)
    nodes, labels, _ = union_find(u, v)
    t = pa.table({"node": pa.array(nodes, pa.int64()), "label": pa.array(labels, pa.int64())})
    io.write_parquet(t, io.join(ctx["folder"], "components.parquet"), row_group_size=LOOKUP_ROW_GROUP)
    m = t.select(["label", "node"])
    io.write_parquet(m.take(pc.sort_indices(m, sort_keys=[("label", "ascending"), ("node", "ascending")])),
                     io.join(ctx["folder"], "members.parquet"), row_group_size=LOOKUP_ROW_GROUP)
    return {"nodes": len(nodes)}


def finish_lookup(ctx: dict[str, Any]) -> None:
    """``lookup.json`` last: the lookup is complete, built from what ``key`` names."""
    io.write_json({"key": ctx["key"], "partitions": ctx["partitions"]}, io.join(ctx["folder"], "lookup.json"))
    io.remove_tree(io.join(ctx["folder"], "_work"))


def build_lookup(output: str, lookup: str | None = None) -> None:
    """The lookup in this process, unit after unit (tests; ``pipelines dedup-explain`` runs the
    same units as Ray tasks)."""
    plan = lookup_plan(output, lookup)
    ctx = plan["ctx"]
    for u in plan["nodes"]:
        route_nodes_unit(u, ctx)
    for u in plan["duplicates"]:
        route_clusters_unit(u, ctx)
    for u in plan["partitions"]:
        write_partition_unit(u, ctx)
    components_unit({}, ctx)
    finish_lookup(ctx)


# ---- questions -------------------------------------------------------------------------------


@dataclass
class Lookup:
    folder: str
    partitions: int

    @classmethod
    def open(cls, output: str, lookup: str | None = None) -> "Lookup":
        folder = lookup_folder(output, lookup)
        if not lookup_ready(output, lookup):
            raise MissingInput(f"no lookup for {output} under {folder}: `pipelines dedup-explain` builds it on its first question")
        return cls(folder, int(io.read_json(io.join(folder, "lookup.json"))["partitions"]))

    def nodes(self, kind: str, key: str) -> list[int]:
        p = _partition(key, self.partitions)
        return sorted(find_rows(io.join(self.folder, f"{kind}-p={p:04d}.parquet"), "key", key, ["key", "node"]).column("node").to_pylist())

    def cluster(self, kept_id: str) -> pa.Table:
        p = _partition(kept_id, self.partitions)
        return find_rows(io.join(self.folder, f"clusters-p={p:04d}.parquet"), "kept_id", kept_id)

    def component(self, node: int) -> list[int]:
        """The members of ``node``'s component in this run's candidate graph ([node] when it has no edge)."""
        hit = find_rows(io.join(self.folder, "components.parquet"), "node", node, ["node", "label"])
        if not hit.num_rows:
            return [node]
        label = hit.column("label")[0].as_py()
        return find_rows(io.join(self.folder, "members.parquet"), "label", label, ["label", "node"]).column("node").to_pylist()


def _duplicate_row(output: str, doc_id: str) -> dict[str, Any] | None:
    path = io.join(output, layout.DUPLICATES_FILE)
    if not io.exists(path):
        return None
    t = find_rows(path, "removed_id", doc_id)
    return t.to_pylist()[0] if t.num_rows else None


def _kept_here(output: str, file: str, doc_id: str) -> dict[str, Any] | None:
    """The document's row in a shard of ``documents/`` (id and its dedup metadata), if there."""
    path = io.join(output, "documents", file)
    if not io.exists(path):
        return None
    t = io.read_parquet(path, columns=["id", "metadata"])
    hit = np.flatnonzero(pc.equal(t.column("id"), doc_id).to_numpy(zero_copy_only=False))
    return t.slice(int(hit[0]), 1).to_pylist()[0] if len(hit) else None


def _priority(keep: str, ranks: dict[str, int]):
    sign = -1 if keep == "newest" else 1
    return lambda row: (sign * ranks.get(row["dump"] or "", -1), row["id"])


def explain(output: str, query: str, lookup: str | None = None, limit: int = 5) -> list[dict[str, Any]]:
    """The decision for every document whose id or URL is ``query`` (at most ``limit``)."""
    stats = read_stats(output)
    d = stats["dedup"]
    index, gen = d["index"], int(d["generation"])
    look = Lookup.open(output, lookup)
    nodes = look.nodes("ids", query) or look.nodes("urls", query)
    if not nodes:
        raise UserError(f"no document with id or URL {query!r} in {output} (nor in the earlier generations of its index)")
    return [explain_node(output, stats, look, n) for n in nodes[:limit]] + (
        [{"more": len(nodes) - limit}] if len(nodes) > limit else [])


def explain_node(output: str, stats: dict[str, Any], look: Lookup, node: int) -> dict[str, Any]:
    d = stats["dedup"]
    index, gen, cfg = d["index"], int(d["generation"]), d["config"]
    ranks = {name: i for i, name in enumerate(d["dumps"])}
    me = node_rows(index, [node], ["id", "dump", "url"]).to_pylist()[0]
    g, shard = layout.file_of(int(layout.file_key(np.array([node]))[0]))
    e: dict[str, Any] = {"id": me["id"], "url": me["url"], "dump": me["dump"], "node": node, "generation": g}
    row = _duplicate_row(output, me["id"])
    kept_id = None
    if row is not None:
        e.update(decision=row["reason"], kept_id=row["kept_id"], cluster_size=row["cluster_size"],
                 similarity=row["similarity"], retracted=row["retracted"],
                 where=("an earlier run kept it; this run's newer copy replaces it" if row["retracted"] else "removed by this run"))
        kept_id = row["kept_id"]
    elif g == gen:
        here = _kept_here(output, f"part-{shard:05d}.parquet", me["id"])
        if here is None:
            e.update(decision="boilerplate_only", where="dropped by this run: nothing was left once its repeated lines were removed")
        else:
            e.update(decision="kept", where="kept by this run", cluster_size=(here["metadata"] or {}).get("dedup_cluster_size"))
    else:
        restored = _kept_here(output, f"restored-g{g:03d}-part-{shard:05d}.parquet", me["id"])
        earlier = generations(index)[g].get("output") if g < len(generations(index)) else None
        old = _duplicate_row(earlier, me["id"]) if earlier and restored is None else None
        if restored is not None:
            e.update(decision="kept", where=f"restored by this run (an earlier run, generation {g}, had removed it)",
                     cluster_size=(restored["metadata"] or {}).get("dedup_cluster_size"))
        elif old is not None:
            e.update(decision=old["reason"], kept_id=old["kept_id"], cluster_size=old["cluster_size"], similarity=old["similarity"],
                     where=f"removed by the run of generation {g} ({earlier})")
            kept_id = old["kept_id"]
            newer = _duplicate_row(output, kept_id)
            if newer is not None:  # its kept document was replaced by this run's newer copy
                e["where"] += f"; that run's kept document was replaced by this run's {newer['kept_id']} ({newer['kept_dump']})"
        else:
            e.update(decision="kept", where=f"kept by the run of generation {g}" + (f" ({earlier})" if earlier else ""))
    center = me["id"] if kept_id is None else kept_id
    center_nodes = [node] if kept_id is None else look.nodes("ids", kept_id)
    if center_nodes:
        k = node_rows(index, [center_nodes[0]], ["id", "dump", "url"]).to_pylist()[0]
        e["kept"] = {"id": k["id"], "url": k["url"], "dump": k["dump"], "node": center_nodes[0]}
    members = look.cluster(center)
    e["removed_for_kept"] = members.num_rows
    dumps = {e["kept"]["dump"]} if "kept" in e else set()
    dumps |= set(members.column("removed_dump").to_pylist())
    e["cluster_dumps"] = sorted((x for x in dumps if x is not None), key=lambda x: (ranks.get(x, -1), x))
    e["cluster_size"] = e.get("cluster_size") or 1 + members.num_rows
    # The chain check: the component's best document by the keep rule, against the one this
    # document was judged by (for a decision of this run: the graph is this run's).
    comp = look.component(node)
    e["component_size"] = len(comp)
    decided_here = row is not None or g == gen
    if decided_here and 1 < len(comp) <= MAX_COMPONENT and e["decision"] in ("kept", "exact_duplicate", "near_duplicate") and "kept" in e:
        rows = node_rows(index, comp, ["id", "dump"]).to_pylist()
        for r, n in zip(rows, comp):
            r["node"] = n
        head = min(rows, key=_priority(cfg["keep"], ranks))
        e["component_best"] = {"id": head["id"], "dump": head["dump"], "node": head["node"]}
        e["chain_split"] = head["id"] != e["kept"]["id"]
    # The two texts compared: this document and its kept one; a kept document against its
    # component's best (split off) or the first document removed for it.
    other = None
    if kept_id is not None and "kept" in e:
        other = e["kept"]["node"]
    elif e.get("chain_split"):
        other = e["component_best"]["node"]
    elif members.num_rows:
        first = sorted(members.column("removed_id").to_pylist())[0]
        found = look.nodes("ids", first)
        other = found[0] if found else None
    if other is not None and other != node:
        sig = node_rows(index, [node, other], ["signature"]).column("signature").to_pylist()
        a, b = document_texts(index, [node, other])
        e["compared_with"] = node_rows(index, [other], ["id", "url", "dump"]).to_pylist()[0]
        e["estimated_jaccard"] = estimated_jaccard(sig[0], sig[1])
        e["true_jaccard"] = true_jaccard(a, b, cfg["shingles"])
        e["spans"] = shorten(word_diff(a, b))
    e["min_similarity"] = cfg.get("min_similarity")
    e["measure"] = "true Jaccard" if cfg.get("verify") else "MinHash estimate"
    return e


_WORDS = {"kept": "kept", "exact_duplicate": "removed: exact duplicate", "near_duplicate": "removed: near duplicate",
          "boilerplate_only": "removed: boilerplate only"}


def format_explanation(explanations: Iterable[dict[str, Any]]) -> str:
    lines: list[str] = []
    for e in explanations:
        if "more" in e:
            lines.append(f"... and {e['more']} more documents with this URL (`--limit` shows more)")
            continue
        decision = _WORDS.get(e["decision"], e["decision"])
        if e.get("chain_split"):
            decision += " (chain split: its component's best document was not similar enough"
            decision += "; it was judged against another kept document)" if e["decision"] != "kept" else "; so it was kept itself)"
        lines += [f"document  {e['id']}", f"  url       {e['url']}", f"  dump      {e['dump']} (generation {e['generation']})",
                  f"  decision  {decision}", f"            {e['where']}"]
        if "kept" in e:
            k = e["kept"]
            lines.append(f"  kept      {k['id']}  {k['url']}  ({k['dump']})" + ("  (this document)" if k["id"] == e["id"] else ""))
        lines.append(f"  cluster   {e['cluster_size']:,} documents across every generation; dumps: {', '.join(e['cluster_dumps']) or '-'}"
                     f" ({e['removed_for_kept']:,} listed as removed for the kept document)")
        if e.get("component_size", 1) > 1:
            best = e.get("component_best")
            lines.append(f"  component {e['component_size']:,} documents linked by candidate pairs in this run"
                         + (f"; best by the keep rule: {best['id']} ({best['dump']})" if best else ""))
        if "compared_with" in e:
            c = e["compared_with"]
            lines.append(f"  compared  with {c['id']}  {c['url']}  ({c['dump']})")
            lines.append(f"  Jaccard   {e['estimated_jaccard']:.3f} MinHash estimate, {e['true_jaccard']:.3f} true (from the two texts); "
                         f"the chain check needs {e['measure']} >= {e['min_similarity']}")
            lines.append("  diff      (- only in this document, + only in the other)")
            lines += [f"    {x}" for x in passages(e["spans"])]
        lines.append("")
    return "\n".join(lines)


def explanations_json(explanations: list[dict[str, Any]]) -> str:
    return json.dumps(explanations, indent=2, default=str)
