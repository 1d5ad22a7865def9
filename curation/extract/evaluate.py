"""Extraction quality as the article-extraction-benchmark scores it (scrapinghub, MIT).

Text is split into ``\\w+`` tokens; each document's extracted and gold text become multisets of
word 4-gram shingles; precision and recall are computed per document and averaged over the
documents; F1 is the harmonic mean of the averaged precision and recall.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

_TOKEN = re.compile(r"\w+", re.UNICODE)
SHINGLE_N = 4


def shingles(text: str | None, n: int = SHINGLE_N) -> Counter:
    tokens = _TOKEN.findall(text or "")
    return Counter(tuple(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1)))


def match_counts(gold: str, predicted: str | None) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) over shingles."""
    g, p = shingles(gold), shingles(predicted)
    tp = sum((g & p).values())
    return tp, sum((p - g).values()), sum((g - p).values())


def score(pairs: Iterable[tuple[str, str | None]]) -> dict[str, float]:
    """Mean precision, mean recall and their F1 over (gold, predicted) pairs."""
    precisions, recalls = [], []
    for gold, predicted in pairs:
        tp, fp, fn = match_counts(gold, predicted)
        # An empty extraction scores precision 0 rather than being skipped (as the benchmark does).
        precisions.append(tp / (tp + fp) if tp + fp else 0.0)
        recalls.append(tp / (tp + fn) if tp + fn else 0.0)
    p = sum(precisions) / len(precisions)
    r = sum(recalls) / len(recalls)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "documents": len(precisions)}
