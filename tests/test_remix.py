"""Remix on the real sample: domains, capped quotas, the mixture within 1% of its targets,
accounting, and byte-identical shards whatever the input sharding and number of workers."""

from __future__ import annotations

import glob
import hashlib
import json
import os

import pyarrow.parquet as pq
import pytest

from curation.remix import DomainAssigner, RemixConfig, domain_quotas
from curation.schema import documents_to_table
from curation.sources import read_dolma_jsonl
from tests.conftest import SAMPLE

WEIGHTS = {"encyclopedia": 0.3, "news": 0.2, "science": 0.1, "other": 0.4}


@pytest.fixture(scope="module")
def sample_docs() -> list[dict]:
    docs = []
    for f in sorted(glob.glob(str(SAMPLE / "text" / "*.jsonl.gz"))):
        with open(f, "rb") as fh:
            docs += list(read_dolma_jsonl(fh, f))
    return docs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sample_docs):
    """The sample as three shards and as one."""
    from storage import io

    root = tmp_path_factory.mktemp("remix_in")
    n = len(sample_docs)
    for i, (a, b) in enumerate([(0, n // 3), (n // 3, 2 * n // 3), (2 * n // 3, n)]):
        io.write_parquet(documents_to_table(sample_docs[a:b]), str(root / "three" / f"part-{i}.parquet"))
    io.write_parquet(documents_to_table(sample_docs), str(root / "one" / "all.parquet"))
    return root


def test_domains_from_urls_and_keywords():
    assign = DomainAssigner(RemixConfig())
    assert assign("https://en.wikipedia.org/wiki/Tea", "Tea is a drink.") == "encyclopedia"
    assert assign("https://github.com/ray-project/ray", "Ray is a framework.") == "code"
    assert assign("https://arxiv.org/abs/2401.02954", "We study scaling laws.") == "science"
    assert assign("https://www.reuters.com/world/x", "A story.") == "news"
    assert assign("https://android.stackexchange.com/questions/1/x", "How do I?") == "forum"
    assert assign("https://example.com/shop/teapot", "A teapot.") == "commerce"
    code = "def main():\n    import os\n    return 1\n# pip install ray\nconst x = () => 1;"
    assert assign("https://blog.example.com/post", code) == "code"
    assert assign("https://example.com/", "Nothing in particular here.") == "other"


def test_quotas_fill_to_targets_under_the_epoch_cap():
    sizes = {"a": 1000.0, "b": 10.0, "c": 1000.0}
    q = domain_quotas(sizes, {"a": 0.3, "b": 0.3, "c": 0.4}, total=2010.0, max_epochs=4.0)
    assert q["b"] == 40.0  # capped at 4 epochs
    assert abs(sum(q.values()) - 2010.0) < 1e-6
    assert abs(q["a"] / q["c"] - 0.3 / 0.4) < 1e-9  # the shortfall is shared by weight
    q = domain_quotas({"a": 100.0, "b": 10.0, "c": 1000.0}, {"a": 0.3, "b": 0.3, "c": 0.4}, 1110.0, 4.0)
    assert (q["a"], q["b"], q["c"]) == (400.0, 40.0, 670.0)  # two capped, the rest to c
    assert domain_quotas({"a": 5.0, "z": 7.0}, {"a": 1.0}, 12.0, 4.0) == {"a": 12.0, "z": 0.0}


def test_rehydration_weights_are_fineweb2s_table_and_weight_1_is_the_plain_remix():
    import numpy as np

    from curation.remix import copy_bins, rehydration_weights, unit_bins

    sizes = [None, 1, 2, 3, 4, 5, 99, 100, 999, 1000, 5000]
    assert rehydration_weights(sizes, RemixConfig().rehydrate_weights).tolist() == [1, 1, 2, 3, 3, 5, 5, 8, 8, 1, 1]
    ids = [f"doc-{i}" for i in range(50)]
    rows, bins = copy_bins(3, ids, np.ones(50, dtype=np.int64))
    assert rows.tolist() == list(range(50)) and bins.tolist() == unit_bins(3, ids).tolist()
    rows, bins = copy_bins(3, ids, np.full(50, 3, dtype=np.int64))
    assert rows.tolist() == [i for i in range(50) for _ in range(3)] and (bins[::3] == unit_bins(3, ids)).all()
    assert len(set(bins.tolist())) > 140  # the extra copies draw numbers of their own


def _digests(folder: str) -> dict[str, str]:
    return {os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest() for p in sorted(glob.glob(os.path.join(folder, "data", "shard-*.parquet")))}


def _remix_in_process(folder, out, cfg: RemixConfig) -> str:
    """The remix's library steps in this process, without Ray: scan, plan, sample, shuffle."""
    from curation.remix.plan import make_plan, merge_scans
    from curation.remix.shards import sample_shard, scan_shard, shuffle_bucket

    files = sorted(glob.glob(os.path.join(folder, "*.parquet")))
    plan = make_plan(merge_scans(DomainAssigner(cfg).names, [scan_shard(f, cfg) for f in files]), cfg)
    pieces = os.path.join(out, "pieces")
    stats = [sample_shard(f, i, cfg, plan.domains, plan.shards, pieces) for i, f in enumerate(files)]
    for b in range(plan.shards):
        shuffle_bucket(pieces, b, list(range(len(files))), os.path.join(out, "data", f"shard-{b:05d}.parquet"))
    assert sum(s.input for s in stats) == 690 == sum(s.output + sum(s.dropped.values()) for s in stats)
    return out


@pytest.mark.parametrize("unit", ["documents", "bytes"])
def test_remix_mixture_accounting_and_determinism(ray_session, inputs, tmp_path, unit):
    from curation.schema import TEXT_SHARD_SCHEMA
    from pipelines.remix import remix

    cfg = RemixConfig(weights=dict(WEIGHTS), unit=unit, seed=7, shard_target_bytes=400_000)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert remix([str(inputs / "three")], a, cfg, workers=2) == 0
    assert remix([str(inputs / "one")], b, cfg, workers=1) == 0
    # The same seed gives the same shards, however the input was split and run, with Ray or without.
    assert _digests(a) == _digests(b) and len(_digests(a)) >= 5
    assert _digests(_remix_in_process(str(inputs / "three"), str(tmp_path / "library"), cfg)) == _digests(a)

    m = json.load(open(os.path.join(a, "manifest.json")))
    for d, target in WEIGHTS.items():
        got = m["domains"][d]
        assert abs(got["achieved_share"] - target) <= 0.01, (d, got)
        assert abs(got["achieved_share"] - got["planned_share"]) <= 0.01, (d, got)
        assert got["epochs"] <= cfg.max_epochs
    assert m["domains"]["science"]["epochs"] > 1 > m["domains"]["other"]["epochs"]  # up and down
    assert m["domains"]["code"]["documents_after"] == 0  # weight 0

    stats = json.load(open(os.path.join(a, "stats.json")))
    assert stats["input"] == 690 == stats["output"] + sum(stats["dropped"].values())
    assert stats["dropped"]["remix_zero_weight"] == sum(m["domains"][d]["documents_before"] for d in ("code", "forum", "commerce"))

    shards = [pq.read_table(os.path.join(a, s["path"])) for s in m["shards"]]
    assert all(t.schema == TEXT_SHARD_SCHEMA for t in shards)
    assert sum(t.num_rows for t in shards) == m["documents_after"]
    sizes = [s["bytes"] for s in m["shards"]]
    assert max(sizes) < 3 * 400_000
    # Globally shuffled: domains interleave within a shard.
    doms = shards[0].column("domain").to_pylist()
    assert sum(x != y for x, y in zip(doms, doms[1:])) > len(doms) / 3
    # Up-sampled documents repeat with their epoch number, never more than the cap allows.
    ids = [i for t in shards for i in t.column("id").to_pylist()]
    assert max(ids.count(i) for i in set(ids)) <= cfg.max_epochs

    # A complete output is skipped on re-run.
    before = _digests(a)
    assert remix([str(inputs / "three")], a, cfg) == 0
    assert _digests(a) == before


def test_rehydration_writes_duplicated_documents_by_cluster_size(ray_session, sample_docs, tmp_path):
    """Real pages re-crawled over four dumps, deduplicated by the dedup stage (which records each
    kept document's cluster size); remix with ``rehydrate=true`` writes every kept document as
    many times as FineWeb-2's table gives its cluster size, and within the input's budget
    (scale 1) shifts copies from singletons to documents that had duplicates."""
    from collections import Counter

    from curation.dedup import DedupConfig
    from curation.dedup.corpus import CorpusConfig, generate
    from curation.remix import rehydration_weights
    from pipelines.dedup import dedup
    from pipelines.remix import remix
    from storage import io

    docs = generate(sample_docs[:120], CorpusConfig(dumps=4, seed=3, new_pages=0.1))
    io.write_parquet(documents_to_table(docs), str(tmp_path / "crawl" / "all.parquet"))
    assert dedup([str(tmp_path / "crawl")], str(tmp_path / "dedup"), DedupConfig()) == 0
    kept = pq.read_table(tmp_path / "dedup" / "documents")
    sizes = kept.column("metadata").combine_chunks().field("dedup_cluster_size").to_pylist()
    by_size = Counter(1 if s is None else s for s in sizes)
    assert by_size[1] > 0 and sum(n for s, n in by_size.items() if s >= 2) > 20, by_size

    one_domain = dict(domains=[], weights={"other": 1.0}, unit="documents", shard_target_docs=200, rehydrate=True)
    weights = rehydration_weights(sizes, RemixConfig().rehydrate_weights)
    exact = RemixConfig(**one_domain, scale=float(weights.sum() / len(weights)))
    assert remix([str(tmp_path / "dedup" / "documents")], str(tmp_path / "exact"), exact) == 0
    written = Counter(pq.read_table(tmp_path / "exact" / "data", columns=["id"]).column("id").to_pylist())
    assert [written[i] for i in kept.column("id").to_pylist()] == weights.tolist()
    table = json.load(open(tmp_path / "exact" / "manifest.json"))["rehydration"]
    assert table["enabled"] and table["by_cluster_size"]["2"] == {"weight": 2, "documents": by_size[2], "copies_written": 2 * by_size[2],
                                                                  "copies_per_document": 2.0 if by_size[2] else None}

    budget = RemixConfig(**one_domain)  # as many documents out as in: rehydration only redistributes
    assert remix([str(tmp_path / "dedup" / "documents")], str(tmp_path / "budget"), budget) == 0
    m = json.load(open(tmp_path / "budget" / "manifest.json"))
    assert abs(m["documents_after"] - kept.num_rows) <= 2
    rows = m["rehydration"]["by_cluster_size"]
    per_doc = [rows[k]["copies_per_document"] for k in ("1", "2", "3-4")]
    assert per_doc[0] < 1 and per_doc == sorted(per_doc) and per_doc[2] > 2 * per_doc[0], rows
