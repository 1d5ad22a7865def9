"""`make bench-extract`: the extraction stage against a plain loop, side by side in one run.

(a) the stage's per-file function (the code each Ray task runs: FastWARC, HTTP/charset decoding,
    trafilatura in the sandbox, lid.176) over the sample WARCs, one file after another in this
    process; then the same through Ray on every CPU;
(b) a plain single-process loop: warcio iteration + ``trafilatura.extract`` with default options
    on every response record.
Prints documents/s per core for each, their ratio, WARC MB/s, and extraction F1 of both
configurations on the 181-page gold set (../shared/data/extraction-gold) when it is present.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curation.extract import ExtractConfig, extract_text  # noqa: E402
from curation.extract.evaluate import score  # noqa: E402
from curation.extract.html import decode_html  # noqa: E402
from pipelines.extract import SUFFIXES, extract_file, shard_names  # noqa: E402


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the sandbox's extractor)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def stage_in_process(files: list[str], out: str) -> tuple[int, float, float]:
    import dataclasses

    from pipelines import extract

    cfg = dataclasses.asdict(ExtractConfig())
    t0, c0 = time.perf_counter(), cpu_seconds()
    docs = 0
    for path, name in zip(files, shard_names(files)):
        stats = extract_file((path, f"{out}/{name}.parquet", f"{out}/_stats/{name}.json", cfg, None, None))
        docs += stats["output"]
    for ex in extract._EXTRACTORS.values():
        ex.close()  # reap the sandbox so its CPU time is counted
    extract._EXTRACTORS.clear()
    return docs, time.perf_counter() - t0, cpu_seconds() - c0


def plain_loop(files: list[str]) -> tuple[int, float, float]:
    import trafilatura
    from warcio.archiveiterator import ArchiveIterator

    t0, c0 = time.perf_counter(), cpu_seconds()
    docs = 0
    for path in files:
        with open(path, "rb") as f:
            try:
                for rec in ArchiveIterator(f):
                    if rec.rec_type != "response":
                        continue
                    text = trafilatura.extract(rec.content_stream().read())
                    docs += bool(text)
            except Exception:  # noqa: BLE001 - a plain loop stops at a broken file
                pass
    return docs, time.perf_counter() - t0, cpu_seconds() - c0


def stage_on_ray(files: list[str], out: str) -> tuple[int, float, int]:
    from pipelines.cli import main
    from pipelines.runtime import init_ray
    import ray

    init_ray()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    t0 = time.perf_counter()
    main(["extract", "--input", *files, "--output", out])
    dt = time.perf_counter() - t0
    return json.load(open(f"{out}/stats.json"))["output"], dt, cpus


def gold_f1() -> dict[str, dict] | None:
    gold_dir = REPO.parent / "shared" / "data" / "extraction-gold"
    if not gold_dir.exists():
        return None
    truth = json.load(open(gold_dir / "ground-truth.json"))
    pages = {k: decode_html(gzip.open(gold_dir / "html" / f"{k}.html.gz").read(), None)[0] for k in truth}
    import trafilatura

    cfg = ExtractConfig()
    ours = [(truth[k]["articleBody"], extract_text(pages[k], truth[k].get("url"), cfg.fast, cfg.include_comments, cfg.include_tables)) for k in truth]
    plain = [(truth[k]["articleBody"], trafilatura.extract(pages[k])) for k in truth]
    return {"stage config": score(ours), "trafilatura defaults": score(plain)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--input", nargs="+", default=[str(REPO / "data" / "sample" / "warc")])
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    files = sorted({f for spec in args.input for f in (glob.glob(f"{spec}/**/*", recursive=True) if os.path.isdir(spec) else [spec]) if f.endswith(SUFFIXES)})
    mb = sum(os.path.getsize(f) for f in files) / 1e6
    print(f"input: {len(files)} WARC files, {mb:.1f} MB compressed")
    with tempfile.TemporaryDirectory() as tmp:
        docs_a, wall_a, cpu_a = stage_in_process(files, f"{tmp}/a")
        docs_b, wall_b, cpu_b = plain_loop(files)
        rows = [
            ("stage, 1 worker (in process)", docs_a, wall_a, cpu_a),
            ("plain loop (warcio + trafilatura defaults)", docs_b, wall_b, cpu_b),
        ]
        if not args.no_ray:
            docs_c, wall_c, cpus = stage_on_ray(files, f"{tmp}/c")
            rows.append((f"stage on Ray ({cpus} CPUs, wall incl. scheduling)", docs_c, wall_c, None))
    # Per core = per CPU-second actually used (this process and its extractor child), which
    # stays honest on a loaded machine where wall time also counts other programs.
    print(f"\n{'run':<50} {'docs':>6} {'wall s':>8} {'CPU s':>7} {'docs/CPU-s':>11} {'WARC MB/CPU-s':>14}")
    for name, docs, wall, cpu in rows:
        cpu_txt = f"{cpu:>7.2f} {docs / cpu:>11.2f} {mb / cpu:>14.3f}" if cpu else f"{'':>7} {docs / wall / cpus:>11.2f} {'(wall/core)':>14}"
        print(f"{name:<50} {docs:>6} {wall:>8.2f} {cpu_txt}")
    ratio = (docs_a / cpu_a) / (docs_b / cpu_b)
    print(f"\nratio stage / plain loop, documents per CPU-second: {ratio:.2f}x  (target >= 2x)")
    # The plain loop also turns redirect and error pages into "documents"; on the same input
    # bytes the fair comparison is CPU time for the whole input.
    print(f"ratio stage / plain loop, WARC MB per CPU-second (same input): {cpu_b / cpu_a:.2f}x")
    f1 = gold_f1()
    if f1:
        print("\nextraction quality on the 181-page gold set (shingle P/R/F1):")
        for name, s in f1.items():
            print(f"  {name:<22} precision {s['precision']:.3f}  recall {s['recall']:.3f}  F1 {s['f1']:.3f}")


if __name__ == "__main__":
    main()
