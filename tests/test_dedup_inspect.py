"""Inspecting dedup: the statistics worked out in units over the published files (equal to the
figures of the whole files at once, however the units cut them), the sample of clusters side by
side, and ``dedup-explain`` on a labelled corpus - the kept document, the true Jaccard of the
corpus's truth, the chain check - locally and on an S3 bucket."""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.dedup import DedupConfig
from curation.dedup import explain as ex
from curation.dedup import stats as st
from curation.dedup.corpus import CorpusConfig, HostileConfig, generate, hostile_documents, pairwise_jaccard
from curation.schema import documents_to_table
from curation.sources import read_dolma_jsonl
from storage import io
from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def labelled(ray_session, tmp_path_factory):
    """A 3-dump labelled corpus (real pages re-crawled with edits, and a page drifting from crawl
    to crawl, whose chain the chain check splits), deduplicated; its truth is the true Jaccard of
    every pair >= 0.5, by document ids."""
    from pipelines.dedup import dedup

    real = []
    for f in sorted(glob.glob(str(SAMPLE / "text" / "*.jsonl.gz"))):
        with open(f, "rb") as fh:
            real.extend(read_dolma_jsonl(fh, os.path.basename(f)))
    docs = generate(real[:200], CorpusConfig(dumps=3, seed=7, new_pages=0.3))
    drift = HostileConfig(template=0, chain=60, copies=0, tiny=0, every_dump=0, dumps=3, seed=7)
    docs += [d for _, chunk in hostile_documents(real[:200], drift) for d in chunk if d["metadata"]["title"].startswith("chain:")]
    root = tmp_path_factory.mktemp("inspect")
    inputs = []
    for dump in sorted({d["dump"] for d in docs}):
        rows = [d for d in docs if d["dump"] == dump]
        io.write_parquet(documents_to_table(rows), str(root / "in" / dump / "part-00000.parquet"))
        inputs.append(str(root / "in" / dump))
    out = str(root / "out")
    assert dedup(inputs, out, DedupConfig(partitions=2)) == 0
    i, j, jac = pairwise_jaccard([d["text"] for d in docs])
    ids = [d["id"] for d in docs]
    truth = {frozenset((ids[a], ids[b])): x for a, b, x in zip(i.tolist(), j.tolist(), jac.tolist())}
    ex.build_lookup(out)
    return out, docs, truth, inputs


def _reference(out: str, stats: dict) -> dict:
    """The figures over the whole files in one process, as the report used to compute them."""
    from curation.dedup import components as comp
    from curation.dedup import layout

    dup = pq.read_table(os.path.join(out, "duplicates.parquet")).to_pydict()
    d = stats["dedup"]
    dumps, rank = list(d["per_dump"]), {n: i for i, n in enumerate(d["dumps"])}
    e = layout.read_graph_edges(out)
    u, v, ur, vr = (e.column(c).to_numpy().astype(np.int64) for c in layout.GRAPH_EDGE_SCHEMA.names)
    removed = []
    for k in range(1, len(dumps) + 1):
        ranks = np.array([rank[x] for x in dumps[:k]])
        sel = np.isin(ur, ranks) & np.isin(vr, ranks)
        nodes, labels = comp.connected_components(u[sel], v[sel])
        removed.append(len(nodes) - (labels.max() + 1 if len(labels) else 0))
    return {"matrix": Counter(zip((x or "" for x in dup["removed_dump"]), (x or "" for x in dup["kept_dump"]))),
            "top_domains": [list(x) for x in Counter(st.domain(x) for x in dup["removed_url"] if x).most_common(st.TOP)],
            "top_urls": [list(x) for x in Counter(x for x in dup["kept_url"] if x).most_common(st.TOP)],
            "removed": removed}


def test_statistics_in_units_equal_the_whole_files(labelled, tmp_path):
    """Cut into units of 2 row groups and 3 key partitions (in this process), and as the Ray
    tasks of ``dedup-stats`` run them: the same cross-dump matrix, most duplicated domains and
    URLs (ties in first-appearance order) and k-dump curve as the whole files at once."""
    from pipelines import dedup_stats

    out, _, _, _ = labelled
    stats = ex.read_stats(out)
    ref = _reference(out, stats)
    small = str(tmp_path / "small")
    shutil.copytree(out, small)
    dups = pq.read_table(os.path.join(out, "duplicates.parquet"))
    pq.write_table(dups, os.path.join(small, "duplicates.parquet"), row_group_size=16)
    units, rows = st.duplicate_units(small, rows_per_unit=32)
    assert rows == dups.num_rows and len(units) > 3
    for u in units:
        u["out"] = str(tmp_path / "work" / (u["name"] + ".arrow"))
    counted = [st.count_unit(u, {"key_partitions": 3}) for u in units]
    tops = [st.top_unit({"p": p}, {"key_files": [u["out"] for u in units]}) for p in range(3)]
    matrix = sum((Counter({(a, b): n for a, b, n in r["matrix"]}) for r in counted), Counter())
    assert matrix == ref["matrix"]
    assert st.merge_top(tops, "domains") == ref["top_domains"] and st.merge_top(tops, "urls") == ref["top_urls"]
    d = stats["dedup"]
    curve = st.curve_unit({}, {"output": out, "dumps": list(d["per_dump"]), "ranks": {n: i for i, n in enumerate(d["dumps"])}})
    assert curve["removed"] == ref["removed"] and ref["removed"][-1] > ref["removed"][0] > 0
    # the sample: the largest cluster first, then seeded random ones, the same however the rows were cut
    whole = st.sample_candidates(dups.select(list(st.PAIR_FIELDS)), st.SAMPLE_SEED, st.SAMPLE_CLUSTERS)
    picked = st.pick_samples(counted)
    assert picked == st.pick_samples([whole]) and len(picked) == 1 + st.SAMPLE_CLUSTERS
    assert picked[0]["cluster_size"] == max(dups.column("cluster_size").to_pylist())
    assert len({p["kept_id"] for p in picked}) == len(picked)
    # the Ray tasks of the command
    r, samples = dedup_stats.build(out, str(tmp_path / "report"))
    assert r["cross_dump"]["counts"] == [[ref["matrix"].get((i, j), 0) for j in r["cross_dump"]["cols"]] for i in r["cross_dump"]["rows"]]
    assert r["top_domains"] == ref["top_domains"] and r["top_urls"] == ref["top_urls"]
    assert [p["removed"] for p in r["k_dump_curve"]] == ref["removed"]
    assert [s["kept_id"] for s in samples] == [p["kept_id"] for p in picked]
    assert not io.exists(str(tmp_path / "report" / "_work"))


def test_the_sample_of_clusters_shows_the_truth_side_by_side(labelled, tmp_path, capsys):
    from pipelines import dedup_stats

    out, _, truth, _ = labelled
    dedup_stats.report(out, str(tmp_path / "report"))
    r = json.loads((tmp_path / "report" / "report.json").read_text())
    assert "sample" not in json.dumps(r)  # report.json keeps its figures; the sample is a page of its own
    page = (tmp_path / "report" / "report.html").read_text()
    fragment = (tmp_path / "report" / "samples.html").read_text()
    assert fragment and fragment in page and "largest cluster" in fragment
    assert "<del>" in fragment or "<ins>" in fragment  # some sampled pair differs, and the difference is marked
    printed = capsys.readouterr().out
    assert "sample of clusters" in printed and "largest cluster" in printed
    samples = dedup_stats.build(out, str(tmp_path / "again"))[1]
    for s in samples:
        pair = frozenset((s["removed_id"], s["kept_id"]))
        assert s["true_jaccard"] == pytest.approx(truth.get(pair, 0.0), abs=1e-6), s


def test_explain_names_the_kept_document_and_the_true_jaccard(labelled, capsys):
    """Every near-duplicate removal of the labelled corpus: the explanation names the document
    dedup kept for it, the MinHash estimate dedup compared, and the corpus's true Jaccard."""
    from pipelines.cli import main

    out, docs, truth, _ = labelled
    rows = [r for r in pq.read_table(os.path.join(out, "duplicates.parquet")).to_pylist() if r["reason"] == "near_duplicate"]
    assert len(rows) > 20
    for row in rows[:12]:
        (e,) = ex.explain(out, row["removed_id"])
        assert e["decision"] == "near_duplicate" and e["kept"]["id"] == row["kept_id"] == e["compared_with"]["id"]
        assert e["true_jaccard"] == pytest.approx(truth[frozenset((row["removed_id"], row["kept_id"]))], abs=1e-6)
        assert e["estimated_jaccard"] == pytest.approx(row["similarity"], abs=1e-6)
        assert e["cluster_size"] == row["cluster_size"] and row["removed_dump"] in e["cluster_dumps"]
    # a URL: every document of it (its re-crawls)
    url = rows[0]["removed_url"]
    found = ex.explain(out, url, limit=50)
    assert sorted(e["id"] for e in found) == sorted(d["id"] for d in docs if d["url"] == url)
    assert main(["dedup-explain", out, rows[0]["removed_id"]]) == 0
    text = capsys.readouterr().out
    assert "removed: near duplicate" in text and rows[0]["kept_id"] in text and "Jaccard" in text and "\n      - " in text


def test_explain_finds_every_chain_split(labelled):
    """The members the chain check split off, as explain sees them from the components of the
    published graph, are as many as the stage counted; one of them is explained as such."""
    out, _, _, _ = labelled
    stats = ex.read_stats(out)
    look = ex.Lookup.open(out)
    dups = {r["removed_id"]: r["kept_id"] for r in pq.read_table(os.path.join(out, "duplicates.parquet")).to_pylist()}
    members = pq.read_table(os.path.join(out, ex.LOOKUP, "members.parquet")).to_pydict()
    index = stats["dedup"]["index"]
    rows = ex.node_rows(index, members["node"], ["id", "dump"]).to_pylist()
    rank = {n: i for i, n in enumerate(stats["dedup"]["dumps"])}
    by_label: dict[int, list[dict]] = {}
    for label, r in zip(members["label"], rows):
        by_label.setdefault(label, []).append(r)
    split = [r["id"] for m in by_label.values() for r in m
             if dups.get(r["id"], r["id"]) != min(m, key=lambda x: (-rank[x["dump"]], x["id"]))["id"]]
    assert len(split) == stats["counters"]["chain_split"] > 0
    explained = [ex.explain_node(out, stats, look, look.nodes("ids", i)[0]) for i in split[:20]]
    assert all(e["chain_split"] and e["kept"]["id"] == dups.get(i, i) for i, e in zip(split, explained))
    e = next(e for e in explained if e["true_jaccard"] < 1.0)
    assert "chain split" in ex.format_explanation([e])


def test_explain_reads_an_output_on_a_bucket(labelled, bucket, tmp_path):
    """The same output published on S3 (its index and the input shards beside it): the lookup is
    built there and the explanation is the local one."""
    out, _, _, _ = labelled
    stats = ex.read_stats(out)
    index = stats["dedup"]["index"]
    remote = f"{bucket}/dedup"
    for f in glob.glob(os.path.join(out, "**", "*"), recursive=True):
        rel = os.path.relpath(f, out)
        if os.path.isfile(f) and not rel.startswith(ex.LOOKUP):
            with open(f, "rb") as fh:
                io.write_bytes(fh.read(), f"{remote}/{rel}")
    shards = io.read_json(os.path.join(index, "gen=000", "shards.json"))
    moved = []
    for k, path in enumerate(shards):
        with open(path, "rb") as fh:
            io.write_bytes(fh.read(), f"{bucket}/in/{k}.parquet")
        moved.append(f"{bucket}/in/{k}.parquet")
    io.write_json(moved, f"{remote}/index/gen=000/shards.json")
    stats["dedup"]["index"] = f"{remote}/index"
    io.write_json(stats, f"{remote}/stats.json")
    gens = io.read_json(os.path.join(index, "generations.json"))
    io.write_json([dict(g, output=remote) for g in gens], f"{remote}/index/generations.json")
    ex.build_lookup(remote)
    row = next(r for r in pq.read_table(os.path.join(out, "duplicates.parquet")).to_pylist() if r["reason"] == "near_duplicate")
    (local,), (there,) = ex.explain(out, row["removed_id"]), ex.explain(remote, row["removed_id"])
    for key in ("decision", "kept", "cluster_size", "cluster_dumps", "estimated_jaccard", "true_jaccard", "spans", "chain_split"):
        assert there.get(key) == local.get(key), key


def test_explain_across_generations(labelled, tmp_path):
    """Two dumps, then the third against their index: a document the second run retracted is
    explained as replaced by its newer copy, one the first run removed as that run's decision."""
    from pipelines.dedup import dedup

    _, _, _, inputs = labelled
    index, first, second = str(tmp_path / "index"), str(tmp_path / "g0"), str(tmp_path / "g1")
    assert dedup(inputs[:2], first, DedupConfig(), index=index) == 0
    assert dedup(inputs[2:], second, DedupConfig(), index=index) == 0
    ex.build_lookup(second)
    retracted = next(r for r in pq.read_table(os.path.join(second, "duplicates.parquet")).to_pylist() if r["retracted"])
    (e,) = ex.explain(second, retracted["removed_id"])
    assert e["generation"] == 0 and e["kept"]["id"] == retracted["kept_id"] and "newer copy replaces it" in e["where"]
    earlier = pq.read_table(os.path.join(first, "duplicates.parquet")).to_pylist()[0]
    (e,) = ex.explain(second, earlier["removed_id"])
    assert e["decision"] == earlier["reason"] and "removed by the run of generation 0" in e["where"] and "chain_split" not in e
