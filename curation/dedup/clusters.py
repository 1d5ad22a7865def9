"""Candidate pairs to clusters to one kept document per cluster, on compact integer arrays only.

Documents are int64 node ids; nothing here needs their text. ``star_edges`` turns sorted LSH
band keys into candidate edges, ``connected_components`` labels the clusters (scipy's sparse
union over CSR, O(nodes + edges) memory), ``choose_kept`` applies the keep rule and
``removal_reasons`` tells exact from near duplicates.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as _scipy_cc


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
    connect every group (the report's k-dump curve is computed from them).
    """
    if len(keys) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    o = np.lexsort((nodes, order_key, keys))
    k, n = keys[o], nodes[o]
    start = np.concatenate(([True], k[1:] != k[:-1]))
    group = np.cumsum(start) - 1
    heads = n[start][group]
    member = ~start
    u, v = heads[member], n[member]
    keep = u != v  # the same document twice under one key (e.g. an index re-read)
    return u[keep], v[keep]


def unique_edges(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated edges (the same pair found in several bands); sorted by (u, v)."""
    if len(u) == 0:
        return u, v
    pairs = np.unique(np.stack([u, v], axis=1), axis=0)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def connected_components(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, labels): every node that has an edge, sorted, and its component number.

    Components are numbered by their smallest node, so labels do not depend on edge order.
    """
    nodes, inv = np.unique(np.concatenate([u, v]), return_inverse=True)
    n = len(nodes)
    if n == 0:
        return nodes, np.zeros(0, dtype=np.int64)
    m = len(u)
    graph = coo_matrix((np.ones(m, dtype=np.int8), (inv[:m], inv[m:])), shape=(n, n)).tocsr()
    _, labels = _scipy_cc(graph, directed=False)
    # Renumber: component of the smallest node first (scipy's numbering is already that, but
    # make it explicit so a different backend cannot change it).
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return nodes, rank[labels].astype(np.int64)


def choose_kept(labels: np.ndarray, dump_rank: np.ndarray, ids: np.ndarray | tuple[np.ndarray, ...],
                keep: str = "newest") -> np.ndarray:
    """Index (into the arrays) of the kept member of each component, by component number.

    ``keep="newest"``: the copy from the newest dump (highest rank), ties broken by the
    smallest id; ``"oldest"``: the first crawl of the page, ties by id. ``ids`` is one sortable
    array, or a tuple of arrays compared in turn (most significant first).
    """
    if keep not in ("newest", "oldest"):
        raise ValueError(f"keep rule {keep!r} is not 'newest' or 'oldest'")
    rank = -dump_rank if keep == "newest" else dump_rank
    id_keys = tuple(reversed(ids)) if isinstance(ids, tuple) else (ids,)
    o = np.lexsort((*id_keys, rank, labels))
    first = np.concatenate(([True], labels[o][1:] != labels[o][:-1])) if len(o) else np.zeros(0, bool)
    kept = np.empty(labels.max() + 1 if len(labels) else 0, dtype=np.int64)
    kept[labels[o][first]] = o[first]
    return kept


def removal_reasons(labels: np.ndarray, exact: np.ndarray, kept_index: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """For each member: 0 kept, 1 exact duplicate, 2 near duplicate.

    Within a cluster, members with the same normalised-text hash form an exact group; all but
    one of each group are exact duplicates (the one that exact dedup alone would keep: the
    cluster's kept document if it is in the group, else the group's best by ``priority``, lower
    is better). The other groups' survivors are near duplicates of the kept document.
    """
    n = len(labels)
    out = np.zeros(n, dtype=np.int8)
    if n == 0:
        return out
    is_kept = np.zeros(n, dtype=bool)
    is_kept[kept_index] = True
    o = np.lexsort((priority, ~is_kept, exact, labels))
    lab, ex = labels[o], exact[o]
    first = np.concatenate(([True], (lab[1:] != lab[:-1]) | (ex[1:] != ex[:-1])))
    out[o[~first]] = 1
    survivors = o[first]
    out[survivors[~is_kept[survivors]]] = 2
    return out
