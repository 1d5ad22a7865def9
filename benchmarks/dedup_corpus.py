"""Build dedup inputs from real documents: the bundled sample as shards, or a labelled multi-dump
corpus (`make dedup-corpus`) with the true Jaccard of every pair of documents.

    python benchmarks/dedup_corpus.py sample --out build/dedup/sample-text
    python benchmarks/dedup_corpus.py corpus --out build/dedup/corpus [--docs 100000] [--dumps 4]
    python benchmarks/dedup_corpus.py hostile --out build/dedup/hostile [--scale 1.0]

Writes `<out>/<dump>/part-00000.parquet` (DOCUMENT_SCHEMA) per dump; `corpus` also writes
`<out>/truth.parquet` (i, j, jaccard for every pair >= 0.5, indices into `<out>/order.parquet`);
`hostile` writes the shapes of `curation.dedup.corpus.HostileConfig` (a 1M-page template cluster,
a 100k-page drifting chain, 200k exact copies, 50k documents of 0-3 words, a 10k-member cluster
in every dump, the real pages), each document's shape in `metadata.title`.
Never writes into data/ or ../shared.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curation.dedup.corpus import CorpusConfig, HostileConfig, generate_dumps, hostile_documents, pairwise_jaccard  # noqa: E402
from curation.schema import documents_to_table  # noqa: E402
from curation.sources import read_dolma_jsonl  # noqa: E402
from storage import io  # noqa: E402

SOURCES = [REPO / "data" / "sample" / "text", REPO.parent / "shared" / "data" / "text"]
ROWS_PER_SHARD = 20_000


def real_documents() -> list[dict]:
    """The real documents of data/sample/text and ../shared/data/text, each file once."""
    seen, docs = set(), []
    for folder in SOURCES:
        for f in sorted(glob.glob(str(folder / "*.jsonl.gz"))):
            if os.path.basename(f) in seen:
                continue
            seen.add(os.path.basename(f))
            with open(f, "rb") as fh:
                docs.extend(read_dolma_jsonl(fh, os.path.basename(f)))
    return docs


def write_by_dump(docs: list[dict], out: str) -> dict[str, int]:
    by: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        by[d["dump"]].append(d)
    for dump, rows in sorted(by.items()):
        for k in range(0, len(rows), ROWS_PER_SHARD):
            io.write_parquet(documents_to_table(rows[k : k + ROWS_PER_SHARD]), io.join(out, dump, f"part-{k // ROWS_PER_SHARD:05d}.parquet"))
    return {d: len(r) for d, r in sorted(by.items())}


def build_corpus(out: str, docs_target: int | None, dumps: int, seed: int, truth: bool,
                 sentences: tuple[int, int] | None = None) -> dict[str, int]:
    real = real_documents()
    cfg = CorpusConfig(dumps=dumps, seed=seed)
    if sentences:
        cfg.sentences_per_new_page = sentences
    if docs_target:
        # Each dump adds new_pages*len(real) pages; re-crawls add about recrawl * pages-so-far.
        per_dump = docs_target / dumps
        cfg.new_pages = max(0.1, per_dump / len(real) / (1 + cfg.recrawl * (dumps - 1) / 2))
    counts: dict[str, int] = {}
    order: dict[str, list] = {"id": [], "dump": [], "lineage": []}
    texts: list[str] = []
    for dump, docs in generate_dumps(real, cfg):  # dump by dump: a large corpus never sits in memory whole
        counts.update(write_by_dump(docs, out))
        order["id"] += [d["id"] for d in docs]
        order["dump"] += [d["dump"] for d in docs]
        order["lineage"] += [d["metadata"]["title"] for d in docs]
        if truth:
            texts += [d["text"] for d in docs]
    # The order in which dedup sees the documents does not matter; truth rows index `order`.
    io.write_parquet(pa.table(order), io.join(out, "order.parquet"))
    if truth:
        i, j, jac = pairwise_jaccard(texts)
        io.write_parquet(pa.table({"i": i, "j": j, "jaccard": jac.astype("float32")}), io.join(out, "truth.parquet"))
    return counts


def build_hostile(out: str, scale: float, seed: int) -> dict[str, int]:
    """The hostile shapes, written chunk by chunk (a shard per chunk): never all in memory."""
    counts: dict[str, int] = defaultdict(int)
    parts: dict[str, int] = defaultdict(int)
    for dump, docs in hostile_documents(real_documents(), HostileConfig(scale=scale, seed=seed), chunk=ROWS_PER_SHARD):
        io.write_parquet(documents_to_table(docs), io.join(out, dump, f"part-{parts[dump]:05d}.parquet"))
        parts[dump] += 1
        counts[dump] += len(docs)
    return dict(sorted(counts.items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sample", help="data/sample/text as parquet shards, one folder per dump")
    s.add_argument("--out", default="build/dedup/sample-text")
    c = sub.add_parser("corpus", help="labelled multi-dump corpus with true Jaccard")
    c.add_argument("--out", default="build/dedup/corpus")
    c.add_argument("--docs", type=int, default=None, help="about this many documents (default: from the real ones)")
    c.add_argument("--dumps", type=int, default=4)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--no-truth", action="store_true", help="skip the all-pairs Jaccard (large corpora)")
    c.add_argument("--sentences", help="sentences per new page as MIN,MAX (default 8,40; the scale corpora use 4,12)")
    h = sub.add_parser("hostile", help="the hostile shapes: template cluster, drifting chain, copies, tiny documents")
    h.add_argument("--out", default="build/dedup/hostile")
    h.add_argument("--scale", type=float, default=1.0, help="multiply every shape's size (default 1.0: 1.36M documents)")
    h.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.what == "sample":
        counts = write_by_dump(real_documents(), a.out)
    elif a.what == "hostile":
        counts = build_hostile(a.out, a.scale, a.seed)
    else:
        counts = build_corpus(a.out, a.docs, a.dumps, a.seed, not a.no_truth,
                              tuple(int(x) for x in a.sentences.split(",")) if a.sentences else None)
    for dump, n in counts.items():
        print(f"{dump:<20} {n:>8,} documents -> {a.out}/{dump}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
