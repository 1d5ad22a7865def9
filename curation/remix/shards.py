"""The remix's work on files: a document shard's domains and sizes, its sampled copies cut into
key-range pieces, and one key range shuffled into a training text shard.

- :func:`scan_shard`: per domain, the documents, bytes and the sparse histogram of their
  sampling bins (what :func:`curation.remix.plan.make_plan` needs from every shard).
- :func:`sample_shard`: every document written the times the plan says (``copies``), each copy
  with a 64-bit shuffle key from (seed, id, copy) and put in the part of the key range it falls
  in: ``<folder>/b=NNNNN/<index>.arrow``.
- :func:`shuffle_bucket`: the pieces of one key range sorted by key, written as one Parquet shard
  of ``TEXT_SHARD_SCHEMA`` (id, text, domain, dump, url, language, epoch).

Every choice depends only on the seed and the ids, so the shards are byte-identical for any
number of workers or input shards.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.remix.config import RemixConfig
from curation.remix.domains import DomainAssigner
from curation.remix.sampling import copies, copy_bins, rehydration_weights, shuffle_keys, weight_keys
from curation.schema import TEXT_SHARD_SCHEMA
from curation.stats import StageStats
from storage import io


def read_documents(path: str, cfg: RemixConfig) -> tuple[pa.Table, list[str], np.ndarray, list[int | None]]:
    """The documents of a shard, their domains, text bytes and duplicate-cluster sizes
    (dedup's ``metadata.dedup_cluster_size``; None where there is none)."""
    table = io.read_parquet(path)
    for col in ("id", "text"):
        if col not in table.column_names:
            raise ValueError(f"{path}: no {col!r} column")
    assign = DomainAssigner(cfg)
    urls = table.column("url").to_pylist() if "url" in table.column_names else [None] * table.num_rows
    titles = [None] * table.num_rows
    cluster_sizes: list[int | None] = [None] * table.num_rows
    if "metadata" in table.column_names and pa.types.is_struct(table.schema.field("metadata").type):
        meta = table.column("metadata").combine_chunks()
        if meta.type.get_field_index("title") >= 0:
            titles = meta.field("title").to_pylist()
        if meta.type.get_field_index("dedup_cluster_size") >= 0:
            cluster_sizes = meta.field("dedup_cluster_size").to_pylist()
    texts = table.column("text").to_pylist()
    domains = [assign(u, t, ti) for u, t, ti in zip(urls, texts, titles)]
    nbytes = pc.binary_length(pc.cast(table.column("text"), pa.binary())).to_numpy(zero_copy_only=False).astype(np.int64)
    return table, domains, nbytes, cluster_sizes


def document_weights(cfg: RemixConfig, cluster_sizes: list[int | None]) -> np.ndarray:
    """Virtual copies per document: rehydration's weights, or 1 each."""
    if cfg.rehydrate:
        return rehydration_weights(cluster_sizes, cfg.rehydrate_weights)
    return np.ones(len(cluster_sizes), dtype=np.int64)


def scan_shard(path: str, cfg: RemixConfig) -> dict[str, dict[str, Any]]:
    """Per domain of a shard: documents, bytes, size (in ``cfg.unit``), the same over the virtual
    copies (rehydration; equal without it), and the sizes by sampling bin (``bins``, ``sizes``)."""
    table, domains, nbytes, cluster_sizes = read_documents(path, cfg)
    rows, bins = copy_bins(cfg.seed, table.column("id").to_pylist(), document_weights(cfg, cluster_sizes))
    sizes = nbytes if cfg.unit == "bytes" else np.ones(len(nbytes), dtype=np.int64)
    dom = np.array(domains, dtype=object)
    out = {}
    for d in sorted(set(domains)):
        sel = dom == d
        vsel = sel[rows]  # this domain's virtual copies (one per document without rehydration)
        vsizes = sizes[rows][vsel]
        ub, inv = np.unique(bins[vsel], return_inverse=True)
        out[d] = {
            "docs": int(sel.sum()), "bytes": int(nbytes[sel].sum()), "size": float(sizes[sel].sum()),
            "copies": int(vsel.sum()), "copies_bytes": int(nbytes[rows][vsel].sum()), "copies_size": float(vsizes.sum()),
            "bins": ub.tolist(), "sizes": np.bincount(inv, weights=vsizes.astype(np.float64)).tolist(),
        }
    return out


def piece_path(folder: str, bucket: int, index: int) -> str:
    """Where input shard ``index`` puts its copies of key range ``bucket``."""
    return io.join(folder, f"b={bucket:05d}", f"{index:05d}.arrow")


def sample_shard(path: str, index: int, cfg: RemixConfig, plan: dict[str, dict[str, float]], n_out: int, folder: str) -> StageStats:
    """Write the copies of shard ``path`` (input number ``index``) the plan asks for into the
    key-range pieces under ``folder`` (:func:`piece_path`); their stats (a document written at
    least once is kept, else dropped as ``remix_downsampled`` or ``remix_zero_weight``)."""
    table, domains, nbytes, cluster_sizes = read_documents(path, cfg)
    ids = table.column("id").to_pylist()
    vrows, vbins = copy_bins(cfg.seed, ids, document_weights(cfg, cluster_sizes))
    n = np.zeros(len(ids), dtype=np.int64)
    dom = np.array(domains, dtype=object)[vrows]
    for d in set(domains):
        sel = np.flatnonzero(dom == d)
        np.add.at(n, vrows[sel], copies(plan[d]["epochs"], vbins[sel], plan[d]["cut"]))
    stats = StageStats()
    for k, c in zip(weight_keys(cluster_sizes, cfg.rehydrate_weights).tolist(), n.tolist()):
        stats.add(f"cluster_size.{k}.documents")
        stats.add(f"cluster_size.{k}.copies", c)
    stats.seen(len(ids))
    stats.kept(int((n > 0).sum()))
    for d, k in zip(domains, n):
        if k == 0:
            stats.drop("remix_zero_weight" if cfg.weights.get(d, 0) <= 0 else "remix_downsampled")
    rows = np.repeat(np.arange(len(ids)), n)
    epoch = (np.arange(len(rows)) - np.repeat(np.cumsum(n) - n, n)).astype(np.int32)
    row_ids = [ids[r] for r in rows.tolist()]
    keys = shuffle_keys(cfg.seed, row_ids, epoch)
    stats.add("copies_written", len(rows))
    stats.add("bytes_written", int(nbytes[rows].sum()))
    cols = {c: table.column(c) if c in table.column_names else pa.nulls(table.num_rows, pa.string()) for c in ("dump", "url", "language")}
    take = pa.array(rows, pa.int64())
    out = pa.table(
        {
            "id": pa.array(row_ids, pa.string()),
            "text": table.column("text").take(take),
            "domain": pa.array([domains[r] for r in rows.tolist()], pa.string()),
            "dump": cols["dump"].take(take).cast(pa.string()),
            "url": cols["url"].take(take).cast(pa.string()),
            "language": cols["language"].take(take).cast(pa.string()),
            "epoch": pa.array(epoch, pa.int32()),
            "key": pa.array(keys, pa.uint64()),
        }
    )
    bucket = ((keys >> np.uint64(32)) * np.uint64(n_out)) >> np.uint64(32)
    for b in np.unique(bucket).tolist():
        piece = out.filter(pa.array(bucket == b))
        io.write_arrow(piece, piece_path(folder, b, index))
    return stats


def shuffle_bucket(folder: str, bucket: int, indices: list[int], out: str) -> dict[str, Any]:
    """The pieces of key range ``bucket`` from inputs ``indices``, sorted by key, written to
    ``out``; its documents and bytes, in all and per domain."""
    pieces = [piece_path(folder, bucket, i) for i in indices]
    tables = [io.read_arrow(p) for p in pieces if io.exists(p)]
    if tables:
        t = pa.concat_tables(tables)
        order = pc.sort_indices(t, sort_keys=[("key", "ascending"), ("id", "ascending"), ("epoch", "ascending")])
        # One chunk: the file then does not depend on how the pieces were split across inputs.
        t = t.take(order).drop_columns(["key"]).select(TEXT_SHARD_SCHEMA.names).cast(TEXT_SHARD_SCHEMA).combine_chunks()
    else:
        t = TEXT_SHARD_SCHEMA.empty_table()
    io.write_parquet(t, out)
    nbytes = pc.binary_length(pc.cast(t.column("text"), pa.binary())).to_numpy(zero_copy_only=False) if t.num_rows else np.zeros(0, np.int64)
    doms = t.column("domain").to_pylist()
    dd, db = Counter(doms), Counter()
    for d, b in zip(doms, nbytes.tolist()):
        db[d] += b
    return {"documents": t.num_rows, "bytes": int(nbytes.sum()), "domain_docs": dict(dd), "domain_bytes": dict(db)}
