"""Step 4: connected components of the checked candidate graph, by local contraction.

The graph is kept as rows ``(k, o)`` - node ``k`` has neighbour ``o`` - each edge once in each
direction, every row in the partition of its ``k``, so a task sees the whole neighbourhood of its
nodes. A round of *local contraction* (Łącki, Mirrokni and Włodarczyk 2018, "Connected Components
at Scale via Local Contractions") maps every node to the node of smallest random priority in its
closed neighbourhood and merges the nodes mapped to the same one: two tasks per round (``contract``:
each node's choice, and its neighbours told; ``relabel``: the contracted edges, without self-loops
or repeats, and each merged node's smallest original id). On web-duplicate and random graphs a
round leaves about 40% of the rows. As soon as the rows left fit one task
(``component_rows_in_memory``), one task finishes with an in-memory union-find; then each round's
mapping is walked back (``expand``), so every original node gets its component's smallest node
id: exactly the labels of a plain union-find, whatever the partitions.

Candidate tasks start the graph as stars (a local union-find over each task's checked edges,
every local component a star around its smallest node), so a run whose graph fits one task needs
no round at all. Large-star/small-star rounds (Kiveris et al. 2014), which this replaced, rewrote
every row in each of their 20-odd steps on critical random graphs.

Earlier generations enter contracted: an edge to an old document is an edge to that document's
component label (``contract_unit``); after the rounds, ``expand_unit`` gives every member of
the touched old components its new label. Labels are smallest node ids, and old ids are smaller
than new ones, so merging generations keeps labels stable.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from curation.dedup import layout
from curation.dedup.candidates import ADJ_SCHEMA, OLD_EDGE_SCHEMA, both_directions, unique_edges
from storage import io

LABEL_SCHEMA = pa.schema([("node", pa.int64()), ("label", pa.int64())])
EXPANDED_SCHEMA = pa.schema([("node", pa.int64()), ("label", pa.int64()), ("prev", pa.int8())])
# A node of a contracted level: its smallest original node id so far.
STATE_SCHEMA = pa.schema([("node", pa.int64()), ("low", pa.int64())])
# Round r's mapping: level-r node ``node`` merged into level-(r+1) node ``into``.
MAP_SCHEMA = pa.schema([("into", pa.int64()), ("node", pa.int64()), ("low", pa.int64())])
MSG_SCHEMA = pa.schema([("node", pa.int64()), ("into", pa.int64())])


def _salt(level: int) -> np.int64:
    return np.int64(level * 0x5851F42D4C957F2D % (1 << 62))


def priority(nodes: np.ndarray, level: int) -> np.ndarray:
    """Random (hashed, one-to-one) priorities of nodes at a level: the smallest of a neighbourhood wins."""
    return layout.mix64(np.asarray(nodes, dtype=np.int64) ^ _salt(level))


def node_of(prio: np.ndarray, level: int) -> np.ndarray:
    """The node whose priority at ``level`` is ``prio`` (the inverse of :func:`priority`)."""
    return layout.unmix64(prio).view(np.int64) ^ _salt(level)


def union_find_stars(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The components of edges ``u``-``v`` as stars: (node, smallest node of its component) for
    every node but each component's smallest (a local union-find; the candidate tasks' start)."""
    nodes, labels = connected_components(u, v)
    if len(nodes) == 0:
        return nodes, nodes
    first = np.full(labels.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, labels, nodes)
    low = first[labels]
    leaf = nodes != low
    return nodes[leaf], low[leaf]


def _routed(table: pa.Table, dest: np.ndarray, n_dest: int, path: str) -> None:
    """A hand-off of node ids: random 64-bit values lz4 cannot shrink, so written uncompressed."""
    layout.write_routed(table, dest, n_dest, path, compression=None)


def _path(ctx: dict, kind: str, level: int, i: int) -> str:
    return io.join(ctx["work"], "cc", f"l{level:02d}", f"{kind}-{i:04d}.arrow")


def _paths(ctx: dict, kind: str, level: int) -> list[str]:
    return [_path(ctx, kind, level, i) for i in range(ctx["partitions"])]


def _adjacency(ctx: dict, level: int) -> list[str]:
    return ctx["adjacency"] if level == 0 else _paths(ctx, "adj", level)


def _states(ctx: dict, level: int, p: int, nodes: np.ndarray | None = None) -> pa.Table:
    """Level-``level`` nodes of partition ``p`` with their smallest original id (level 0: itself)."""
    if level == 0:
        return pa.table([pa.array(nodes), pa.array(nodes)], schema=STATE_SCHEMA)
    return layout.read_routed([_path(ctx, "state", level, p)], 0, STATE_SCHEMA)


def _lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``values`` of ``wanted`` in ``keys`` (sorted; every wanted key present), looked up in
    sorted order (sequential, several times faster than random probes)."""
    o = np.argsort(wanted, kind="stable")
    out = np.empty(len(wanted), dtype=values.dtype)
    out[o] = values[np.searchsorted(keys, wanted[o])]
    return out


def contract_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Partition ``p`` of level ``level``: each node's choice (the smallest priority in its closed
    neighbourhood), told to its neighbours; nodes without rows are finished (label: their smallest
    original id)."""
    cpu0 = time.process_time()
    p, level, P = unit["p"], unit["level"], ctx["partitions"]
    t = layout.read_routed(_adjacency(ctx, level), p, ADJ_SCHEMA)
    k, o = t.column("k").to_numpy(), t.column("o").to_numpy()
    del t
    s = np.argsort(k, kind="stable")
    k, o = k[s], o[s]
    start = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1]))) if len(k) else np.zeros(0, np.int64)
    nodes = k[start]
    best = np.minimum(np.minimum.reduceat(priority(o, level), start), priority(nodes, level)) if len(k) else np.zeros(0, np.uint64)
    into = node_of(best, level)
    state = _states(ctx, level, p, nodes)
    sn, low = state.column("node").to_numpy(), state.column("low").to_numpy()
    has = layout.isin_sorted(sn, nodes) if level else np.ones(len(sn), bool)
    _routed(pa.table([pa.array(sn[~has]), pa.array(low[~has])], schema=LABEL_SCHEMA),
                        np.full(int((~has).sum()), p), P, _path(ctx, "fin", level, p))
    low_of = low[np.searchsorted(sn, nodes)] if len(nodes) else np.zeros(0, np.int64)
    _routed(pa.table([pa.array(into), pa.array(nodes), pa.array(low_of)], schema=MAP_SCHEMA),
                        layout.node_partition(into, P), P, _path(ctx, "map", level, p))
    msg_into = np.repeat(into, np.diff(np.append(start, len(k))))
    _routed(pa.table([pa.array(o), pa.array(msg_into)], schema=MSG_SCHEMA), layout.node_partition(o, P), P,
                        _path(ctx, "msg", level, p))
    _routed(pa.table([pa.array(nodes), pa.array(into)], schema=MSG_SCHEMA), np.zeros(len(nodes), np.int64), 1,
                        _path(ctx, "own", level, p))
    return {"rows_in": int(len(k)), "rows_out": int(len(k) + 2 * len(nodes)), "nodes": int(len(nodes)),
            "cpu_s": time.process_time() - cpu0}


def relabel_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Partition ``p`` after ``contract_unit``: the contracted edges of its nodes (each message
    ``o`` <- ``into`` becomes ``into(o)``-``into``; the message of the other direction gives the
    other row), and the merged nodes' smallest original ids."""
    cpu0 = time.process_time()
    p, level, P = unit["p"], unit["level"], ctx["partitions"]
    own = layout.read_routed([_path(ctx, "own", level, p)], 0, MSG_SCHEMA)
    msg = layout.read_routed(_paths(ctx, "msg", level), p, MSG_SCHEMA)
    b = msg.column("into").to_numpy()
    a = _lookup(own.column("node").to_numpy(), own.column("into").to_numpy(), msg.column("node").to_numpy())
    keep = a != b
    k, o = unique_edges(a[keep], b[keep])
    _routed(pa.table([pa.array(k), pa.array(o)], schema=ADJ_SCHEMA), layout.node_partition(k, P), P,
                        _path(ctx, "adj", level + 1, p))
    m = layout.read_routed(_paths(ctx, "map", level), p, MAP_SCHEMA)
    into, low = m.column("into").to_numpy(), m.column("low").to_numpy()
    s = np.argsort(into, kind="stable")
    into, low = into[s], low[s]
    start = np.flatnonzero(np.concatenate(([True], into[1:] != into[:-1]))) if len(into) else np.zeros(0, np.int64)
    state = pa.table([pa.array(into[start]), pa.array(np.minimum.reduceat(low, start) if len(low) else low)], schema=STATE_SCHEMA)
    _routed(state, np.zeros(state.num_rows, np.int64), 1, _path(ctx, "state", level + 1, p))
    return {"rows_out": int(len(k)), "cpu_s": time.process_time() - cpu0}


def in_memory_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """The rows left at level ``level`` (at most ``component_rows_in_memory``) in one task: a
    union-find; each node's label is its component's smallest original id."""
    cpu0 = time.process_time()
    level, P = unit["level"], ctx["partitions"]
    k, o = [], []
    for p in range(P):
        t = layout.read_routed(_adjacency(ctx, level), p, ADJ_SCHEMA)
        k.append(t.column("k").to_numpy())
        o.append(t.column("o").to_numpy())
    k, o = np.concatenate(k), np.concatenate(o)
    nodes, comp = connected_components(k, o)
    if level == 0:
        low = nodes
        rest_n = rest_l = np.zeros(0, np.int64)
    else:
        st = pa.concat_tables([_states(ctx, level, p) for p in range(P)])
        sn, sl = st.column("node").to_numpy(), st.column("low").to_numpy()
        so = np.argsort(sn)
        sn, sl = sn[so], sl[so]
        low = sl[np.searchsorted(sn, nodes)] if len(nodes) else np.zeros(0, np.int64)
        alone = ~layout.isin_sorted(sn, nodes)
        rest_n, rest_l = sn[alone], sl[alone]
    best = np.full(comp.max() + 1 if len(comp) else 0, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, comp, low)
    n = np.concatenate([nodes, rest_n])
    lab = np.concatenate([best[comp], rest_l])
    _routed(pa.table([pa.array(n), pa.array(lab)], schema=LABEL_SCHEMA), layout.node_partition(n, P), P,
                        _path(ctx, "mem", level, 0))
    return {"rows_in": int(len(k)), "nodes": int(len(n)), "cpu_s": time.process_time() - cpu0}


def _labels(ctx: dict, level: int, top: int) -> list[str]:
    """The files holding the labels of level ``level``'s nodes (``top``: the in-memory level)."""
    if level == top:
        return [_path(ctx, "mem", level, 0)]
    return _paths(ctx, "exp", level) + (_paths(ctx, "fin", level) if level else [])


def expand_labels_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Partition ``p``, walking back round ``level``: every node merged into a node of ``p``
    takes that node's label."""
    cpu0 = time.process_time()
    p, level, P = unit["p"], unit["level"], ctx["partitions"]
    lab = layout.read_routed(_labels(ctx, level + 1, unit["top"]), p, LABEL_SCHEMA)
    ln, ll = lab.column("node").to_numpy(), lab.column("label").to_numpy()
    o = np.argsort(ln)
    ln, ll = ln[o], ll[o]
    m = layout.read_routed(_paths(ctx, "map", level), p, MAP_SCHEMA)
    node = m.column("node").to_numpy()
    label = _lookup(ln, ll, m.column("into").to_numpy())
    _routed(pa.table([pa.array(node), pa.array(label)], schema=LABEL_SCHEMA), layout.node_partition(node, P), P,
                        _path(ctx, "exp", level, p))
    return {"rows_out": int(len(node)), "cpu_s": time.process_time() - cpu0}


def finish_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Partition ``p`` of the original nodes with their labels: this run's nodes go to their
    group (the member rows' tasks), the contracted old components to their expansion (by label)."""
    cpu0 = time.process_time()
    P, gen = ctx["partitions"], ctx["gen"]
    t = layout.read_routed(_labels(ctx, 0, unit["top"]), unit["p"], LABEL_SCHEMA)
    t = t.take(pa.array(np.argsort(t.column("node").to_numpy(), kind="stable")))
    nodes, labels = t.column("node").to_numpy(), t.column("label").to_numpy()
    new = layout.gen_of(nodes) == gen
    layout.write_routed(pa.table([pa.array(nodes[new]), pa.array(labels[new])], schema=LABEL_SCHEMA),
                        layout.group_of(nodes[new], P), P, unit["new_out"])
    layout.write_routed(pa.table([pa.array(nodes[~new]), pa.array(labels[~new])], schema=LABEL_SCHEMA),
                        layout.node_partition(nodes[~new], P), P, unit["old_out"])
    return {"nodes": int(len(nodes)), "components": int((nodes == labels).sum()), "cpu_s": time.process_time() - cpu0}


def label_components(run: Callable[..., list], ctx: dict[str, Any], rows: int) -> dict[str, Any]:
    """Components of the graph in ``ctx["adjacency"]`` (``rows`` rows in all): contraction rounds
    while the rows exceed ``cfg.component_rows_in_memory``, the rest in one task, the rounds walked
    back, and the original nodes' labels routed on (``finish_unit``'s ``new_out``/``old_out`` per
    partition, in ``ctx["finish"]``). ``run(fn, units, desc)`` runs a phase (see
    ``decide.decide_rounds``). Returns the figures: rounds, tasks' steps, rows written."""
    P, budget = ctx["partitions"], ctx["cfg"].component_rows_in_memory
    parts = lambda name, level, out_level=None, **kw: [  # noqa: E731
        dict(name=f"l{level:02d}-{name}-{p:04d}", p=p, level=level, out=_path(ctx, name, level if out_level is None else out_level, p), **kw)
        for p in range(P)]
    level, written, steps = 0, 0, 0
    while rows > budget:
        written += sum(r["rows_out"] for r in run(contract_unit, parts("map", level), f"components round {level + 1}: contract"))
        res = run(relabel_unit, parts("adj", level, level + 1), f"components round {level + 1}: relabel")
        rows = sum(r["rows_out"] for r in res)
        written += rows
        level, steps = level + 1, steps + 2
    run(in_memory_unit, [dict(name=f"l{level:02d}-mem", level=level, out=_path(ctx, "mem", level, 0))], "components: the rest in memory")
    for lv in reversed(range(level)):
        written += sum(r["rows_out"] for r in run(expand_labels_unit, [dict(u, top=level) for u in parts("exp", lv)],
                                                  f"components round {lv + 1}: labels back"))
    run(finish_unit, [dict(u, top=level, out=f["new_out"], new_out=f["new_out"], old_out=f["old_out"])
                            for u, f in zip(parts("labels", 0), ctx["finish"])], "components: labels")
    return {"component_rounds": level, "component_steps": steps + level + 2, "component_rows_written": written}


def contract_index_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
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
    return {"index_nodes_touched": int(len(wanted)), "adjacency_rows": adj.num_rows, "cpu_s": time.process_time() - cpu0}


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
