"""`make bench-dedup`: dedup measured side by side in one run - quality beside cost.

    python benchmarks/bench_dedup.py --corpus build/dedup/corpus-40k [--parts speed,accuracy,scale,incremental,cc]
        [--scale 100000,400000,1600000] [--cc 50000000,200000000] [--code DIR]

speed:       signatures per second on one core, this project's beside datasketch.MinHash.
accuracy:    on the labelled corpus (`make dedup-corpus`, truth = true Jaccard of every pair), the
             stage with its defaults, the stage with --verify, plain connected components (the
             stage with the chain check off, --min-similarity 0) and a datasketch MinHashLSH
             one-pass baseline (query, then insert, newest dump first, the same 14 x 8 bands):
             documents removed, recall (a document whose best match has J >= 0.85 ends in the
             same cluster as it), precision (the kept document listed for a removed one has
             J >= 0.5), and documents per CPU-second (every process of the run, Ray's start-up
             cost subtracted).
scale:       the whole stage at three sizes in a fresh process each: CPU per document, the
             driver's peak RSS (the driver process alone) and the largest task's; --code runs
             another checkout's stage on the same corpora (the "before" of the README).
incremental: the newest dump against the index of the earlier ones, beside all dumps at once.
cc:          the component rounds alone on synthetic edges (edges = documents / 2) as Ray tasks
             on the local instance: time, rounds, the largest task's peak; beside the
             single-process step (scipy, what the driver did before; 12 GB at 200M documents).

CPU is measured with a cpuacct cgroup over the whole process tree (MEASURING.md); without one
(not root, no cgroup v1) the figures fall back to the children's rusage and say so.
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

BUILD = REPO / "build" / "dedup"
CORPUS = BUILD / "corpus-40k"  # the labelled corpus (--corpus)
CPUACCT = Path("/sys/fs/cgroup/cpuacct")


# ---- measuring ------------------------------------------------------------------------------


def _hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def measured(cmd: list[str], tag: str, cwd: Path = REPO, env: dict | None = None) -> tuple[float, float, str, float]:
    """Run ``cmd`` in a cpuacct cgroup of its own: (CPU seconds of every process, wall, how, the
    peak RSS of the command's own process in MB - VmHWM polled, the driver alone)."""
    cg = CPUACCT / f"bench-12-{tag}-{os.getpid()}"
    try:
        cg.mkdir()
        how, cmd = "cgroup", ["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh", *cmd]
    except OSError:
        how, cg = "rusage", None
    t, r0 = time.perf_counter(), os.times()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        _RAY_COST[str(code)] = measured(stage_cmd([str(one)], out), "one", cwd=code)[0]
    return _RAY_COST[str(code)]


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


def accuracy(corpus: Path) -> None:
    import pyarrow.parquet as pq

    truth = Truth(corpus)
    n = len(truth.ids)
    cfg = DedupConfig()
    dumps = sorted(str(p) for p in corpus.iterdir() if p.is_dir())
    print(f"\n== accuracy: {n:,} documents in {len(dumps)} dumps, {cfg.minhash.bands} bands x {cfg.minhash.rows} rows, "
          f"word {cfg.shingles.ngram}-grams; {int((truth.best >= 0.85).sum()):,} documents have a match of J >= 0.85 ==")
    rows = []
    base = ray_cost(REPO)
    for name, flags in [("stage (defaults)", []), ("stage --verify", ["--verify"]),
                        ("plain components (--min-similarity 0)", ["--min-similarity", "0"])]:
        out = BUILD / f"bench-accuracy-{len(rows)}"
        shutil.rmtree(out, ignore_errors=True)
        cpu, wall, how, _ = measured(stage_cmd(dumps, out, *flags), f"acc{len(rows)}")
        dup = pq.read_table(out / "duplicates.parquet").to_pydict()
        rec, prec = truth.score(list(zip(dup["removed_id"], dup["kept_id"])))
        c = json.loads((out / "stats.json").read_text())["counters"]
        rows.append((name, len(dup["removed_id"]), rec, prec, c.get("chain_split", 0), n / max(1e-9, cpu - base), how))
    removed, cpu = datasketch_one_pass(corpus, cfg)
    rec, prec = truth.score(removed)
    rows.append(("datasketch MinHashLSH one pass", len(removed), rec, prec, 0, n / cpu, "process"))
    print(f"   {'method':<40} {'removed':>8} {'recall@0.85':>12} {'precision@0.5':>14} {'chains split':>13} {'docs/CPU-s':>11}")
    for name, removed_n, rec, prec, split, rate, how in rows:
        print(f"   {name:<40} {removed_n:>8,} {rec:>12.4f} {prec:>14.4f} {split:>13,} {rate:>11,.0f}")
    print(f"   targets (stage, defaults): recall >= 0.99, precision >= 0.995.  CPU: {rows[0][-1]} (Ray start-up, "
          f"{base:.1f} CPU-s measured on a one-document input, subtracted from the stage's runs)")



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
    for label, code in [("after", REPO)] + ([("before", before)] if before else []):
        first = None
        for size in sizes:
            src = scale_corpus(size)
            out = BUILD / f"bench-scale-{label}-{size // 1000}k"
            shutil.rmtree(out, ignore_errors=True)
            dumps = sorted(str(p) for p in src.iterdir() if p.is_dir())
            cpu, wall, how, driver = measured(["nice", *stage_cmd(dumps, out)], f"scale{size}", cwd=code)
            st = json.loads((out / "stats.json").read_text())
            c, n = st["counters"], st["input"]
            per = (cpu - ray_cost(code)) / n * 1000
            first = first or per
            print(f"   {label:<7} {n:>10,} {st.get('dedup', {}).get('partitions', c.get('partitions', '-')):>10} {cpu:>8.1f} {per:>10.3f} "
                  f"{per / first:>8.2f} {driver:>10.0f} {c['peak_worker_rss_mb']:>16.0f} {sum(st['dropped'].values()):>9,} {wall:>7.0f}")
            shutil.rmtree(out, ignore_errors=True)
    print(f"   (CPU: {how}, every process of the run, Ray's start-up subtracted for CPU per document; driver MB: peak RSS of\n"
          "    the driver process alone (VmHWM, polled); largest task MB: the highest peak RSS any Ray worker reported)")


def incremental(size: int = 100_000) -> None:
    """The newest dump against the index of the earlier ones, beside all dumps at once."""
    src = scale_corpus(size)
    dumps = sorted(str(p) for p in src.iterdir() if p.is_dir())
    runs = [("all dumps at once", dumps, "joint"), ("earlier dumps (index)", dumps[:-1], "inc"), ("newest dump vs index", dumps[-1:], "inc")]
    print(f"\n== incremental: the newest dump against the index of the earlier ones ({src.name}) ==")
    print(f"   {'run':<24} {'documents':>10} {'CPU s':>8} {'CPU ms/doc':>11} {'removed':>9} {'retracted':>10} {'restored':>9}")
    removed: dict[int, set] = {}
    restored: set = set()
    for k, (name, inputs, tag) in enumerate(runs):
        out = BUILD / f"bench-inc-{k}"
        shutil.rmtree(out, ignore_errors=True)
        index = BUILD / f"bench-inc-index-{tag}"
        if k < 2:
            shutil.rmtree(index, ignore_errors=True)
        cpu, _, _, _ = measured(["nice", *stage_cmd(inputs, out, "--index", str(index))], f"inc{k}")
        st = json.loads((out / "stats.json").read_text())
        c = st["counters"]
        import pyarrow.parquet as pq

        removed[k] = set(pq.read_table(out / "duplicates.parquet", columns=["removed_id"]).column("removed_id").to_pylist())
        for f in (out / "documents").glob("restored-*.parquet"):  # removed by an earlier run, kept now
            restored |= set(pq.read_table(f, columns=["id"]).column("id").to_pylist())
        print(f"   {name:<24} {st['input']:>10,} {cpu:>8.1f} {(cpu - ray_cost(REPO)) / st['input'] * 1000:>11.3f} "
              f"{sum(st['dropped'].values()):>9,} {c.get('retracted_from_index', 0):>10,} {c.get('restored_from_index', 0):>9,}")
    # Earlier runs' removals, less what a later run restores, plus its own (retractions included).
    print(f"   the same removals at once and one dump at a time: {removed[0] == (removed[1] - restored) | removed[2]}")


# ---- connected components alone --------------------------------------------------------------


_CC_ROUNDS = """
import json, sys, time
import numpy as np
sys.path.insert(0, {repo!r})
from curation.dedup import candidates as cand, layout
from pipelines import dedup as stage
from pipelines import runtime
from pipelines.runtime import init_ray, run_tasks
docs, edges, work = {docs}, {edges}, {work!r}
P = layout.partitions_for(2 * edges)

def make_edges(p):  # node ids as the stage makes them (1M-document shards), duplicates anywhere in the corpus
    rng = np.random.default_rng(p)
    n = edges // P + (p < edges % P)
    a, b = rng.integers(0, docs, n), rng.integers(0, docs, n)
    keep = a != b
    enc = lambda x: ((x // 1_000_000) << 28) | (x % 1_000_000)
    adj = cand.both_directions(enc(a[keep]), enc(b[keep]))
    layout.write_routed(adj, layout.node_partition(adj.column("k").to_numpy(), P), P, f"{{work}}/s000/part-{{p:04d}}.arrow")
    return {{"rss_mb": runtime.peak_rss_mb()}}

init_ray()
gen = run_tasks(make_edges, list(range(P)), desc="cc bench: edges")
ctx = {{"work": work, "partitions": P}}
inputs = [f"{{work}}/s000/part-{{p:04d}}.arrow" for p in range(P)]
t, step, quiet, rss, cpu = time.perf_counter(), 0, 0, 0.0, 0.0
while quiet < 2:
    step += 1
    kind = "large" if step % 2 else "small"
    units = [dict(name=f"s{{step:03d}}-p{{p:04d}}", p=p, kind=kind, out=f"{{work}}/s{{step:03d}}/part-{{p:04d}}.arrow") for p in range(P)]
    res = run_tasks(stage._components, units, desc=f"cc bench: step {{step}} ({{kind}})", args=({{**ctx, "inputs": inputs}},))
    quiet = quiet + 1 if sum(r["changed"] for r in res) == 0 else 0
    rss = max([rss] + [r["rss_mb"] for r in res])
    cpu += sum(r["cpu_s"] for r in res)
    import shutil; shutil.rmtree(inputs[0].rsplit("/", 1)[0])
    inputs = [u["out"] for u in units]
secs = time.perf_counter() - t
roots = 0
for p in range(P):
    tb = layout.read_routed(inputs, p, cand.ADJ_SCHEMA)
    from curation.dedup.components import star_labels
    nodes, labels = star_labels(tb.column("k").to_numpy(), tb.column("o").to_numpy())
    roots += int((nodes == labels).sum())
print(json.dumps({{"P": P, "steps": step, "seconds": secs, "cpu": cpu, "task_mb": rss, "components": roots,
                  "driver_mb": runtime.peak_rss_mb()}}))
"""

_CC_SINGLE = """
import json, sys, time
import numpy as np
sys.path.insert(0, {repo!r})
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


def cc(sizes: list[int], single_max: int = 200_000_000) -> None:
    """Component rounds on synthetic edges as Ray tasks, beside the single-process step."""
    print("\n== connected components alone: random edges, edges = documents / 2, local Ray instance ==")
    print(f"   {'documents':>12} {'edges':>12} {'how':<26} {'partitions':>10} {'steps':>6} {'seconds':>8} {'CPU s':>8} {'largest MB':>11} {'components':>12}")
    for docs in sizes:
        edges = docs // 2
        work = BUILD / f"bench-cc-{docs // 1_000_000}M"
        shutil.rmtree(work, ignore_errors=True)
        r = subprocess.run(["nice", sys.executable, "-c", _CC_ROUNDS.format(repo=str(REPO), docs=docs, edges=edges, work=str(work))],
                           check=True, capture_output=True, text=True, cwd=REPO)
        d = json.loads(r.stdout.strip().splitlines()[-1])
        shutil.rmtree(work, ignore_errors=True)
        print(f"   {docs:>12,} {edges:>12,} {'rounds as Ray tasks':<26} {d['P']:>10} {d['steps']:>6} {d['seconds']:>8.0f} {d['cpu']:>8.0f} "
              f"{d['task_mb']:>11,.0f} {d['components']:>12,}   (driver {d['driver_mb']:.0f} MB)")
        if docs <= single_max:
            r = subprocess.run(["nice", sys.executable, "-c", _CC_SINGLE.format(repo=str(REPO), docs=docs, edges=edges)],
                               check=True, capture_output=True, text=True, cwd=REPO)
            d = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"   {docs:>12,} {edges:>12,} {'one process (scipy, before)':<26} {1:>10} {'-':>6} {d['seconds']:>8.0f} {d['cpu']:>8.0f} "
                  f"{d['mb']:>11,.0f} {d['components']:>12,}")
        else:
            print(f"   {docs:>12,} {edges:>12,} {'one process (scipy, before)':<26} not run: ~{edges * 130 / 2**30:.0f} GB at the "
                  "130 bytes/edge it needs")


def main() -> int:
    global CORPUS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--parts", default="speed,accuracy,scale,incremental,cc")
    ap.add_argument("--scale", default="100000,400000,1600000")
    ap.add_argument("--cc", default="50000000,200000000", help="documents of the synthetic graphs (edges = half)")
    ap.add_argument("--code", help="another checkout whose stage `scale` runs too (a before/after table)")
    a = ap.parse_args()
    parts = a.parts.split(",")
    corpus = CORPUS = Path(a.corpus)
    if "speed" in parts:
        speed(corpus)
    if "accuracy" in parts:
        accuracy(corpus)
    if "scale" in parts:
        scale([int(x) for x in a.scale.split(",")], Path(a.code) if a.code else None)
    if "incremental" in parts:
        incremental()
    if "cc" in parts:
        cc([int(d) for d in a.cc.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
