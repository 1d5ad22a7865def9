"""Dedup on the hostile web's shapes, without Ray: the chain check's rounds run by groups of node
files equal the same rule in one process (a component larger than any group's share), a drifting
chain is crossed within the round cap with no removal below the threshold, and the component
rounds by local contraction give a plain union-find's labels."""

from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow as pa
import pytest

from curation.dedup import DedupConfig
from curation.dedup import components as comp
from curation.dedup import decide as dc
from curation.dedup import keep as kp
from curation.dedup import layout
from curation.dedup import minhash as mh
from curation.dedup.candidates import ADJ_SCHEMA, both_directions
from curation.dedup.components import LABEL_SCHEMA
from curation.dedup.corpus import HostileConfig, hostile_documents
from curation.dedup.signatures import NODE_SCHEMA, sign
from curation.schema import documents_to_table
from curation.sources import read_dolma_jsonl
from storage import io
from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def real_docs():
    """The bundled sample's real documents (690)."""
    docs = []
    for f in sorted(glob.glob(str(SAMPLE / "text" / "*.jsonl.gz"))):
        with open(f, "rb") as fh:
            docs.extend(read_dolma_jsonl(fh, os.path.basename(f)))
    assert len(docs) > 600
    return docs


def in_process(ctx):
    """The phases run as the stage runs them (units from files to files), in this process."""
    return lambda fn, units, desc: [fn(u, ctx) for u in units]


def write_index(docs: list[dict], folder, shards: int, cfg: DedupConfig) -> tuple[str, np.ndarray]:
    """An index of one generation as the signature step writes it (node tables, shards.json, the
    input shards), ``docs`` dealt round-robin over ``shards`` shards; returns the nodes in doc order."""
    index = str(folder / "index")
    paths, nodes = [], np.zeros(len(docs), np.int64)
    for s in range(shards):
        rows = list(range(s, len(docs), shards))
        part = [docs[i] for i in rows]
        path = str(folder / "in" / f"part-{s:05d}.parquet")
        io.write_parquet(documents_to_table(part), path)
        paths.append(path)
        exact, sigs, nsh = sign([d["text"] for d in part], cfg)
        ids = layout.node_ids(0, s, len(part))
        nodes[rows] = ids
        K = cfg.minhash.num_perm
        sig_col = pa.Array.from_buffers(pa.binary(4 * K), len(part), [None, pa.py_buffer(sigs.tobytes())]).cast(pa.binary())
        io.write_parquet(pa.table([pa.array(ids), pa.array([d["id"] for d in part]), pa.array([d["dump"] for d in part]),
                                   pa.array([d["url"] for d in part]), pa.array(exact), pa.array(nsh), sig_col], schema=NODE_SCHEMA),
                         layout.shard_file(index, "nodes", 0, s))
    io.write_json(paths, io.join(index, layout.gen_dir(0), "shards.json"))
    return index, nodes


def decide_in_groups(docs, labels, folder, cfg: DedupConfig, P: int, shards: int):
    """The chain check's tasks (gather, rounds) over ``P`` groups, in process: each member's kept
    document, similarity, round and whether it was left open, in doc order; and the rounds' figures."""
    index, nodes = write_index(docs, folder, shards, cfg)
    ranks = {d: i for i, d in enumerate(sorted({d["dump"] for d in docs}))}
    ctx = {"cfg": cfg, "check": dc.check_for(cfg), "work": str(folder / "work"), "index": index, "partitions": P, "ranks": ranks,
           "gen": 0, "expanded_files": []}
    lab_file = str(folder / "labels.arrow")
    layout.write_routed(pa.table([pa.array(nodes), pa.array(labels[np.arange(len(docs))])], schema=LABEL_SCHEMA),
                        layout.group_of(nodes, P), P, lab_file)
    ctx["new_label_files"] = [lab_file]
    ctx["members"] = sum(dc.gather_unit({"g": g}, ctx)["members"] for g in range(P))
    figures = dc.decide_rounds(in_process(ctx), ctx)
    ctx["rest_from"] = figures.get("rest_from")
    got = pa.concat_tables([dc.read_decided(ctx, g, figures["decision_rounds"])[0] for g in range(P)])
    by_node = {n: i for i, n in enumerate(nodes.tolist())}
    out = {"center": np.zeros(len(docs), np.int64), "similarity": np.zeros(len(docs)), "round": np.zeros(len(docs), np.int64),
           "checked": np.zeros(len(docs), bool)}
    for row in got.to_pylist():
        i = by_node[row["node"]]
        out["center"][i], out["similarity"][i] = by_node[row["center"]], row["similarity"]
        out["round"][i], out["checked"][i] = row["round"], row["checked"]
    return out, figures, nodes


def reference(docs, labels, nodes, cfg: DedupConfig):
    ranks = {d: i for i, d in enumerate(sorted({d["dump"] for d in docs}))}
    texts = [mh.normalize(d["text"], cfg.shingles) for d in docs]
    exact, sigs, _ = sign([d["text"] for d in docs], cfg)
    sets = mh.shingle_sets(texts, cfg.shingles.ngram)
    prio = kp.priority(np.array([ranks[d["dump"]] for d in docs], np.int64), cfg.keep)
    return dc.decide_reference(labels, prio, [d["id"] for d in docs], nodes, sigs, exact, dc.check_for(cfg), cfg.minhash.bands,
                               cfg.minhash.rows, cfg.max_rounds, sets)


def hostile(real_docs, **sizes) -> list[dict]:
    cfg = HostileConfig(**{k: 0 for k in ("template", "chain", "copies", "tiny", "every_dump")}, scale=1.0, seed=3)
    for k, v in sizes.items():
        setattr(cfg, k, v)
    docs = [d for _, chunk in hostile_documents(real_docs, cfg) for d in chunk]
    return [d for d in docs if d["metadata"]["title"].split(":")[0] in sizes]


@pytest.mark.parametrize("in_memory", [0, 300])
def test_decisions_across_groups_equal_the_rule_in_one_process(real_docs, tmp_path, in_memory):
    """One component of 1,000 members - a template cluster near the threshold, a drifting chain
    and exact copies, all linked - decided by 3 groups of node files (each holds about a third of
    it) in rounds, every round on the groups or, once 300 members are left open, the rest in one
    task: the same kept documents, similarities and rounds as the rule in one process."""
    docs = hostile(real_docs, template=400, chain=500, copies=100)
    labels = np.zeros(len(docs), np.int64)  # one component (its label: any node id; 0 is the first)
    cfg = DedupConfig(max_rounds=12, decide_members_in_memory=in_memory)
    got, figures, nodes = decide_in_groups(docs, labels, tmp_path, cfg, P=3, shards=12)
    labels[:] = nodes.min()
    ref = reference(docs, labels, nodes, cfg)
    assert np.array_equal(got["center"], ref["center"])
    assert np.allclose(got["similarity"], ref["similarity"], atol=1e-6)
    assert np.array_equal(got["round"], ref["round"])
    assert np.array_equal(got["checked"], ref["checked"])
    assert 1 < figures["decision_rounds"] <= cfg.max_rounds and figures["pairs_true_jaccard"] > 0 and figures["local_pivots"] > 0
    assert ("rest_from" in figures) == bool(in_memory)
    groups = layout.group_of(nodes, 3)
    assert all(0 < (groups == g).sum() < 0.6 * len(docs) for g in range(3))  # no group holds the component


def test_drifting_chain_is_crossed_within_the_cap_without_a_removal_below_the_threshold(real_docs, tmp_path):
    """2,000 versions of a page, each 1% of its words changed from the previous (its ends share
    nothing): every removal's true Jaccard with its kept page is at least 0.5 (at least
    min_similarity but for a rare one settled by its estimate), most of the chain is removed,
    and the rounds end before the cap with nothing left open."""
    docs = hostile(real_docs, chain=2000)
    labels = np.zeros(len(docs), np.int64)
    cfg = DedupConfig(decide_members_in_memory=0)
    got, figures, nodes = decide_in_groups(docs, labels, tmp_path, cfg, P=2, shards=4)
    assert figures["decision_rounds"] < cfg.max_rounds and figures["left_open"] == 0
    sets = mh.shingle_sets([mh.normalize(d["text"]) for d in docs], 5)
    removed = np.flatnonzero(got["center"] != np.arange(len(docs)))
    assert len(removed) > 0.75 * len(docs)
    true = np.array([mh.jaccard(sets[i], sets[got["center"][i]]) for i in removed])
    assert true.min() >= 0.5 and (true >= cfg.min_similarity).mean() > 0.999
    assert (got["similarity"][removed] >= cfg.min_similarity).all()
    ends = mh.jaccard(sets[0], sets[-1])
    assert ends < 0.05  # a chain: its first and last versions share nothing


def test_the_band_sends_pairs_near_the_threshold_to_the_true_jaccard(tmp_path):
    cfg = DedupConfig()
    check = dc.check_for(cfg)
    assert check.lo == pytest.approx(0.6 - 3 * np.sqrt(0.24 / 112)) and check.hi == pytest.approx(0.6 + 3 * np.sqrt(0.24 / 112))
    assert dc.settle(np.array([0.3, 0.5, 0.6, 0.7, 0.8]), check).tolist() == [0, 2, 2, 2, 1]
    assert dc.settle(np.array([0.59, 0.6]), dc.check_for(DedupConfig(uncertain_band=0))).tolist() == [0, 1]
    assert dc.settle(np.array([0.0, 1.0]), dc.check_for(DedupConfig(verify=True))).tolist() == [2, 2]
    assert dc.settle(np.array([0.0, 0.3]), dc.check_for(DedupConfig(min_similarity=0))).tolist() == [1, 1]


def union_find(u, v) -> dict[int, int]:
    """A plain union-find, the reference: node -> smallest node of its component."""
    parent: dict[int, int] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(u.tolist(), v.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in list(parent)}


def components_in_process(u: np.ndarray, v: np.ndarray, P: int, folder, rows_in_memory: int,
                          stars: bool) -> tuple[dict[int, int], dict]:
    """The component units run as the stage runs them (files, partitions), without Ray."""
    ctx = {"work": str(folder / "work"), "partitions": P, "gen": 0, "cfg": DedupConfig(component_rows_in_memory=rows_in_memory)}
    ctx["adjacency"] = []
    for p in range(P):  # the edges (as the check tasks hand them on: stars of a local union-find), routed
        sel = layout.partition(layout.mix64(u), P) == p
        a, b = comp.union_find_stars(u[sel], v[sel]) if stars else (u[sel], v[sel])
        adj = both_directions(a, b)
        ctx["adjacency"].append(str(folder / f"start-{p}.arrow"))
        layout.write_routed(adj, layout.node_partition(adj.column("k").to_numpy(), P), P, ctx["adjacency"][-1])
    ctx["finish"] = [{"new_out": str(folder / f"new-{p}.arrow"), "old_out": str(folder / f"old-{p}.arrow")} for p in range(P)]
    rows = sum(layout.read_routed(ctx["adjacency"], p, ADJ_SCHEMA).num_rows for p in range(P))
    figures = comp.label_components(in_process(ctx), ctx, rows)
    labels = {}
    for g in range(P):
        t = layout.read_routed([f["new_out"] for f in ctx["finish"]], g, LABEL_SCHEMA)
        assert np.all(layout.group_of(t.column("node").to_numpy(), P) == g)
        labels.update(zip(t.column("node").to_pylist(), t.column("label").to_pylist()))
    return labels, figures


@pytest.mark.parametrize("P,rows_in_memory,stars", [(1, 10**9, False), (1, 500, False), (3, 500, False), (3, 500, True)])
def test_component_rounds_equal_union_find_on_random_graphs(tmp_path, P, rows_in_memory, stars):
    """Long paths and random sparse edges (a critical random graph: every size of component), by
    contraction rounds down to 500 rows and the rest in memory, from the edges or from each
    partition's stars: a plain union-find's labels."""
    rng = np.random.default_rng(P)
    path = rng.permutation(4000).astype(np.int64) * 7919
    u = np.concatenate([path[:-1], rng.integers(0, 3000, 1500) * 7919])
    v = np.concatenate([path[1:], rng.integers(0, 3000, 1500) * 7919])
    keep = u != v
    labels, figures = components_in_process(u[keep], v[keep], P, tmp_path, rows_in_memory, stars)
    assert labels == union_find(u[keep], v[keep])
    assert (figures["component_rounds"] >= 2) == (rows_in_memory < 10**9)
