"""``python -m pipelines train-quality``: train the fastText quality classifier the filter uses.

Every default input is a file in the repository, so a fresh clone reproduces ``models/quality.ftz``
and its figures (seed ``QualityTrainConfig.seed``; same bytes on the same platform, figures within
``FIGURE_TOLERANCE`` elsewhere):

- positives: the 181 human-annotated article bodies of the article-extraction benchmark
  (``data/sample/quality/gold-articles.jsonl.gz``, with their URLs) and instruction data
  (``data/sample/sft``, without GSM8K test, which is an evaluation set);
- negatives: the sample's web documents (``data/sample/text``) and the pages the extraction library
  takes out of ``data/sample/warc`` (``data/sample/quality/warc-pages.jsonl.gz``).

``--derive-data`` rewrites those two files from their origins (the shared gold set, the sample
WARCs), deterministically. Train and evaluation are split by URL host (``split_examples``);
held-out precision, recall and ROC AUC are printed and written next to the model
(``<model>.json``). A small job: it runs in this process, on one thread.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import sys

from curation.filter.quality import (
    FIGURE_TOLERANCE, QualityTrainConfig, collect_examples, evaluate, gold_articles, split_examples, train,
)
from pipelines import config, runtime
from storage import io
from pipelines.cli import add_config_arguments

NAME = "train-quality"
HELP = "Train the fastText quality classifier (explanatory/instruction text vs. random web text)."

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SAMPLE = os.path.join(_REPO, "data", "sample")
_SHARED = os.path.join(os.path.dirname(_REPO), "shared", "data")
QUALITY_DATA = os.path.join(_SAMPLE, "quality")
GOLD = os.path.join(QUALITY_DATA, "gold-articles.jsonl.gz")
WARC_PAGES = os.path.join(QUALITY_DATA, "warc-pages.jsonl.gz")
SFT = [os.path.join(_SAMPLE, "sft", f) for f in
       ("gsm8k-chat-train.jsonl", "self-instruct-seed-tasks.jsonl", "self-instruct-user-oriented.jsonl")]
WEB = [os.path.join(_SAMPLE, "text"), WARC_PAGES]
LANGUAGES = ["en", "zh"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gold", nargs="+", default=[GOLD],
                   help="article bodies with URLs (positives): Dolma .jsonl(.gz) or a ground-truth.json")
    p.add_argument("--sft", nargs="+", default=SFT, help="instruction data: .jsonl files or folders (positives)")
    p.add_argument("--web", nargs="+", default=WEB, help="random web text: Dolma/CCNet .jsonl(.gz) files or folders (negatives)")
    p.add_argument("--web-shards", nargs="*", default=[],
                   help="document shards (e.g. the extract stage's output) as more negatives")
    p.add_argument("--languages", nargs="*", default=LANGUAGES,
                   help="keep only negatives in these languages (lid.176), so the model learns quality, not language")
    p.add_argument("--output", default="models/quality.ftz", help="where the model goes (.ftz when quantized)")
    p.add_argument("--derive-data", action="store_true",
                   help=f"rewrite {os.path.relpath(GOLD, _REPO)} and {os.path.relpath(WARC_PAGES, _REPO)} from "
                        "../shared/data/extraction-gold and data/sample/warc, then exit")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(QualityTrainConfig, args.config, args.overrides)
    if args.derive_data:
        return derive_data()
    missing = [p for p in args.gold + args.sft + args.web + list(args.web_shards) if not os.path.exists(p)]
    if missing:
        print(f"train-quality: {missing[0]} not found (run `python -m pipelines train-quality --derive-data` "
              "to rewrite the files of data/sample/quality)", file=sys.stderr)
        return 2
    with runtime.Timer() as timer:
        web = list(args.web)
        if args.web_shards:
            web += _shards_as_jsonl(args.web_shards, os.path.splitext(args.output)[0] + ".web-shards.jsonl")
        examples, sources = collect_examples(args.gold, args.sft, web, cfg, languages=args.languages)
        if not any(e[1] for e in examples) or all(e[1] for e in examples):
            print("train-quality: need both positive and negative examples", file=sys.stderr)
            return 2
        train_set, heldout = split_examples(examples, cfg)
        train(train_set, args.output, cfg)
        metrics = evaluate(heldout, args.output)
        train_metrics = evaluate(train_set, args.output)
    report = {
        "model": os.path.relpath(os.path.abspath(args.output), _REPO) if os.path.abspath(args.output).startswith(_REPO) else args.output,
        "bytes": os.path.getsize(args.output),
        "sources": sources,
        "split": f"by URL host: {cfg.heldout_fraction:.0%} of hosts held out (seed {cfg.seed}); records without a URL train",
        "train": {"examples": len(train_set), "positives": sum(e[1] for e in train_set),
                  "hosts": len({e[2] for e in train_set if e[2]})},
        "heldout": metrics,
        "train_fit": train_metrics,
        "seed": cfg.seed,
        "tolerance": FIGURE_TOLERANCE,
        "config": config.to_dict(cfg),
    }
    io.write_json(report, os.path.splitext(args.output)[0] + ".json")
    print(f"\n== {NAME}: summary ==", file=sys.stderr)
    for name, n in sources.items():
        print(f"  {'source ' + name:<48} {n:>6}", file=sys.stderr)
    print(f"  {'train examples':<48} {len(train_set):>6} ({report['train']['hosts']} hosts)", file=sys.stderr)
    print(f"  {'held-out examples (held-out hosts only)':<48} {metrics['examples']:>6} "
          f"({metrics['positives']} positive, {metrics['hosts']} hosts)", file=sys.stderr)
    print(f"  held-out precision {metrics['precision']:.3f}  recall {metrics['recall']:.3f}  F1 {metrics['f1']:.3f}  "
          f"AUC {metrics['auc']:.3f}  (seed {cfg.seed}; reproducible within ±{FIGURE_TOLERANCE})", file=sys.stderr)
    print(f"  model {args.output}: {report['bytes'] / 1e6:.2f} MB, {timer.seconds:.1f} s", file=sys.stderr)
    return 0


def _shards_as_jsonl(specs: list[str], path: str) -> list[str]:
    """Document shards as one Dolma JSONL file beside the model (the negatives reader's format)."""
    with open(path, "w", encoding="utf-8") as f:
        for spec in specs:
            for shard in io.list_shards(spec) if os.path.isdir(spec) else [spec]:
                t = io.read_parquet(shard, columns=["id", "text", "url"])
                for i, text, url in zip(*(t.column(c).to_pylist() for c in ("id", "text", "url"))):
                    f.write(json.dumps({"id": i, "text": text, "metadata": {"url": url}}, ensure_ascii=False) + "\n")
    return [path]


# ---- the committed training files ---------------------------------------------------------------

def derive_data(gold_json: str = os.path.join(_SHARED, "extraction-gold", "ground-truth.json"), warcs: str = os.path.join(_SAMPLE, "warc")) -> int:
    """Write data/sample/quality/: the gold article bodies with their URLs, and the documents the
    extraction library takes out of the sample WARCs. Same inputs, same bytes (sorted, gzip mtime 0)."""
    from curation.extract import Extractor, iter_records
    from curation.stats import StageStats

    if not os.path.exists(gold_json):
        print(f"train-quality: {gold_json} not found (the article-extraction benchmark's ground truth)", file=sys.stderr)
        return 2
    gold = [{"id": f"gold-{i:03d}", "text": text, "metadata": {"url": url}} for i, (text, url) in enumerate(gold_articles(gold_json))]
    pages = []
    with Extractor() as ex:
        for path in sorted(glob.glob(os.path.join(warcs, "*.warc*"))):
            with open(path, "rb") as f:
                for d in ex.documents(iter_records(f), StageStats(), os.path.basename(path)):
                    pages.append({"id": d["id"], "text": d["text"],
                                  "metadata": {"url": d["url"], "language": d["language"], "language_score": d["language_score"],
                                               "source_file": os.path.basename(path)}})
    for rows, out in ((gold, GOLD), (pages, WARC_PAGES)):
        _write_jsonl_gz(rows, out)
        print(f"train-quality: wrote {len(rows)} documents to {os.path.relpath(out, _REPO)}", file=sys.stderr)
    return 0


def _write_jsonl_gz(rows: list[dict], path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        f.write(data)
