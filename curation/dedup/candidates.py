"""Step 2, per band partition: documents that share a band key become candidate pairs.

A task takes this run's band rows of its key range (a batch from every shard's routed file),
sorts them and stores them as this generation's partition of the index; it reads the index's
earlier generations for the same key range (files checked sorted) and keeps only their rows
whose key occurs in this run, so the work grows with the new dump while the index is scanned.
Each group of equal keys gives a star of pairs from its oldest member (:func:`star_edges`).

Candidates are not edges yet: each goes to the group of its member's node file, and each star's
head is asked for by the groups that need its signature (``edges``, which checks them).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup import layout
from curation.dedup.signatures import BAND_SCHEMA
from storage import io

# One row per (node, neighbour) direction, routed to the node's partition: the rounds' format.
ADJ_SCHEMA = pa.schema([("k", pa.int64()), ("o", pa.int64())])
OLD_EDGE_SCHEMA = pa.schema([("old", pa.int64()), ("new", pa.int64())])
# A candidate pair (``u`` the star's head) with both ends' dump ranks, routed to ``v``'s group;
# a head's signature asked for by a group (``dest``), routed to the head's group.
CANDIDATE_SCHEMA = pa.schema([("u", pa.int64()), ("v", pa.int64()), ("u_rank", pa.int32()), ("v_rank", pa.int32())])
HEAD_REQUEST_SCHEMA = pa.schema([("node", pa.int64()), ("dest", pa.int32())])


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


def unique_rows(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Indices of the distinct (u, v) pairs (the same pair found in several bands), in (u, v) order."""
    if len(u) == 0:
        return np.zeros(0, np.int64)
    # Arrow's two-key sort (radix) is about 3x numpy's lexsort on int64 pairs.
    s = pc.sort_indices(pa.table({"u": u, "v": v}), sort_keys=[("u", "ascending"), ("v", "ascending")]).to_numpy()
    us, vs = u[s], v[s]
    return s[np.concatenate(([True], (us[1:] != us[:-1]) | (vs[1:] != vs[:-1])))]


def unique_edges(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (u, v) pairs, sorted by (u, v)."""
    at = unique_rows(u, v)
    return u[at], v[at]


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
    dest = layout.group_of(v, P)
    layout.write_routed(pa.table([pa.array(u), pa.array(v), pa.array(ur), pa.array(vr)], schema=CANDIDATE_SCHEMA), dest, P,
                        unit["candidates_out"])
    asked = unique_edges(u, dest)  # (head, group) once each
    layout.write_routed(pa.table([pa.array(asked[0]), pa.array(asked[1].astype(np.int32))], schema=HEAD_REQUEST_SCHEMA),
                        layout.group_of(asked[0], P), P, unit["requests_out"])
    return {"band_rows": int(len(k)), "cpu_s": time.process_time() - cpu0}
