"""Step 3, per group of node files: candidate pairs checked before they become edges.

Every shared band used to be an edge, and a band shared by chance, or by boilerplate, let
components grow through pages that resemble nothing in them (marin-community/marin#6854: 859,091
of one source's 859,092 documents in one cluster). A candidate pair enters the graph only when
the MinHash estimate of the two documents is at least ``min_similarity`` (with ``verify``, their
true Jaccard); the rest are counted (``edges_rejected``). The band of uncertain estimates is not
settled here: an edge only joins a component, and every removal in it is checked again
(``decide``), where the band is.

- ``head_signatures_unit``: the signatures (with ``verify``, the shingle sets) of the star heads
  the groups asked for, to those groups;
- ``check_unit``: each pair of the group's members checked; the accepted ones published
  (``graph/``), those between two documents of this run as stars of a local union-find (the
  components' start), those to an earlier document to its node partition (``contract``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from curation.dedup import layout
from curation.dedup import minhash as mh
from curation.dedup.candidates import CANDIDATE_SCHEMA, HEAD_REQUEST_SCHEMA, OLD_EDGE_SCHEMA, both_directions, unique_rows
from curation.dedup.components import union_find_stars
from curation.dedup.decide import estimate
from curation.dedup.signatures import iter_shingle_sets, shingle_sets_of, signature_matrix
from storage import io

HEAD_SIGNATURE_SCHEMA = pa.schema([("node", pa.int64()), ("signature", pa.binary()), ("shingles", pa.list_(pa.uint32()))])


def signatures_of(index: str, nodes: np.ndarray, num_perm: int) -> np.ndarray:
    """The signatures of ``nodes`` (any order) from their node tables, as an (n x num_perm) matrix."""
    nodes = np.asarray(nodes, dtype=np.int64)
    out = np.zeros((len(nodes), num_perm), dtype=np.uint32)
    files = layout.file_key(nodes)
    for fk in np.unique(files).tolist():
        at = np.flatnonzero(files == fk)
        gen, shard = layout.file_of(fk)
        col = io.read_parquet(layout.shard_file(index, "nodes", gen, shard), columns=["signature"]).column("signature")
        out[at] = signature_matrix(col, num_perm)[layout.row_of(nodes[at])]
    return out


def head_signatures_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Group ``g``: the star heads it holds that other groups asked for, with their signatures."""
    cpu0 = time.process_time()
    g, P, cfg = unit["g"], ctx["partitions"], ctx["cfg"]
    req = layout.read_routed(ctx["request_files"], g, HEAD_REQUEST_SCHEMA)
    nodes, inv = np.unique(req.column("node").to_numpy(), return_inverse=True)
    sigs = signatures_of(ctx["index"], nodes, cfg.minhash.num_perm)
    K = cfg.minhash.num_perm
    sig_col = pa.Array.from_buffers(pa.binary(4 * K), len(nodes), [None, pa.py_buffer(sigs.tobytes())]).cast(pa.binary())
    sets = (pa.array(shingle_sets_of(ctx["index"], nodes, cfg), pa.list_(pa.uint32())) if cfg.verify and len(nodes)
            else pa.nulls(len(nodes), pa.list_(pa.uint32())))
    at = pa.array(inv)
    t = pa.table([pa.array(nodes[inv]), sig_col.take(at), sets.take(at)], schema=HEAD_SIGNATURE_SCHEMA)
    layout.write_routed(t, req.column("dest").to_numpy(), P, unit["out"])
    return {"heads": int(len(nodes)), "cpu_s": time.process_time() - cpu0}


def check_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Group ``g``: its candidate pairs checked; the accepted ones published and handed on."""
    cpu0 = time.process_time()
    g, P, gen, cfg = unit["g"], ctx["partitions"], ctx["gen"], ctx["cfg"]
    cand = layout.read_routed(ctx["candidate_files"], g, CANDIDATE_SCHEMA)
    cand = cand.take(pa.array(unique_rows(cand.column("u").to_numpy(), cand.column("v").to_numpy())))  # a pair found in several bands
    heads = layout.read_routed(ctx["head_files"], g, HEAD_SIGNATURE_SCHEMA)
    u, v = cand.column("u").to_numpy(), cand.column("v").to_numpy()
    hn = heads.column("node").to_numpy()
    ho = np.argsort(hn)
    at = ho[np.searchsorted(hn[ho], u)] if len(u) else np.zeros(0, np.int64)
    K = cfg.minhash.num_perm
    vn, vi = np.unique(v, return_inverse=True)
    if cfg.verify:
        hs = heads.column("shingles")
        sim = np.zeros(len(v), np.float64)
        for pos, sets in iter_shingle_sets(ctx["index"], vn, cfg):  # one input shard's members at a time
            mine = dict(zip(pos.tolist(), sets))
            todo = np.flatnonzero(np.isin(vi, pos))
            for h in np.unique(at[todo]).tolist():  # each head's set against all its members here at once
                pairs = todo[at[todo] == h]
                sim[pairs] = mh.jaccard_many([mine[x] for x in vi[pairs].tolist()], np.asarray(hs[h].values, np.uint32))
    else:
        sim = estimate(signature_matrix(heads.column("signature"), K), signatures_of(ctx["index"], vn, K), at, vi)
    ok = sim >= cfg.min_similarity
    acc = cand.filter(pa.array(ok))
    io.write_parquet(acc.rename_columns(layout.GRAPH_EDGE_SCHEMA.names).cast(layout.GRAPH_EDGE_SCHEMA),
                     layout.graph_edge_path(ctx["output"], g))
    u, v = u[ok], v[ok]
    both_new = (layout.gen_of(u) == gen) & (layout.gen_of(v) == gen)
    a, b = union_find_stars(u[both_new], v[both_new])
    adj = both_directions(a, b)
    layout.write_routed(adj, layout.node_partition(adj.column("k").to_numpy(), P), P, unit["adjacency_out"])
    old_is_u = layout.gen_of(u[~both_new]) != gen
    old = np.where(old_is_u, u[~both_new], v[~both_new])
    newer = np.where(old_is_u, v[~both_new], u[~both_new])
    layout.write_routed(pa.table([pa.array(old), pa.array(newer)], schema=OLD_EDGE_SCHEMA),
                        layout.node_partition(old, P), P, unit["old_edges_out"])
    return {"candidate_pairs": int(len(ok)), "edges": int(ok.sum()), "edges_rejected": int((~ok).sum()),
            "edges_to_index": int(len(old)), "adjacency_rows": adj.num_rows, "cpu_s": time.process_time() - cpu0}
