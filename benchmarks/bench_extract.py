"""`make bench-extract`: the extraction stage against a plain loop, side by side in one run.

(a) the stage's per-file function (the code each Ray task runs: FastWARC, HTTP/charset decoding,
    trafilatura in the sandbox, lid.176, Parquet) over the sample WARCs, one file after another
    in this process;
(b) a plain single-process loop: warcio iteration + ``trafilatura.extract`` with default options
    over the same records, those the stage extracts text from (HTTP 200/203 responses whose
    content type says HTML). Counting every response instead would turn 404 pages, scripts and
    images into "documents" (203 of them here, against 151 real pages).
(a) and (b) alternate ``--repeat`` times; the fastest run of each counts (the machine is shared).
(c) trafilatura alone, with the stage's options, on the same pages: stock, then with
    ``curation.extract.trafilatura_fix``, checking that every page's text is identical;
(d) the stage through Ray on every CPU.
Prints documents per CPU-second for each, their ratio, WARC MB per CPU-second, and extraction F1
of both configurations on the 181-page gold set (../shared/data/extraction-gold) when present.
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

from curation.extract import ExtractConfig, Extractor, extract_text, iter_records, trafilatura_fix  # noqa: E402
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
                    http = rec.http_headers
                    if rec.rec_type != "response" or http is None or http.get_statuscode() not in ("200", "203"):
                        continue
                    if "html" not in (http.get_header("Content-Type") or "").lower():
                        continue
                    text = trafilatura.extract(rec.content_stream().read())
                    docs += bool(text)
            except Exception:  # noqa: BLE001 - a plain loop stops at a broken file
                pass
    return docs, time.perf_counter() - t0, cpu_seconds() - c0


def sample_pages(files: list[str]) -> list[tuple[str | None, str]]:
    """(url, decoded HTML) of every page the stage runs trafilatura on."""
    pages = []
    with Extractor(ExtractConfig(sandbox=False)) as ex:
        for path in files:
            with open(path, "rb") as f:
                pages += [(rec.uri, html) for rec, html in ex.pages(iter_records(f))]
    return pages


def trafilatura_stock_vs_fixed(pages: list[tuple[str | None, str]]) -> tuple[float, float, int]:
    """CPU seconds of trafilatura with the stage's options, stock then fixed, and the pages whose text differs."""
    import trafilatura

    cfg = ExtractConfig()

    def run() -> tuple[list, float]:
        c0 = cpu_seconds()
        out = [trafilatura.extract(html, url=url, fast=cfg.fast, include_comments=cfg.include_comments, include_tables=cfg.include_tables,
                                   with_metadata=False, deduplicate=False) for url, html in pages]
        return out, cpu_seconds() - c0

    assert not trafilatura_fix.installed(), "the fix must not be in place yet: (b) and stock (c) run plain trafilatura"
    stock, stock_s = run()
    trafilatura_fix.install()
    fixed, fixed_s = run()
    return stock_s, fixed_s, sum(a != b for a, b in zip(stock, fixed))


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
    ap.add_argument("--repeat", type=int, default=3, help="runs of (a) and (b), alternating; the fastest of each counts")
    args = ap.parse_args()
    files = sorted({f for spec in args.input for f in (glob.glob(f"{spec}/**/*", recursive=True) if os.path.isdir(spec) else [spec]) if f.endswith(SUFFIXES)})
    mb = sum(os.path.getsize(f) for f in files) / 1e6
    print(f"input: {len(files)} WARC files, {mb:.1f} MB compressed")
    with tempfile.TemporaryDirectory() as tmp:
        runs_a, runs_b = [], []
        for i in range(args.repeat):
            runs_a.append(stage_in_process(files, f"{tmp}/a{i}"))
            runs_b.append(plain_loop(files))
            print(f"  run {i + 1}: stage {runs_a[-1][2]:.2f} CPU s, plain loop {runs_b[-1][2]:.2f} CPU s", flush=True)
        docs_a, wall_a, cpu_a = min(runs_a, key=lambda r: r[2])
        docs_b, wall_b, cpu_b = min(runs_b, key=lambda r: r[2])
        rows = [
            ("stage, 1 worker (in process)", docs_a, wall_a, cpu_a),
            ("plain loop (warcio + trafilatura defaults)", docs_b, wall_b, cpu_b),
        ]
        pages = sample_pages(files)
        stock_s, fixed_s, differ = trafilatura_stock_vs_fixed(pages)
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
    print(f"ratio stage / plain loop, WARC MB per CPU-second (same input): {cpu_b / cpu_a:.2f}x")
    print(f"\ntrafilatura alone with the stage's options on the {len(pages)} pages: stock {stock_s:.2f} CPU s, "
          f"with trafilatura_fix {fixed_s:.2f} CPU s ({stock_s / fixed_s:.2f}x); pages whose text differs: {differ}")
    f1 = gold_f1()
    if f1:
        print("\nextraction quality on the 181-page gold set (shingle P/R/F1):")
        for name, s in f1.items():
            print(f"  {name:<22} precision {s['precision']:.3f}  recall {s['recall']:.3f}  F1 {s['f1']:.3f}")


if __name__ == "__main__":
    main()
