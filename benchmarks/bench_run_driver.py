"""The driver of `pipelines run` stays flat as the corpus grows.

    python benchmarks/bench_run_driver.py [--sizes 100000,1600000]

`pipelines run` of the curation stages - dedup (with dedup-stats and its sample of clusters),
filter (every signal computed, the corpus-wide `quality.top_fraction` cut deciding), remix,
train-tokenizer, tokenize, and the run report - on generated 4-dump corpora of about 100k and 1.6M documents (the dedup
benchmark's scale corpora: real pages re-crawled with edits, 4-12-sentence new pages), given to
the run as document shards (`dedup.inputs`). Each size runs in a fresh process; the driver's peak
RSS is its VmHWM, polled (the driver alone, not its Ray workers). Then `dedup-explain` on the
largest run: the first question (which builds the lookup) and later ones, wall seconds each.
Figures go to benchmarks/results/run-driver.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_dedup import measured, scale_corpus  # noqa: E402
from curation.filter.rules import RULE_NAMES  # noqa: E402
from results import record  # noqa: E402

BUILD = REPO / "build" / "bench-run-driver"
STAGES = ["dedup", "filter", "remix", "train-tokenizer", "tokenize"]


def run_config(corpus: Path, out: Path) -> dict:
    return {
        "output": str(out), "stages": STAGES, "num_cpus": 2,
        "dedup": {"inputs": sorted(str(p) for p in corpus.iterdir() if p.is_dir())},
        # The generated pages are real sentences with their words shuffled: language id and the
        # heuristic rules would drop nearly all of them, and the stages after the filter would have
        # nothing to do. So the filter computes every signal and decides by the model score alone,
        # keeping the top half (the corpus-wide cut), and every later stage works on that half.
        "filter": {"config": {"quality": {"top_fraction": 0.5}, "disabled_rules": [r for r in RULE_NAMES if r != "quality_score"]}},
        "tokenizer": {"config": {"vocab_size": 8000, "max_bytes": 50_000_000}},
    }


def one_size(size: int) -> dict:
    corpus = scale_corpus(size)
    out = BUILD / f"run-{size // 1000}k"
    shutil.rmtree(out, ignore_errors=True)
    BUILD.mkdir(parents=True, exist_ok=True)
    cfg = BUILD / f"run-{size // 1000}k.yaml"
    cfg.write_text(yaml.safe_dump(run_config(corpus, out)))
    cpu, wall, how, driver = measured(["nice", sys.executable, "-m", "pipelines", "run", "--config", str(cfg)], f"run{size}")
    stages = {}
    for s in STAGES:
        log = json.loads((out / "_run" / f"{s}.json").read_text())
        st = json.loads((out / {"dedup": "dedup", "filter": "filtered", "remix": "remix", "train-tokenizer": "tokenizer",
                                "tokenize": "tokens"}[s] / "stats.json").read_text())
        stages[s] = {"seconds": round(log["seconds"], 1), "documents_in": st.get("input"), "documents_out": st.get("output"),
                     "driver_peak_rss_mb_after": log.get("driver_peak_rss_mb")}
    filt = json.loads((out / "filtered" / "stats.json").read_text())
    return {"documents": stages["dedup"]["documents_in"], "driver_peak_rss_mb": round(driver, 1), "cpu_seconds": round(cpu, 1),
            "wall_seconds": round(wall, 1), "cpu_measured_by": how, "quality_cut": filt.get("quality_cut"), "stages": stages,
            "output": str(out.relative_to(REPO))}


def explain_times(out: Path) -> dict:
    """dedup-explain: the first question on the command line (it builds the lookup, Ray included),
    a later one on the command line, and questions answered in this process (the lookup read,
    the node tables and input shards read, the texts compared), wall seconds."""
    import statistics

    import pyarrow.parquet as pq

    from curation.dedup import explain as ex

    dedup = out / "dedup"
    rows = pq.ParquetFile(dedup / "duplicates.parquet").read_row_group(0, columns=["removed_id", "removed_url"]).to_pylist()
    shutil.rmtree(dedup / "lookup", ignore_errors=True)

    def cli(q: str) -> float:
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "pipelines", "dedup-explain", str(dedup), q], cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        if p.returncode:
            raise RuntimeError(f"dedup-explain failed ({p.returncode}): {p.stderr[-3000:]}")
        return round(time.perf_counter() - t, 2)

    first = cli(rows[0]["removed_id"])
    later_cli = cli(rows[len(rows) // 2]["removed_id"])
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines", "--help"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    cli_start = round(time.perf_counter() - t, 2)
    asked = []
    for q in [r["removed_id"] for r in rows[1:: max(1, len(rows) // 8)][:8]] + [rows[2]["removed_url"]]:
        t = time.perf_counter()
        ex.format_explanation(ex.explain(str(dedup), q))
        asked.append(time.perf_counter() - t)
    return {"first_question_cli_s": first, "later_question_cli_s": later_cli, "cli_start_s": cli_start,
            "in_process_median_s": round(statistics.median(asked), 3), "in_process_max_s": round(max(asked), 3), "questions": len(asked)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1600000")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    runs = {}
    print(f"{'documents':>10} {'driver peak MB':>15} {'vs first':>9} {'CPU s':>8} {'wall s':>8}  stage: seconds (driver peak MB after it)")
    for size in sizes:
        r = one_size(size)
        runs[str(size)] = r
        first = runs[str(sizes[0])]["driver_peak_rss_mb"]
        print(f"{r['documents']:>10,} {r['driver_peak_rss_mb']:>15.0f} {r['driver_peak_rss_mb'] / first:>9.2f} {r['cpu_seconds']:>8.0f} "
              f"{r['wall_seconds']:>8.0f}  " + ", ".join(f"{s} {v['seconds']:.0f} ({v['driver_peak_rss_mb_after']:.0f})"
                                                           for s, v in r["stages"].items()), flush=True)
    largest = BUILD / f"run-{sizes[-1] // 1000}k"
    ex = explain_times(largest)
    print(f"dedup-explain on {runs[str(sizes[-1])]['documents']:,} documents: first question on the command line (builds the lookup) "
          f"{ex['first_question_cli_s']} s, a later one {ex['later_question_cli_s']} s (the command line's start alone: "
          f"{ex['cli_start_s']} s); answered in-process: median {ex['in_process_median_s']} s, max {ex['in_process_max_s']} s "
          f"over {ex['questions']} questions")
    lo, hi = runs[str(sizes[0])], runs[str(sizes[-1])]
    ratio = round(hi["driver_peak_rss_mb"] / lo["driver_peak_rss_mb"], 3)
    print(f"driver peak at {hi['documents']:,} documents / at {lo['documents']:,}: {ratio}x")
    record("run-driver", {"runs": runs, "dedup_explain": ex, "driver_peak_ratio": ratio},
           headline={"stage": "pipelines run, curation stages: driver peak RSS",
                     "figure": f"{hi['driver_peak_rss_mb']:.0f} MB at {hi['documents']:,} documents",
                     "peer": f"{lo['driver_peak_rss_mb']:.0f} MB at {lo['documents']:,} documents", "ratio": ratio, "unit": "x"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
