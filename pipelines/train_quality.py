"""``python -m pipelines train-quality``: train the fastText quality classifier the filter uses.

Positives: human-annotated article bodies (extraction-gold) and instruction data (sft); negatives:
random web documents (Dolma/CCNet JSONL and/or document shards from the extract stage). Held-out
precision, recall and ROC AUC are printed and written next to the model (``<model>.json``). A
small job: it runs in this process, deterministically (one thread, fixed seed).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

from curation.filter.quality import QualityTrainConfig, evaluate, gold_articles, sft_texts, split_examples, train
from curation.sources import read_dolma_jsonl
from pipelines import config, runtime
from storage import io
from pipelines.cli import add_config_arguments

NAME = "train-quality"
HELP = "Train the fastText quality classifier (explanatory/instruction text vs. random web text)."

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SHARED = os.path.join(os.path.dirname(_REPO), "shared", "data")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gold", default=os.path.join(_SHARED, "extraction-gold", "ground-truth.json"),
                   help="ground-truth.json of human-annotated article bodies (positives)")
    p.add_argument("--sft", nargs="+", default=[os.path.join(_REPO, "data", "sample", "sft")],
                   help="instruction data: .jsonl files or folders (positives)")
    p.add_argument("--web", nargs="+", default=[os.path.join(_REPO, "data", "sample", "text")],
                   help="random web text: Dolma/CCNet .jsonl(.gz) files or folders (negatives)")
    p.add_argument("--web-shards", nargs="*", default=["out/extracted"],
                   help="document shards (e.g. the extract stage's output) as more negatives; absent folders are skipped")
    p.add_argument("--languages", nargs="*", default=["en", "zh"],
                   help="keep only negatives in these languages (lid.176), so the model learns quality, not language")
    p.add_argument("--output", default="models/quality.ftz", help="where the model goes (.ftz when quantized)")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(QualityTrainConfig, args.config, args.overrides)
    with runtime.Timer() as timer:
        positives: list[str] = []
        sources: dict[str, int] = {}
        if not os.path.exists(args.gold):
            print(f"train-quality: {args.gold} not found (the gold article bodies)", file=sys.stderr)
            return 2
        gold = gold_articles(args.gold)[: cfg.max_per_source]
        positives += gold
        sources["gold articles"] = len(gold)
        for path in _files(args.sft, (".jsonl",)):
            texts = sft_texts(path)[: cfg.max_per_source]
            positives += texts
            sources[os.path.basename(path)] = len(texts)
        negatives: list[str] = []
        for path in _files(args.web, (".jsonl", ".jsonl.gz")):
            with open(path, "rb") as f:
                texts = [d["text"] for d in read_dolma_jsonl(f, path)]
            negatives += texts
            sources[os.path.basename(path)] = len(texts)
        shards = [s for s in args.web_shards if io.exists(s)]
        if shards:
            for path in io.list_shards(shards[0]) if len(shards) == 1 else sum((io.list_shards(s) for s in shards), []):
                texts = io.read_parquet(path, columns=["text"]).column("text").to_pylist()
                negatives += texts
                sources[os.path.basename(path)] = len(texts)
        if args.languages:
            from curation.langid import identify

            before = len(negatives)
            negatives = [t for t in negatives if identify(t)[0] in args.languages]
            sources["negatives outside --languages (left out)"] = before - len(negatives)
        if not positives or not negatives:
            print("train-quality: need both positive and negative examples", file=sys.stderr)
            return 2
        train_set, heldout = split_examples(positives, negatives, cfg)
        train(train_set, args.output, cfg)
        metrics = evaluate(heldout, args.output)
        train_metrics = evaluate(train_set, args.output)
    report = {
        "model": args.output,
        "bytes": os.path.getsize(args.output),
        "sources": sources,
        "train": {"examples": len(train_set), "positives": sum(y for _, y in train_set)},
        "heldout": metrics,
        "train_fit": train_metrics,
        "config": config.to_dict(cfg),
    }
    io.write_json(report, os.path.splitext(args.output)[0] + ".json")
    print(f"\n== {NAME}: summary ==", file=sys.stderr)
    for name, n in sources.items():
        print(f"  {'source ' + name:<40} {n:>6}", file=sys.stderr)
    print(f"  {'train examples':<40} {len(train_set):>6}", file=sys.stderr)
    print(f"  {'held-out examples':<40} {metrics['examples']:>6} ({metrics['positives']} positive)", file=sys.stderr)
    print(f"  held-out precision {metrics['precision']:.3f}  recall {metrics['recall']:.3f}  F1 {metrics['f1']:.3f}  AUC {metrics['auc']:.3f}", file=sys.stderr)
    print(f"  model {args.output}: {report['bytes'] / 1e6:.2f} MB, {timer.seconds:.1f} s", file=sys.stderr)
    return 0


def _files(specs: list[str], suffixes: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for spec in specs:
        if os.path.isdir(spec):
            out += sorted(f for f in glob.glob(os.path.join(spec, "**", "*"), recursive=True) if f.endswith(suffixes))
        elif os.path.exists(spec):
            out.append(spec)
    return out
