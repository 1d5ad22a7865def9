"""``python -m pipelines train-quality``: train the fastText quality classifier the filter uses.

Every default input is a file in the repository (``curation.filter.quality_data``), so a fresh
clone reproduces ``models/quality.ftz`` and its figures (seed ``QualityTrainConfig.seed``; same
bytes on the same platform, figures within ``FIGURE_TOLERANCE`` elsewhere). ``--derive-data``
rewrites the committed files from their origins (the shared gold set, the sample WARCs). Train
and evaluation are split by URL host (``split_examples``); held-out precision, recall and ROC AUC
are printed and written next to the model (``<model>.json``). A small job: it runs in this
process, on one thread.
"""

from __future__ import annotations

import argparse
import os
import sys

from curation.filter.quality import FIGURE_TOLERANCE, QualityTrainConfig, collect_examples, evaluate, split_examples, train
from curation.filter.quality_data import GOLD, GOLD_JSON, LANGUAGES, REPO, SFT, WARC_PAGES, WEB, derive_data, shards_as_jsonl
from pipelines import config, runtime
from storage import io
from pipelines.cli import add_config_arguments

NAME = "train-quality"
HELP = "Train the fastText quality classifier (explanatory/instruction text vs. random web text)."


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
                   help=f"rewrite {os.path.relpath(GOLD, REPO)} and {os.path.relpath(WARC_PAGES, REPO)} from "
                        "../shared/data/extraction-gold and data/sample/warc, then exit")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(QualityTrainConfig, args.config, args.overrides)
    if args.derive_data:
        if not os.path.exists(GOLD_JSON):
            print(f"train-quality: {GOLD_JSON} not found (the article-extraction benchmark's ground truth)", file=sys.stderr)
            return 2
        for path, n in derive_data().items():
            print(f"train-quality: wrote {n} documents to {os.path.relpath(path, REPO)}", file=sys.stderr)
        return 0
    missing = [p for p in args.gold + args.sft + args.web + list(args.web_shards) if not os.path.exists(p)]
    if missing:
        print(f"train-quality: {missing[0]} not found (run `python -m pipelines train-quality --derive-data` "
              "to rewrite the files of data/sample/quality)", file=sys.stderr)
        return 2
    with runtime.Timer() as timer:
        web = list(args.web)
        if args.web_shards:
            web += shards_as_jsonl(args.web_shards, os.path.splitext(args.output)[0] + ".web-shards.jsonl")
        examples, sources = collect_examples(args.gold, args.sft, web, cfg, languages=args.languages)
        if not any(e[1] for e in examples) or all(e[1] for e in examples):
            print("train-quality: need both positive and negative examples", file=sys.stderr)
            return 2
        train_set, heldout = split_examples(examples, cfg)
        train(train_set, args.output, cfg)
        metrics = evaluate(heldout, args.output)
        train_metrics = evaluate(train_set, args.output)
    report = {
        "model": os.path.relpath(os.path.abspath(args.output), REPO) if os.path.abspath(args.output).startswith(REPO) else args.output,
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
