"""Step 2, per band partition: documents that share a band key become candidate edges.

A task takes this run's band rows of its key range (a batch from every shard's routed file),
sorts them and stores them as this generation's partition of the index; it reads the index's
earlier generations for the same key range (files checked sorted) and keeps only their rows
whose key occurs in this run, so the work grows with the new dump while the index is scanned.
Each group of equal keys gives a star of edges from its oldest member (:func:`star_edges`).

Edges between two documents of this run go straight to the component rounds; an edge to an
earlier document goes first to that document's node partition, where
``components.contract_unit`` replaces it by its component of earlier generations.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from curation.dedup import layout
from curation.dedup.signatures import BAND_SCHEMA
from storage import io

# One row per (node, neighbour) direction, routed to the node's partition: the rounds' format.
ADJ_SCHEMA = pa.schema([("k", pa.int64()), ("o", pa.int64())])
OLD_EDGE_SCHEMA = pa.schema([("old", pa.int64()), ("new", pa.int64())])


def is_sorted(keys: np.ndarray, nodes: np.ndarray) -> bool:
    """True when rows are ordered by (key, node) - the contract of every band file."""
    if len(keys) < 2:
        return True
    dk = keys[1:] >= keys[:-1]
    same = keys[1:] == keys[:-1]
    return bool(dk.all() and (nodes[1:][same] >= nodes[:-1][same]).all())


def star_edges(keys: np.ndarray, order_key: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges from the first member of each group of equal keys to every other member.

    Members are ordered by ``(key, order_key, node)``; with ``order_key`` the dump's age rank
    the head of a group is its oldest copy, so the edges restricted to the first k dumps still
    connect every group (``dedup-stats`` computes the report's k-dump curve from them).
    """
    if len(keys) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    o = np.lexsort((nodes, order_key, keys))
    k, n = keys[o], nodes[o]
    start = np.concatenate(([True], k[1:] != k[:-1]))
    heads = n[start][np.cumsum(start) - 1]
    member = ~start
    u, v = heads[member], n[member]
    keep = u != v  # the same document twice under one key
    return u[keep], v[keep]


def unique_edges(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated edges (the same pair found in several bands); sorted by (u, v)."""
    if len(u) == 0:
        return u, v
    o = np.lexsort((v, u))
    u, v = u[o], v[o]
    keep = np.concatenate(([True], (u[1:] != u[:-1]) | (v[1:] != v[:-1])))
    return u[keep], v[keep]


def both_directions(u: np.ndarray, v: np.ndarray) -> pa.Table:
    return pa.table([pa.array(np.concatenate([u, v])), pa.array(np.concatenate([v, u]))], schema=ADJ_SCHEMA)


def candidate_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Band partition ``unit["p"]``: store this run's keys, find the candidate edges."""
    cpu0 = time.process_time()
    p, P, gen, index = unit["p"], ctx["partitions"], ctx["gen"], ctx["index"]
    new = layout.read_routed(ctx["band_files"], p, BAND_SCHEMA)
    k, n, d = (new.column(c).to_numpy() for c in ("key", "node", "dump_code"))
    o = np.lexsort((n, k))
    k, n, d = k[o], n[o], d[o]
    io.write_parquet(pa.table([pa.array(k), pa.array(n), pa.array(d)], schema=BAND_SCHEMA),
                     layout.index_file(index, "bands", gen, p))
    new_keys = np.unique(k)
    rank_of_code = ctx["rank_of_code"]
    keys, nodes, ranks = [k], [n], [np.asarray(rank_of_code[str(gen)], np.int32)[d.astype(np.int64)] if len(d) else np.zeros(0, np.int32)]
    for g in ctx["old_gens"]:
        for q in layout.overlapping(p, P, g["partitions"]):
            path = layout.index_file(index, "bands", g["gen"], q)
            if not io.exists(path):
                continue
            t = io.read_parquet(path)
            ok, on = t.column("key").to_numpy(), t.column("node").to_numpy()
            if not is_sorted(ok, on):
                raise ValueError(f"band file {path} is not sorted by (key, node)")
            hit = layout.isin_sorted(ok, new_keys) & (layout.partition(ok, P) == p)
            keys.append(ok[hit])
            nodes.append(on[hit])
            ranks.append(np.asarray(rank_of_code[str(g["gen"])], np.int32)[t.column("dump_code").to_numpy()[hit].astype(np.int64)])
    k, n, r = np.concatenate(keys), np.concatenate(nodes), np.concatenate(ranks)
    u, v = star_edges(k, r, n)
    # An edge between two documents of earlier generations is already inside their component.
    touch = (layout.gen_of(u) == gen) | (layout.gen_of(v) == gen)
    u, v = unique_edges(u[touch], v[touch])
    un, first = np.unique(n, return_index=True)
    rank = r[first]
    ur, vr = rank[np.searchsorted(un, u)], rank[np.searchsorted(un, v)]
    io.write_parquet(pa.table([pa.array(u), pa.array(v), pa.array(ur), pa.array(vr)], schema=layout.GRAPH_EDGE_SCHEMA),
                     layout.graph_edge_path(ctx["output"], p))
    both_new = (layout.gen_of(u) == gen) & (layout.gen_of(v) == gen)
    adj = both_directions(u[both_new], v[both_new])
    layout.write_routed(adj, layout.node_partition(adj.column("k").to_numpy(), P), P, unit["adjacency_out"])
    old_is_u = layout.gen_of(u[~both_new]) != gen
    old = np.where(old_is_u, u[~both_new], v[~both_new])
    newer = np.where(old_is_u, v[~both_new], u[~both_new])
    layout.write_routed(pa.table([pa.array(old), pa.array(newer)], schema=OLD_EDGE_SCHEMA),
                        layout.node_partition(old, P), P, unit["old_edges_out"])
    return {"edges": int(len(u)), "edges_to_index": int(len(old)), "band_rows": int(len(k)),
            "cpu_s": time.process_time() - cpu0}
