"""Step 5: which member of each component is kept, and which are removed for it - in rounds, by
tasks that each hold a group of node files, never a whole component.

The rule. Members of a component are ranked by the keep rule (``prio``: newest or oldest dump
first, then the smaller id, then the smaller node). In round r every member still *open* is
compared with its component's *pivots* of the round, best-ranked first, and removed for the first
it matches; pivots are kept. Round 1 has one pivot per component, its best member: the chain
check against the component's kept document. The members left then are often a chain that one
pivot per round would take thousands of rounds to cross, so from round 2 on the pivots are the
component's best open member and its *local heads*: members that are the best open member of
each of their LSH buckets (the candidate step's band keys and exact key, among the component's
open members) and not a sure match of the component's best (estimate below the band's top; a
sure match is removed for it instead). A member is compared with its component's best and with
the pivots among its buckets' best members. Two local heads never share a bucket, so near-copies
(J >= 0.85 share a bucket with probability >= 0.99) rarely both survive; every local head is
decided in its round, so a chain is crossed in a handful of rounds. After ``max_rounds`` the
members still open are kept and counted (``left_open``): a removal is never made without its check.

A match (:class:`Check`): the MinHash estimate of the pair when it is clearly above or below
``min_similarity``; inside the band of ``uncertain_band`` standard errors of a ``num_perm``-value
estimate around it, the true Jaccard of the two shingle sets decides (with ``verify``, always).
The band's top (0.739 for 0.6 and 112 values) is 5 standard errors above 0.5: a pair whose true
Jaccard is below 0.5 passes the estimate with probability about 2e-7.

Distributed (one task per group of node files, :func:`layout.group_of`, and one per reduce
partition): a round is

1. ``heads`` (per reduce partition): each group sent the best open member it holds of each
   component (with the signature) and, from round 2, of each (component, bucket); the best of
   each goes back to the groups that sent one;
2. ``pivots`` (per group, round 2 on): local heads and their estimate with the component's best;
   each pivot's row goes to its buckets' partitions;
3. ``pivot routes`` (per reduce partition): each bucket's pivot to the groups that hold members of it;
4. ``compare`` (per group): every open member against its candidates, best first, by estimate;
5. ``sets`` and ``resolve`` (only when a pair fell in the band): the shingle sets of the pivots
   concerned, from their own groups, then the true Jaccards and the rest of the decisions.

A reduce partition holds at most one row per (component or bucket, group), so no task's memory
grows with the largest component; each round reads and writes only the members still open.
:func:`decide_reference` is the same rule in one process (the tests hold the tasks to it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup import keep as kp
from curation.dedup import layout
from curation.dedup import minhash as mh
from curation.dedup.components import EXPANDED_SCHEMA, LABEL_SCHEMA
from curation.dedup.signatures import iter_shingle_sets, shingle_sets_of, signature_matrix
from storage import io

PAYLOAD = [("node", pa.int64()), ("prio", pa.int64()), ("id", pa.string()), ("dump", pa.string()), ("url", pa.string()),
           ("exact_hash", pa.uint64()), ("signature", pa.binary())]
# An open member: its component, its state in the index before this run (-1 new, 0 kept, 1/2
# removed), its keep-rule priority and what the checks need; ``first`` is its component's best
# member (round 1's pivot), -1 before round 1.
MEMBER_SCHEMA = pa.schema([("label", pa.int64()), ("prev", pa.int8()), *PAYLOAD, ("first", pa.int64())])
HEAD_SCHEMA = pa.schema([("label", pa.int64()), *PAYLOAD])
BUCKET_SCHEMA = pa.schema([("label", pa.int64()), ("bkey", pa.uint64()), ("node", pa.int64()), ("prio", pa.int64()), ("id", pa.string())])
BEST_SCHEMA = pa.schema([("label", pa.int64()), ("bkey", pa.uint64()), ("node", pa.int64())])
SRC_SCHEMA = pa.schema([("label", pa.int64()), ("bkey", pa.uint64()), ("src", pa.int32())])
PIVOT_SCHEMA = pa.schema([("label", pa.int64()), ("bkey", pa.uint64()), *PAYLOAD])
# A decided member: its row (no signature: it is not compared again) and the kept document it
# was removed for (itself when kept).
DECIDED_SCHEMA = pa.schema([*(f for f in MEMBER_SCHEMA if f.name != "signature"), ("center", pa.int64()), ("center_id", pa.string()), ("center_dump", pa.string()),
                            ("center_url", pa.string()), ("center_exact", pa.uint64()), ("similarity", pa.float32()),
                            ("checked", pa.bool_()), ("round", pa.int16())])
# A member whose candidates include a pair in the band: its candidates, best first, up to its
# first sure match (status 1 match, 2 undecided, 0 no match).
PENDING_SCHEMA = pa.schema([("node", pa.int64()), ("k", pa.int32()), ("status", pa.int8()), ("estimate", pa.float64()),
                            *[(f"c_{n}", t) for n, t in PAYLOAD if n != "signature"]])
REQUEST_SCHEMA = pa.schema([("node", pa.int64()), ("dest", pa.int32())])
SET_SCHEMA = pa.schema([("node", pa.int64()), ("shingles", pa.list_(pa.uint32()))])
ORDER = [("prio", "ascending"), ("id", "ascending"), ("node", "ascending")]


# ---- the check ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """How a pair is judged: ``threshold`` (min_similarity); an estimate >= ``hi`` matches, one
    below ``lo`` does not, one between is decided by the true Jaccard (every pair with ``verify``).
    ``pivot_below``: a local head is a pivot unless its estimate with its component's best open
    member reaches this, the band's top (even with ``verify``): a sure match is removed for it."""

    threshold: float
    lo: float
    hi: float
    verify: bool
    pivot_below: float


def check_for(cfg) -> Check:
    t, k, w = cfg.min_similarity, cfg.minhash.num_perm, cfg.uncertain_band
    half = w * math.sqrt(t * (1 - t) / k)
    lo, hi = max(0.0, t - half), min(1.0, t + half)
    if cfg.verify:
        return Check(t, -math.inf, math.inf, True, hi)
    return Check(t, lo, hi, False, hi)


def estimate(a: np.ndarray, b: np.ndarray, ai: np.ndarray | None = None, bi: np.ndarray | None = None,
             chunk: int = 1 << 15) -> np.ndarray:
    """MinHash estimates (float64) of pairs of rows of two (n x num_perm) signature matrices:
    rows ``ai`` of ``a`` against rows ``bi`` of ``b`` (default: row for row), a chunk at a time."""
    ai = np.arange(len(a)) if ai is None else ai
    bi = np.arange(len(b)) if bi is None else bi
    out = np.empty(len(ai), np.float64)
    for lo in range(0, len(ai), chunk):
        out[lo : lo + chunk] = np.count_nonzero(a[ai[lo : lo + chunk]] == b[bi[lo : lo + chunk]], axis=1) / a.shape[1]
    return out


def settle(est: np.ndarray, check: Check) -> np.ndarray:
    """Status of each pair from its estimate: 1 match, 0 no match, 2 undecided (true Jaccard)."""
    est = np.asarray(est, dtype=np.float64)
    status = np.where(est >= check.hi, 1, np.where(est >= check.lo, 2, 0)).astype(np.int8)
    return status


def bucket_keys(sigs: np.ndarray, exact: np.ndarray, bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(member, key) pairs of each member's buckets, as the candidate step makes them: its
    ``bands`` LSH keys when it has shingles (a signature of all ``MAX_HASH`` has none) and its
    exact key."""
    n = len(sigs)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    has = np.flatnonzero(~(sigs == mh.MAX_HASH).all(axis=1))
    band = mh.lsh_band_keys(sigs[has], bands, rows)
    row = np.concatenate([np.repeat(has, bands), np.arange(n)])
    key = np.concatenate([band.ravel(), mh.exact_band_key(exact)])
    return row.astype(np.int64), key


# ---- the rule in one process --------------------------------------------------------------------


def decide_reference(labels: np.ndarray, prio: np.ndarray, ids: list[str], nodes: np.ndarray, sigs: np.ndarray,
                     exact: np.ndarray, check: Check, bands: int, rows: int, max_rounds: int,
                     sets: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The rule of this module over members held in memory (the tests' reference): for each
    member (in the order given) the index of the member it is removed for (itself when kept), the
    similarity the check used, whether the true Jaccard decided, the round, and whether it was
    left open (kept after ``max_rounds``)."""
    n = len(labels)
    order = sorted(range(n), key=lambda i: (int(labels[i]), int(prio[i]), ids[i], int(nodes[i])))
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    krow, kval = bucket_keys(sigs, exact, bands, rows)
    o = np.argsort(krow, kind="stable")
    keys = np.split(kval[o], np.cumsum(np.bincount(krow, minlength=n))[:-1]) if n else []
    center, sim = np.arange(n), np.ones(n)
    checked, rnd, is_open = np.zeros(n, bool), np.zeros(n, np.int16), np.ones(n, bool)
    est = lambda i, j: float(np.count_nonzero(sigs[i] == sigs[j]) / sigs.shape[1])  # noqa: E731

    def match(i: int, j: int) -> tuple[bool, float, bool]:
        e = est(i, j)
        if check.verify or check.lo <= e < check.hi:
            jac = mh.jaccard(sets[i], sets[j])
            return jac >= check.threshold, jac, True
        return e >= check.hi, e, False

    for r in range(1, max_rounds + 1):
        live = [i for i in order if is_open[i]]
        if not live:
            break
        head: dict[int, int] = {}
        for i in live:
            head.setdefault(int(labels[i]), i)
        pivots = set(head.values())
        best: dict[tuple[int, int], int] = {}
        if r >= 2:
            for i in live:
                for k in keys[i].tolist():
                    best.setdefault((int(labels[i]), k), i)
            for i in live:
                h = head[int(labels[i])]
                if i != h and all(best[(int(labels[i]), k)] == i for k in keys[i].tolist()) and est(i, h) < check.pivot_below:
                    pivots.add(i)
        decided = {}
        for i in live:
            if i in pivots:
                decided[i] = (i, 1.0, False)
                continue
            lab = int(labels[i])
            cands = {head[lab]} | ({best[(lab, k)] for k in keys[i].tolist() if best[(lab, k)] in pivots} if r >= 2 else set())
            for j in sorted(cands, key=lambda j: pos[j]):
                ok, s, c = match(i, j)
                if ok:
                    decided[i] = (j, s, c)
                    break
        for i, (j, s, c) in decided.items():
            center[i], sim[i], checked[i], rnd[i], is_open[i] = j, s, c, r, False
    left = is_open.copy()
    rnd[left] = max_rounds
    return {"center": center, "similarity": sim, "checked": checked, "round": rnd, "left_open": left}


# ---- helpers of the tasks -----------------------------------------------------------------------


def best_per_key(t: pa.Table, keys: list[str]) -> pa.Table:
    """The best row (smallest prio, id, node) of each distinct ``keys``, one row per key."""
    if t.num_rows == 0:
        return t
    t = t.take(pc.sort_indices(t, sort_keys=[(k, "ascending") for k in keys] + ORDER))
    start = np.zeros(t.num_rows, dtype=bool)
    start[0] = True
    for k in keys:
        c = t.column(k).to_numpy()
        start[1:] |= c[1:] != c[:-1]
    return t.filter(pa.array(start))


def _path(ctx: dict, kind: str, r: int, i: int) -> str:
    return io.join(ctx["work"], "decide", f"r{r:03d}", f"{kind}-{i:04d}.arrow")


def _paths(ctx: dict, kind: str, r: int) -> list[str]:
    return [_path(ctx, kind, r, i) for i in range(ctx["partitions"])]


def _write(table: pa.Table, path: str) -> None:
    """A local hand-off file (one batch, read back whole by the task that wrote it)."""
    layout.write_routed(table, np.zeros(table.num_rows, np.int64), 1, path)


def _read(path: str, schema: pa.Schema) -> pa.Table:
    return layout.read_routed([path], 0, schema) if io.exists(path) else schema.empty_table()


def _sigs(t: pa.Table, ctx: dict) -> np.ndarray:
    return signature_matrix(t.column("signature"), ctx["cfg"].minhash.num_perm)


def _member_keys(open_: pa.Table, ctx: dict) -> tuple[np.ndarray, np.ndarray]:
    """(member row, bucket key) pairs of the open members."""
    cfg = ctx["cfg"]
    return bucket_keys(_sigs(open_, ctx), open_.column("exact_hash").to_numpy(), cfg.minhash.bands, cfg.minhash.rows)


def _emit(open_: pa.Table, r: int, g: int, ctx: dict) -> None:
    """Round ``r``'s candidates of group ``g``: its best open member of each component (with the
    payload) and, from round 2, of each (component, bucket), routed to their reduce partitions."""
    P = ctx["partitions"]
    heads = best_per_key(open_.select(HEAD_SCHEMA.names), ["label"])
    layout.write_routed(heads.append_column("src", pa.array(np.full(heads.num_rows, g, np.int32))),
                        layout.node_partition(heads.column("label").to_numpy(), P), P, _path(ctx, "lcand", r, g))
    if r >= 2:
        row, key = _member_keys(open_, ctx)
        at = pa.array(row)
        b = pa.table([pc.take(open_.column("label"), at), pa.array(key, pa.uint64()), pc.take(open_.column("node"), at),
                      pc.take(open_.column("prio"), at), pc.take(open_.column("id"), at)], schema=BUCKET_SCHEMA)
        b = best_per_key(b, ["label", "bkey"])
        b = b.append_column("src", pa.array(np.full(b.num_rows, g, np.int32)))
        layout.write_routed(b, layout.key_partition(b.column("label").to_numpy(), b.column("bkey").to_numpy(), P), P,
                            _path(ctx, "bcand", r, g))


def _next_round(open_: pa.Table, r: int, g: int, ctx: dict) -> int:
    """Members still open after round ``r``: kept for round r+1 (and its candidates sent), or,
    after the last round, left open (in node order)."""
    open_ = open_.take(pc.sort_indices(open_, sort_keys=[("node", "ascending")]))
    _write(open_, _path(ctx, "open", r + 1, g))
    if r < ctx["cfg"].max_rounds:
        _emit(open_, r + 1, g, ctx)
    return open_.num_rows


def _decided(members: pa.Table, center: pa.Table, sim: np.ndarray, checked: np.ndarray, r: int) -> pa.Table:
    """Decided rows: ``members`` with the payload of each one's kept document (rows of ``center``)."""
    n = members.num_rows
    return pa.table([*members.drop(["signature"]).columns, center.column("node"), center.column("id"), center.column("dump"), center.column("url"),
                     center.column("exact_hash"), pa.array(np.asarray(sim, np.float32)), pa.array(np.asarray(checked, bool)),
                     pa.array(np.full(n, r, np.int16))], schema=DECIDED_SCHEMA)


# ---- the tasks ----------------------------------------------------------------------------------


def gather_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Group ``g`` of node files: its members (this run's labelled documents and the members of
    the index's components this run touched), read from the node tables - the open members of
    round 1 - and their round-1 candidates."""
    cpu0 = time.process_time()
    g, index, ranks, keep = unit["g"], ctx["index"], ctx["ranks"], ctx["cfg"].keep
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
        gen, shard = layout.file_of(fk)
        nt = io.read_parquet(layout.shard_file(index, "nodes", gen, shard), columns=["id", "dump", "url", "exact_hash", "signature"])
        nt = nt.take(pa.array(layout.row_of(node[sel])))
        dump = pc.fill_null(nt.column("dump"), "")
        prio = kp.priority(np.array([ranks[d] for d in dump.to_pylist()], dtype=np.int64), keep)
        parts.append(pa.table([pa.array(label[sel]), pa.array(prev[sel]), pa.array(node[sel]), pa.array(prio), nt.column("id"), dump, nt.column("url"),
                               nt.column("exact_hash"), nt.column("signature"), pa.array(np.full(int(sel.sum()), -1, np.int64))],
                              schema=MEMBER_SCHEMA))
    members = pa.concat_tables(parts) if parts else MEMBER_SCHEMA.empty_table()
    _write(members, _path(ctx, "open", 1, g))
    _emit(members, 1, g, ctx)
    return {"members": members.num_rows, "cpu_s": time.process_time() - cpu0}


def heads_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Reduce partition ``q`` of round ``r``: the best open member of each component (and of each
    bucket from round 2), back to every group that holds an open member of it."""
    cpu0 = time.process_time()
    q, r, P = unit["q"], unit["r"], ctx["partitions"]
    c = layout.read_routed(_paths(ctx, "lcand", r), q, HEAD_SCHEMA.append(pa.field("src", pa.int32())))
    heads = best_per_key(c.drop(["src"]), ["label"])
    sent = pa.table({"label": c.column("label"), "src": c.column("src")})
    out = sent.join(heads, "label")
    layout.write_routed(out.select(HEAD_SCHEMA.names), out.column("src").to_numpy(), P, _path(ctx, "heads", r, q))
    rows = c.num_rows
    if r >= 2:
        b = layout.read_routed(_paths(ctx, "bcand", r), q, BUCKET_SCHEMA.append(pa.field("src", pa.int32())))
        best = best_per_key(b.drop(["src"]), ["label", "bkey"]).select(BEST_SCHEMA.names)
        src = b.select(SRC_SCHEMA.names)
        _write(src, _path(ctx, "bsrc", r, q))
        out = src.join(best, ["label", "bkey"])
        layout.write_routed(out.select(BEST_SCHEMA.names), out.column("src").to_numpy(), P, _path(ctx, "bests", r, q))
        rows += b.num_rows
    return {"rows": rows, "cpu_s": time.process_time() - cpu0}


def _heads_of(open_: pa.Table, r: int, g: int, ctx: dict) -> tuple[pa.Table, np.ndarray]:
    """The best open member of each component this group holds, and each open member's row in it."""
    heads = layout.read_routed(_paths(ctx, "heads", r), g, HEAD_SCHEMA)
    return heads, pc.index_in(open_.column("label"), heads.column("label")).to_numpy()


def pivots_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Group ``g`` from round 2: its local heads (best open member of each of their buckets), the
    pivots among them (estimate with their component's best below the band), sent to their
    buckets' partitions."""
    cpu0 = time.process_time()
    g, r, P = unit["g"], unit["r"], ctx["partitions"]
    open_ = _read(_path(ctx, "open", r, g), MEMBER_SCHEMA)
    heads, at = _heads_of(open_, r, g, ctx)
    bests = layout.read_routed(_paths(ctx, "bests", r), g, BEST_SCHEMA)
    row, key = _member_keys(open_, ctx)
    lab = open_.column("label").to_numpy()[row]
    mine = pa.table({"label": lab, "bkey": pa.array(key, pa.uint64()), "row": row})
    j = mine.join(bests, ["label", "bkey"])
    node = open_.column("node").to_numpy()
    not_best = np.zeros(open_.num_rows, dtype=bool)
    jr = j.column("row").to_numpy()
    not_best[jr[j.column("node").to_numpy() != node[jr]]] = True
    check = ctx["check"]
    est = estimate(_sigs(open_, ctx), _sigs(heads, ctx), bi=at)
    pivot = ~not_best & (node != heads.column("node").to_numpy()[at]) & (est < check.pivot_below)
    sel = np.flatnonzero(pivot[row])
    p_rows = pa.array(row[sel])
    t = pa.table([pa.array(lab[sel]), pa.array(key[sel], pa.uint64()),
                  *[pc.take(open_.column(n), p_rows) for n, _ in PAYLOAD]], schema=PIVOT_SCHEMA)
    layout.write_routed(t, layout.key_partition(t.column("label").to_numpy(), t.column("bkey").to_numpy(), P), P,
                        _path(ctx, "pivots", r, g))
    _write(pa.table({"node": pa.array(node[pivot])}), _path(ctx, "pflags", r, g))
    return {"pivots": int(pivot.sum()), "cpu_s": time.process_time() - cpu0}


def pivot_routes_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Reduce partition ``q`` from round 2: each bucket's pivot to the groups holding its members."""
    cpu0 = time.process_time()
    q, r, P = unit["q"], unit["r"], ctx["partitions"]
    piv = layout.read_routed(_paths(ctx, "pivots", r), q, PIVOT_SCHEMA)
    src = _read(_path(ctx, "bsrc", r, q), SRC_SCHEMA)
    out = src.join(piv, ["label", "bkey"], join_type="inner")
    layout.write_routed(out.select(PIVOT_SCHEMA.names), out.column("src").to_numpy(), P, _path(ctx, "pivotpay", r, q))
    return {"rows": out.num_rows, "cpu_s": time.process_time() - cpu0}


def _candidates(open_: pa.Table, heads: pa.Table, at: np.ndarray, r: int, g: int, ctx: dict) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    """Each open member's candidates: its component's best (``heads``, row ``at``) and, from
    round 2, the pivots among its buckets' bests. Returns (member row, candidate row) pairs, each
    member's best candidate first, and the candidates (payload, one row per node)."""
    cols = [c for c, _ in PAYLOAD]
    rows, nodes, tables = [np.arange(open_.num_rows)], [heads.column("node").to_numpy()[at]], [heads.select(cols)]
    if r >= 2:
        pay = layout.read_routed(_paths(ctx, "pivotpay", r), g, PIVOT_SCHEMA)
        row, key = _member_keys(open_, ctx)
        mine = pa.table({"label": open_.column("label").to_numpy()[row], "bkey": pa.array(key, pa.uint64()), "row": row})
        j = mine.join(pay.select(["label", "bkey", "node"]), ["label", "bkey"], join_type="inner")
        rows.append(j.column("row").to_numpy())
        nodes.append(j.column("node").to_numpy())
        tables.append(pay.select(cols))
    cands = pa.concat_tables(tables)
    cn = cands.column("node").to_numpy()
    _, first = np.unique(cn, return_index=True)
    cands = cands.take(pa.array(first))  # one row per candidate, by node
    row, node = np.concatenate(rows), np.concatenate(nodes)
    ci = np.searchsorted(cands.column("node").to_numpy(), node)
    t = pa.table({"row": row, "prio": pc.take(cands.column("prio"), pa.array(ci)), "id": pc.take(cands.column("id"), pa.array(ci)),
                  "node": node, "ci": ci})
    t = t.take(pc.sort_indices(t, sort_keys=[("row", "ascending")] + ORDER))
    rr, nn = t.column("row").to_numpy(), t.column("node").to_numpy()
    keep = np.ones(t.num_rows, dtype=bool)
    keep[1:] = (rr[1:] != rr[:-1]) | (nn[1:] != nn[:-1])
    return rr[keep], t.column("ci").to_numpy()[keep], cands


def _first_match(row: np.ndarray, status: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs sorted by member then candidate rank: each member's first matching pair (-1 none)
    and whether an undecided pair comes before it (then the member waits for true Jaccards)."""
    idx = np.arange(len(row))
    big = len(row)
    first_match = np.full(n, big)
    np.minimum.at(first_match, row[status == 1], idx[status == 1])
    first_undecided = np.full(n, big)
    np.minimum.at(first_undecided, row[status == 2], idx[status == 2])
    pending = first_undecided < first_match
    return np.where(first_match < big, first_match, -1), pending


def compare_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Group ``g``, round ``r``: pivots are kept; every other open member is compared with its
    candidates, best first, by estimate. Members whose first sure match is preceded by a pair in
    the band wait for :func:`resolve_unit`; the pivots those pairs need are requested."""
    cpu0 = time.process_time()
    g, r, P, check = unit["g"], unit["r"], ctx["partitions"], ctx["check"]
    open_ = _read(_path(ctx, "open", r, g), MEMBER_SCHEMA)
    heads, at = _heads_of(open_, r, g, ctx)
    node = open_.column("node").to_numpy()
    head_node = heads.column("node").to_numpy()[at]
    if r == 1:
        open_ = open_.set_column(open_.column_names.index("first"), "first", pa.array(head_node))
    is_pivot = node == head_node
    if r >= 2:
        is_pivot |= np.isin(node, _read(_path(ctx, "pflags", r, g), pa.schema([("node", pa.int64())])).column("node").to_numpy())
    row, ci, cands = _candidates(open_, heads, at, r, g, ctx)
    keep_pair = ~is_pivot[row]
    row, ci = row[keep_pair], ci[keep_pair]
    est = estimate(_sigs(open_, ctx), _sigs(cands, ctx), row, ci)
    cand = cands.select([c for c, _ in PAYLOAD if c != "signature"])
    status = settle(est, check)
    first, pending = _first_match(row, status, open_.num_rows)
    done = is_pivot | ((first >= 0) & ~pending)
    decided = []
    kept = np.flatnonzero(is_pivot)
    if len(kept):
        m = open_.take(pa.array(kept))
        decided.append(_decided(m, m.select([c for c, _ in PAYLOAD]), np.ones(len(kept)), np.zeros(len(kept), bool), r))
    hit = np.flatnonzero((first >= 0) & ~pending & ~is_pivot)
    if len(hit):
        pairs = first[hit]
        decided.append(_decided(open_.take(pa.array(hit)), cand.take(pa.array(ci[pairs])), est[pairs], np.zeros(len(hit), bool), r))
    _write(pa.concat_tables(decided) if decided else DECIDED_SCHEMA.empty_table(), _path(ctx, "decided", r, g))
    waiting = np.flatnonzero(pending)
    result = {"decided": int(done.sum()), "pending": int(len(waiting)), "kept": int(is_pivot.sum())}
    rest = open_.filter(pa.array(~done & ~pending))
    if len(waiting):
        # The pairs of each waiting member up to its first sure match (or all, if none).
        cut = np.where(first >= 0, first, len(row))[row]
        take = pending[row] & (np.arange(len(row)) <= cut)
        pidx = np.flatnonzero(take)
        ranks = np.arange(len(row)) - np.searchsorted(row, row)
        pt = pa.table([pa.array(node[row[pidx]]), pa.array(ranks[pidx].astype(np.int32)), pa.array(status[pidx]),
                       pa.array(est[pidx]), *[pc.take(cand.column(c), pa.array(ci[pidx])) for c, _ in PAYLOAD if c != "signature"]],
                      schema=PENDING_SCHEMA)
        _write(pt, _path(ctx, "pending", r, g))
        _write(open_.take(pa.array(waiting)), _path(ctx, "waiting", r, g))
        _write(rest, _path(ctx, "rest", r, g))
        und = pt.filter(pc.equal(pt.column("status"), 2))
        req = np.unique(und.column("c_node").to_numpy())
        layout.write_routed(pa.table({"node": req, "dest": np.full(len(req), g, np.int32)}, schema=REQUEST_SCHEMA),
                            layout.group_of(req, P), P, _path(ctx, "requests", r, g))
        result["checks"] = und.num_rows
    else:
        layout.write_routed(REQUEST_SCHEMA.empty_table(), np.zeros(0, np.int64), P, _path(ctx, "requests", r, g))
        result["open"] = _next_round(rest, r, g, ctx)
        result["checks"] = 0
    result["cpu_s"] = time.process_time() - cpu0
    return result


def sets_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Group ``g``, round ``r``: the shingle sets of its pivots that pairs in the band need, to the
    groups that asked."""
    cpu0 = time.process_time()
    g, r, P = unit["g"], unit["r"], ctx["partitions"]
    req = layout.read_routed(_paths(ctx, "requests", r), g, REQUEST_SCHEMA)
    nodes, inv = np.unique(req.column("node").to_numpy(), return_inverse=True)
    sets = shingle_sets_of(ctx["index"], nodes, ctx["cfg"], ctx.get("shingle_cache")) if len(nodes) else []
    col = pa.array(sets, pa.list_(pa.uint32())) if sets else pa.array([], pa.list_(pa.uint32()))
    t = pa.table([pa.array(nodes[inv]), pc.take(col, pa.array(inv))], schema=SET_SCHEMA) if len(inv) else SET_SCHEMA.empty_table()
    layout.write_routed(t, req.column("dest").to_numpy(), P, _path(ctx, "sets", r, g))
    return {"sets": int(len(nodes)), "cpu_s": time.process_time() - cpu0}


def resolve_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Group ``g``, round ``r``: the true Jaccards of its waiting members' pairs in the band, then
    their decisions (the first match, best candidate first), and round r+1's open members."""
    cpu0 = time.process_time()
    g, r, check, cfg = unit["g"], unit["r"], ctx["check"], ctx["cfg"]
    pend = _read(_path(ctx, "pending", r, g), PENDING_SCHEMA)
    waiting = _read(_path(ctx, "waiting", r, g), MEMBER_SCHEMA)
    rest = _read(_path(ctx, "rest", r, g), MEMBER_SCHEMA)
    got = layout.read_routed(_paths(ctx, "sets", r), g, SET_SCHEMA)
    gn, gi = np.unique(got.column("node").to_numpy(), return_index=True)
    wn = waiting.column("node").to_numpy()
    theirs = got.column("shingles")
    pn, cn = pend.column("node").to_numpy(), pend.column("c_node").to_numpy()
    status, sim = pend.column("status").to_numpy().copy(), pend.column("estimate").to_numpy().copy()
    checked = status == 2
    w_at = np.searchsorted(wn, pn)
    other: dict[int, np.ndarray] = {}
    for at, sets in iter_shingle_sets(ctx["index"], wn, cfg, ctx.get("shingle_cache")):  # a batch of waiting members at a time
        mine = dict(zip(at.tolist(), sets))
        todo = np.flatnonzero(checked & np.isin(w_at, at))
        for c in np.unique(cn[todo]).tolist():  # each pivot's set against all its members here at once
            if c not in other:
                other[c] = np.asarray(theirs[int(gi[np.searchsorted(gn, c)])].values, dtype=np.uint32)
            pairs = todo[cn[todo] == c]
            sim[pairs] = mh.jaccard_many([mine[w] for w in w_at[pairs].tolist()], other[c])
    status[checked] = np.where(sim[checked] >= check.threshold, 1, 0)
    order = np.lexsort((pend.column("k").to_numpy(), w_at))
    first = np.full(len(wn), -1)
    for i in order.tolist():
        if status[i] == 1 and first[w_at[i]] < 0:
            first[w_at[i]] = i
    hit = np.flatnonzero(first >= 0)
    pairs = first[hit]
    cand = pa.table({c: pend.column(f"c_{c}") for c, _ in PAYLOAD if c != "signature"})
    decided = _decided(waiting.take(pa.array(hit)), cand.take(pa.array(pairs)), sim[pairs], checked[pairs], r)
    _write(decided, _path(ctx, "resolved", r, g))
    still = waiting.filter(pa.array(first < 0))
    n_open = _next_round(pa.concat_tables([rest, still]), r, g, ctx)
    return {"decided": int(len(hit)), "open": n_open, "cpu_s": time.process_time() - cpu0}


Run = Callable[..., list]


def _in_process(ctx: dict[str, Any]) -> Run:
    """Phases run in this process, one unit after another; what each leaves in Arrow's pool is
    handed back before the next (so the task's peak is one phase's, not their sum)."""
    def run(fn: Callable, units: list[dict], desc: str) -> list:
        out = []
        for u in units:
            out.append(fn(u, ctx))
            pa.default_memory_pool().release_unused()
        return out
    return run


def _rounds(run: Run, ctx: dict[str, Any], r: int, open_now: int, rest: bool) -> dict[str, Any]:
    """Rounds r+1, r+2, ... while members are open; with ``rest``, the rounds left go to one task
    (:func:`rest_unit`) as soon as the open members fit it."""
    G, cfg = ctx["partitions"], ctx["cfg"]
    units = lambda r, name: [{"name": f"r{r:03d}-{name}-{i:04d}", "g": i, "q": i, "r": r,  # noqa: E731
                              "out": _path(ctx, "open" if name in ("compare", "resolve") else name, r + (name in ("compare", "resolve")), i)}
                             for i in range(G)]
    figures = {"decision_rounds": r, "left_open": open_now, "pairs_true_jaccard": 0, "local_pivots": 0, "open_after_round": []}
    while open_now and r < cfg.max_rounds:
        if rest and open_now <= cfg.decide_members_in_memory:
            [done] = run(rest_unit, [{"name": f"r{r + 1:03d}-rest", "r": r + 1, "out": _rest_path(ctx, "left")}],
                         f"rounds {r + 1}-: the rest in memory ({open_now:,} members)")
            figures.update(decision_rounds=done["decision_rounds"], left_open=done["left_open"], rest_from=r + 1)
            for key in ("pairs_true_jaccard", "local_pivots", "open_after_round"):
                figures[key] += done[key]
            return figures
        r += 1
        run(heads_unit, units(r, "heads"), f"round {r}: best members")
        if r >= 2:
            figures["local_pivots"] += sum(x["pivots"] for x in run(pivots_unit, units(r, "pflags"), f"round {r}: pivots"))
            run(pivot_routes_unit, units(r, "pivotpay"), f"round {r}: pivots to their buckets")
        res = run(compare_unit, units(r, "compare"), f"round {r}: compare")
        figures["pairs_true_jaccard"] += sum(x["checks"] for x in res)
        if any(x["pending"] for x in res):
            run(sets_unit, units(r, "sets"), f"round {r}: shingle sets near the threshold")
            waiting = [u for u, x in zip(units(r, "resolve"), res) if x["pending"]]
            for u, x in zip(waiting, run(resolve_unit, waiting, f"round {r}: true Jaccard")):
                res[u["g"]] = x
        open_now = sum(x["open"] for x in res)
        figures.update(decision_rounds=r, left_open=open_now)
        figures["open_after_round"].append(open_now)
    return figures


def decide_rounds(run: Run, ctx: dict[str, Any]) -> dict[str, Any]:
    """The rounds after ``gather_unit``: ``run(fn, units, desc)`` runs one phase (every unit,
    results in order; the stage runs them as Ray tasks, the tests in process). Once the members
    still open fit ``decide_members_in_memory``, one task runs the rounds left (the same rule, its
    own files as a single group). Returns the figures: rounds, members still open after the last
    one, pairs decided by their true Jaccard, local pivots, the members still open after each
    round, and the round the one task took over from (``rest_from``, absent if none)."""
    return _rounds(run, ctx, 0, ctx["members"], rest=True)


def _rest_path(ctx: dict[str, Any], kind: str) -> str:
    return io.join(ctx["work"], "decide", "rest", f"{kind}.arrow")


def rest_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """The rounds from ``unit["r"]`` on, in this task: every group's open members (at most
    ``decide_members_in_memory``) as one group, the round tasks run here in turn; the decided
    rows and the members left open go back to their groups (routed files)."""
    cpu0 = time.process_time()
    r, P = unit["r"], ctx["partitions"]
    open_ = pa.concat_tables([_read(_path(ctx, "open", r, g), MEMBER_SCHEMA) for g in range(P)])
    # One group; the shingle sets made for one round's true Jaccards are kept for the next ones.
    one = {**ctx, "partitions": 1, "work": io.join(ctx["work"], "decide", "rest"), "shingle_cache": {}}
    _write(open_.take(pc.sort_indices(open_, sort_keys=[("node", "ascending")])), _path(one, "open", r, 0))
    _emit(open_, r, 0, one)
    figures = _rounds(_in_process(one), one, r - 1, open_.num_rows, rest=False)
    done, left = _decided_rows(one, 0, figures["decision_rounds"], r)
    node = done.column("node").to_numpy()
    layout.write_routed(done, layout.group_of(node, P), P, _rest_path(ctx, "decided"))
    layout.write_routed(left, layout.group_of(left.column("node").to_numpy(), P), P, _rest_path(ctx, "left"))
    return {**figures, "cpu_s": time.process_time() - cpu0}


def decided_files(ctx: dict[str, Any], g: int, rounds: int, from_round: int = 1) -> list[str]:
    """Group ``g``'s decided rows of rounds ``from_round`` .. ``rounds``."""
    return [p for r in range(from_round, rounds + 1) for p in (_path(ctx, "decided", r, g), _path(ctx, "resolved", r, g))]


def members_file(ctx: dict[str, Any], g: int) -> str:
    """Group ``g``'s members as ``gather_unit`` writes them (the open members of round 1)."""
    return _path(ctx, "open", 1, g)


def _decided_rows(ctx: dict[str, Any], g: int, rounds: int, from_round: int) -> tuple[pa.Table, pa.Table]:
    """Group ``g``'s rows decided in rounds ``from_round`` .. ``rounds``, and its members open after them."""
    parts = [_read(p, DECIDED_SCHEMA) for p in decided_files(ctx, g, rounds, from_round)]
    done = pa.concat_tables(parts) if parts else DECIDED_SCHEMA.empty_table()
    return done, _read(_path(ctx, "open", max(rounds, from_round - 1) + 1, g), MEMBER_SCHEMA)


def read_decided(ctx: dict[str, Any], g: int, rounds: int) -> tuple[pa.Table, pa.Table]:
    """Every member of group ``g`` with its decision (those left open after the last round as
    their own kept document), and the ones left open. After :func:`rest_unit`
    (``ctx["rest_from"]``), the rounds from there come from its files."""
    rest = ctx.get("rest_from")
    if rest is None:
        done, left = _decided_rows(ctx, g, rounds, 1)
    else:
        done, _ = _decided_rows(ctx, g, rest - 1, 1)
        done = pa.concat_tables([done, layout.read_routed([_rest_path(ctx, "decided")], g, DECIDED_SCHEMA)])
        left = layout.read_routed([_rest_path(ctx, "left")], g, MEMBER_SCHEMA)
    if left.num_rows:
        kept = _decided(left, left.select([c for c, _ in PAYLOAD]), np.ones(left.num_rows), np.zeros(left.num_rows, bool), max(rounds, 1))
        done = pa.concat_tables([done, kept])
    return done, left
