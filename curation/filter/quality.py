"""A fastText quality classifier, DCLM-style: explanatory / instruction text vs. random web text.

DCLM (Li et al. 2024) found a bigram fastText classifier with instruction-style positives and
random web negatives to beat hand-written heuristics as a quality filter. Here the positives are
human-annotated article bodies and instruction data, the negatives random web documents, all
from files in the repository (``data/sample``; ``collect_examples``); the model's ``P(hq)`` is the
``quality_score`` the filter stores.

Train and evaluation are split by source, not by row (``split_examples``): every document of one
URL host falls on the same side, so the held-out figures say how the model does on sites it
never saw (pages of one site share boilerplate, and a row split would score that as skill).
Instruction records carry no URL and always train. Training is deterministic: one thread, a
fixed seed, a split by a hash of the host.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

POSITIVE, NEGATIVE = "__label__hq", "__label__web"
_SPACES = re.compile(r"\s+")
# fastText reads one line per example; the first few thousand characters carry the style signal
# and bound the cost per document.
MAX_CHARS = 5000

# (text, label 1/0, source: the URL host, or None for a record without a URL)
Example = tuple[str, int, "str | None"]


@dataclass
class QualityTrainConfig:
    # At most this many examples from each instruction file, so that one instruction set does
    # not teach the model "arithmetic is quality" and the classes stay near balance (our choice,
    # by 5-fold host-grouped cross-validation on the training hosts only, never the held-out
    # ones: mean AUC 0.874 at 50, 0.865 at 100, 0.829 at 250).
    max_per_source: int = 50
    # At most this many documents of one URL host (our choice): the sample's Heritrix crawl holds
    # 91 pages of www.archive.org, which would otherwise be a quarter of the negatives.
    max_per_host: int = 10
    # The fraction of URL hosts held out for evaluation (hash of seed and host).
    heldout_fraction: float = 0.3
    # fastText supervised settings as DCLM's classifier (bigrams), small enough to ship quantized.
    dim: int = 32
    epoch: int = 20
    lr: float = 0.3
    word_ngrams: int = 2
    min_count: int = 2
    bucket: int = 200_000
    # Seed of fastText and of the host split. With one thread, training is deterministic: the
    # same files give the same model bytes (fastText 0.9.x, same platform).
    seed: int = 0
    # Quantize (product quantization, fastText's .ftz) to keep the shipped model under 2 MB.
    quantize: bool = True
    cutoff: int = 50_000


# How far a retrained model's held-out figures may differ from the shipped models/quality.json
# (another platform's float rounding can move a few scores); checked by tests/test_filter.py.
FIGURE_TOLERANCE = 0.01


def normalize(text: str) -> str:
    return _SPACES.sub(" ", text[:MAX_CHARS]).strip().lower()


def source_of(url: str | None) -> str | None:
    """The URL's host without a leading ``www.`` (the unit of the train/evaluation split)."""
    from curation.filter.blocklist import url_host

    host = url_host(url)
    return host.removeprefix("www.") or None


# ---- training sources -------------------------------------------------------------------------

def gold_articles(path: str) -> list[tuple[str, str | None]]:
    """(article body, URL) of a ground-truth.json of the article-extraction benchmark."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return [(v["articleBody"], v.get("url")) for _, v in sorted(data.items()) if isinstance(v, dict) and v.get("articleBody", "").strip()]


def web_documents(path: str) -> list[tuple[str, str | None]]:
    """(text, URL) of a Dolma/CCNet JSONL(.gz) file."""
    from curation.sources import read_dolma_jsonl

    with open(path, "rb") as f:
        return [(d["text"], d["url"]) for d in read_dolma_jsonl(f, path)]


def sft_texts(path: str) -> list[str]:
    """Instruction examples as one text each: question and answer, or the chat turns."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            if "messages" in rec:
                text = "\n".join(m["content"] for m in rec["messages"] if m.get("role") != "system")
            elif "question" in rec:
                text = f"{rec['question']}\n{rec['answer']}"
            elif "instruction" in rec:
                parts = [rec["instruction"]]
                for inst in rec.get("instances", []):
                    parts += [inst.get("input", ""), inst.get("output", "")]
                text = "\n".join(p for p in parts if p)
            else:
                continue
            if text.strip():
                out.append(text)
    return out


def files(specs: Iterable[str], suffixes: tuple[str, ...]) -> list[str]:
    """The files named, and those below the folders named, ending in ``suffixes`` (sorted)."""
    out: list[str] = []
    for spec in specs:
        if os.path.isdir(spec):
            out += sorted(f for f in glob.glob(os.path.join(spec, "**", "*"), recursive=True) if f.endswith(suffixes))
        elif os.path.exists(spec):
            out.append(spec)
    return out


def collect_examples(
    gold: list[str], sft: list[str], web: list[str], cfg: QualityTrainConfig,
    languages: list[str] | None = None, identify: Callable[[str], tuple[str, float]] | None = None,
) -> tuple[list[Example], dict[str, int]]:
    """Labelled examples from the given files, and how many each source gave.

    Positives: article bodies (``gold``: ground-truth .json or Dolma .jsonl[.gz] with URLs) and
    instruction data (``sft``, at most ``max_per_source`` per file). Negatives: web documents
    (``web``: Dolma JSONL), only those in ``languages`` (lid.176) so the model learns quality, not
    language. Every hosted document: at most ``max_per_host`` per host, in file order.
    """
    examples: list[Example] = []
    sources: dict[str, int] = {}
    per_host: Counter = Counter()
    left_out = Counter()

    def add(pairs: list[tuple[str, str | None]], label: int, name: str) -> None:
        n = 0
        for text, url in pairs:
            host = source_of(url)
            if host is not None:
                if per_host[host] >= cfg.max_per_host:
                    left_out["documents over max_per_host (left out)"] += 1
                    continue
                per_host[host] += 1
            examples.append((text, label, host))
            n += 1
        sources[name] = n

    for path in files(gold, (".json", ".jsonl", ".jsonl.gz")):
        add(gold_articles(path) if path.endswith(".json") else web_documents(path), 1, os.path.basename(path))
    for path in files(sft, (".jsonl",)):
        add([(t, None) for t in sft_texts(path)[: cfg.max_per_source]], 1, os.path.basename(path))
    for path in files(web, (".jsonl", ".jsonl.gz")):
        pairs = web_documents(path)
        if languages:
            if identify is None:
                from curation.langid import identify
            kept = [(t, u) for t, u in pairs if identify(t)[0] in languages]
            left_out["negatives outside --languages (left out)"] += len(pairs) - len(kept)
            pairs = kept
        add(pairs, 0, os.path.basename(path))
    sources.update(left_out)
    return examples, sources


def _heldout(source: str, fraction: float, seed: int) -> bool:
    h = hashlib.blake2b(f"{seed}\x00{source}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < fraction


def split_examples(examples: Iterable[Example], cfg: QualityTrainConfig) -> tuple[list[Example], list[Example]]:
    """(train, held-out): an example is held out when its URL host is (a hash of seed and host
    below ``heldout_fraction``), so no host is on both sides; records without a host train.
    Texts are normalized, and a text seen before is dropped (on either side)."""
    train_set, test = [], []
    seen = set()
    for text, label, source in examples:
        n = normalize(text)
        if not n or n in seen:
            continue
        seen.add(n)
        held = source is not None and _heldout(source, cfg.heldout_fraction, cfg.seed)
        (test if held else train_set).append((n, label, source))
    return train_set, test


def train(examples: list[Example], out_path: str, cfg: QualityTrainConfig) -> None:
    """Train the classifier on (normalized text, label, source) and save it (``.ftz`` when quantized)."""
    import fasttext

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "train.txt")
        with open(data, "w", encoding="utf-8") as f:
            for text, label, *_ in examples:
                f.write(f"{POSITIVE if label else NEGATIVE} {text}\n")
        model = fasttext.train_supervised(
            input=data, dim=cfg.dim, epoch=cfg.epoch, lr=cfg.lr, wordNgrams=cfg.word_ngrams,
            minCount=cfg.min_count, bucket=cfg.bucket, thread=1, seed=cfg.seed, verbose=0,
        )
        if cfg.quantize:
            model.quantize(input=data, qnorm=True, retrain=True, cutoff=cfg.cutoff, thread=1, verbose=0)
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        model.save_model(out_path)


# ---- scoring ----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _load(path: str):
    import fasttext

    return fasttext.load_model(path)


def score(texts: list[str], model_path: str) -> np.ndarray:
    """P(high quality) of each text under the model at ``model_path``."""
    if not texts:
        return np.zeros(0, dtype=np.float32)
    model = _load(os.path.abspath(model_path))
    labels, probs = model.predict([normalize(t) or " " for t in texts], k=2)
    out = np.empty(len(texts), dtype=np.float32)
    for i, (ls, ps) in enumerate(zip(labels, probs)):
        p = dict(zip(ls, ps))
        out[i] = min(1.0, float(p.get(POSITIVE, 1.0 - p.get(NEGATIVE, 1.0))))
    return out


def evaluate(examples: list[Example], model_path: str, threshold: float = 0.5) -> dict[str, float]:
    """Precision, recall, F1 at ``threshold`` and ROC AUC on labelled examples."""
    y = np.array([e[1] for e in examples], dtype=np.int64)
    s = score([e[0] for e in examples], model_path).astype(np.float64)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "examples": int(len(y)),
        "hosts": len({e[2] for e in examples if e[2] is not None}),
        "positives": int(y.sum()),
        "negatives": int(len(y) - y.sum()),
        "threshold": threshold,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        "auc": round(roc_auc(y, s), 4),
    }


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half)."""
    from scipy.stats import rankdata

    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
