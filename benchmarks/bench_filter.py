"""Filter throughput per core, overall and per rule family, and the drop table of the real sample.

Input: the bundled sample as extraction leaves it - every WARC of data/sample/warc through the
extraction library, plus the 690 already-extracted Common Crawl documents of data/sample/text -
with language set as the extract stage sets it. For the stage run it is replicated (new ids) to
at least 50,000 documents in build/filter-bench/.

Printed, side by side in one run:
  1. the presets against datatrove 0.10 itself on the sample's English documents (lid.176 en >=
     0.65): the agreement table (both keep, both drop, only ours keeps, only datatrove keeps) and
     both implementations' documents per CPU-second on the same documents, one process each;
  2. per rule family, one process: documents per CPU-second (time.process_time, so other load on
     the machine does not count against us) on the unique documents;
  3. the whole stage (Ray, every core): documents/s and documents/s per core, wall clock;
  4. the drop table of the real (unreplicated) sample, English and Chinese, with a snippet of
     what each rule removed.

    python benchmarks/bench_filter.py [--docs 50000] [--skip-stage] [--only-reference]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import time
from collections import Counter, defaultdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from curation.filter import FilterConfig, compute_signals  # noqa: E402
from curation.filter.config import BlocklistConfig, QualityModelConfig  # noqa: E402
from curation.filter import signals as S  # noqa: E402
from curation.filter.blocklist import is_blocked, parse_blocklist  # noqa: E402
from curation.filter.quality import score  # noqa: E402
from curation.filter.rules import first_failed_rule  # noqa: E402
from curation.filter.words import split_words  # noqa: E402
from curation.langid import identify  # noqa: E402
from curation.schema import document_id, documents_to_table  # noqa: E402
from curation.sources import read_dolma_jsonl  # noqa: E402
from curation.stats import StageStats  # noqa: E402

SAMPLE = os.path.join(REPO, "data", "sample")
MODEL = os.path.join(REPO, "models", "quality.ftz")
BLOCKLIST = os.path.join(REPO, "data", "blocklist.example.txt")


def sample_documents() -> list[dict]:
    from curation.extract import Extractor, iter_records

    docs: list[dict] = []
    with Extractor() as ex:
        for path in sorted(glob.glob(os.path.join(SAMPLE, "warc", "*.warc*"))):
            try:
                with open(path, "rb") as f:
                    docs += list(ex.documents(iter_records(f), StageStats(), os.path.basename(path)))
            except Exception as e:  # noqa: BLE001 - a bad sample file is reported, not fatal
                print(f"  (skipped {os.path.basename(path)}: {e})", file=sys.stderr)
    for path in sorted(glob.glob(os.path.join(SAMPLE, "text", "*.jsonl.gz"))):
        with open(path, "rb") as f:
            for d in read_dolma_jsonl(f, os.path.basename(path)):
                d["language"], d["language_score"] = identify(d["text"])
                docs.append(d)
    return docs


def per_rule(docs: list[dict], cfg: FilterConfig, repeats: int) -> list[tuple[str, float]]:
    texts = [d["text"] for d in docs]
    langs = [d["language"] for d in docs]
    urls = [d["url"] for d in docs]
    blocklist = parse_blocklist(open(BLOCKLIST, encoding="utf-8").read())
    prepared = []
    for t, lang in zip(texts, langs):
        lines = [ln for ln in (ln.strip() for ln in t.split("\n")) if ln]
        prepared.append((t, split_words(t, lang), lines, lang))
    signals = [dict(compute_signals(t, lang, cfg), language=lang, language_score=1.0, url_blocked=False) for t, lang in zip(texts, langs)]
    families = {
        "language id (lid.176)": lambda: [identify(t) for t in texts],
        "words + lines (shared)": lambda: [(split_words(t, lang), t.split("\n")) for t, lang in zip(texts, langs)],
        "gopher quality": lambda: [S.gopher_quality(t, w, ln, lang, cfg) for t, w, ln, lang in prepared],
        "gopher repetition": lambda: [S.gopher_repetition(t, w, ln, lang, cfg) for t, w, ln, lang in prepared],
        "c4": lambda: [S.c4_quality(t, ln, lang, cfg) for t, w, ln, lang in prepared],
        "fineweb": lambda: [S.fineweb_quality(t, w, ln, cfg) for t, w, ln, lang in prepared],
        "HEURISTIC SET (all four + words)": lambda: [compute_signals(t, lang, cfg) for t, lang in zip(texts, langs)],
        "url blocklist": lambda: [is_blocked(u, blocklist) for u in urls],
        "quality model (fastText)": lambda: score(texts, MODEL),
        "decision (all rules)": lambda: [first_failed_rule(s, cfg, 0.5) for s in signals],
    }
    out = []
    for name, fn in families.items():
        fn()  # warm (model loads, caches)
        t0 = time.process_time()
        for _ in range(repeats):
            fn()
        cpu = time.process_time() - t0
        out.append((name, repeats * len(texts) / cpu))
    return out


def replicate(docs: list[dict], n: int, folder: str, shards: int) -> int:
    from storage import io

    if os.path.isdir(folder):
        shutil.rmtree(folder)
    rows = []
    i = 0
    while len(rows) < n:
        for d in docs:
            r = {k: d.get(k) for k in ("id", "text", "url", "dump", "crawl_date", "language", "language_score", "metadata")}
            r["id"] = document_id(d["dump"] or "bench", f"{d['id']}#{i}")
            rows.append(r)
        i += 1
    per = (len(rows) + shards - 1) // shards
    for s in range(shards):
        io.write_parquet(documents_to_table(rows[s * per : (s + 1) * per]), os.path.join(folder, f"part-{s:03d}.parquet"))
    return len(rows)


def drop_table(docs: list[dict], cfg: FilterConfig) -> None:
    blocklist = parse_blocklist(open(BLOCKLIST, encoding="utf-8").read())
    q = score([d["text"] for d in docs], MODEL)
    counts: dict[str, Counter] = defaultdict(Counter)
    examples: dict[tuple[str, str], list[str]] = defaultdict(list)
    for d, qs in zip(docs, q):
        lang = d["language"] if d["language"] in cfg.language.keep else "other"
        s = dict(compute_signals(d["text"], d["language"], cfg), language=d["language"],
                 language_score=d["language_score"] or 0.0, url_blocked=is_blocked(d["url"], blocklist), quality_score=float(qs))
        reason = first_failed_rule(s, cfg) or "kept"
        counts[lang][reason] += 1
        if len(examples[(lang, reason)]) < 2:
            snippet = " ".join(d["text"].split())[:110]
            examples[(lang, reason)].append(f"{d['url'][:60]} | {snippet}")
    reasons = sorted({r for c in counts.values() for r in c}, key=lambda r: (r == "kept", -sum(c[r] for c in counts.values()), r))
    print("\n== drop table on the real sample (first failed rule; blocklist = data/blocklist.example.txt) ==")
    print(f"  {'rule':<28}{'en':>6}{'zh':>6}{'other':>7}")
    for r in reasons:
        print(f"  {r:<28}{counts['en'][r]:>6}{counts['zh'][r]:>6}{counts['other'][r]:>7}")
    print(f"  {'total':<28}{sum(counts['en'].values()):>6}{sum(counts['zh'].values()):>6}{sum(counts['other'].values()):>7}")
    print("\n== what each rule removed (English and Chinese examples) ==")
    for r in reasons:
        for lang in ("en", "zh"):
            for ex in examples.get((lang, r), [])[:1 if r == "kept" else 2]:
                print(f"  [{r} / {lang}] {ex}")


def reference(docs: list[dict]) -> dict:
    """Our presets and datatrove's filters on the same English documents: decisions and speed."""
    from curation.filter import en_words
    from curation.filter.compare import agreement, datatrove_decisions, our_decisions
    from curation.filter.config import preset_config

    english = [d["text"] for d in docs if d["language"] == "en" and (d["language_score"] or 0) >= 0.65]
    print(f"-- presets vs datatrove {_version('datatrove')} on {len(english)} English documents (lid.176 en >= 0.65) --")
    print("   documents per CPU-second, one process each, caches emptied first (ours: piece cache; theirs: spaCy loaded)")
    datatrove_decisions(english[:3], "fineweb")  # load spaCy and the filters
    header = f"  {'preset':<10}{'both keep':>10}{'both drop':>10}{'only ours':>10}{'only dt':>9}{'agree':>8}   {'ours':>8}{'datatrove':>11}{'ratio':>7}"
    print(header)
    table: dict[str, dict] = {}
    theirs_fineweb = None
    for preset in ("fineweb", "gopher", "c4", "deepseek"):
        cfg = preset_config(preset)
        en_words.clear_cache()
        t0 = time.process_time()
        ours = our_decisions(english, cfg)
        ours_cpu = time.process_time() - t0
        ref = "fineweb" if preset == "deepseek" else preset
        if preset == "deepseek" and theirs_fineweb is not None:
            theirs, theirs_cpu = theirs_fineweb
        else:
            t0 = time.process_time()
            theirs = datatrove_decisions(english, ref)
            theirs_cpu = time.process_time() - t0
            if preset == "fineweb":
                theirs_fineweb = (theirs, theirs_cpu)
        t = agreement(ours, theirs)
        agree = (t["both keep"] + t["both drop"]) / len(english)
        label = preset if preset != "deepseek" else "deepseek*"
        print(f"  {label:<10}{t['both keep']:>10}{t['both drop']:>10}{t['only ours keeps']:>10}{t['only datatrove keeps']:>9}"
              f"{agree:>8.1%}   {len(english) / ours_cpu:>8,.0f}{len(english) / theirs_cpu:>11,.0f}{theirs_cpu / ours_cpu:>6.1f}x")
        table[preset] = {**t, "documents": len(english), "agreement": agree, "ours_docs_per_cpu_s": len(english) / ours_cpu,
                         "datatrove_docs_per_cpu_s": len(english) / theirs_cpu, "reference": ref}
        if preset == "deepseek":
            pairs = Counter((a.reason or "keep", b.reason or "keep") for a, b in zip(ours, theirs) if a.kept != b.kept)
            print("  * deepseek (the default preset) against datatrove's FineWeb chain; its disagreements (ours, datatrove):")
            for (a, b), n in pairs.most_common():
                print(f"      {n:>3}  {a:<26} {b}")
    print()
    return table


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-stage", action="store_true")
    ap.add_argument("--only-reference", action="store_true", help="only the presets against datatrove")
    ap.add_argument("--workdir", default=os.path.join(REPO, "build", "filter-bench"))
    args = ap.parse_args()
    cfg = FilterConfig()
    print("preparing the sample (extracting the WARCs)...", file=sys.stderr)
    docs = sample_documents()
    mean_chars = sum(len(d["text"]) for d in docs) / len(docs)
    langs = Counter(d["language"] for d in docs)
    print(f"\n== bench-filter: {len(docs)} unique documents (mean {mean_chars:,.0f} characters; en {langs['en']}, zh {langs['zh']}) ==")
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    ref = reference(docs)
    if args.only_reference:
        return record_figures(docs, ref, [], [])
    print("-- per rule family, one process, documents per CPU-second --")
    rates = per_rule(docs, cfg, args.repeats)
    heuristic = dict(rates)["HEURISTIC SET (all four + words)"]
    for name, rate in rates:
        print(f"  {name:<36} {rate:>10,.0f} docs/s/core   {rate / heuristic:6.2f}x heuristic set")
    target = 1000
    print(f"  heuristic set vs target {target:,} docs/s/core: {heuristic / target:.2f}x")

    stage_rates: list[tuple[str, float, float]] = []
    if not args.skip_stage:
        from pipelines import runtime
        from pipelines.filter import filter_documents

        inp, out = os.path.join(args.workdir, "input"), os.path.join(args.workdir, "output")
        n = replicate(docs, args.docs, inp, args.shards)
        cores = os.cpu_count() or 1
        runtime.init_ray(num_cpus=cores)
        for label, c in (("heuristics + blocklist", FilterConfig(quality=QualityModelConfig(model=""), blocklist=BlocklistConfig(path=BLOCKLIST))),
                         ("+ quality model", FilterConfig(blocklist=BlocklistConfig(path=BLOCKLIST)))):
            if os.path.isdir(out):
                shutil.rmtree(out)
            t0 = time.perf_counter()
            filter_documents([inp], out, c)
            wall = time.perf_counter() - t0
            st = json.load(open(os.path.join(out, "stats.json")))
            cpu = st["counters"]["cpu_seconds_score"] + st["counters"]["cpu_seconds_decide"]
            stage_rates.append((label, n / cpu, n / wall / cores))
            print(f"\n-- whole stage ({label}), {n:,} documents, {args.shards} shards, Ray on {cores} cores --")
            print(f"  task CPU {cpu:,.1f} s: {n / cpu:,.0f} docs per CPU-second (score + decide, read and write included)")
            print(f"  wall {wall:,.1f} s: {n / wall:,.0f} docs/s, {n / wall / cores:,.0f} docs/s per core"
                  f" (load average now {os.getloadavg()[0]:.1f}; wall includes Ray start and other users' load)")
        print("\n-- summary, docs/s per core --")
        for label, per_cpu, per_core_wall in stage_rates:
            print(f"  whole stage, {label:<24} {per_cpu:>8,.0f} (CPU)  {per_core_wall:>8,.0f} (wall)  {per_cpu / target:5.2f}x target")
    drop_table(docs, cfg)
    return record_figures(docs, ref, rates, stage_rates)


def record_figures(docs: list[dict], ref: dict, rates: list, stage_rates: list) -> int:
    """What the run printed, as data: benchmarks/results/filter.json."""
    from benchmarks.results import record

    fw = ref["fineweb"]
    record("filter", {
        "documents": len(docs), "datatrove": _version("datatrove"), "presets_vs_datatrove": ref,
        "per_rule_docs_per_cpu_s": dict(rates),
        "stage": {label: {"docs_per_cpu_s": per_cpu, "docs_per_s_per_core_wall": per_core} for label, per_cpu, per_core in stage_rates},
    }, headline={"stage": "filter (fineweb preset, same decisions)", "figure": fw["ours_docs_per_cpu_s"],
                 "peer": {"name": f"datatrove {_version('datatrove')} FineWeb chain", "figure": fw["datatrove_docs_per_cpu_s"]},
                 "ratio": fw["ours_docs_per_cpu_s"] / fw["datatrove_docs_per_cpu_s"], "unit": "documents per CPU-second"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
