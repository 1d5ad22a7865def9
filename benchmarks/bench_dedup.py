"""`make bench-dedup`: accuracy against computed truth, signature speed beside datasketch, and
the whole stage at 100k/200k/400k documents - all measured in this run, side by side.

    python benchmarks/bench_dedup.py --corpus build/dedup/corpus [--parts accuracy,speed,scale]
        [--scale 100000,200000,400000]

accuracy: runs the stage on the labelled corpus (`make dedup-corpus`), with and without
          verification, and prints precision/recall against the true Jaccard on word 5-grams,
          beside the theoretical LSH curve 1-(1-s^r)^b for the chosen bands and rows.
speed:    documents/s on one core of this project's signatures and of datasketch.MinHash
          (update_batch, same permutations, same shingles), alternating, best of 3 rounds.
scale:    the whole stage in a fresh process per size: wall time, documents/s, peak memory
          per worker and of the driver, and the cost per document relative to the smallest size.
incremental: the newest dump of the 100k corpus against the index of the earlier three, beside
          all four at once (CPU per document).
cc:       the single-node connected-components step alone on synthetic int64 edge arrays up to
          50M documents: time and peak memory (what one machine's driver can cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curation.dedup import DedupConfig  # noqa: E402
from curation.dedup import minhash as mh  # noqa: E402
from storage import io  # noqa: E402

BUILD = REPO / "build" / "dedup"


def accuracy(corpus: Path) -> None:
    import pyarrow.parquet as pq

    from pipelines.dedup import dedup

    order = pq.read_table(corpus / "order.parquet").to_pydict()
    truth = pq.read_table(corpus / "truth.parquet").to_pydict()
    pos = {x: i for i, x in enumerate(order["id"])}
    n = len(order["id"])
    pair_j: dict[tuple[int, int], float] = {}
    best = np.zeros(n)
    for a, b, j in zip(truth["i"], truth["j"], truth["jaccard"]):
        pair_j[(a, b)] = pair_j[(b, a)] = j
        best[a], best[b] = max(best[a], j), max(best[b], j)
    cfg = DedupConfig()
    b, r = cfg.minhash.bands, cfg.minhash.rows
    print(f"\n== accuracy: {n:,} documents in {len(set(order['dump']))} dumps, {b} bands x {r} rows, word 5-grams ==")
    print(f"   documents whose best match has J >= 0.8: {(best >= 0.8).sum():,}")
    dumps = sorted(str(p) for p in corpus.iterdir() if p.is_dir())
    rows = []
    for verify in (False, True):
        out = BUILD / f"bench-accuracy-{'verify' if verify else 'lsh'}"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        dedup(dumps, str(out), DedupConfig(verify=verify))
        secs = time.perf_counter() - t
        dup = pq.read_table(out / "duplicates.parquet").to_pydict()
        cluster = np.arange(n)
        for rem, kept in zip(dup["removed_id"], dup["kept_id"]):
            cluster[pos[rem]] = pos[kept]
        # Recall: a document whose best match has J >= 0.8 shares a cluster with that match.
        best_match = {}
        for (a, c), j in pair_j.items():
            if j >= best_match.get(a, (0, -1))[0]:
                best_match[a] = (j, c)
        pos80 = [a for a in range(n) if best[a] >= 0.8]
        hit = sum(cluster[a] == cluster[best_match[a][1]] for a in pos80)
        # Precision: a removed document has J >= 0.6 with the kept document it was removed for.
        good = sum(pair_j.get((pos[rem], pos[kept]), 0.0) >= 0.6 for rem, kept in zip(dup["removed_id"], dup["kept_id"]))
        stats = io.read_json(str(out / "stats.json"))
        rows.append((("LSH + verification" if verify else "LSH only"), len(dup["removed_id"]), hit / max(1, len(pos80)),
                     good / max(1, len(dup["removed_id"])), stats["counters"].get("verify_rejected_edges", 0), secs))
    print(f"   {'mode':<20} {'removed':>8} {'recall@0.8':>11} {'precision@0.6':>14} {'pairs rejected':>15} {'wall s':>7}")
    for name, removed, rec, prec, rej, secs in rows:
        print(f"   {name:<20} {removed:>8,} {rec:>11.4f} {prec:>14.4f} {rej:>15,} {secs:>7.1f}")
    print("   targets: recall >= 0.95, precision >= 0.99")
    # Theoretical S-curve against what the corpus shows: share of true pairs (by J bucket)
    # whose documents ended up in one cluster (LSH only run).
    out = BUILD / "bench-accuracy-lsh"
    dup = pq.read_table(out / "duplicates.parquet").to_pydict()
    cluster = np.arange(n)
    for rem, kept in zip(dup["removed_id"], dup["kept_id"]):
        cluster[pos[rem]] = pos[kept]
    print(f"\n   {'Jaccard':<10} {'P(candidate) theory':>20} {'pairs':>8} {'same cluster':>13}")
    edges = np.arange(0.5, 1.0001, 0.05)
    arr = np.array([(a, c, j) for (a, c), j in pair_j.items() if a < c]) if pair_j else np.zeros((0, 3))
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (arr[:, 2] >= lo) & (arr[:, 2] < hi + (1e-9 if hi >= 1 else 0))
        k = int(sel.sum())
        same = (cluster[arr[sel, 0].astype(int)] == cluster[arr[sel, 1].astype(int)]).mean() if k else float("nan")
        mid = (lo + hi) / 2
        print(f"   {lo:.2f}-{hi:.2f}  {float(mh.candidate_probability(mid, b, r)):>20.3f} {k:>8,} {same:>13.3f}")


def speed(corpus: Path, n_docs: int = 3000) -> None:
    import pyarrow.parquet as pq
    import xxhash
    from datasketch import MinHash

    texts = []
    for f in sorted(corpus.glob("*/*.parquet")):
        texts.extend(pq.read_table(f, columns=["text"]).column("text").to_pylist())
    texts = texts[:n_docs]
    cfg = DedupConfig()
    K, seed, ng = cfg.minhash.num_perm, cfg.minhash.seed, cfg.shingles.ngram
    perm = np.array(mh.permutations(K, seed))

    def norm():
        return [mh.normalize(t, cfg.shingles) for t in texts]

    normalized = norm()

    def ours():
        out = []
        for lo in range(0, len(normalized), 2000):
            h, c = mh.shingle_hashes(normalized[lo : lo + 2000], ng)
            out.append(mh.minhash_signatures(h, c, K, seed))
        return np.concatenate(out)

    def datasketch_xxh():
        out = []
        for s in normalized:
            m = MinHash(num_perm=K, hashfunc=xxhash.xxh32_intdigest, permutations=perm, scheme="affine32")
            m.update_batch([x.encode("utf-8") for x in mh.shingles(s, ng)])
            out.append(m.hashvalues)
        return out

    best = {"normalise": 1e9, "ours": 1e9, "datasketch": 1e9}
    for _ in range(3):  # alternate so both see the same machine load
        for name, fn in (("normalise", norm), ("ours", ours), ("datasketch", datasketch_xxh)):
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    sig = ours()
    agree = 0
    for i, s in enumerate(normalized[:200]):
        m = MinHash(num_perm=K, seed=seed, hashfunc=mh.shingle_hash)
        m.update_batch(mh.shingles(s, ng))
        agree += bool(np.array_equal(m.hashvalues, sig[i]))
    n = len(texts)
    shingles = sum(max(0, len(s.split(" ")) - ng + 1) if s else 0 for s in normalized)
    print(f"\n== signature speed, one core: {n:,} documents, {shingles:,} shingles, {K} permutations ==")
    print(f"   {'':<44} {'docs/s':>9} {'ratio':>7}")
    d_ds = n / best["datasketch"]
    d_ours = n / best["ours"]
    print(f"   {'datasketch MinHash.update_batch (xxh32 shingles)':<44} {d_ds:>9,.0f} {1.0:>7.2f}")
    print(f"   {'this project (vectorised shingles + MinHash)':<44} {d_ours:>9,.0f} {d_ours / d_ds:>7.2f}")
    n_ds = n / (best["datasketch"] + best["normalise"])
    n_ours = n / (best["ours"] + best["normalise"])
    print(f"   {'with normalisation (NFKC, casefold, tokens)':<44}")
    print(f"   {'  datasketch':<44} {n_ds:>9,.0f} {1.0:>7.2f}")
    print(f"   {'  this project':<44} {n_ours:>9,.0f} {n_ours / n_ds:>7.2f}")
    print(f"   signatures equal to datasketch.MinHash(hashfunc=shingle_hash, seed={seed}): {agree}/200")


def scale(sizes: list[int]) -> None:
    print("\n== the whole stage, fresh process per size (4 dumps, default settings) ==")
    rows = []
    for size in sizes:
        src = BUILD / f"scale-{size // 1000}k"
        if not (src / "order.parquet").exists():
            subprocess.run([sys.executable, str(REPO / "benchmarks" / "dedup_corpus.py"), "corpus", "--out", str(src),
                            "--docs", str(size), "--no-truth"], check=True, stdout=subprocess.DEVNULL)
        out = BUILD / f"bench-scale-{size // 1000}k"
        shutil.rmtree(out, ignore_errors=True)
        dumps = sorted(str(p) for p in src.iterdir() if p.is_dir())
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipelines", "dedup", "--input", *dumps, "--output", str(out)],
                       check=True, cwd=REPO, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        st = json.loads((out / "stats.json").read_text())
        c = st["counters"]
        cpu = sum(v for k, v in c.items() if k.startswith("cpu_seconds_"))
        rows.append((st["input"], wall, c["seconds"], cpu, c["peak_worker_rss_mb"], c["driver_peak_rss_mb"],
                     st["dropped"], c["candidate_edges"]))
    print(f"   {'documents':>10} {'wall s':>8} {'stage s':>8} {'docs/s':>8} {'CPU s':>8} {'CPU ms/doc':>10} {'vs first':>9} "
          f"{'worker MB':>10} {'driver MB':>10} {'removed':>9} {'edges':>9}")
    base = None
    for n, wall, secs, cpu, wrss, drss, dropped, edges in rows:
        per = cpu / n * 1000
        base = base or per
        print(f"   {n:>10,} {wall:>8.1f} {secs:>8.1f} {n / secs:>8.0f} {cpu:>8.1f} {per:>10.3f} {per / base:>9.2f} "
              f"{wrss:>10.0f} {drss:>10.0f} {sum(dropped.values()):>9,} {edges:>9,}")
    print("   (stage s: from stats.json, without interpreter start; CPU s: all tasks and the driver, which does\n"
          "    not depend on how busy the machine is; 'vs first': CPU per document relative to the smallest\n"
          "    size - 1.0 is linear)")


_CC_CHILD = """
import resource, sys, time
import numpy as np
sys.path.insert(0, {repo!r})
from curation.dedup.clusters import connected_components
docs, edges = {docs}, {edges}
rng = np.random.default_rng(0)
# Node ids as the stage makes them (shard << 28 | row, 1M-document shards); duplicates pair up
# with documents anywhere in the corpus.
a = rng.integers(0, docs, edges)
b = rng.integers(0, docs, edges)
enc = lambda x: ((x // 1_000_000) << 28) | (x % 1_000_000)
u, v = enc(a), enc(b)
del a, b
t = time.perf_counter()
nodes, labels = connected_components(u, v)
secs = time.perf_counter() - t
print(len(nodes), int(labels.max()) + 1, secs, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def cc(sizes: list[tuple[int, int]]) -> None:
    """The single-node clustering step alone on synthetic edge arrays, in a fresh process each."""
    print("\n== connected components (driver step) on int64 edge arrays, fresh process per size ==")
    print(f"   {'documents':>12} {'edges':>12} {'nodes in edges':>15} {'clusters':>11} {'seconds':>8} {'peak MB':>8} {'bytes/edge':>11}")
    for docs, edges in sizes:
        code = _CC_CHILD.format(repo=str(REPO), docs=docs, edges=edges)
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
        nodes, comps, secs, mb = int(out[0]), int(out[1]), float(out[2]), float(out[3])
        print(f"   {docs:>12,} {edges:>12,} {nodes:>15,} {comps:>11,} {secs:>8.1f} {mb:>8,.0f} {mb * 2**20 / edges:>11.0f}")


def incremental(size: int = 100_000) -> None:
    """The newest dump against the index of the earlier ones, beside all dumps at once."""
    src = BUILD / f"scale-{size // 1000}k"
    dumps = sorted(str(p) for p in src.iterdir() if p.is_dir())
    runs = [("all dumps at once", [dumps], "joint"), ("earlier dumps (index)", [dumps[:-1]], "inc"),
            ("newest dump vs index", [dumps[-1:]], "inc")]
    print(f"\n== incremental: the newest dump against the index of the earlier ones ({src.name}) ==")
    print(f"   {'run':<24} {'documents':>10} {'CPU s':>8} {'CPU ms/doc':>11} {'removed':>9} {'retracted':>10}")
    for k, (name, inputs, tag) in enumerate(runs):
        out = BUILD / f"bench-inc-{k}"
        shutil.rmtree(out, ignore_errors=True)
        index = BUILD / f"bench-inc-index-{tag}"
        if k < 2:
            shutil.rmtree(index, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pipelines", "dedup", "--input", *inputs[0], "--output", str(out),
                        "--index", str(index)], check=True, cwd=REPO, stderr=subprocess.DEVNULL)
        st = json.loads((out / "stats.json").read_text())
        cpu = sum(v for key, v in st["counters"].items() if key.startswith("cpu_seconds_"))
        print(f"   {name:<24} {st['input']:>10,} {cpu:>8.1f} {cpu / st['input'] * 1000:>11.3f} "
              f"{sum(st['dropped'].values()):>9,} {st['counters'].get('retracted_from_index', 0):>10,}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(BUILD / "corpus"))
    ap.add_argument("--parts", default="speed,accuracy,scale,incremental,cc")
    ap.add_argument("--scale", default="100000,200000,400000")
    ap.add_argument("--cc", default="1000000,10000000,50000000", help="documents for the clustering-step sizes (edges = half)")
    a = ap.parse_args()
    parts = a.parts.split(",")
    corpus = Path(a.corpus)
    if "speed" in parts:
        speed(corpus)
    if "accuracy" in parts:
        accuracy(corpus)
    if "scale" in parts:
        scale([int(x) for x in a.scale.split(",")])
    if "incremental" in parts:
        incremental()
    if "cc" in parts:
        cc([(int(d), int(d) // 2) for d in a.cc.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
