"""`make bench-check`: a quick regression check (a few minutes on 2 cores) of exact counts and of
throughput ratios against peers, each measured side by side in the same run, against the
requirements in ``benchmarks/check.yaml``. Exits 1 naming every requirement that failed.

Counts: the curation stages of ``configs/demo.yaml`` (import, extract, dedup, filter, remix,
train-tokenizer, tokenize) run on the bundled sample by ``python -m pipelines run``; every stage's
``stats.json``: documents in, out and dropped per reason, and a few exact figures (dedup clusters
and candidate edges, copies the remix wrote, tokens). Deterministic: they must equal the record.

Throughput, CPU time of the same work on both sides, alternating rounds, the best round of each:
  extract    the stage's task function (``pipelines.extract.extract_file``: FastWARC, sandboxed
             decoding, trafilatura, lid.176, Parquet) vs a plain warcio + ``trafilatura.extract``
             loop with its defaults, over the bundled WARC pages not from archive.org, read 5
             times over, each in a fresh process in a cpuacct cgroup (start-up included);
  minhash    the dedup stage's signatures (``curation.dedup.minhash``, 112 permutations, word
             5-grams) vs ``datasketch.MinHash.update_batch`` on the same normalised sample texts;
  tokenizer  the tokenize stage's encoder (``tokenizer.bpe.encode_text``) vs a plain Hugging Face
             ``Tokenizer.encode_batch`` loop, one thread, the sample texts, the tokenizer the
             counts run trained;
  filter     the ``fineweb`` preset vs datatrove's FineWeb chain on the sample's English
             documents: the agreement counts exactly, and documents per CPU-second;
  train      the trainer vs a minimal plain PyTorch loop (tiny model, same batches).
Floors sit well below the ratios measured on the 2-core development machine (each requirement
names its source); ``--record-counts`` rewrites the counts after a change meant to change outputs.

    python benchmarks/bench_check.py [--only counts,extract,minhash,tokenizer,filter,train] [--record-counts]
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # one tokenizer thread: CPU time per core, as the stage runs

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import yaml  # noqa: E402

CHECKS = REPO / "benchmarks" / "check.yaml"
SAMPLE = REPO / "data" / "sample"
WORK = REPO / "build" / "bench-check"
STAGE_DIRS = {"import": "imported", "extract": "extracted", "dedup": "dedup", "filter": "filtered", "remix": "remix",
              "train-tokenizer": "tokenizer", "tokenize": "tokens"}
# Exact figures besides documents in/out/dropped, per stage (stats.json counters).
COUNTERS = {"dedup": ("clusters", "candidate_edges", "chain_split"), "remix": ("copies_written",), "tokenize": ("tokens",)}
PARTS = ("counts", "extract", "minhash", "tokenizer", "filter", "train")


def cpu() -> float:
    return time.process_time()


def best_of(rounds: int, **fns) -> dict[str, float]:
    """Least CPU seconds of each function over ``rounds`` alternating rounds (same load on each)."""
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = cpu()
            fn()
            best[k] = min(best[k], cpu() - t)
    return best


def sample_texts() -> list[str]:
    from curation.sources import read_dolma_jsonl

    texts = []
    for path in sorted((SAMPLE / "text").glob("*.jsonl.gz")):
        with open(path, "rb") as f:
            texts += [d["text"] for d in read_dolma_jsonl(f, path.name)]
    return texts


# ---------------------------------------------------------------- the parts

def part_counts(m: dict) -> None:
    run = WORK / "run"
    shutil.rmtree(run, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    stages = ",".join(STAGE_DIRS)
    log = WORK / "run.log"
    with open(log, "wb") as out:
        rc = subprocess.run([sys.executable, "-m", "pipelines", "run", "--config", "configs/demo.yaml", "--no-report",
                             "--set", f"output={run}", "--set", f"stages=[{stages}]"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"bench-check: the curation run failed (exit {rc}); its log: {os.path.relpath(log)}")
    for stage, folder in STAGE_DIRS.items():
        st = json.loads((run / folder / "stats.json").read_text())
        m[f"counts.{stage}.input"] = st["input"]
        m[f"counts.{stage}.output"] = st["output"]
        for reason, n in st["dropped"].items():
            m[f"counts.{stage}.dropped.{reason}"] = n
        for name in COUNTERS.get(stage, ()):
            m[f"counts.{stage}.{name}"] = st["counters"].get(name)
        m[f"counts.{stage}.failed_files"] = len(st["failed_files"])


def part_extract(m: dict, rounds: int, passes: int = 5) -> None:
    import bench_extract as bx

    files = [str(bx.sample_modern())] * passes
    meter = bx.CPUMeter()
    best = {"stage": float("inf"), "plain": float("inf")}
    with tempfile.TemporaryDirectory(prefix="bench-check-extract-") as tmp:
        for r in range(rounds):
            for kind, spec in (("stage", {"kind": "stage", "files": files, "overrides": []}),
                               ("plain", {"kind": "plain", "files": files, "options": {}})):
                out = Path(tmp) / f"{kind}-{r}"
                out.mkdir()
                seconds, result = bx.measure(meter, {**spec, "out": str(out)})
                best[kind] = min(best[kind], seconds)
                if kind == "stage":
                    m["extract.records"] = result["totals"]["input"]
    m["extract.stage_cpu_s"], m["extract.plain_cpu_s"] = best["stage"], best["plain"]
    m["extract.ratio"] = best["plain"] / best["stage"]


def part_minhash(m: dict, rounds: int) -> None:
    import numpy as np
    import xxhash
    from datasketch import MinHash

    from curation.dedup import DedupConfig
    from curation.dedup import minhash as mh

    cfg = DedupConfig()
    k, seed, ngram = cfg.minhash.num_perm, cfg.minhash.seed, cfg.shingles.ngram
    perm = np.array(mh.permutations(k, seed))
    normalized = [mh.normalize(t, cfg.shingles) for t in sample_texts()]

    def ours():
        h, c = mh.shingle_hashes(normalized, ngram)
        return mh.minhash_signatures(h, c, k, seed)

    def datasketch():
        for s in normalized:  # the same shingles, hashed by xxh32 as datasketch's users do
            ds = MinHash(num_perm=k, hashfunc=xxhash.xxh32_intdigest, permutations=perm, scheme="affine32")
            ds.update_batch([x.encode("utf-8") for x in mh.shingles(s, ngram)])

    best = best_of(rounds, ours=ours, datasketch=datasketch)
    n = len(normalized)
    m["minhash.documents"] = n
    m["minhash.ours_docs_per_cpu_s"], m["minhash.datasketch_docs_per_cpu_s"] = n / best["ours"], n / best["datasketch"]
    m["minhash.ratio"] = best["datasketch"] / best["ours"]


def part_tokenizer(m: dict, rounds: int) -> None:
    from tokenizers import Tokenizer

    from tokenizer.bpe import encode_text

    folder = WORK / "run" / "tokenizer"
    if not (folder / "tokenizer.json").exists():
        raise SystemExit("bench-check: the tokenizer part needs the counts part's tokenizer (run it with counts)")
    texts = sample_texts()
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.encode_special_tokens = True  # as the stage loads it
    batches = [texts[i : i + 256] for i in range(0, len(texts), 256)]
    best = best_of(rounds, stage=lambda: [encode_text(tok, b) for b in batches],
                   plain=lambda: [tok.encode_batch(b, add_special_tokens=False) for b in batches])
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    m["tokenizer.mb"] = mb
    m["tokenizer.stage_mb_per_cpu_s"], m["tokenizer.plain_mb_per_cpu_s"] = mb / best["stage"], mb / best["plain"]
    m["tokenizer.ratio"] = best["plain"] / best["stage"]


def part_filter(m: dict) -> None:
    import bench_filter as bf
    from curation.filter.compare import agreement, datatrove_decisions, our_decisions
    from curation.filter.config import preset_config

    english = [d["text"] for d in bf.sample_documents() if d["language"] == "en" and (d["language_score"] or 0) >= 0.65]
    datatrove_decisions(english[:3], "fineweb")  # spaCy and the filters loaded outside the timing
    cfg = preset_config("fineweb")
    our_decisions(english[:3], cfg)
    t = cpu()
    ours = our_decisions(english, cfg)
    ours_s = cpu() - t
    t = cpu()
    theirs = datatrove_decisions(english, "fineweb")
    theirs_s = cpu() - t
    table = agreement(ours, theirs)
    m["filter.documents"] = len(english)
    for key, n in table.items():
        m[f"filter.{key.replace(' ', '_')}"] = n
    m["filter.ours_docs_per_cpu_s"], m["filter.datatrove_docs_per_cpu_s"] = len(english) / ours_s, len(english) / theirs_s
    m["filter.ratio"] = theirs_s / ours_s


def part_train(m: dict, rounds: int) -> None:
    import torch

    import bench_train as bt

    torch.set_num_threads(1)
    args = argparse.Namespace(model="tiny", seq_len=256, micro_batch=8, accum=2, steps=6, warmup=2)
    data = bt.shards(str(REPO / "build" / "bench-train" / "tokens"))
    trainer, plain = [], []
    with tempfile.TemporaryDirectory(prefix="bench-check-train-") as work:
        for _ in range(rounds):
            trainer.append(bt.trainer_round(args, data, work))
            plain.append(bt.plain_round(args, data))
    m["train.trainer_tokens_per_s"], m["train.plain_tokens_per_s"] = max(trainer), max(plain)
    m["train.ratio"] = max(trainer) / max(plain)


# ---------------------------------------------------------------- requirements

def requirements() -> list[dict]:
    doc = yaml.safe_load(CHECKS.read_text())
    return [dict(r, entry=e["name"]) for e in doc["entries"] for r in e["requirements"]]


def judge(reqs: list[dict], m: dict, parts: set[str]) -> list[str]:
    """One line per failed requirement; prints every requirement's result."""
    failed = []
    print(f"\n{'requirement':<52} {'measured':>12}  {'required':<18} result")
    for r in reqs:
        metric = r["metric"]
        if metric.split(".")[0] not in parts:
            continue
        got = m.get(metric)
        if "exact_value" in r:
            need, ok = f"= {r['exact_value']}", got == r["exact_value"]
        else:
            need = f">= {r['min_value']}"
            ok = got is not None and got >= r["min_value"]
        shown = "missing" if got is None else (f"{got:,.3f}" if isinstance(got, float) else f"{got:,}")
        print(f"{metric:<52} {shown:>12}  {need:<18} {'ok' if ok else 'REGRESSED'}")
        if not ok:
            failed.append(f"{metric}: measured {shown}, required {need} ({r['entry']})")
    recorded = {r["metric"] for r in reqs}
    for metric in sorted(k for k in m if k.startswith("counts.") and k not in recorded and "counts" in parts):
        print(f"{metric:<52} {m[metric]:>12,}  {'(not recorded)':<18} NEW")
        failed.append(f"{metric}: measured {m[metric]:,}, not in benchmarks/check.yaml (a new drop reason or figure)")
    return failed


def record_counts(m: dict) -> None:
    """Rewrite the counts entry of check.yaml with this run's counts (floors are left as they are)."""
    text = CHECKS.read_text()
    header = "".join(line for line in text.splitlines(keepends=True)[: next(i for i, ln in enumerate(text.splitlines()) if ln.startswith("entries:"))])
    doc = yaml.safe_load(text)
    for e in doc["entries"]:
        if e["name"] == "counts":
            e["requirements"] = [{"metric": k, "exact_value": v} for k, v in m.items() if k.startswith("counts.")]
    CHECKS.write_text(header + yaml.safe_dump({"entries": doc["entries"]}, sort_keys=False, width=120, allow_unicode=True, default_flow_style=None))
    print(f"counts recorded in {os.path.relpath(CHECKS)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: " + ", ".join(PARTS))
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of each throughput pair; the best counts")
    ap.add_argument("--record-counts", action="store_true", help="write this run's counts into benchmarks/check.yaml")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    if parts - set(PARTS):
        print(f"bench-check: unknown part(s) {', '.join(sorted(parts - set(PARTS)))}; choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    m: dict = {}
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    for part in PARTS:
        if part not in parts:
            continue
        t = time.perf_counter()
        print(f"bench-check: {part} ...", file=sys.stderr, flush=True)
        if part == "counts":
            part_counts(m)
        elif part == "extract":
            part_extract(m, min(args.rounds, 2))  # a fresh process per run: two rounds are enough here
        elif part == "minhash":
            part_minhash(m, args.rounds)
        elif part == "tokenizer":
            part_tokenizer(m, args.rounds)
        elif part == "filter":
            part_filter(m)
        elif part == "train":
            part_train(m, min(args.rounds, 2))
        seconds[part] = time.perf_counter() - t
    wall = time.perf_counter() - start
    if args.record_counts:
        record_counts(m)
    failed = judge(requirements(), m, parts)
    from benchmarks.results import record

    record("check", {"wall_s": wall, "part_seconds": seconds, "measured": m, "failed": failed})
    print(f"\nbench-check: {len(failed)} regression(s) in {wall:.0f} s" + ("" if not failed else ":"))
    for line in failed:
        print(f"  {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
