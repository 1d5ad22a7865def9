"""Step 6: from decisions to removals - cluster sizes, reasons, the index update, the kept
documents and the rows of ``duplicates.parquet``; per group of node files, per reduce
partition or per shard, never per component.

- ``settle_unit`` (per group): each member's decision (``decide``); for the cluster sizes and
  the exact/near reasons, one row per (kept document) and per (kept document, exact hash) it
  holds, to their reduce partitions;
- ``clusters_unit`` (per reduce partition): cluster sizes (every generation counted) and the
  best-ranked member of each (kept document, exact hash) group, back to the groups;
- ``finalize_unit`` (per group): the reasons; the decisions of each input shard of this run (one
  file per shard), the generation's update of the index (routed to its partitions), the rows of
  ``duplicates.parquet`` and the earlier documents this run restores;
- ``index_unit`` (per partition): the index's node -> component and component -> members tables
  of this generation, copied batch by batch;
- ``write_unit`` (per input shard): the kept documents, with ``dedup_cluster_id`` and
  ``dedup_cluster_size`` (every generation counted) in ``metadata``;
- ``restore_unit`` (per earlier shard): documents an earlier run removed that are kept now;
- ``merge_duplicates``: the per-group rows as one file ordered by removed id, in bounded memory
  (a k-way merge), with fixed row groups, so its bytes do not depend on the partitions.

Reasons: a removed member whose normalised text is its kept document's is an exact duplicate;
among the others removed for one kept document, the best-ranked of each exact group is the
near duplicate and the rest are its exact copies (what exact dedup alone would have removed).
A kept document of an earlier generation whose cluster grows is not rewritten; its new size is
in this run's ``duplicates.parquet`` (``cluster_size`` of the rows removed for it).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dedup import decide as dc
from curation.dedup import keep as kp
from curation.dedup import layout
from curation.dedup import minhash as mh
from curation.dedup.components import LABEL_SCHEMA
from curation.dedup.signatures import stripped_texts
from curation.schema import validate
from curation.stats import StageStats
from storage import io

COMPONENT_SCHEMA = pa.schema([("label", pa.int64()), ("node", pa.int64()), ("reason", pa.int8()), ("center", pa.int64())])
DECISION_SCHEMA = pa.schema([("row", pa.int32()), ("reason", pa.int8()), ("cluster_id", pa.string()), ("cluster_size", pa.int32())])
RESTORED_SCHEMA = pa.schema([("node", pa.int64()), ("cluster_id", pa.string()), ("cluster_size", pa.int32())])
DUPLICATES_SCHEMA = pa.schema([
    ("removed_id", pa.string()), ("kept_id", pa.string()), ("cluster_id", pa.string()),
    ("removed_dump", pa.string()), ("kept_dump", pa.string()), ("removed_url", pa.string()), ("kept_url", pa.string()),
    ("reason", pa.string()),
    # Removed-to-kept similarity the check used: the MinHash estimate, or the true Jaccard where
    # the estimate was near min_similarity (and always with --verify).
    ("similarity", pa.float32()),
    # Documents in the cluster of the kept document, every generation of the index counted.
    ("cluster_size", pa.int32()),
    # True for a document of an earlier run (the index) that this run's newer copy replaces.
    ("retracted", pa.bool_()),
])
SIZE_SCHEMA = pa.schema([("center", pa.int64()), ("n", pa.int64())])
EXACT_SCHEMA = pa.schema([("center", pa.int64()), ("exact_hash", pa.uint64()), ("node", pa.int64()), ("prio", pa.int64()),
                          ("id", pa.string())])
HIST_BINS = 20


def decisions_path(ctx: dict[str, Any], shard: int) -> str:
    """This run's decisions for its input shard ``shard`` (written by the shard's group)."""
    return io.join(ctx["work"], "decisions", f"part-{shard:05d}.parquet")


def _file(ctx: dict, kind: str, i: int) -> str:
    return io.join(ctx["work"], "settle", f"{kind}-{i:04d}.arrow")


def settle_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Group ``g``: per kept document the members it holds, per (kept document, exact hash) its
    best-ranked removed member, to the reduce partitions."""
    cpu0 = time.process_time()
    g, P = unit["g"], ctx["partitions"]
    t, _ = dc.read_decided(ctx, g, ctx["rounds"])
    center = t.column("center").to_numpy()
    c, n = np.unique(center, return_counts=True)
    layout.write_routed(pa.table([pa.array(c), pa.array(n.astype(np.int64))], schema=SIZE_SCHEMA).append_column(
        "src", pa.array(np.full(len(c), g, np.int32))), layout.node_partition(c, P), P, _file(ctx, "size", g))
    removed = t.filter(pa.array(center != t.column("node").to_numpy()))
    e = pa.table([removed.column("center"), removed.column("exact_hash"), removed.column("node"), removed.column("prio"),
                  removed.column("id")], schema=EXACT_SCHEMA)
    e = dc.best_per_key(e, ["center", "exact_hash"])
    e = e.append_column("src", pa.array(np.full(e.num_rows, g, np.int32)))
    layout.write_routed(e, layout.key_partition(e.column("center").to_numpy(), e.column("exact_hash").to_numpy(), P), P,
                        _file(ctx, "exact", g))
    return {"cpu_s": time.process_time() - cpu0}


def clusters_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Reduce partition ``q``: the size of each cluster and the best-ranked removed member of
    each (kept document, exact hash) group, back to the groups that hold them."""
    cpu0 = time.process_time()
    q, P = unit["q"], ctx["partitions"]
    files = [_file(ctx, "size", g) for g in range(P)]
    s = layout.read_routed(files, q, SIZE_SCHEMA.append(pa.field("src", pa.int32())))
    total = s.group_by("center").aggregate([("n", "sum")]).rename_columns(["center", "size"])
    out = s.select(["center", "src"]).join(total, "center")
    layout.write_routed(out.select(["center", "size"]), out.column("src").to_numpy(), P, _file(ctx, "sizes", q))
    e = layout.read_routed([_file(ctx, "exact", g) for g in range(P)], q, EXACT_SCHEMA.append(pa.field("src", pa.int32())))
    best = dc.best_per_key(e.drop(["src"]), ["center", "exact_hash"]).select(["center", "exact_hash", "node"])
    out = e.select(["center", "exact_hash", "src"]).join(best, ["center", "exact_hash"])
    layout.write_routed(out.select(["center", "exact_hash", "node"]), out.column("src").to_numpy(), P, _file(ctx, "near", q))
    sizes = total.column("size").to_numpy()
    return {"clusters": int((sizes > 1).sum()),
            "cluster_sizes": {str(k): v for k, v in sorted(Counter(sizes.tolist()).items())},
            "cpu_s": time.process_time() - cpu0}


def finalize_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Group ``g``: reasons and sizes; the decisions of this run's shards, the index update, the
    rows of ``duplicates.parquet`` and the documents this run restores."""
    cpu0 = time.process_time()
    g, P, gen = unit["g"], ctx["partitions"], ctx["gen"]
    m, left = dc.read_decided(ctx, g, ctx["rounds"])
    m = m.take(pc.sort_indices(m, sort_keys=[("node", "ascending")]))
    node, label, prev = (m.column(c).to_numpy() for c in ("node", "label", "prev"))
    center = m.column("center").to_numpy()
    sizes = layout.read_routed([_file(ctx, "sizes", q) for q in range(P)], g, pa.schema([("center", pa.int64()), ("size", pa.int64())]))
    sc, sv = sizes.column("center").to_numpy(), sizes.column("size").to_numpy()
    o = np.argsort(sc)
    size = sv[o][np.searchsorted(sc[o], center)] if len(center) else np.zeros(0, np.int64)
    near = layout.read_routed([_file(ctx, "near", q) for q in range(P)], g, pa.schema([("center", pa.int64()), ("exact_hash", pa.uint64()),
                                                                                        ("node", pa.int64())]))
    is_near = np.isin(node, near.column("node").to_numpy())
    exact_of_kept = m.column("exact_hash").to_numpy() == m.column("center_exact").to_numpy()
    reason = np.where(center == node, 0, np.where(is_near & ~exact_of_kept, 2, 1)).astype(np.int8)
    comp = pa.table([pa.array(label), pa.array(node), pa.array(reason), pa.array(center)], schema=COMPONENT_SCHEMA)
    layout.write_routed(comp, layout.node_partition(label, P), P, _file(ctx, "components", g))
    layout.write_routed(pa.table([pa.array(node), pa.array(label)], schema=LABEL_SCHEMA), layout.node_partition(node, P), P,
                        _file(ctx, "labels", g))
    kept_id, size32 = m.column("center_id"), size.astype(np.int32)
    new = prev == -1
    for shard in np.unique(layout.shard_of(node[new])).tolist():  # this run's members: one file per shard
        idx = np.flatnonzero(new & (layout.shard_of(node) == shard))
        io.write_parquet(pa.table([pa.array(layout.row_of(node[idx]).astype(np.int32)), pa.array(reason[idx]),
                                   pc.take(kept_id, pa.array(idx)), pa.array(size32[idx])], schema=DECISION_SCHEMA),
                         decisions_path(ctx, shard))
    restored = (prev > 0) & (reason == 0)
    ridx = pa.array(np.flatnonzero(restored))
    io.write_parquet(pa.table([pc.take(m.column("node"), ridx), pc.take(kept_id, ridx), pa.array(size32[restored])],
                              schema=RESTORED_SCHEMA), unit["restored_out"])
    retracted = (prev == 0) & (reason > 0)
    listed = pa.array(np.flatnonzero((new | retracted) & (reason > 0)))
    col = lambda name: pc.take(m.column(name), listed)  # noqa: E731
    dups = pa.table([col("id"), col("center_id"), col("center_id"), col("dump"), col("center_dump"), col("url"), col("center_url"),
                     pa.array([kp.REASONS[int(x)] for x in pc.take(pa.array(reason), listed).to_pylist()], pa.string()),
                     col("similarity"), pc.take(pa.array(size32), listed), pc.take(pa.array(retracted), listed)],
                    schema=DUPLICATES_SCHEMA)
    dups = dups.take(pc.sort_indices(dups, sort_keys=[("removed_id", "ascending")]))
    io.write_parquet(dups, unit["duplicates_out"])
    sim = dups.column("similarity").to_numpy()
    return {
        "members": int(len(node)), "components": int((node == label).sum()),
        "chain_split": int((center != m.column("first").to_numpy()).sum()), "left_open": left.num_rows,
        "retracted_from_index": int(retracted.sum()), "restored_from_index": int(restored.sum()),
        "removals_true_jaccard": int(pc.sum(pc.take(m.column("checked"), listed)).as_py() or 0),
        "restored_files": sorted(set(layout.file_key(node[restored]).tolist())),
        "similarity_counts": np.histogram(sim, bins=HIST_BINS, range=(0.0, 1.0))[0].tolist(),
        "cpu_s": time.process_time() - cpu0,
    }


def index_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Partition ``q`` of this generation's index tables (node -> component, component ->
    members), copied from the groups' routed files one batch at a time."""
    q, P, gen, index = unit["q"], ctx["partitions"], ctx["gen"], ctx["index"]
    rows = 0
    for table, kind, schema in (("labels", "labels", LABEL_SCHEMA), ("components", "components", COMPONENT_SCHEMA)):
        with io.ShardWriter(layout.index_file(index, table, gen, q), schema) as w:
            for g in range(P):
                t = layout.read_routed([_file(ctx, kind, g)], q, schema)
                if t.num_rows:
                    w.write_table(t)
                    rows += t.num_rows
    return {"index_rows": rows}


def with_cluster_fields(table: pa.Table, cluster_id: list, cluster_size: list) -> pa.Table:
    """``metadata`` with ``dedup_cluster_id`` and ``dedup_cluster_size`` set (or replaced)."""
    meta = table.column("metadata").combine_chunks()
    fields = [meta.type.field(i) for i in range(meta.type.num_fields)]
    children = [meta.field(i) for i in range(meta.type.num_fields)]
    names = [f.name for f in fields]
    for name, values, typ in [("dedup_cluster_id", cluster_id, pa.string()), ("dedup_cluster_size", cluster_size, pa.int32())]:
        arr = pa.array(values, type=typ)
        if name in names:
            children[names.index(name)] = arr
        else:
            children.append(arr)
            fields.append(pa.field(name, typ))
    meta = pa.StructArray.from_arrays(children, fields=fields, mask=meta.is_null())
    return table.set_column(table.column_names.index("metadata"), "metadata", meta)


def write_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Input shard ``unit["shard"]`` of this run: its kept documents, and its stats per dump."""
    cpu0 = time.process_time()
    stats = StageStats()
    table = io.read_parquet(unit["path"])
    validate(table.schema)
    n = table.num_rows
    stats.seen(n)
    dumps = pc.fill_null(table.column("dump"), "").to_pylist()
    found = decisions_path(ctx, unit["shard"])
    dec = io.read_parquet(found) if io.exists(found) else DECISION_SCHEMA.empty_table()  # none: no member has duplicates
    reason = np.zeros(n, dtype=np.int8)
    rows = dec.column("row").to_numpy().astype(np.int64)
    reason[rows] = dec.column("reason").to_numpy()
    cluster_id = table.column("id").to_pylist()  # a document without duplicates is a cluster of 1
    cluster_size = [1] * n
    for row, cid, csize, why in zip(rows.tolist(), dec.column("cluster_id").to_pylist(), dec.column("cluster_size").to_pylist(),
                                    reason[rows].tolist()):
        if why == 0:
            cluster_id[row], cluster_size[row] = cid, csize
    texts = table.column("text").to_pylist()
    stripped = stripped_texts(ctx["index"], ctx["gen"], unit["shard"], list(texts))
    if stripped != texts:
        table = table.set_column(table.column_names.index("text"), "text", pa.array(stripped, pa.string()))
    # Nothing left after the string level: dropped as boilerplate (it took no part in clustering).
    empty = np.array([not (t and t.strip()) for t in stripped], dtype=bool) & (reason == 0) if ctx["string_level"] else np.zeros(n, bool)
    why = np.where(empty, 3, reason)
    names = {1: "exact_duplicate", 2: "near_duplicate", 3: "boilerplate_only"}
    for d, w in zip(dumps, why.tolist()):
        stats.add(f"per_dump:{d}:input")
        stats.add(f"per_dump:{d}:{names.get(w, 'kept')}")
    for code, name in names.items():
        if (why == code).any():
            stats.drop(name, int((why == code).sum()))
    keep = why == 0
    stats.kept(int(keep.sum()))
    table = with_cluster_fields(table, cluster_id, cluster_size).filter(pa.array(keep))
    io.write_parquet(table, unit["out"])
    stats.add("cpu_seconds_write", round(time.process_time() - cpu0, 3))
    return stats.to_dict()


def restore_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """An earlier generation's shard: its documents removed then and kept now, into this output."""
    stats = StageStats()
    gen, shard = unit["gen"], unit["shard"]
    fk = (gen << (layout.GEN_SHIFT - layout.SHARD_SHIFT)) | shard
    parts = [io.read_parquet(f) for f in ctx["restored_files"]]
    t = pa.concat_tables(parts) if parts else RESTORED_SCHEMA.empty_table()
    t = t.filter(pa.array(layout.file_key(t.column("node").to_numpy()) == fk))
    t = t.take(pc.sort_indices(t, sort_keys=[("node", "ascending")]))
    path = io.read_json(io.join(ctx["index"], layout.gen_dir(gen), "shards.json"))[shard]
    docs = io.read_parquet(path)
    rows = layout.row_of(t.column("node").to_numpy())
    texts = stripped_texts(ctx["index"], gen, shard, docs.column("text").to_pylist())
    docs = docs.set_column(docs.column_names.index("text"), "text", pa.array(texts, pa.string())).take(pa.array(rows))
    docs = with_cluster_fields(docs, t.column("cluster_id").to_pylist(), t.column("cluster_size").to_pylist())
    io.write_parquet(docs, unit["out"])
    stats.seen(docs.num_rows)
    stats.kept(docs.num_rows)
    stats.add("restored_from_index", docs.num_rows)
    return stats.to_dict()


def per_dump_table(counters: dict, ranks: dict[str, int]) -> dict[str, dict[str, int]]:
    """The ``per_dump:<dump>:<what>`` counters of the write step (taken out of ``counters``) as
    {dump: {input, exact_duplicate, near_duplicate, boilerplate_only, kept}}, dumps by age;
    every figure is counted, none is a remainder."""
    out: dict[str, Counter] = {}
    for key in [k for k in counters if k.startswith("per_dump:")]:
        dump, what = key[len("per_dump:"):].rsplit(":", 1)
        out.setdefault(dump, Counter())[what] += int(counters.pop(key))
    cols = ("input", "exact_duplicate", "near_duplicate", "boilerplate_only", "kept")
    return {d: {c: out[d][c] for c in cols} for d in sorted(out, key=lambda d: ranks.get(d, -1))}


def decision_summary(finals: list[dict], clusters: list[dict], cfg) -> dict[str, Any]:
    """The decisions merged: the removed-to-kept similarity histogram and the sizes of the
    clusters this run touched (every generation counted)."""
    counts = np.sum([r["similarity_counts"] for r in finals], axis=0) if finals else np.zeros(HIST_BINS)
    sizes = sum((Counter(r["cluster_sizes"]) for r in clusters), Counter())
    measure = "true Jaccard" if cfg.verify else ("MinHash estimate, true Jaccard within the band around min_similarity"
                                                  if cfg.uncertain_band > 0 else "MinHash estimate")
    return {
        "similarity_histogram": {"bins": np.linspace(0.0, 1.0, HIST_BINS + 1).round(3).tolist(), "counts": counts.astype(int).tolist(),
                                 "measure": measure, "min_similarity": cfg.min_similarity},
        "cluster_sizes": {k: sizes[k] for k in sorted(sizes, key=int)},
        "lsh_curve": {f"{s:.2f}": round(float(mh.candidate_probability(s, cfg.minhash.bands, cfg.minhash.rows)), 4)
                      for s in np.arange(0.5, 1.0001, 0.05)},
    }


def duplicates_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """``duplicates.parquet``: every group's rows in one file, ordered by removed id."""
    return {"rows": merge_duplicates(ctx["dup_files"], unit["out"])}


def merge_duplicates(files: list[str], out: str, batch_rows: int = 20_000, row_group: int = io.ROW_GROUP_SIZE) -> int:
    """Merge files sorted by ``removed_id`` into one sorted file; memory: a batch per file."""
    iters = [pq.ParquetFile(io.filesystem(f)[1], filesystem=io.filesystem(f)[0]).iter_batches(batch_size=batch_rows) for f in files]
    buf = [DUPLICATES_SCHEMA.empty_table() for _ in files]
    done = [False] * len(files)
    pending, total = [], 0
    with io.ShardWriter(out, DUPLICATES_SCHEMA) as w:
        def emit(final: bool) -> None:
            nonlocal pending
            t = pa.concat_tables(pending) if pending else DUPLICATES_SCHEMA.empty_table()
            while t.num_rows >= row_group or (final and t.num_rows):
                w.write_table(t.slice(0, row_group))
                t = t.slice(row_group)
            pending = [t]
        while True:
            for i, it in enumerate(iters):
                while not done[i] and buf[i].num_rows == 0:
                    try:
                        buf[i] = pa.Table.from_batches([next(it)], schema=DUPLICATES_SCHEMA)
                    except StopIteration:
                        done[i] = True
            live = [i for i in range(len(files)) if buf[i].num_rows]
            if not live:
                break
            open_ = [buf[i].column("removed_id")[-1].as_py() for i in live if not done[i]]
            cut = min(open_) if open_ else None
            take = []
            for i in live:
                n_take = buf[i].num_rows if cut is None else int(pc.sum(pc.less_equal(buf[i].column("removed_id"), cut)).as_py() or 0)
                take.append(buf[i].slice(0, n_take))
                buf[i] = buf[i].slice(n_take)
            t = pa.concat_tables(take)
            pending.append(t.take(pc.sort_indices(t, sort_keys=[("removed_id", "ascending")])))
            total += t.num_rows
            emit(False)
        emit(True)
    return total
