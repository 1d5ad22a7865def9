"""Scaling of each CPU stage from 1 to 2 workers, side by side in one run (`make bench-scaling`).

For each worker count a fresh local Ray instance with that many CPUs runs extract (the 7 bundled
WARC files), then dedup, filter and tokenize over a larger multi-dump corpus made once from the
real bundled documents (benchmarks/dedup_corpus.py: re-crawls and near-copies of real pages, 4 dumps,
--docs documents) plus the extracted pages; tokenize uses a tokenizer trained once beforehand,
outside the timings. Prints wall time per stage, documents per second and the speed-up of the
last worker count over the first, and checks that the outputs' rows are the same for every worker
count (the stages promise identical output whatever the number of workers).

    python benchmarks/bench_scaling.py [--workers 1 2] [--docs 20000] [--out build/bench-scaling]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLE = REPO / "data" / "sample"


def _digest(folder: Path) -> str:
    """The rows of every shard (not the file bytes: token shards record their input's path)."""
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    for f in sorted(folder.rglob("*.parquet")):
        if not f.name.startswith("."):
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(repr(pq.read_table(f).to_pydict()).encode())
    return h.hexdigest()[:16]


def _timed(argv: list[str]) -> float:
    from pipelines.cli import main

    t0 = time.perf_counter()
    rc = main(argv)
    if rc not in (0, 1):
        raise SystemExit(f"{argv[0]} failed with status {rc}")
    return time.perf_counter() - t0


def run_once(workers: int, base: Path, tokenizer: Path, corpus: list[str]) -> dict[str, dict]:
    import ray

    os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        shutil.rmtree(base, ignore_errors=True)
        res: dict[str, dict] = {}
        steps = [
            ("extract", ["extract", "--input", str(SAMPLE / "warc"), "--output", str(base / "extracted")], base / "extracted"),
            ("dedup", ["dedup", "--input", str(base / "extracted"), *corpus, "--output", str(base / "dedup")], base / "dedup" / "documents"),
            ("filter", ["filter", "--input", str(base / "dedup" / "documents"), "--output", str(base / "filtered")], base / "filtered"),
            ("tokenize", ["tokenize", "--tokenizer", str(tokenizer), "--input", str(base / "dedup" / "documents"), "--output", str(base / "tokens")], base / "tokens"),
        ]
        for name, argv, produced in steps:
            seconds = _timed(argv)
            stats = json.loads((Path(argv[argv.index("--output") + 1]) / "stats.json").read_text())
            res[name] = {"seconds": seconds, "documents": stats["input"], "digest": _digest(produced)}
        return res
    finally:
        ray.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=str(REPO / "build" / "bench-scaling"))
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--docs", type=int, default=20_000, help="documents in the generated multi-dump corpus")
    args = ap.parse_args()
    out = Path(args.out)
    corpus_dir = out / f"corpus-{args.docs}"
    if not corpus_dir.exists():
        import subprocess

        subprocess.run([sys.executable, str(REPO / "benchmarks" / "dedup_corpus.py"), "corpus", "--out", str(corpus_dir),
                        "--docs", str(args.docs), "--no-truth"], check=True)
    corpus = sorted(str(d) for d in corpus_dir.iterdir() if d.is_dir())  # one folder per dump
    tok = out / "tokenizer"
    if not (tok / "stats.json").exists():  # one tokenizer for every run, trained outside the timings
        import ray

        from pipelines.cli import main as cli

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        cli(["train-tokenizer", "--input", str(SAMPLE / "text"), "--output", str(tok), "--set", f"vocab_size={args.vocab}"])
        ray.shutdown()
    results = {w: run_once(w, out / f"w{w}", tok, corpus) for w in args.workers}
    first, last = args.workers[0], args.workers[-1]
    print(f"\nCPU stage scaling on this machine ({os.cpu_count()} cores; extract: 7 bundled WARC files; "
          f"dedup/filter/tokenize: {args.docs:,}-document generated corpus + extracted pages)", file=sys.stderr)
    head = f"{'stage':<10} {'documents':>9} " + " ".join(f"{f'{w} worker(s) s':>14} {'docs/s':>8}" for w in args.workers) + f" {'speed-up':>9} {'same output':>12}"
    print(head)
    for stage in results[first]:
        r = {w: results[w][stage] for w in args.workers}
        cells = " ".join(f"{r[w]['seconds']:>14.1f} {r[w]['documents'] / r[w]['seconds']:>8.1f}" for w in args.workers)
        same = len({r[w]["digest"] for w in args.workers}) == 1
        print(f"{stage:<10} {r[first]['documents']:>9,} {cells} {r[first]['seconds'] / r[last]['seconds']:>8.2f}x {str(same):>12}")
    tot = {w: sum(v["seconds"] for v in results[w].values()) for w in args.workers}
    print(f"{'total':<10} {'':>9} " + " ".join(f"{tot[w]:>14.1f} {'':>8}" for w in args.workers) + f" {tot[first] / tot[last]:>8.2f}x")
    from benchmarks.results import record

    record("scaling", {"corpus_docs": args.docs, "workers": args.workers, "stages": {
        stage: {"documents": results[first][stage]["documents"],
                "seconds": {str(w): results[w][stage]["seconds"] for w in args.workers},
                "speed_up": results[first][stage]["seconds"] / results[last][stage]["seconds"],
                "same_output": len({results[w][stage]["digest"] for w in args.workers}) == 1} for stage in results[first]},
        "total_seconds": {str(w): tot[w] for w in args.workers}, "total_speed_up": tot[first] / tot[last]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
