"""`make bench-dedup`: dedup measured side by side in one run - quality beside cost.

    python benchmarks/bench_dedup.py --corpus build/dedup/corpus-40k [--parts speed,accuracy,scale,incremental,cc,hostile]
        [--scale 100000,400000,1600000] [--cc 50000000,200000000] [--hostile-scale 1.0] [--code DIR]

speed:       signatures per second on one core, this project's beside datasketch.MinHash.
accuracy:    on the labelled corpus (`make dedup-corpus`, truth = true Jaccard of every pair), the
             stage with its defaults, with --verify, plain connected components (--min-similarity
             0), a datasketch MinHashLSH one-pass baseline, and datatrove 0.10's four MinHash steps
             (MinhashDedupSignature, -Buckets, -Cluster, -Filter on LocalPipelineExecutor, 14 x 8
             buckets, word 5-grams, 64-bit hashes, 2 workers): documents removed, recall (a
             document whose best match has J >= 0.85 ends in the same cluster as it), precision
             (the kept document listed for a removed one has J >= 0.5), CPU per document (every
             process of the run in a cpuacct cgroup; Ray's start-up, measured on a one-document
             input, subtracted from the stage's runs). datatrove 0.10.1 hashes `str` with xxhash,
             which xxhash 4 refuses: its two hash functions are replaced, for that run only, by
             the same xxhash functions over the UTF-8 bytes (what xxhash 3 did with a str).
scale:       the whole stage at three sizes in a fresh process each: CPU per document, the
             driver's peak RSS (the driver process alone) and the largest task's.
incremental: the newest dump against the index of the earlier ones, beside all dumps at once.
cc:          the component step alone on synthetic edges (edges = documents / 2) as Ray tasks on
             the local instance: steps (phases), edge rows written, the tasks' CPU, the whole
             process tree's CPU, wall time, the largest task's peak, beside the single-process
             step (scipy; 12 GB at 200M documents).
hostile:     the hostile web's shapes (`dedup_corpus.py hostile`: a 1M-page template cluster with
             2% of words changed per page, a 100k-page drifting chain, 200k exact copies, 50k
             documents of 0-3 words, a 10k-member cluster in every dump, the real pages) beside
             the plain 1.6M-document corpus: per phase CPU, wall time and the largest task's
             peak RSS, rounds; every removal of a seeded sample of 20,000 checked against the
             true Jaccard of its kept document (>= 0.5), and every removal of a chain member.

--code DIR runs another checkout's stage beside this one in accuracy, scale, hostile and cc
(the "before" of a change). Figures are written with benchmarks/results.py to
benchmarks/results/dedup-<part>.json. CPU is measured with a cpuacct cgroup over the whole
process tree (MEASURING.md); without one (not root, no cgroup v1) the figures fall back to the
children's rusage and say so.
"""

from __future__ import annotations

import argparse
import glob as globmod
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.results import record  # noqa: E402
from curation.dedup import DedupConfig  # noqa: E402
from curation.dedup import minhash as mh  # noqa: E402

BUILD = REPO / "build" / "dedup"
CORPUS = BUILD / "corpus-40k"  # the labelled corpus (--corpus)
CPUACCT = Path("/sys/fs/cgroup/cpuacct")
FIGURES: dict[str, dict] = {}  # part -> figures, recorded at the end of each part


# ---- measuring ------------------------------------------------------------------------------


def _hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def measured(cmd: list[str], tag: str, code: Path = REPO, quiet: bool = True) -> tuple[float, float, str, float]:
    """Run ``cmd`` in checkout ``code`` (its own modules first on the path, Ray's workers too) in
    a cpuacct cgroup of its own: (CPU seconds of every process, wall, how, the peak RSS of the
    command's own process in MB - VmHWM polled, the driver alone)."""
    cg = CPUACCT / f"dedup-bench-{tag}-{os.getpid()}"
    try:
        cg.mkdir()
        how, cmd = "cgroup", ["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh", *cmd]
    except OSError:
        how, cg = "rusage", None
    env = dict(os.environ, PYTHONPATH=str(code))
    t, r0 = time.perf_counter(), os.times()
    out = subprocess.DEVNULL if quiet else None
    p = subprocess.Popen(cmd, cwd=code, env=env, stdout=out, stderr=out)
    peak = 0.0
    while p.poll() is None:  # sh execs the command: one pid (nice execs too)
        peak = max(peak, _hwm_mb(p.pid))
        time.sleep(0.2)
    wall, r1 = time.perf_counter() - t, os.times()
    if p.returncode:
        raise subprocess.CalledProcessError(p.returncode, cmd)
    if cg is None:
        return (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system), wall, how, peak
    try:
        time.sleep(1)
        cpu = int((cg / "cpuacct.usage").read_text()) / 1e9
    finally:
        for pid in (cg / "cgroup.procs").read_text().split():
            try:
                (CPUACCT / "cgroup.procs").write_text(pid)
            except OSError:
                pass
        cg.rmdir()
    return cpu, wall, how, peak


def stage_cmd(inputs: list[str], out: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "pipelines", "dedup", "--input", *inputs, "--output", str(out), *flags]


_RAY_COST: dict[str, float] = {}


def ray_cost(code: Path) -> float:
    """CPU of the stage on a one-document input: Ray's start and stop, subtracted from each run."""
    if str(code) not in _RAY_COST:
        import pyarrow.parquet as pq

        one = BUILD / "one-doc"
        if not (one / "CC-MAIN-2019-10" / "part-00000.parquet").exists():
            src = next(CORPUS.glob("CC-MAIN-*/part-00000.parquet"))
            (one / "CC-MAIN-2019-10").mkdir(parents=True, exist_ok=True)
            pq.write_table(pq.read_table(src).slice(0, 1), one / "CC-MAIN-2019-10" / "part-00000.parquet")
        out = BUILD / "bench-one-doc"
        shutil.rmtree(out, ignore_errors=True)
        _RAY_COST[str(code)] = measured(stage_cmd([str(one)], out), "one", code)[0]
    return _RAY_COST[str(code)]


def codes(before: Path | None) -> list[tuple[str, Path]]:
    return [("after", REPO)] + ([("before", before)] if before else [])


def dumps_of(corpus: Path) -> list[str]:
    return sorted(str(p) for p in corpus.iterdir() if p.is_dir())


def phase_figures(counters: dict) -> dict[str, dict]:
    """Per phase of a stage run (from its stats.json counters): CPU of its tasks, wall, the
    largest task's peak RSS (what the code that ran reported)."""
    phases = sorted({k[len("cpu_seconds_"):] for k in counters if k.startswith("cpu_seconds_")} - {"driver", "write"} |
                    {k[len("seconds_"):] for k in counters if k.startswith("seconds_")})
    return {p: {"cpu_s": round(counters.get(f"cpu_seconds_{p}", 0.0), 2), "wall_s": round(counters.get(f"seconds_{p}", 0.0), 2),
                "peak_mb": round(counters.get(f"peak_rss_mb_{p}", 0.0), 0)} for p in phases}


# Decision phases: everything after the components (this code's names and the code before's).
DECISION_PHASES = ("gather", "heads", "pivots", "pivot_routes", "compare", "sets", "resolve", "settle", "clusters", "finalize",
                   "decide", "labels", "index")


def run_stage(label: str, code: Path, corpus: Path, tag: str, *flags: str) -> dict:
    """One run of a checkout's stage on ``corpus``: its figures (cached per process: the scale and
    hostile parts share the plain 1.6M-document run)."""
    key = (str(code), str(corpus), flags)
    if key in _RUNS:
        return _RUNS[key]
    out = BUILD / f"bench-{tag}-{label}"
    shutil.rmtree(out, ignore_errors=True)
    cpu, wall, how, driver = measured(["nice", *stage_cmd(dumps_of(corpus), out, *flags)], tag, code)
    st = json.loads((out / "stats.json").read_text())
    c = st["counters"]
    phases = phase_figures(c)
    decision_cpu = sum(v["cpu_s"] for p, v in phases.items() if p in DECISION_PHASES)
    fig = {"documents": st["input"], "removed": sum(st["dropped"].values()), "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
           "cpu_ms_per_doc": round((cpu - ray_cost(code)) / st["input"] * 1000, 4), "how": how, "driver_mb": round(driver),
           "largest_task_mb": round(c.get("peak_worker_rss_mb", 0)), "partitions": st.get("dedup", {}).get("partitions"),
           "phases": phases, "decision_cpu_s": round(decision_cpu, 2),
           "component_rounds": c.get("component_rounds", c.get("component_steps")), "decision_rounds": c.get("decision_rounds"),
           "left_open": c.get("left_open"), "pairs_true_jaccard": c.get("pairs_true_jaccard"), "edges_rejected": c.get("edges_rejected"),
           "chain_split": c.get("chain_split"), "output": str(out)}
    members = fig["members"] = _members(out)
    fig["decision_us_per_member"] = round(decision_cpu / max(1, members) * 1e6, 1)
    _RUNS[key] = fig
    return fig


_RUNS: dict[tuple, dict] = {}


def _members(out: Path) -> int:
    """Documents in a component (the decision step's members): the index's component rows."""
    import pyarrow.parquet as pq

    files = globmod.glob(str(out / "index" / "components" / "**" / "*.parquet"), recursive=True)
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


# ---- speed ----------------------------------------------------------------------------------


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
    normalized = [mh.normalize(t, cfg.shingles) for t in texts]

    def norm():
        return [mh.normalize(t, cfg.shingles) for t in texts]

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
            t = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - t)
    sig = ours()
    agree = 0
    for i, s in enumerate(normalized[:200]):
        m = MinHash(num_perm=K, seed=seed, hashfunc=mh.shingle_hash)
        m.update_batch(mh.shingles(s, ng))
        agree += bool(np.array_equal(m.hashvalues, sig[i]))
    n = len(texts)
    print(f"\n== signature speed, one core (CPU time, best of 3): {n:,} documents, {K} permutations ==")
    d_ds, d_ours = n / best["datasketch"], n / best["ours"]
    print(f"   {'datasketch MinHash.update_batch (xxh32 shingles)':<48} {d_ds:>9,.0f} docs/CPU-s  1.00")
    print(f"   {'this project (vectorised shingles + MinHash)':<48} {d_ours:>9,.0f} docs/CPU-s  {d_ours / d_ds:.2f}")
    n_ds, n_ours = n / (best["datasketch"] + best["normalise"]), n / (best["ours"] + best["normalise"])
    print(f"   {'with normalisation: datasketch / this project':<48} {n_ds:>9,.0f} / {n_ours:,.0f}  {n_ours / n_ds:.2f}")
    print(f"   signatures equal to datasketch.MinHash(hashfunc=shingle_hash, seed={seed}): {agree}/200")


# ---- accuracy -------------------------------------------------------------------------------


class Truth:
    """The labelled corpus: true Jaccard of every pair >= 0.5, each document's best matches."""

    def __init__(self, corpus: Path):
        import pyarrow.parquet as pq

        order = pq.read_table(corpus / "order.parquet").to_pydict()
        t = pq.read_table(corpus / "truth.parquet").to_pydict()
        self.ids, self.dumps = order["id"], order["dump"]
        self.pos = {x: i for i, x in enumerate(self.ids)}
        self.pair: dict[tuple[int, int], float] = {}
        self.best = np.zeros(len(self.ids))
        for a, b, j in zip(t["i"], t["j"], t["jaccard"]):
            self.pair[(a, b)] = self.pair[(b, a)] = j
            self.best[a], self.best[b] = max(self.best[a], j), max(self.best[b], j)
        self.best_of: dict[int, set[int]] = {}
        for (a, b), j in self.pair.items():
            if j >= self.best[a] - 1e-6:
                self.best_of.setdefault(a, set()).add(b)

    def score(self, removed: list[tuple[str, str]]) -> tuple[float, float]:
        """(recall, precision) of removals given as (removed id, kept id)."""
        cluster = np.arange(len(self.ids))
        for rem, kept in removed:
            cluster[self.pos[rem]] = self.pos[kept]
        pos85 = np.flatnonzero(self.best >= 0.85)
        hit = sum(any(cluster[a] == cluster[b] for b in self.best_of[a]) for a in pos85)
        good = sum(self.pair.get((self.pos[r], self.pos[k]), 0.0) >= 0.5 for r, k in removed)
        return hit / max(1, len(pos85)), good / max(1, len(removed))


def datasketch_one_pass(corpus: Path, cfg: DedupConfig) -> tuple[list[tuple[str, str]], float]:
    """MinHashLSH one pass: newest dump first, query each document, remove it for the most similar
    match (estimated) if there is one, else insert it. Same shingles, signatures and bands."""
    import pyarrow.parquet as pq
    from datasketch import MinHash, MinHashLSH

    t0 = time.process_time()
    lsh = MinHashLSH(num_perm=cfg.minhash.num_perm, params=(cfg.minhash.bands, cfg.minhash.rows))
    sigs: dict[str, np.ndarray] = {}
    removed = []
    for folder in sorted((p for p in corpus.iterdir() if p.is_dir()), reverse=True):
        t = pq.read_table(folder, columns=["id", "text"]).to_pydict()
        for doc_id, text in sorted(zip(t["id"], t["text"])):
            m = MinHash(num_perm=cfg.minhash.num_perm, seed=cfg.minhash.seed, hashfunc=mh.shingle_hash)
            m.update_batch(mh.shingles(mh.normalize(text or "", cfg.shingles), cfg.shingles.ngram))
            hits = lsh.query(m)
            if hits:
                best = max(sorted(hits), key=lambda h: float(np.mean(sigs[h] == m.hashvalues)))
                removed.append((doc_id, best))
            else:
                lsh.insert(doc_id, m)
                sigs[doc_id] = m.hashvalues
    return removed, time.process_time() - t0


_DATATROVE = """
import json, os, sys, xxhash
from datatrove.utils.hashes import xxhash as dt_xxhash


# datatrove 0.10.1 hands xxhash a str; xxhash 4 takes bytes only. The same functions over the
# UTF-8 bytes (what xxhash 3 hashed for a str). LocalPipelineExecutor forks its workers below,
# so they inherit these.
def xxhash32(data):
    return xxhash.xxh32_intdigest(data.encode("utf-8") if isinstance(data, str) else data)


def xxhash64(data):
    return xxhash.xxh64_intdigest(data.encode("utf-8") if isinstance(data, str) else data)


dt_xxhash.xxhash32, dt_xxhash.xxhash64 = xxhash32, xxhash64

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter
from datatrove.utils.hashing import HashConfig

corpus, work, tasks = {corpus!r}, {work!r}, {tasks}
cfg = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, hash_config=HashConfig(precision=64))
read = lambda: ParquetReader(corpus, glob_pattern="*/*.parquet", text_key="text", id_key="id")
run = lambda pipeline, n, logs: LocalPipelineExecutor(pipeline=pipeline, tasks=n, workers=2, start_method="fork",
                                                      logging_dir=f"{{work}}/logs/{{logs}}").run()
run([read(), MinhashDedupSignature(output_folder=f"{{work}}/signatures", config=cfg)], tasks, "signatures")
run([MinhashDedupBuckets(input_folder=f"{{work}}/signatures", output_folder=f"{{work}}/buckets", config=cfg)], cfg.num_buckets, "buckets")
run([MinhashDedupCluster(input_folder=f"{{work}}/buckets", output_folder=f"{{work}}/remove", config=cfg, save_cluster_id=True)], 1, "clusters")
run([read(), MinhashDedupFilter(input_folder=f"{{work}}/remove", exclusion_writer=ParquetWriter(f"{{work}}/removed"), load_cluster_ids=True),
     ParquetWriter(f"{{work}}/kept")], tasks, "filter")
"""


def datatrove_peer(corpus: Path) -> tuple[list[tuple[str, str]], float, float, str]:
    """datatrove's four MinHash steps on the corpus, every process in a cgroup: the (removed,
    kept) pairs by cluster id, CPU and wall seconds, how CPU was counted."""
    import pyarrow.parquet as pq

    work = BUILD / "bench-datatrove"
    shutil.rmtree(work, ignore_errors=True)
    tasks = len(globmod.glob(str(corpus / "*" / "*.parquet")))
    script = _DATATROVE.format(corpus=str(corpus), work=str(work), tasks=tasks)
    cpu, wall, how, _ = measured([sys.executable, "-c", script], "datatrove")

    def rows(folder: str) -> list[tuple[str, int]]:
        out = []
        for f in sorted(globmod.glob(str(work / folder / "*.parquet"))):
            t = pq.read_table(f, columns=["id", "metadata"])
            out += [(i, m.get("minhash_cluster_id", -1)) for i, m in zip(t.column("id").to_pylist(), t.column("metadata").to_pylist())]
        return out

    kept_of = {c: i for i, c in rows("kept") if c != -1}
    removed = [(i, kept_of[c]) for i, c in rows("removed")]
    return removed, cpu, wall, how


def accuracy(corpus: Path, before: Path | None) -> None:
    import pyarrow.parquet as pq

    truth = Truth(corpus)
    n = len(truth.ids)
    cfg = DedupConfig()
    dumps = dumps_of(corpus)
    print(f"\n== accuracy: {n:,} documents in {len(dumps)} dumps, {cfg.minhash.bands} bands x {cfg.minhash.rows} rows, "
          f"word {cfg.shingles.ngram}-grams; {int((truth.best >= 0.85).sum()):,} documents have a match of J >= 0.85 ==")
    rows = []
    runs = [("stage (defaults)", REPO, []), ("stage --verify", REPO, ["--verify"]),
            ("plain components (--min-similarity 0)", REPO, ["--min-similarity", "0"])]
    if before:
        runs.append(("stage before (defaults)", before, []))
    for name, code, flags in runs:
        out = BUILD / f"bench-accuracy-{len(rows)}"
        shutil.rmtree(out, ignore_errors=True)
        cpu, wall, how, _ = measured(stage_cmd(dumps, out, *flags), f"acc{len(rows)}", code)
        dup = pq.read_table(out / "duplicates.parquet").to_pydict()
        rec, prec = truth.score(list(zip(dup["removed_id"], dup["kept_id"])))
        c = json.loads((out / "stats.json").read_text())["counters"]
        rows.append({"method": name, "removed": len(dup["removed_id"]), "recall": rec, "precision": prec,
                     "chains_split": c.get("chain_split", 0), "edges_rejected": c.get("edges_rejected", "-"),
                     "pairs_true_jaccard": c.get("pairs_true_jaccard", "-"), "cpu_s": cpu - ray_cost(code), "wall_s": wall, "how": how})
    removed, cpu = datasketch_one_pass(corpus, cfg)
    rec, prec = truth.score(removed)
    rows.append({"method": "datasketch MinHashLSH one pass", "removed": len(removed), "recall": rec, "precision": prec, "chains_split": "-",
                 "edges_rejected": "-", "pairs_true_jaccard": "-", "cpu_s": cpu, "wall_s": cpu, "how": "process"})
    removed, cpu, wall, how = datatrove_peer(corpus)
    rec, prec = truth.score(removed)
    rows.append({"method": "datatrove 0.10 MinHash, 4 steps, 2 workers", "removed": len(removed), "recall": rec, "precision": prec,
                 "chains_split": "-", "edges_rejected": "-", "pairs_true_jaccard": "-", "cpu_s": cpu, "wall_s": wall, "how": how})
    print(f"   {'method':<44} {'removed':>8} {'recall@0.85':>12} {'precision@0.5':>14} {'chains split':>13} {'edges rejected':>15} "
          f"{'true-J pairs':>13} {'CPU s':>8} {'CPU ms/doc':>11} {'wall s':>7}")
    for r in rows:
        r["cpu_ms_per_doc"] = r["cpu_s"] / n * 1000
        print(f"   {r['method']:<44} {r['removed']:>8,} {r['recall']:>12.4f} {r['precision']:>14.4f} {r['chains_split']!s:>13} "
              f"{r['edges_rejected']!s:>15} {r['pairs_true_jaccard']!s:>13} {r['cpu_s']:>8.1f} {r['cpu_ms_per_doc']:>11.3f} {r['wall_s']:>7.1f}")
    stage, dt = rows[0], rows[-1]
    ratio = dt["cpu_ms_per_doc"] / stage["cpu_ms_per_doc"]
    print(f"   CPU per document, datatrove / this stage: {ratio:.1f}x (CPU: {stage['how']}, every process; Ray's start-up, "
          f"{ray_cost(REPO):.1f} CPU-s on a one-document input, subtracted from the stage's runs, not from datatrove's)")
    record("dedup-accuracy", {"documents": n, "rows": rows, "datatrove_over_stage_cpu_per_doc": ratio},
           headline={"stage": "dedup (defaults)", "figure": f"CPU per document; recall {stage['recall']:.4f} / precision "
                     f"{stage['precision']:.4f} vs {dt['recall']:.4f} / {dt['precision']:.4f}",
                     "peer": "datatrove 0.10.1 MinHash (4 steps, 14 x 8, 2 workers)", "ratio": round(ratio, 2), "unit": "x less CPU"})


# ---- scale ----------------------------------------------------------------------------------


def scale_corpus(size: int) -> Path:
    """A 4-dump generated corpus of about ``size`` documents (short new pages: 4-12 sentences)."""
    src = BUILD / f"scale-{size // 1000}k"
    if not (src / "order.parquet").exists():
        subprocess.run(["nice", sys.executable, str(REPO / "benchmarks" / "dedup_corpus.py"), "corpus", "--out", str(src),
                        "--docs", str(size), "--no-truth", "--sentences", "4,12"], check=True, stdout=subprocess.DEVNULL)
    return src


def scale(sizes: list[int], before: Path | None) -> None:
    print("\n== the whole stage at three sizes, a fresh process each (4 dumps, default settings) ==")
    print(f"   {'code':<7} {'documents':>10} {'partitions':>10} {'CPU s':>8} {'CPU ms/doc':>10} {'vs first':>8} {'driver MB':>10} "
          f"{'largest task MB':>16} {'removed':>9} {'wall s':>7}")
    figures = {}
    for label, code in codes(before):
        first = None
        for size in sizes:
            f = run_stage(label, code, scale_corpus(size), f"scale{size // 1000}k")
            first = first or f["cpu_ms_per_doc"]
            print(f"   {label:<7} {f['documents']:>10,} {f['partitions']!s:>10} {f['cpu_s']:>8.1f} {f['cpu_ms_per_doc']:>10.3f} "
                  f"{f['cpu_ms_per_doc'] / first:>8.2f} {f['driver_mb']:>10.0f} {f['largest_task_mb']:>16.0f} {f['removed']:>9,} {f['wall_s']:>7.0f}")
            figures[f"{label}-{size}"] = f
    print(f"   (CPU: {f['how']}, every process of the run, Ray's start-up subtracted for CPU per document; driver MB: peak RSS of\n"
          "    the driver process alone (VmHWM, polled); largest task MB: the highest peak RSS any task reported)")
    record("dedup-scale", figures)


def incremental(size: int = 100_000) -> None:
    """The newest dump against the index of the earlier ones, beside all dumps at once."""
    import pyarrow.parquet as pq

    src = scale_corpus(size)
    dumps = dumps_of(src)
    runs = [("all dumps at once", dumps, "joint"), ("earlier dumps (index)", dumps[:-1], "inc"), ("newest dump vs index", dumps[-1:], "inc")]
    print(f"\n== incremental: the newest dump against the index of the earlier ones ({src.name}) ==")
    print(f"   {'run':<24} {'documents':>10} {'CPU s':>8} {'CPU ms/doc':>11} {'removed':>9} {'retracted':>10} {'restored':>9}")
    removed: dict[int, set] = {}
    restored: set = set()
    rows = []
    for k, (name, inputs, tag) in enumerate(runs):
        out = BUILD / f"bench-inc-{k}"
        shutil.rmtree(out, ignore_errors=True)
        index = BUILD / f"bench-inc-index-{tag}"
        if k < 2:
            shutil.rmtree(index, ignore_errors=True)
        cpu, _, _, _ = measured(["nice", *stage_cmd(inputs, out, "--index", str(index))], f"inc{k}")
        st = json.loads((out / "stats.json").read_text())
        c = st["counters"]
        removed[k] = set(pq.read_table(out / "duplicates.parquet", columns=["removed_id"]).column("removed_id").to_pylist())
        for f in (out / "documents").glob("restored-*.parquet"):  # removed by an earlier run, kept now
            restored |= set(pq.read_table(f, columns=["id"]).column("id").to_pylist())
        row = {"run": name, "documents": st["input"], "cpu_s": cpu, "cpu_ms_per_doc": (cpu - ray_cost(REPO)) / st["input"] * 1000,
               "removed": sum(st["dropped"].values()), "retracted": c.get("retracted_from_index", 0), "restored": c.get("restored_from_index", 0)}
        rows.append(row)
        print(f"   {name:<24} {row['documents']:>10,} {cpu:>8.1f} {row['cpu_ms_per_doc']:>11.3f} {row['removed']:>9,} {row['retracted']:>10,} "
              f"{row['restored']:>9,}")
    # Earlier runs' removals, less what a later run restores, plus its own (retractions included).
    same = removed[0] == (removed[1] - restored) | removed[2]
    print(f"   the same removals at once and one dump at a time: {same}")
    record("dedup-incremental", {"rows": rows, "same_removals": same})


# ---- connected components alone --------------------------------------------------------------


_CC_EDGES = """
import json, os, shutil, sys, time
import numpy as np
from curation.dedup import candidates as cand, layout
from pipelines import runtime
docs, edges, work = {docs}, {edges}, {work!r}
P = layout.partitions_for(2 * edges)

def make_edges(p):  # node ids as the stage makes them (1M-document shards), duplicates anywhere in the corpus
    rng = np.random.default_rng(p)
    n = edges // P + (p < edges % P)
    a, b = rng.integers(0, docs, n), rng.integers(0, docs, n)
    keep = a != b
    enc = lambda x: ((x // 1_000_000) << 28) | (x % 1_000_000)
    adj = cand.both_directions(enc(a[keep]), enc(b[keep]))
    layout.write_routed(adj, layout.node_partition(adj.column("k").to_numpy(), P), P, f"{{work}}/start/part-{{p:04d}}.arrow")
    return {{"rows": adj.num_rows}}

runtime.init_ray()
rows = sum(r["rows"] for r in runtime.run_tasks(make_edges, list(range(P)), desc="cc bench: edges"))
inputs = [f"{{work}}/start/part-{{p:04d}}.arrow" for p in range(P)]
cpu, rss, steps, t = 0.0, 0.0, 0, time.perf_counter()


def measured(fn):
    def task(unit, ctx):
        runtime.reset_peak_rss()
        return dict(fn(unit, ctx), rss_mb=runtime.peak_rss_mb())
    task.__name__ = fn.__name__
    return task


def run(fn, units, desc, ctx):
    global cpu, rss, steps
    res = runtime.run_tasks(measured(fn), units, desc=f"cc bench: {{desc}}", args=(ctx,))
    cpu += sum(r["cpu_s"] for r in res)
    rss = max([rss] + [r["rss_mb"] for r in res])
    steps += 1
    return res
"""

# This checkout: contraction rounds down to component_rows_in_memory, the rest in one task.
_CC_AFTER = _CC_EDGES + """
from curation.dedup import DedupConfig
from curation.dedup import components as comp
ctx = {{"work": work, "partitions": P, "gen": 0, "cfg": DedupConfig(), "adjacency": inputs,
        "finish": [{{"new_out": f"{{work}}/new-{{p}}.arrow", "old_out": f"{{work}}/old-{{p}}.arrow"}} for p in range(P)]}}
figures = comp.label_components(lambda fn, units, desc: run(fn, units, desc, ctx), ctx, rows)
roots = 0
for p in range(P):
    tb = layout.read_routed([f["new_out"] for f in ctx["finish"]], p, comp.LABEL_SCHEMA)
    roots += int((tb.column("node").to_numpy() == tb.column("label").to_numpy()).sum())
print(json.dumps({{"P": P, "steps": steps, "rounds": figures["component_rounds"], "rows_written": figures["component_rows_written"],
                  "seconds": time.perf_counter() - t, "cpu": cpu, "task_mb": rss, "components": roots, "driver_mb": runtime.peak_rss_mb()}}))
"""

# A checkout whose components are large-star/small-star steps (``components.step_unit``): the
# stage's loop over them, as it ran them.
_CC_STAR_STEPS = _CC_EDGES + """
from curation.dedup import components as comp
written, quiet = 0, 0
while quiet < 2:
    kind = "large" if (steps + 1) % 2 else "small"
    units = [dict(p=p, kind=kind, out=f"{{work}}/s{{steps + 1:03d}}/part-{{p:04d}}.arrow") for p in range(P)]
    res = run(comp.step_unit, units, f"step {{steps + 1}} ({{kind}})", {{"work": work, "partitions": P, "inputs": inputs}})
    quiet = quiet + 1 if sum(r["changed"] for r in res) == 0 else 0
    written += sum(r["rows_out"] for r in res)
    inputs = [u["out"] for u in units]
roots = 0
for p in range(P):
    tb = layout.read_routed(inputs, p, cand.ADJ_SCHEMA)
    nodes, labels = comp.star_labels(tb.column("k").to_numpy(), tb.column("o").to_numpy())
    roots += int((nodes == labels).sum())
print(json.dumps({{"P": P, "steps": steps, "rounds": steps, "rows_written": written, "seconds": time.perf_counter() - t, "cpu": cpu,
                  "task_mb": rss, "components": roots, "driver_mb": runtime.peak_rss_mb()}}))
"""

_CC_SINGLE = """
import json, sys, time
import numpy as np
from curation.dedup.components import connected_components
docs, edges = {docs}, {edges}
P = -(-2 * edges // 3_000_000)
parts = []
for p in range(P):  # the same edges as the rounds see
    rng = np.random.default_rng(p)
    n = edges // P + (p < edges % P)
    a, b = rng.integers(0, docs, n), rng.integers(0, docs, n)
    keep = a != b
    enc = lambda x: ((x // 1_000_000) << 28) | (x % 1_000_000)
    parts.append((enc(a[keep]), enc(b[keep])))
u, v = np.concatenate([x[0] for x in parts]), np.concatenate([x[1] for x in parts])
del parts
t, c = time.perf_counter(), time.process_time()
nodes, labels = connected_components(u, v)
with open("/proc/self/status") as f:
    mb = next(int(x.split()[1]) for x in f if x.startswith("VmHWM:")) / 1024
print(json.dumps({{"seconds": time.perf_counter() - t, "cpu": time.process_time() - c, "components": int(labels.max()) + 1, "mb": mb}}))
"""


def _cc_run(script: str, code: Path, tag: str) -> dict:
    """A component script in its own process tree (cgroup): its JSON line and the tree's CPU."""
    out = BUILD / f"bench-cc-{tag}.json"
    cmd = ["nice", "sh", "-c", f'"$0" -c "$1" > {out}', sys.executable, script]
    cpu, wall, how, _ = measured(cmd, f"cc-{tag}", code)
    d = json.loads(out.read_text().strip().splitlines()[-1])
    return dict(d, tree_cpu=cpu, tree_wall=wall, how=how)


def cc(sizes: list[int], before: Path | None, single_max: int = 200_000_000) -> None:
    """The component step on synthetic edges as Ray tasks, beside another checkout's and the
    single-process union (scipy)."""
    print("\n== connected components alone: random edges, edges = documents / 2, local Ray instance ==")
    print(f"   {'documents':>12} {'edges':>12} {'how':<34} {'partitions':>10} {'steps':>6} {'rows written':>13} {'tasks CPU s':>12} "
          f"{'tree CPU s':>11} {'seconds':>8} {'largest MB':>11} {'components':>12}")
    figures = {}
    for docs in sizes:
        edges = docs // 2
        for label, code in codes(before):
            work = BUILD / f"bench-cc-{label}-{docs // 1_000_000}M"
            shutil.rmtree(work, ignore_errors=True)
            has_steps = (code / "curation" / "dedup" / "components.py").read_text().count("def step_unit(") > 0
            script = (_CC_STAR_STEPS if has_steps else _CC_AFTER).format(docs=docs, edges=edges, work=str(work))
            d = _cc_run(script, code, f"{label}-{docs // 1_000_000}M")
            shutil.rmtree(work, ignore_errors=True)
            how = f"{label}: " + ("large/small-star steps" if has_steps else "local contraction + memory")
            print(f"   {docs:>12,} {edges:>12,} {how:<34} {d['P']:>10} {d['steps']:>6} {d['rows_written']:>13,} {d['cpu']:>12.0f} "
                  f"{d['tree_cpu']:>11.0f} {d['seconds']:>8.0f} {d['task_mb']:>11,.0f} {d['components']:>12,}")
            figures[f"{label}-{docs}"] = d
        if docs <= single_max:
            r = subprocess.run(["nice", sys.executable, "-c", _CC_SINGLE.format(docs=docs, edges=edges)], check=True, capture_output=True,
                               text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
            d = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"   {docs:>12,} {edges:>12,} {'one process (scipy)':<34} {1:>10} {'-':>6} {'-':>13} {d['cpu']:>12.0f} {'-':>11} "
                  f"{d['seconds']:>8.0f} {d['mb']:>11,.0f} {d['components']:>12,}")
            figures[f"scipy-{docs}"] = d
    headline = None
    if before:
        a, b = figures[f"after-{sizes[0]}"], figures[f"before-{sizes[0]}"]
        print(f"   {sizes[0]:,} documents: tasks' CPU before / after {b['cpu'] / a['cpu']:.1f}x, process tree {b['tree_cpu'] / a['tree_cpu']:.1f}x, "
              f"rows written {b['rows_written'] / max(1, a['rows_written']):.1f}x, steps {b['steps']} -> {a['steps']}")
        headline = {"stage": "dedup components", "figure": f"CPU of the component tasks, {sizes[0] // 1_000_000}M documents / "
                    f"{sizes[0] // 2_000_000}M edges", "peer": "large-star/small-star rounds (before)", "ratio": round(b["cpu"] / a["cpu"], 2),
                    "unit": "x less CPU"}
    record("dedup-cc", figures, headline=headline)


# ---- the hostile web -------------------------------------------------------------------------


def hostile_corpus(scale_: float) -> Path:
    src = BUILD / ("hostile" if scale_ == 1.0 else f"hostile-{scale_:g}")
    if not (src / "CC-MAIN-2019-40").exists():
        subprocess.run(["nice", sys.executable, str(REPO / "benchmarks" / "dedup_corpus.py"), "hostile", "--out", str(src),
                        "--scale", str(scale_)], check=True, stdout=subprocess.DEVNULL)
    return src


def _texts(corpus: Path, ids: set[str]) -> dict[str, tuple[str, str]]:
    """id -> (text, shape) for ``ids``, read shard by shard (never the whole corpus in memory)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    want, out = pa.array(sorted(ids)), {}
    for f in sorted(corpus.glob("*/*.parquet")):
        t = pq.read_table(f, columns=["id", "text", "metadata"])
        t = t.filter(pc.is_in(t.column("id"), want))
        for i, text, m in zip(t.column("id").to_pylist(), t.column("text").to_pylist(), t.column("metadata").to_pylist()):
            out[i] = (text or "", m["title"].split(":")[0])
    return out


def check_removals(corpus: Path, out: Path, sample: int = 20_000, seed: int = 0) -> dict:
    """Removals of a run against the true Jaccard of their kept documents: a seeded sample of
    ``sample`` of them, and every removal of a chain member."""
    import pyarrow.parquet as pq

    dup = pq.read_table(out / "duplicates.parquet", columns=["removed_id", "kept_id", "removed_url"]).to_pydict()
    pairs = list(zip(dup["removed_id"], dup["kept_id"]))
    chain = [p for p, url in zip(pairs, dup["removed_url"]) if url and url.startswith("https://drift.example.org/")]
    picked = random.Random(seed).sample(pairs, min(sample, len(pairs)))
    texts = _texts(corpus, {x for p in picked + chain for x in p})
    sets: dict[str, np.ndarray] = {}

    def jac(a: str, b: str) -> float:
        for x in (a, b):
            if x not in sets:
                sets[x] = mh.shingle_sets([mh.normalize(texts[x][0])], 5)[0]
        return mh.jaccard(sets[a], sets[b])

    js = np.array([jac(a, b) for a, b in picked])
    cj = np.array([jac(a, b) for a, b in chain])
    return {"removed": len(pairs), "sampled": len(picked), "sample_below_0.5": int((js < 0.5).sum()),
            "sample_min_jaccard": round(float(js.min()), 4) if len(js) else None,
            "chain_removed": len(chain), "chain_below_0.5": int((cj < 0.5).sum()),
            "chain_min_jaccard": round(float(cj.min()), 4) if len(cj) else None}


def hostile(scale_: float, plain_size: int, before: Path | None) -> None:
    corpus = hostile_corpus(scale_)
    plain = scale_corpus(plain_size)
    print(f"\n== the hostile web ({corpus.name}) beside the plain corpus ({plain.name}), default settings ==")
    figures = {}
    for label, code in codes(before):
        p = run_stage(label, code, plain, f"scale{plain_size // 1000}k")
        h = run_stage(label, code, corpus, f"hostile-{label}")
        h["checks"] = check_removals(corpus, Path(h["output"]))
        figures[label] = {"plain": p, "hostile": h}
        print(f"\n   {label}: {h['documents']:,} documents ({p['documents']:,} plain); CPU {h['cpu_s']:.0f} s ({p['cpu_s']:.0f}), wall "
              f"{h['wall_s']:.0f} s ({p['wall_s']:.0f}); component rounds {h['component_rounds']}, decision rounds {h['decision_rounds']} "
              f"({p['decision_rounds']}), left open {h['left_open']}, pairs by true Jaccard {h['pairs_true_jaccard']} "
              f"({p['pairs_true_jaccard']}), edges rejected {h['edges_rejected']}")
        print(f"   {'phase':<16} {'CPU s':>9} {'wall s':>8} {'largest task MB':>16}   {'plain: CPU s':>13} {'wall s':>8} {'largest MB':>11}")
        for ph in sorted(set(h["phases"]) | set(p["phases"])):
            a, b = h["phases"].get(ph, {}), p["phases"].get(ph, {})
            print(f"   {ph:<16} {a.get('cpu_s', 0):>9.1f} {a.get('wall_s', 0):>8.1f} {a.get('peak_mb', 0):>16.0f}   "
                  f"{b.get('cpu_s', 0):>13.1f} {b.get('wall_s', 0):>8.1f} {b.get('peak_mb', 0):>11.0f}")
        c = h["checks"]
        ratio_mem = h["largest_task_mb"] / max(1, p["largest_task_mb"])
        ratio_cpu = h["decision_us_per_member"] / max(1e-9, p["decision_us_per_member"])
        print(f"   largest task: {h['largest_task_mb']} MB vs {p['largest_task_mb']} MB on the plain corpus ({ratio_mem:.2f}x; target <= 1.5x)")
        print(f"   decision CPU per member: {h['decision_us_per_member']:.1f} us vs {p['decision_us_per_member']:.1f} us ({ratio_cpu:.2f}x; "
              f"target <= 2x), {h['members']:,} and {p['members']:,} members")
        print(f"   removals checked against the true Jaccard of their kept document: {c['sample_below_0.5']} of a seeded sample of "
              f"{c['sampled']:,} below 0.5 (lowest {c['sample_min_jaccard']}); chain members: {c['chain_below_0.5']} of "
              f"{c['chain_removed']:,} below 0.5 (lowest {c['chain_min_jaccard']})")
        figures[label].update(largest_task_ratio=ratio_mem, decision_cpu_ratio=ratio_cpu)
    a = figures["after"]
    record("dedup-hostile", figures, headline={
        "stage": "dedup on hostile shapes", "figure": f"largest task peak vs the plain {plain_size // 1000}k corpus "
        f"({a['hostile']['checks']['sample_below_0.5']} sampled removals below J 0.5)", "peer": "plain corpus",
        "ratio": round(a["largest_task_ratio"], 2), "unit": "x memory"})


def main() -> int:
    global CORPUS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--parts", default="speed,accuracy,scale,incremental,cc,hostile")
    ap.add_argument("--scale", default="100000,400000,1600000")
    ap.add_argument("--cc", default="50000000,200000000", help="documents of the synthetic graphs (edges = half)")
    ap.add_argument("--hostile-scale", type=float, default=1.0, help="size of the hostile shapes (1.0: 1.36M documents)")
    ap.add_argument("--code", help="another checkout whose stage runs beside this one (a before/after table)")
    a = ap.parse_args()
    parts = a.parts.split(",")
    corpus = CORPUS = Path(a.corpus)
    before = Path(a.code).resolve() if a.code else None
    if "speed" in parts:
        speed(corpus)
    if "accuracy" in parts:
        accuracy(corpus, before)
    if "scale" in parts:
        scale([int(x) for x in a.scale.split(",")], before)
    if "incremental" in parts:
        incremental()
    if "cc" in parts:
        cc([int(d) for d in a.cc.split(",")], before)
    if "hostile" in parts:
        hostile(a.hostile_scale, int(a.scale.split(",")[-1]), before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
