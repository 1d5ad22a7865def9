"""Step 4: from component labels to removals, all per partition or per shard.

- ``gather_unit`` (per group of node files): what the keep rule and the chain check need of
  every member - id, dump, URL, exact hash, signature (and shingle sets of the stripped text
  with ``--verify``) - read from the index's node tables and routed to its component's task.
- ``decide_unit`` (per component partition): the keep rule and the chain check over whole
  components (every generation's members), the exact/near reasons, cluster sizes; writes the
  generation's update of the index, the decisions for each input shard, the rows of
  ``duplicates.parquet`` and the earlier documents this run restores.
- ``labels_unit`` (per node partition): the index's node -> component table for this generation.
- ``write_unit`` (per input shard): the kept documents, with ``dedup_cluster_id`` and
  ``dedup_cluster_size`` (every generation counted) in ``metadata``.
- ``restore_unit`` (per earlier shard): documents an earlier run removed that are kept now.
- ``merge_duplicates``: the per-partition rows as one file ordered by removed id, in bounded
  memory (a k-way merge), with fixed row groups, so its bytes do not depend on the partitions.

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

from curation.dedup import keep as kp
from curation.dedup import layout
from curation.dedup import minhash as mh
from curation.dedup.components import EXPANDED_SCHEMA, LABEL_SCHEMA
from curation.dedup.signatures import signature_matrix
from curation.schema import validate
from curation.stats import StageStats
from storage import io

MEMBER_SCHEMA = pa.schema([
    ("label", pa.int64()), ("node", pa.int64()), ("prev", pa.int8()), ("id", pa.string()), ("dump", pa.string()),
    ("url", pa.string()), ("exact_hash", pa.uint64()), ("signature", pa.binary()), ("shingles", pa.list_(pa.uint32())),
])
COMPONENT_SCHEMA = pa.schema([("label", pa.int64()), ("node", pa.int64()), ("reason", pa.int8()), ("center", pa.int64())])
DECISION_SCHEMA = pa.schema([("row", pa.int32()), ("reason", pa.int8()), ("cluster_id", pa.string()), ("cluster_size", pa.int32())])
RESTORED_SCHEMA = pa.schema([("node", pa.int64()), ("cluster_id", pa.string()), ("cluster_size", pa.int32())])
DUPLICATES_SCHEMA = pa.schema([
    ("removed_id", pa.string()), ("kept_id", pa.string()), ("cluster_id", pa.string()),
    ("removed_dump", pa.string()), ("kept_dump", pa.string()), ("removed_url", pa.string()), ("kept_url", pa.string()),
    ("reason", pa.string()),
    # Removed-to-kept similarity: MinHash estimate, or the true Jaccard with --verify.
    ("similarity", pa.float32()),
    # Documents in the cluster of the kept document, every generation of the index counted.
    ("cluster_size", pa.int32()),
    # True for a document of an earlier run (the index) that this run's newer copy replaces.
    ("retracted", pa.bool_()),
])
HIST_BINS = 20


def stripped_texts(index: str, gen: int, shard: int, texts: list[str]) -> list[str]:
    """``texts`` of a shard with the rows the string level changed replaced (signatures step)."""
    path = layout.shard_file(index, "stripped", gen, shard)
    if io.exists(path):
        t = io.read_parquet(path)
        for row, text in zip(t.column("row").to_pylist(), t.column("text").to_pylist()):
            texts[row] = text
    return texts


def gather_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Node-file group ``g``: member rows for the component tasks."""
    cpu0 = time.process_time()
    g, P, index, cfg = unit["g"], ctx["partitions"], ctx["index"], ctx["cfg"]
    new = layout.read_routed(ctx["new_label_files"], g, LABEL_SCHEMA)
    old = layout.read_routed(ctx["expanded_files"], g, EXPANDED_SCHEMA) if ctx["expanded_files"] else EXPANDED_SCHEMA.empty_table()
    node = np.concatenate([new.column("node").to_numpy(), old.column("node").to_numpy()])
    label = np.concatenate([new.column("label").to_numpy(), old.column("label").to_numpy()])
    prev = np.concatenate([np.full(new.num_rows, -1, np.int8), old.column("prev").to_numpy().astype(np.int8)])
    s = np.argsort(node, kind="stable")
    node, label, prev = node[s], label[s], prev[s]
    files = layout.file_key(node)
    parts = []
    for fk in np.unique(files).tolist():
        sel = files == fk
        gen, shard = fk >> (layout.GEN_SHIFT - layout.SHARD_SHIFT), fk & layout.SHARD_MASK
        rows = layout.row_of(node[sel])
        nt = io.read_parquet(layout.shard_file(index, "nodes", gen, shard), columns=["id", "dump", "url", "exact_hash", "signature"])
        nt = nt.take(pa.array(rows))
        if cfg.verify:
            path = io.read_json(io.join(index, layout.gen_dir(gen), "shards.json"))[shard]
            texts = [t or "" for t in io.read_parquet(path, columns=["text"]).column("text").to_pylist()]
            texts = stripped_texts(index, gen, shard, texts)
            norm = [mh.normalize(texts[r], cfg.shingles) for r in rows.tolist()]
            sets = pa.array([x.astype(np.uint32) for x in mh.shingle_sets(norm, cfg.shingles.ngram)], pa.list_(pa.uint32()))
        else:
            sets = pa.nulls(len(rows), pa.list_(pa.uint32()))
        parts.append(pa.table([pa.array(label[sel]), pa.array(node[sel]), pa.array(prev[sel]), nt.column("id"),
                               pc.fill_null(nt.column("dump"), ""), nt.column("url"), nt.column("exact_hash"),
                               nt.column("signature"), sets], schema=MEMBER_SCHEMA))
    members = pa.concat_tables(parts) if parts else MEMBER_SCHEMA.empty_table()
    layout.write_routed(members, layout.node_partition(members.column("label").to_numpy(), P), P, unit["out"])
    return {"members": members.num_rows, "cpu_s": time.process_time() - cpu0}


def decide(members: pa.Table, ranks: dict[str, int], cfg) -> dict[str, np.ndarray | pa.Table]:
    """The keep rule and the chain check over whole components (a table of MEMBER_SCHEMA rows):
    members in keep-rule order with, for each, the index of its kept document (``center``), the
    similarity to it, the reason (0 kept, 1 exact, 2 near) and its cluster's size."""
    dump = members.column("dump").to_pylist()
    rank = np.array([ranks[d] for d in dump], dtype=np.int64)
    o = kp.priority_order(members.column("label").to_numpy(), rank, members.column("id"), cfg.keep)
    m = members.take(pa.array(o))
    label = m.column("label").to_numpy()
    if cfg.verify:
        sets = [np.asarray(x, dtype=np.uint32) for x in m.column("shingles").to_pylist()]
        similarity = kp.set_similarity(sets)
    else:
        similarity = kp.signature_similarity(signature_matrix(m.column("signature"), cfg.minhash.num_perm))
    center, sim = kp.greedy_centers(label, similarity, cfg.min_similarity)
    reason = kp.removal_reasons(center, m.column("exact_hash").to_numpy())
    size = np.bincount(center, minlength=len(center))[center] if len(center) else np.zeros(0, np.int64)
    head = kp.component_heads(label)
    return {"members": m, "center": center, "similarity": sim, "reason": reason, "size": size,
            "split": center != head, "rank": rank[o]}


def decide_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Component partition ``r``: decisions, the index update, the removal rows."""
    cpu0 = time.process_time()
    r, P, gen, cfg = unit["r"], ctx["partitions"], ctx["gen"], ctx["cfg"]
    d = decide(layout.read_routed(ctx["member_files"], r, MEMBER_SCHEMA), ctx["ranks"], cfg)
    m, center, reason, size = d["members"], d["center"], d["reason"], d["size"]
    node, label, prev = (m.column(c).to_numpy() for c in ("node", "label", "prev"))
    io.write_parquet(pa.table([pa.array(label), pa.array(node), pa.array(reason), pa.array(node[center])], schema=COMPONENT_SCHEMA),
                     layout.index_file(ctx["index"], "components", gen, r))
    layout.write_routed(pa.table([pa.array(node), pa.array(label)], schema=LABEL_SCHEMA), layout.node_partition(node, P), P, unit["labels_out"])
    ids = m.column("id").combine_chunks() if m.num_rows else pa.array([], pa.string())
    kept_id = pc.take(ids, pa.array(center, pa.int64()))
    size32 = size.astype(np.int32)
    new = prev == -1
    idx = np.flatnonzero(new)
    layout.write_routed(pa.table([pa.array(layout.row_of(node[idx]).astype(np.int32)), pa.array(reason[idx]),
                                  pc.take(kept_id, pa.array(idx, pa.int64())), pa.array(size32[idx])], schema=DECISION_SCHEMA),
                        layout.shard_of(node[idx]), ctx["n_shards"], unit["decisions_out"])
    restored = (prev > 0) & (reason == 0)
    ridx = np.flatnonzero(restored)
    io.write_parquet(pa.table([pa.array(node[ridx]), pc.take(kept_id, pa.array(ridx, pa.int64())), pa.array(size32[ridx])],
                              schema=RESTORED_SCHEMA), unit["restored_out"])
    retracted = (prev == 0) & (reason > 0)
    listed = np.flatnonzero((new | retracted) & (reason > 0))
    li, ci = pa.array(listed, pa.int64()), pa.array(center[listed], pa.int64())
    col = lambda name, at: pc.take(m.column(name), at)  # noqa: E731
    dups = pa.table([col("id", li), col("id", ci), col("id", ci), col("dump", li), col("dump", ci), col("url", li), col("url", ci),
                     pa.array([kp.REASONS[int(x)] for x in reason[listed]], pa.string()),
                     pa.array(d["similarity"][listed]), pa.array(size32[listed]), pa.array(retracted[listed])],
                    schema=DUPLICATES_SCHEMA)
    dups = dups.take(pc.sort_indices(dups, sort_keys=[("removed_id", "ascending")]))
    io.write_parquet(dups, unit["duplicates_out"])
    is_center = center == np.arange(len(center))
    hist = np.histogram(d["similarity"][listed], bins=HIST_BINS, range=(0.0, 1.0))[0]
    return {
        "members": int(len(node)), "components": int(len(np.unique(label))),
        "clusters": int((is_center & (size > 1)).sum()),
        "chain_split": int(d["split"].sum()), "retracted_from_index": int(retracted.sum()),
        "restored_from_index": int(restored.sum()),
        "restored_files": sorted(set(layout.file_key(node[ridx]).tolist())),
        "similarity_counts": hist.tolist(),
        "cluster_sizes": {str(k): v for k, v in sorted(Counter(size[is_center].tolist()).items())},
        "cpu_s": time.process_time() - cpu0,
    }


def labels_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Node partition ``q`` of this generation's node -> component table."""
    t = layout.read_routed(ctx["label_files"], unit["q"], LABEL_SCHEMA)
    t = t.take(pc.sort_indices(t, sort_keys=[("node", "ascending")]))
    io.write_parquet(t, layout.index_file(ctx["index"], "labels", ctx["gen"], unit["q"]))
    return {"labelled_nodes": t.num_rows}


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
    dec = layout.read_routed(ctx["decision_files"], unit["shard"], DECISION_SCHEMA)
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


def decision_summary(results: list[dict], cfg) -> dict[str, Any]:
    """The decide step's per-partition summaries merged: the removed-to-kept similarity
    histogram and the sizes of the clusters this run touched (every generation counted)."""
    counts = np.sum([r["similarity_counts"] for r in results], axis=0) if results else np.zeros(HIST_BINS)
    sizes = sum((Counter(r["cluster_sizes"]) for r in results), Counter())
    return {
        "similarity_histogram": {"bins": np.linspace(0.0, 1.0, HIST_BINS + 1).round(3).tolist(), "counts": counts.astype(int).tolist(),
                                 "measure": "true Jaccard" if cfg.verify else "MinHash estimate", "min_similarity": cfg.min_similarity},
        "cluster_sizes": {k: sizes[k] for k in sorted(sizes, key=int)},
        "lsh_curve": {f"{s:.2f}": round(float(mh.candidate_probability(s, cfg.minhash.bands, cfg.minhash.rows)), 4)
                      for s in np.arange(0.5, 1.0001, 0.05)},
    }


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
