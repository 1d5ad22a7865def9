"""Dedup: signatures against datasketch, CJK shingling, the component rounds against a plain
union-find, the chain check, and the Ray stage on real documents (accounting, determinism,
incremental over three generations == joint, accuracy against computed truth, the driver under
a memory cap)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash

from curation.dedup import DedupConfig
from curation.dedup import candidates as cand
from curation.dedup import keep as kp
from curation.dedup import layout
from curation.dedup import minhash as mh
from curation.dedup.corpus import CorpusConfig, generate, pairwise_jaccard
from curation.schema import documents_to_table
from curation.stats import StageStats
from storage import io
from tests.conftest import REPO
from tests.test_dedup_rounds import real_docs, union_find  # noqa: F401 - real_docs is a fixture


# ---- signatures and similarity --------------------------------------------------------------


def test_shingle_hashes_match_scalar_reference(real_docs):
    norm = [mh.normalize(d["text"]) for d in real_docs[:40]] + ["", "one two", "a b c d e"]
    h, counts = mh.shingle_hashes(norm, 5)
    off = 0
    for text, c in zip(norm, counts):
        ref = [mh.shingle_hash(s) for s in mh.shingles(text, 5)]
        assert list(h[off : off + c]) == ref
        off += c
    assert counts[-3:].tolist() == [0, 1, 1]


@pytest.mark.parametrize("num_perm,seed", [(112, 1), (64, 42)])
def test_signatures_agree_with_datasketch(real_docs, num_perm, seed):
    norm = [mh.normalize(d["text"]) for d in real_docs[:60]] + ["", "short text"]
    h, counts = mh.shingle_hashes(norm, 5)
    sig = mh.minhash_signatures(h, counts, num_perm, seed)
    for i, text in enumerate(norm):
        ref = MinHash(num_perm=num_perm, seed=seed, hashfunc=mh.shingle_hash)
        ref.update_batch(mh.shingles(text, 5))
        assert np.array_equal(sig[i], ref.hashvalues), i


def test_cjk_text_shingles_by_character():
    zh = "我们今天在北京参加了一个关于人工智能的会议，讨论了大型语言模型的训练数据去重问题。"
    norm = mh.normalize(zh)
    tokens = norm.split(" ")
    assert len(tokens) >= 35 and all(len(t) == 1 for t in tokens)
    assert len(mh.shingles(norm, 5)) == len(tokens) - 4
    ja = mh.normalize("東京タワーは2024年に営業しています")
    assert "0000" in ja.split(" ") and "東" in ja.split(" ")
    # One edited character keeps a Chinese text near its original; another text stays apart.
    edited = zh.replace("北京", "上海")
    other = "这是一篇完全不同的文章，讲的是如何在家里种植西红柿和黄瓜，以及浇水的时间。"
    sets = mh.shingle_sets([mh.normalize(t) for t in (zh, edited, other)], 5)
    assert mh.jaccard(sets[0], sets[1]) > 0.7
    assert mh.jaccard(sets[0], sets[2]) == 0.0
    h, c = mh.shingle_hashes([mh.normalize(t) for t in (zh, edited, other)], 5)
    sig = mh.minhash_signatures(h, c, 112, 1)
    est = mh.estimated_jaccard(sig[0], sig[1:])
    assert est[0] > 0.6 and est[1] < 0.1


def test_normalize_folds_case_digits_punctuation():
    assert mh.normalize("Hello,  WORLD!\n2024-05-01") == mh.normalize("hello world 1999 12 31")
    keep = mh.ShingleConfig(replace_digits=False)
    assert mh.normalize("Page 1", keep) != mh.normalize("Page 2", keep)


def test_one_jaccard_and_the_truth_normalises_like_the_stage(real_docs):
    """The labelled corpus's truth is the stage's Jaccard: a re-crawl that changed only its dates,
    counters, case and punctuation is identical (J = 1), and the all-pairs computation agrees
    with :func:`minhash.jaccard` pair by pair."""
    text = real_docs[3]["text"]
    recrawl = text.replace("1", "7").replace("2", "9").upper().replace(",", " ;").replace(".", "!")
    texts = [text, recrawl, real_docs[4]["text"], real_docs[4]["text"] + "\nOne more line of comments here, thanks."]
    i, j, jac = pairwise_jaccard(texts, min_jaccard=0.0)
    sets = mh.shingle_sets([mh.normalize(t) for t in texts], 5)
    got = {(a, b): x for a, b, x in zip(i.tolist(), j.tolist(), jac.tolist())}
    assert got[(0, 1)] == 1.0
    for (a, b), x in got.items():
        assert x == pytest.approx(mh.jaccard(sets[a], sets[b]))
    assert 0.8 < got[(2, 3)] < 1.0
    assert mh.jaccard(np.zeros(0, np.uint32), np.zeros(0, np.uint32)) == 1.0


def test_threshold_picks_bands_and_rows():
    b, r = mh.bands_rows_for_threshold(0.8, 112)
    assert b * r <= 112
    p = mh.candidate_probability(np.array([0.5, 0.8, 0.95]), b, r)
    assert p[0] < 0.3 and p[2] > 0.99
    # The FineWeb default 14 x 8 catches a 0.8 pair with probability > 0.9.
    assert mh.candidate_probability(0.8, 14, 8) > 0.9


# ---- keep rule, chain check, dump order -----------------------------------------------------


def test_dump_order_by_crawl_date_and_configured():
    from storage.errors import SettingError

    assert kp.crawl_date("CC-MAIN-2019-04") < kp.crawl_date("CC-MAIN-2019-30") < kp.crawl_date("CC-MAIN-2020-05")
    assert kp.crawl_date("CC-MAIN-2012").year == 2012 and kp.crawl_date("CC-MAIN-2009-2010").year == 2009
    assert kp.crawl_date("my-crawl-3") is None
    # Undated names count as older than every Common Crawl dump; dated ones go by date.
    r = kp.dump_ranks(["CC-MAIN-2020-05", "CC-MAIN-2019-51", "", "wget-2024"])
    assert sorted(r, key=r.get) == ["", "wget-2024", "CC-MAIN-2019-51", "CC-MAIN-2020-05"]
    # Names that do not sort by age as strings: a configured order decides.
    r = kp.dump_ranks(["crawl-b", "crawl-a"], ["crawl-b", "crawl-a"])
    assert r == {"crawl-b": 0, "crawl-a": 1}
    with pytest.raises(SettingError, match="'crawl-c' is not in dump_order"):
        kp.dump_ranks(["crawl-c", "crawl-a"], ["crawl-a"])


def test_chain_check_splits_a_chain(real_docs):
    """A~B and B~C but not A~C: C (kept, newest) removes B; A matches only B, so it is split off
    and kept rather than removed for a copy it barely resembles. Plain components (threshold 0)
    would remove both."""
    from curation.dedup import decide as dc
    from curation.dedup.signatures import sign

    paras = [p for p in real_docs[10]["text"].split("\n") if p.strip()]
    while len(" ".join(paras).split()) < 300:
        paras += [p for p in real_docs[11 + len(paras) % 50]["text"].split("\n") if p.strip()]
    n = len(paras)
    a = "\n".join(paras[: int(n * 0.75)])
    b = "\n".join(paras[int(n * 0.12) : int(n * 0.88)])
    c = "\n".join(paras[int(n * 0.25) :])
    sets = mh.shingle_sets([mh.normalize(t) for t in (c, b, a)], 5)
    assert mh.jaccard(sets[0], sets[1]) > 0.6 and mh.jaccard(sets[1], sets[2]) > 0.6 and mh.jaccard(sets[0], sets[2]) < 0.5
    exact, sigs, _ = sign([c, b, a], DedupConfig())
    members = (np.zeros(3, np.int64), np.array([-3, -2, -1]), ["c", "b", "a"], np.arange(3), sigs, exact)  # one component, C newest
    for cfg, want in [(DedupConfig(), [0, 0, 2]), (DedupConfig(verify=True), [0, 0, 2]), (DedupConfig(min_similarity=0), [0, 0, 0])]:
        got = dc.decide_reference(*members, dc.check_for(cfg), 14, 8, cfg.max_rounds, sets)
        assert got["center"].tolist() == want
    assert got["similarity"][1] > 0.6 and not got["left_open"].any()


# ---- partitions, hand-offs, component rounds ------------------------------------------------


def test_partitions_of_different_counts_overlap_exactly(tmp_path):
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**63, 20_000, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    for P, Q in [(3, 7), (16, 5), (1, 4), (6, 6)]:
        p_of, q_of = layout.partition(keys, P), layout.partition(keys, Q)
        for p in range(P):
            assert set(q_of[p_of == p].tolist()) <= set(layout.overlapping(p, P, Q))
    t = pa.table({"k": np.arange(10, dtype=np.int64), "o": np.arange(10, dtype=np.int64) * 3})
    dest = np.array([2, 0, 2, 1, 0, 2, 2, 1, 0, 0])
    layout.write_routed(t, dest, 4, str(tmp_path / "r.arrow"))
    for d in range(4):
        got = layout.read_routed([str(tmp_path / "r.arrow")], d, t.schema)
        assert got.column("k").to_pylist() == np.flatnonzero(dest == d).tolist()


# ---- the stage on real documents ------------------------------------------------------------


def _write_dumps(docs, folder):
    by = {}
    for d in docs:
        by.setdefault(d["dump"], []).append(d)
    out = []
    for dump, rows in sorted(by.items()):
        half = len(rows) // 2  # two shards per dump
        for k, part in enumerate([rows[:half], rows[half:]]):
            io.write_parquet(documents_to_table(part), os.path.join(folder, dump, f"part-{k:05d}.parquet"))
        out.append(os.path.join(folder, dump))
    return out


@pytest.fixture(scope="module")
def corpus(real_docs, tmp_path_factory):
    docs = generate(real_docs[:300], CorpusConfig(dumps=3, seed=7, new_pages=0.3))
    folder = tmp_path_factory.mktemp("dedup-corpus")
    return docs, _write_dumps(docs, str(folder))


@pytest.fixture(scope="module")
def joint(ray_session, corpus, tmp_path_factory):
    """The corpus deduplicated at once, with 3 partitions (several component rounds)."""
    from pipelines.dedup import dedup

    _, inputs = corpus
    out = tmp_path_factory.mktemp("dedup-joint") / "out"
    assert dedup(inputs, str(out), DedupConfig(partitions=3)) == 0
    return out


def _ids(out):
    return set(pq.read_table(os.path.join(out, "documents"), columns=["id"]).column("id").to_pylist())


def _removed(out):
    return pq.read_table(os.path.join(out, "duplicates.parquet")).to_pylist()


def _graph(out):
    t = pq.read_table(os.path.join(out, "graph"))
    return t.column("u").to_numpy(), t.column("v").to_numpy()


def test_stage_accounting_and_outputs(joint, corpus):
    from pipelines.dedup import dedup

    docs, inputs = corpus
    out = joint
    stats = io.read_json(str(out / "stats.json"))
    s = StageStats.from_dict(stats)
    s.check()
    assert s.input == len(docs)
    assert s.dropped["exact_duplicate"] > 0 and s.dropped["near_duplicate"] > 0
    kept = pq.read_table(out / "documents")
    assert kept.num_rows == s.output
    dups = _removed(out)
    assert len(dups) == sum(s.dropped.values())
    removed = {d["removed_id"] for d in dups}
    assert removed.isdisjoint(kept.column("id").to_pylist())
    assert {d["kept_id"] for d in dups} <= set(kept.column("id").to_pylist())
    assert [d["removed_id"] for d in dups] == sorted(removed)
    # Keep rule "newest": no removed copy comes from a newer dump than its kept copy.
    assert all(d["removed_dump"] <= d["kept_dump"] for d in dups)
    # Every removal is checked against its kept document.
    assert all(d["similarity"] >= 0.6 for d in dups)
    # Reasons: a copy of its kept document's normalised text is exact; of the rest removed for one
    # kept document, the best-ranked of each normalised text is near and its copies exact.
    norm = {d["id"]: mh.normalize(d["text"]) for d in docs}
    near = {(d["kept_id"], norm[d["removed_id"]]) for d in dups if d["reason"] == "near_duplicate"}
    assert len(near) == sum(d["reason"] == "near_duplicate" for d in dups)
    for d in dups:
        same = norm[d["removed_id"]] == norm[d["kept_id"]]
        assert (d["reason"] == "exact_duplicate") == (same or (d["kept_id"], norm[d["removed_id"]]) in near and
                                                    d["reason"] != "near_duplicate"), d
    # Every kept document carries its cluster: its own id and the number of copies (1 alone).
    meta = kept.column("metadata").to_pylist()
    ids = kept.column("id").to_pylist()
    assert all(m["dedup_cluster_id"] == i and m["dedup_cluster_size"] >= 1 for m, i in zip(meta, ids))
    size_of = {i: m["dedup_cluster_size"] for m, i in zip(meta, ids)}
    per_kept: dict[str, int] = {}
    for d in dups:
        per_kept[d["kept_id"]] = per_kept.get(d["kept_id"], 1) + 1
        assert d["cluster_size"] == size_of[d["kept_id"]]
    assert all(size_of[k] == n for k, n in per_kept.items())
    assert sum(size_of.values()) == len(docs)
    d = stats["dedup"]
    per_dump = d["per_dump"]
    assert sum(v["input"] for v in per_dump.values()) == len(docs)
    assert sum(v["kept"] for v in per_dump.values()) == s.output
    assert list(per_dump) == d["dumps"]  # by crawl date
    assert sum(d["similarity_histogram"]["counts"]) == len(dups)
    assert sum((int(k) - 1) * v for k, v in d["cluster_sizes"].items()) == len(dups)
    # A re-run finds the output complete and changes nothing.
    before = (out / "duplicates.parquet").read_bytes()
    assert dedup(inputs, str(out), DedupConfig(partitions=3)) == 0
    assert (out / "duplicates.parquet").read_bytes() == before


def test_dedup_stats_show_the_chain_check_and_sizes_of_every_generation(joint, tmp_path, capsys):
    from pipelines.dedup_stats import build_report, print_report, write_report

    r = build_report(str(joint))
    stats = io.read_json(str(joint / "stats.json"))
    assert r["chain_check"]["chains_split"] == stats["counters"]["chain_split"]
    assert sum(r["similarity"]["counts"]) == len(_removed(joint)) and r["similarity"]["measure"].startswith("MinHash estimate")
    assert r["cluster_sizes"] == stats["dedup"]["cluster_sizes"]
    assert [p["removed"] for p in r["k_dump_curve"]] == sorted(p["removed"] for p in r["k_dump_curve"])
    write_report(r, str(tmp_path / "report"))
    assert {"similarity.png", "cluster_sizes.png", "report.html", "report.json"} <= set(os.listdir(tmp_path / "report"))
    print_report(r, sys.stdout)
    assert "members split off" in capsys.readouterr().out


def test_stage_components_equal_union_find(joint, ray_session, tmp_path):
    """The components are exactly those of a plain union-find over the accepted edges: on the
    labelled corpus (finished in one task's memory), and on the bundled sample by contraction
    rounds (at most 20 rows held in memory)."""
    from pipelines.dedup import dedup

    sample = tmp_path / "sample"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "dedup_corpus.py"), "sample", "--out", str(tmp_path / "in")],
                   check=True, capture_output=True)
    assert dedup([str(tmp_path / "in")], str(sample), DedupConfig(partitions=2, min_similarity=0.0, component_rows_in_memory=20)) == 0
    for out, rounds in ((joint, 0), (sample, 1)):
        ref = union_find(*_graph(out))
        t = pq.read_table(os.path.join(out, "index", "components"))
        got = dict(zip(t.column("node").to_pylist(), t.column("label").to_pylist()))
        assert got == ref
        assert io.read_json(str(out / "stats.json"))["counters"]["component_rounds"] >= rounds
    # With the chain check off every member of a component but one is removed (plain components).
    stats = io.read_json(str(sample / "stats.json"))
    assert sum(stats["dropped"].values()) == len(ref) - len(set(ref.values()))


def test_candidate_pairs_below_the_threshold_are_not_edges(joint):
    """Checked edges: of the candidate pairs (a star per shared band key, rebuilt here from the
    index's signatures), those whose estimate is below min_similarity are rejected and counted,
    the rest are the published graph."""
    from curation.dedup.signatures import signature_matrix

    nodes = pq.read_table(os.path.join(joint, "index", "nodes"))
    node = nodes.column("node").to_numpy()
    sigs = signature_matrix(nodes.column("signature"), 112)
    ranks = kp.dump_ranks(set(nodes.column("dump").to_pylist()))
    rank = np.array([ranks[d] for d in nodes.column("dump").to_pylist()])
    has = nodes.column("n_shingles").to_numpy() > 0
    keys = np.concatenate([mh.lsh_band_keys(sigs[has], 14, 8).ravel(), mh.exact_band_key(nodes.column("exact_hash").to_numpy())])
    at = np.concatenate([np.repeat(np.flatnonzero(has), 14), np.arange(len(node))])
    u, v = cand.unique_edges(*cand.star_edges(keys, rank[at], node[at]))
    pos = {n: i for i, n in enumerate(node.tolist())}
    est = mh.estimated_jaccard(sigs[[pos[x] for x in u.tolist()]], sigs[[pos[x] for x in v.tolist()]])
    gu, gv = _graph(joint)
    accepted = set(zip(gu.tolist(), gv.tolist()))
    assert accepted == {(a, b) for a, b, e in zip(u.tolist(), v.tolist(), est) if e >= 0.6}
    rejected = len(u) - len(accepted)
    stats = io.read_json(str(joint / "stats.json"))["counters"]
    assert rejected == stats["edges_rejected"] > 0 and stats["candidate_pairs"] == len(u)


def _scores(docs, out):
    i, j, jac = pairwise_jaccard([d["text"] for d in docs], min_jaccard=0.5)
    pos = {d["id"]: k for k, d in enumerate(docs)}
    cluster = np.arange(len(docs))
    for d in _removed(out):
        cluster[pos[d["removed_id"]]] = pos[d["kept_id"]]
    pair, best = {}, np.zeros(len(docs))
    for a, b, x in zip(i.tolist(), j.tolist(), jac.tolist()):
        pair[(a, b)] = pair[(b, a)] = x
        best[a], best[b] = max(best[a], x), max(best[b], x)
    dup = [a for a in range(len(docs)) if best[a] >= 0.85]
    found = sum(any(cluster[a] == cluster[b] for (x, b), jj in pair.items() if x == a and jj >= best[a] - 1e-6) for a in dup)
    ok = sum(pair.get((pos[d["removed_id"]], pos[d["kept_id"]]), 0.0) >= 0.5 for d in _removed(out))
    return found / max(1, len(dup)), ok / max(1, len(_removed(out))), len(dup)


def test_accuracy_against_true_jaccard(joint, corpus):
    """Recall: a document whose best match has J >= 0.85 shares a cluster with it; precision: the
    kept document listed for a removed one has J >= 0.5 with it. Defaults (MinHash check)."""
    docs, _ = corpus
    recall, precision, n = _scores(docs, joint)
    assert n > 150
    assert recall >= 0.99, recall
    assert precision >= 0.995, precision


def test_verify_checks_removals_by_true_jaccard_of_stripped_text(ray_session, corpus, tmp_path):
    """--verify: removed-to-kept similarity is the true Jaccard - of the text after repeated
    lines are stripped, the text the signatures were made from."""
    from curation.dedup import lines as ln
    from pipelines.dedup import dedup

    docs, inputs = corpus
    out = tmp_path / "out"
    assert dedup(inputs, str(out), DedupConfig(partitions=2, verify=True, line_repeat_min=3, line_min_chars=10)) == 0
    stats = io.read_json(str(out / "stats.json"))
    assert stats["dedup"]["similarity_histogram"]["measure"] == "true Jaccard"
    frequent = set()
    for h, n in __import__("collections").Counter(x for d in docs for x in ln.line_hashes(d["text"], 10).tolist()).items():
        if n >= 3:
            frequent.add(h)
    by_id = {d["id"]: ln.remove_repeated_lines(d["text"], frequent, 10)[0] for d in docs}
    texts = {d["id"]: d["text"] for d in docs}
    dups = _removed(out)
    assert dups
    changed = 0
    for d in dups:
        a, b = mh.shingle_sets([mh.normalize(by_id[d["removed_id"]]), mh.normalize(by_id[d["kept_id"]])], 5)
        assert d["similarity"] == pytest.approx(mh.jaccard(a, b), abs=1e-6) and d["similarity"] >= 0.6
        raw = mh.shingle_sets([mh.normalize(t) for t in (texts[d["removed_id"]], texts[d["kept_id"]])], 5)
        changed += abs(mh.jaccard(*raw) - d["similarity"]) > 1e-3
    assert changed > 10  # the stripped lines changed these pairs' similarity: it is measured after


def test_deterministic_across_partitions_and_shards(joint, corpus, tmp_path):
    from pipelines.dedup import dedup

    docs, inputs = corpus
    a, b, c = joint, tmp_path / "b", tmp_path / "c"
    # 7 partitions, every round of the chain check on the groups' tasks (the joint run: in one task).
    assert dedup(inputs, str(b), DedupConfig(partitions=7, decide_members_in_memory=0)) == 0
    assert io.read_json(str(b / "stats.json"))["counters"]["decision_rounds"] >= 2
    assert (a / "duplicates.parquet").read_bytes() == (b / "duplicates.parquet").read_bytes()
    for f in sorted(os.listdir(a / "documents")):
        assert (a / "documents" / f).read_bytes() == (b / "documents" / f).read_bytes()
    # The same documents cut into one shard per dump instead of two, partitions from the data size.
    one = tmp_path / "one-shard"
    for folder in inputs:
        t = pq.read_table(folder)
        io.write_parquet(t, str(one / os.path.basename(folder) / "all.parquet"))
    assert dedup([str(one)], str(c), DedupConfig()) == 0
    assert io.read_json(str(c / "stats.json"))["dedup"]["partitions"] == 1
    assert pq.read_table(a / "duplicates.parquet").equals(pq.read_table(c / "duplicates.parquet"))
    assert _ids(a) == _ids(c)


def test_cli_threshold_and_overrides(capsys):
    import argparse

    from pipelines import dedup as stage

    p = argparse.ArgumentParser()
    stage.add_arguments(p)
    args = p.parse_args(["--input", "x", "--output", "y", "--threshold", "0.8", "--set", "keep=oldest", "--set", "shingles.ngram=3",
                         "--min-similarity", "0.7", "--set", "dump_order=[a, b]"])
    cfg = stage.config_from_args(args)
    assert (cfg.minhash.bands, cfg.minhash.rows) == mh.bands_rows_for_threshold(0.8, 112)
    assert cfg.keep == "oldest" and cfg.shingles.ngram == 3 and cfg.min_similarity == 0.7 and cfg.dump_order == ["a", "b"]
    args = p.parse_args(["--input", "x", "--output", "y", "--bands", "20", "--rows", "5"])
    cfg = stage.config_from_args(args)
    assert (cfg.minhash.bands, cfg.minhash.rows, cfg.minhash.num_perm) == (20, 5, 100)
    from storage.errors import SettingError

    with pytest.raises(SettingError, match="partitions"):
        stage.config_from_args(p.parse_args(["--input", "x", "--output", "y", "--partitions", "0"]))
    from pipelines.cli import main

    capsys.readouterr()
    assert main(["dedup", "--input", "x", "--output", "/tmp/none", "--min-similarity", "1.5"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "dedup: min_similarity: 1.5 is not between 0 and 1"


def _docs_of(out, removed_too=False):
    files = glob.glob(os.path.join(out, "documents", "*.parquet"))
    return {f for path in files for f in pq.read_table(path, columns=["id"]).column("id").to_pylist()}


def _restored(out):
    files = glob.glob(os.path.join(out, "documents", "restored-*.parquet"))
    return {f for path in files for f in pq.read_table(path, columns=["id"]).column("id").to_pylist()}


@pytest.mark.parametrize("keep", ["newest", "oldest"])
def test_incremental_three_generations_equal_joint_run(ray_session, joint, corpus, tmp_path, keep):
    """Dumps A, B, C added one run each against one growing index remove (and keep) exactly the
    documents that A+B+C at once does: an earlier document a newer copy replaces is listed as
    retracted, one an earlier run removed for a document now removed itself is restored."""
    from pipelines.dedup import dedup

    docs, inputs = corpus
    ref = joint
    if keep == "oldest":
        ref = tmp_path / "joint"
        assert dedup(inputs, str(ref), DedupConfig(partitions=3, keep=keep)) == 0
    idx = tmp_path / "index"
    outs = [tmp_path / f"gen{k}" for k in range(len(inputs))]
    removed, kept = set(), set()
    for k, (folder, out) in enumerate(zip(inputs, outs)):
        assert dedup([folder], str(out), DedupConfig(partitions=2 + k, keep=keep), index=str(idx)) == 0
        rows = _removed(out)
        removed = (removed | {d["removed_id"] for d in rows}) - _restored(out)
        kept = (kept | _docs_of(out)) - {d["removed_id"] for d in rows}
        stats = io.read_json(str(out / "stats.json"))
        StageStats.from_dict(stats).check()
        assert stats["counters"]["restored_from_index"] == len(_restored(out))
    assert removed == {d["removed_id"] for d in _removed(ref)}
    assert kept == _ids(ref)
    retracted = [d for out in outs for d in _removed(out) if d["retracted"]]
    assert bool(retracted) == (keep == "newest")
    # Each run computed its own dump: C's run counts C's documents as input.
    n_c = sum(1 for d in docs if d["dump"] == os.path.basename(inputs[-1]))
    assert io.read_json(str(outs[-1] / "stats.json"))["input"] == n_c + len(_restored(outs[-1]))
    # Cluster sizes count every generation: the joint run's sizes of the newest kept documents.
    ref_sizes = {r["id"]: r["metadata"]["dedup_cluster_size"] for r in pq.read_table(ref / "documents").to_pylist()}
    last = pq.read_table(outs[-1] / "documents" / "part-00000.parquet").to_pylist()
    assert all(ref_sizes[r["id"]] == r["metadata"]["dedup_cluster_size"] for r in last if r["id"] in ref_sizes)


def test_index_refuses_other_settings(ray_session, corpus, tmp_path):
    from storage.errors import SettingError
    from pipelines.dedup import dedup

    _, inputs = corpus
    idx = tmp_path / "index"
    assert dedup(inputs[:1], str(tmp_path / "A"), DedupConfig(partitions=2), index=str(idx)) == 0
    with pytest.raises(SettingError, match="was built with"):
        dedup(inputs[1:], str(tmp_path / "B"), DedupConfig(minhash=mh.MinHashConfig(bands=12, rows=9)), index=str(idx))
    with pytest.raises(SettingError, match="dump_order"):
        dedup(inputs[1:], str(tmp_path / "C"), DedupConfig(dump_order=["CC-MAIN-2019-20"]), index=str(idx))


def test_repeated_lines_removed_at_string_level(ray_session, corpus, tmp_path):
    """Header/footer lines the re-crawls added go from every document; a document that was
    nothing else is dropped under its own reason, counted per dump (never as a remainder)."""
    from curation.dedup.lines import line_hashes, remove_repeated_lines
    from pipelines.dedup import dedup

    docs, inputs = corpus
    boiler = "Privacy policy · Terms of use"
    carriers = [d for d in docs if boiler in d["text"].split("\n")]
    assert len(carriers) >= 3
    # The library: counted once per document, removed where frequent (a set of hashes).
    h = line_hashes(boiler + "\n" + boiler.upper(), 10)
    assert len(h) == 1
    text, n = remove_repeated_lines(carriers[0]["text"], set(h.tolist()), 10)
    assert n == 1 and boiler not in text
    # A shard of documents without a dump, one of them only boilerplate.
    extra = tmp_path / "nodump"
    rows = [dict(carriers[0], id="only-boilerplate", text=boiler + "\n" + boiler, dump=None),
            dict([d for d in docs if d["metadata"]["title"].endswith("edit:new")][-1], id="no-dump", dump=None)]
    io.write_parquet(documents_to_table(rows), str(extra / "part-00000.parquet"))
    out = tmp_path / "out"
    assert dedup([*inputs, str(extra)], str(out), DedupConfig(partitions=2, line_repeat_min=3, line_min_chars=10)) == 0
    stats = io.read_json(str(out / "stats.json"))
    StageStats.from_dict(stats).check()
    c = stats["counters"]
    assert c["frequent_lines"] >= 1 and c["lines_removed"] >= len(carriers)
    kept = pq.read_table(out / "documents", columns=["id", "text"]).to_pydict()
    assert not any(boiler in t.split("\n") for t in kept["text"])
    assert "only-boilerplate" not in kept["id"]
    assert sum(len(t) for t in kept["text"]) > 0.3 * sum(len(d["text"]) for d in docs)
    per_dump = stats["dedup"]["per_dump"]
    assert per_dump[""]["input"] == 2 and per_dump[""]["boilerplate_only"] == 1  # no dump: one key
    for v in per_dump.values():
        assert v["input"] == v["kept"] + v["exact_duplicate"] + v["near_duplicate"] + v.get("boilerplate_only", 0)
    assert stats["dropped"]["boilerplate_only"] == sum(v.get("boilerplate_only", 0) for v in per_dump.values())


def test_unreadable_shard_is_named_and_the_rest_processed(ray_session, corpus, tmp_path):
    from pipelines.dedup import dedup

    docs, inputs = corpus
    bad = tmp_path / "broken" / "CC-MAIN-2099-01"
    bad.mkdir(parents=True)
    (bad / "part-00000.parquet").write_bytes(b"PAR1 this is not a parquet file")
    out = tmp_path / "out"
    assert dedup([*inputs, str(tmp_path / "broken")], str(out), DedupConfig(partitions=2)) == 1
    stats = io.read_json(str(out / "stats.json"))
    assert list(stats["failed_files"]) == [str(bad / "part-00000.parquet")]
    assert stats["input"] == len(docs)
    StageStats.from_dict(stats).check()


def test_write_resume_does_not_reread_its_input(ray_session, corpus, tmp_path):
    """A finished unit returns its summary from its marker: the write step of a resumed run
    does not read its input shard again (here: it is gone)."""
    from curation.dedup.removals import write_unit
    from pipelines.stage import Runner

    docs, inputs = corpus
    shard = tmp_path / "in.parquet"
    io.write_parquet(pq.read_table(os.path.join(inputs[0], "part-00000.parquet")), str(shard))
    ctx = {"work": str(tmp_path / "work"), "index": str(tmp_path / "index"), "gen": 0, "string_level": False}
    unit = {"name": "part-00000", "path": str(shard), "shard": 0, "out": str(tmp_path / "docs.parquet")}
    [first] = Runner("dedup", str(tmp_path / "out")).run(write_unit, [unit], ctx, phase="write", merge=False)
    shard.unlink()
    again = Runner("dedup", str(tmp_path / "out"))
    assert again.run(write_unit, [unit], ctx, phase="write", merge=False) == [first] and again.skipped == 1
    assert first["output"] == first["input"] == pq.read_table(tmp_path / "docs.parquet").num_rows


CAP_DRIVER = """
import sys
sys.path.insert(0, {repo!r})
from pipelines.runtime import init_ray
from pipelines.dedup import dedup
from curation.dedup import DedupConfig
from curation.dedup.minhash import MinHashConfig
init_ray()
print("ready", flush=True)
sys.stdin.readline()
print("rc", dedup({inputs!r}, {out!r}, DedupConfig(minhash=MinHashConfig(bands=32, rows=32), partitions=4)), flush=True)
"""


def test_driver_under_a_memory_cap_gives_the_same_removals(ray_session, real_docs, tmp_path):
    """A second driver, in a cgroup capped 24 MB above what it holds once connected, joins this
    session's Ray instance (which stays outside the cap) and deduplicates 22k documents whose
    index and edges take four times that (1,024-value signatures): the same removals as the
    uncapped run."""
    import ray

    from pipelines.dedup import dedup

    root = "/sys/fs/cgroup/memory"
    if not os.access(root, os.W_OK):
        pytest.skip("no writable cgroup v1 memory controller")
    docs = generate(real_docs[:60], CorpusConfig(dumps=2, seed=3, new_pages=150, sentences_per_new_page=(1, 2)))
    inputs = _write_dumps(docs, str(tmp_path / "in"))
    assert dedup(inputs, str(tmp_path / "free"), DedupConfig(minhash=mh.MinHashConfig(bands=32, rows=32), partitions=4)) == 0
    need = sum(os.path.getsize(f) for f in glob.glob(str(tmp_path / "free" / "index" / "**" / "*.parquet"), recursive=True))
    need += sum(os.path.getsize(f) for f in glob.glob(str(tmp_path / "free" / "graph" / "*.parquet")))
    margin = 24 << 20
    cg = f"{root}/dedup-capped-driver-{os.getpid()}"
    os.mkdir(cg)
    try:
        env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address, PYTHONPATH=str(REPO))
        code = CAP_DRIVER.format(repo=str(REPO), inputs=inputs, out=str(tmp_path / "capped"))
        p = subprocess.Popen(["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh", sys.executable, "-c", code],
                             env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        assert p.stdout.readline().strip() == "ready", p.stderr.read()[-3000:]
        time.sleep(0.5)
        base = int(open(f"{cg}/memory.usage_in_bytes").read())
        with open(f"{cg}/memory.limit_in_bytes", "w") as f:
            f.write(str(base + margin))
        out, err = p.communicate("go\n", timeout=600)
        peak = int(open(f"{cg}/memory.max_usage_in_bytes").read())
        assert p.returncode == 0 and "rc 0" in out, (p.returncode, err[-3000:])
    finally:
        for pid in open(f"{cg}/cgroup.procs").read().split():
            with open(f"{root}/cgroup.procs", "w") as f:
                f.write(pid)
        os.rmdir(cg)
    assert need > 3 * margin, (need, margin)  # the index and edges the capped driver never loaded
    assert peak <= base + margin
    assert (tmp_path / "capped" / "duplicates.parquet").read_bytes() == (tmp_path / "free" / "duplicates.parquet").read_bytes()
    assert _ids(tmp_path / "capped") == _ids(tmp_path / "free")
