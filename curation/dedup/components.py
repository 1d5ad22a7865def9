"""Step 3: connected components of the candidate graph, in rounds over partitioned edge files.

The rounds alternate large-star and small-star (Kiveris, Lattanzi, Mirrokni, Rastogi and
Vassilvitskii 2014, "Connected Components in MapReduce and Beyond"). The graph is kept as rows
``(k, o)`` - node ``k`` has neighbour ``o`` - each edge once in each direction, every row in the
partition of its ``k``, so a task sees the whole neighbourhood of its nodes:

- large-star at ``k``: every neighbour larger than ``k`` is linked to the smallest node of
  ``k``'s closed neighbourhood;
- small-star at ``k``: ``k`` and its smaller neighbours are all linked to the smallest of them.

Neither step changes the components. A task knows whether its step changed anything: large-star
changes nothing iff no node has both a smaller neighbour and a larger one, small-star nothing
iff no node has two smaller neighbours. When one step of each kind has run in a row without a
change, every component is a star around its smallest node: its label. O(log n) rounds
(the paper's bound is O(log^2 n); a handful on web-duplicate graphs). NeMo Curator runs this
step on GPUs with cuGraph; data-juicer's BTS union-find exchanges edges between actors - the
rounds here need neither, only files.

Earlier generations enter contracted: an edge to an old document is an edge to that document's
component label (``contract_unit``); after the rounds, ``expand_unit`` gives every member of
the touched old components its new label. Labels are smallest node ids, and old ids are smaller
than new ones, so merging generations keeps labels stable.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup import layout
from curation.dedup.candidates import ADJ_SCHEMA, OLD_EDGE_SCHEMA, both_directions

LABEL_SCHEMA = pa.schema([("node", pa.int64()), ("label", pa.int64())])
EXPANDED_SCHEMA = pa.schema([("node", pa.int64()), ("label", pa.int64()), ("prev", pa.int8())])


def _sorted_unique(k: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = k != o
    k, o = k[keep], o[keep]
    # Arrow's two-key sort (radix) is about 3x numpy's lexsort on int64 pairs.
    s = pc.sort_indices(pa.table({"k": k, "o": o}), sort_keys=[("k", "ascending"), ("o", "ascending")]).to_numpy()
    k, o = k[s], o[s]
    first = np.concatenate(([True], (k[1:] != k[:-1]) | (o[1:] != o[:-1]))) if len(k) else np.zeros(0, bool)
    return k[first], o[first]


def large_star(k: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Edges (a, b) with a > b from the rows of some nodes' full neighbourhoods, and the number of
    nodes where the step changed something."""
    k, o = _sorted_unique(k, o)
    if len(k) == 0:
        return k, o, 0
    start = np.concatenate(([True], k[1:] != k[:-1]))
    gid = np.cumsum(start) - 1
    keys = k[start]
    m = np.minimum(keys, o[start])  # rows are sorted: the first neighbour is the smallest
    larger = o > k
    has_larger = np.zeros(len(keys), dtype=bool)
    has_larger[gid[larger]] = True
    changed = int((has_larger & (m < keys)).sum())
    return o[larger], m[gid[larger]], changed


def small_star(k: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    k, o = _sorted_unique(k, o)
    smaller = o < k
    k, o = k[smaller], o[smaller]
    if len(k) == 0:
        return k, o, 0
    start = np.concatenate(([True], k[1:] != k[:-1]))
    gid = np.cumsum(start) - 1
    m = o[start]
    a = np.concatenate([k[start], o[~start]])
    b = np.concatenate([m, m[gid[~start]]])
    changed = int(len(np.unique(gid[~start])))
    return a, b, changed


def star_labels(k: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """After the rounds: each node of the rows and the smallest node of its star."""
    k, o = _sorted_unique(k, o)
    if len(k) == 0:
        return k, o
    start = np.concatenate(([True], k[1:] != k[:-1]))
    keys = k[start]
    return keys, np.minimum(keys, o[start])


def step_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """One partition of one round step (``unit["kind"]``: large or small)."""
    cpu0 = time.process_time()
    P = ctx["partitions"]
    t = layout.read_routed(ctx["inputs"], unit["p"], ADJ_SCHEMA)
    k, o = t.column("k").to_numpy(), t.column("o").to_numpy()
    del t
    a, b, changed = (large_star if unit["kind"] == "large" else small_star)(k, o)
    adj = both_directions(a, b)
    layout.write_routed(adj, layout.node_partition(adj.column("k").to_numpy(), P), P, unit["out"])
    return {"rows_in": int(len(k)), "rows_out": adj.num_rows, "changed": changed, "cpu_s": time.process_time() - cpu0}


def contract_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Node partition ``q``: edges to earlier documents become edges to their components."""
    cpu0 = time.process_time()
    q, P = unit["q"], ctx["partitions"]
    t = layout.read_routed(ctx["old_edge_files"], q, OLD_EDGE_SCHEMA)
    old, new = t.column("old").to_numpy(), t.column("new").to_numpy()
    wanted = np.unique(old)
    found = layout.read_latest(ctx["index"], "labels", ctx["old_gens"], q, P, "node", wanted, ["node", "label"])
    label = old.copy()
    if found is not None and found.num_rows:
        fn, fl = found.column("node").to_numpy(), found.column("label").to_numpy()
        s = np.argsort(fn)
        fn, fl = fn[s], fl[s]
        hit = layout.isin_sorted(old, fn)
        label[hit] = fl[np.searchsorted(fn, old[hit])]
    adj = both_directions(label, new)
    layout.write_routed(adj, layout.node_partition(adj.column("k").to_numpy(), P), P, unit["out"])
    return {"index_nodes_touched": int(len(wanted)), "cpu_s": time.process_time() - cpu0}


def finish_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Partition ``p`` after the last round: labels of this run's nodes go to the member rows'
    tasks (by node file), labels of contracted old components to their expansion (by label)."""
    cpu0 = time.process_time()
    P, gen = ctx["partitions"], ctx["gen"]
    t = layout.read_routed(ctx["inputs"], unit["p"], ADJ_SCHEMA)
    nodes, labels = star_labels(t.column("k").to_numpy(), t.column("o").to_numpy())
    new = layout.gen_of(nodes) == gen
    layout.write_routed(pa.table([pa.array(nodes[new]), pa.array(labels[new])], schema=LABEL_SCHEMA),
                        layout.node_partition(layout.file_key(nodes[new]), P), P, unit["new_out"])
    layout.write_routed(pa.table([pa.array(nodes[~new]), pa.array(labels[~new])], schema=LABEL_SCHEMA),
                        layout.node_partition(nodes[~new], P), P, unit["old_out"])
    return {"nodes": int(len(nodes)), "components": int((nodes == labels).sum()), "cpu_s": time.process_time() - cpu0}


def expand_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Component partition ``q``: every member of each touched old component, with its new label
    and its state so far (0 kept, 1/2 removed); an old document alone (no component) is kept."""
    cpu0 = time.process_time()
    q, P = unit["q"], ctx["partitions"]
    t = layout.read_routed(ctx["old_label_files"], q, LABEL_SCHEMA)
    old, new_label = t.column("node").to_numpy(), t.column("label").to_numpy()
    s = np.argsort(old)
    old, new_label = old[s], new_label[s]
    comp = layout.read_latest(ctx["index"], "components", ctx["old_gens"], q, P, "label", old, ["label", "node", "reason"])
    nodes, labels, prev = [], [], []
    in_comp = np.zeros(len(old), dtype=bool)
    if comp is not None and comp.num_rows:
        cl, cn = comp.column("label").to_numpy(), comp.column("node").to_numpy()
        in_comp = layout.isin_sorted(old, np.unique(cl))
        nodes.append(cn)
        labels.append(new_label[np.searchsorted(old, cl)])
        prev.append(comp.column("reason").to_numpy().astype(np.int8))
    nodes.append(old[~in_comp])
    labels.append(new_label[~in_comp])
    prev.append(np.zeros(int((~in_comp).sum()), dtype=np.int8))
    n, lab, pr = np.concatenate(nodes), np.concatenate(labels), np.concatenate(prev)
    layout.write_routed(pa.table([pa.array(n), pa.array(lab), pa.array(pr)], schema=EXPANDED_SCHEMA),
                        layout.node_partition(layout.file_key(n), P), P, unit["out"])
    return {"index_members": int(len(n)), "cpu_s": time.process_time() - cpu0}


def connected_components(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One process, for a graph that fits in memory (``dedup-stats``' k-dump curve, and the
    benchmark's single-process baseline): every node that has an edge, sorted, and its component
    number (numbered by smallest node)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as _scipy_cc

    nodes, inv = np.unique(np.concatenate([u, v]), return_inverse=True)
    n = len(nodes)
    if n == 0:
        return nodes, np.zeros(0, dtype=np.int64)
    m = len(u)
    graph = coo_matrix((np.ones(m, dtype=np.int8), (inv[:m], inv[m:])), shape=(n, n)).tocsr()
    _, labels = _scipy_cc(graph, directed=False)
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return nodes, rank[labels]
