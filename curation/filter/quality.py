"""A fastText quality classifier, DCLM-style: explanatory / instruction text vs. random web text.

DCLM (Li et al. 2024) found a bigram fastText classifier with instruction-style positives and
random web negatives to beat hand-written heuristics as a quality filter. Here the positives are
human-annotated article bodies (``extraction-gold/ground-truth.json``) and instruction data
(``sft/*.jsonl``), the negatives random web documents; the model's ``P(hq)`` is the
``quality_score`` the filter stores. Training is deterministic (one thread, fixed seed, a
hash-based held-out split).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Iterable

import numpy as np

POSITIVE, NEGATIVE = "__label__hq", "__label__web"
_SPACES = re.compile(r"\s+")
# fastText reads one line per example; the first few thousand characters carry the style signal
# and bound the cost per document.
MAX_CHARS = 5000


@dataclass
class QualityTrainConfig:
    # At most this many examples from each positive source, so that 1,319 GSM8K problems do not
    # teach the model "arithmetic is quality" (our choice; the sources are small).
    max_per_source: int = 250
    heldout_fraction: float = 0.2
    # fastText supervised settings as DCLM's classifier (bigrams), small enough to ship quantized.
    dim: int = 32
    epoch: int = 20
    lr: float = 0.3
    word_ngrams: int = 2
    min_count: int = 2
    bucket: int = 200_000
    seed: int = 0
    # Quantize (product quantization, fastText's .ftz) to keep the shipped model under 2 MB.
    quantize: bool = True
    cutoff: int = 50_000


def normalize(text: str) -> str:
    return _SPACES.sub(" ", text[:MAX_CHARS]).strip().lower()


# ---- training sources -------------------------------------------------------------------------

def gold_articles(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return [v["articleBody"] for _, v in sorted(data.items()) if isinstance(v, dict) and v.get("articleBody", "").strip()]


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


def _heldout(text: str, fraction: float, seed: int) -> bool:
    h = hashlib.blake2b(f"{seed}\x00{text}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < fraction


def split_examples(
    positives: Iterable[str], negatives: Iterable[str], cfg: QualityTrainConfig
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(train, held-out) lists of (normalized text, label 1/0), split by a hash of the text."""
    train, test = [], []
    seen = set()
    for label, texts in ((1, positives), (0, negatives)):
        for t in texts:
            n = normalize(t)
            if not n or n in seen:
                continue
            seen.add(n)
            (test if _heldout(n, cfg.heldout_fraction, cfg.seed) else train).append((n, label))
    return train, test


def train(examples: list[tuple[str, int]], out_path: str, cfg: QualityTrainConfig) -> None:
    """Train the classifier on (normalized text, label) and save it (``.ftz`` when quantized)."""
    import fasttext

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "train.txt")
        with open(data, "w", encoding="utf-8") as f:
            for text, label in examples:
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


def evaluate(examples: list[tuple[str, int]], model_path: str, threshold: float = 0.5) -> dict[str, float]:
    """Precision, recall, F1 at ``threshold`` and ROC AUC on labelled (text, label) examples."""
    y = np.array([label for _, label in examples], dtype=np.int64)
    s = score([t for t, _ in examples], model_path).astype(np.float64)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "examples": int(len(y)),
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
