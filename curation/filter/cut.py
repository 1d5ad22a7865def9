"""``quality.top_fraction``: keep the top fraction of the candidates by model score, one cut for
the whole corpus, found exactly without gathering every score in one place.

The candidates are the documents that pass every rule but the model's, decontamination included
(:func:`candidate_scores`). The cut is the score of the ``k``-th best candidate, ``k =
max(1, ceil(fraction * n))`` (:func:`exact_cut`, the definition). Finding it across shards is a
radix select over the scores' order-preserving 64-bit keys (:func:`order_keys`): each round, every
shard counts its keys by the next 8 bits below the prefix chosen so far (:func:`answer`, 256
numbers per shard), and :class:`TopFractionCut` picks the digit that holds the ``k``-th key; once
the chosen bucket holds few keys (``GATHER``), the shards send those keys and the ``k``-th is
read off exactly. A few rounds of 256 counts per shard, whatever the number of documents.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from curation.filter.blocklist import parse_blocklist
from curation.filter.config import FilterConfig
from curation.filter.documents import decisions

DIGIT_BITS = 8
# A bucket this small is sent whole: its keys are read off exactly.
GATHER = 10_000
_SIGN = np.uint64(1 << 63)


def order_keys(scores: np.ndarray) -> np.ndarray:
    """uint64 keys in the order of the float64 scores (no NaN; -0.0 taken as 0.0)."""
    bits = (np.asarray(scores, dtype=np.float64) + 0.0).view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def score_of(key: int) -> float:
    """The score of an order key (the inverse of :func:`order_keys`)."""
    k = np.array([key], dtype=np.uint64)
    bits = np.where(k & _SIGN, k & ~_SIGN, ~k)
    return float(bits.view(np.float64)[0])


def exact_cut(scores: np.ndarray, fraction: float) -> float | None:
    """The score at or above which the top ``fraction`` of ``scores`` lie, by sorting them all."""
    if not len(scores) or fraction >= 1:
        return None
    ordered = np.sort(np.asarray(scores, np.float64))[::-1]
    k = max(1, int(np.ceil(fraction * len(ordered))))
    return float(ordered[k - 1])


def answer(keys: np.ndarray, query: dict[str, Any]) -> dict[str, Any]:
    """A shard's answer to a round: its sorted keys under the query's prefix (the top
    ``query["bits"]`` bits equal to ``query["prefix"]``), counted by their next 8 bits, or sent
    whole when the query says ``gather``."""
    bits, prefix = query["bits"], query["prefix"]
    if bits:
        lo = np.uint64(prefix << (64 - bits))
        hi = np.uint64(((prefix + 1) << (64 - bits)) - 1)
        keys = keys[np.searchsorted(keys, lo, side="left"):np.searchsorted(keys, hi, side="right")]
    if query.get("gather"):
        return {"keys": keys.tolist()}
    digit = (keys >> np.uint64(64 - bits - DIGIT_BITS)) & np.uint64((1 << DIGIT_BITS) - 1)
    return {"counts": np.bincount(digit.astype(np.int64), minlength=1 << DIGIT_BITS).tolist()}


class TopFractionCut:
    """The rounds of the select: ``query()`` is what every shard answers next (None: done),
    ``add(answers)`` takes their answers; then ``cut`` is :func:`exact_cut` of all the scores."""

    def __init__(self, fraction: float):
        self.fraction = fraction
        self.bits, self.prefix = 0, 0
        self.k: int | None = None  # rank, from the top, of the cut among the keys under the prefix
        self.gather = False
        self.done = fraction >= 1
        self.cut: float | None = None
        self.candidates: int | None = None

    def query(self) -> dict[str, Any] | None:
        return None if self.done else {"bits": self.bits, "prefix": self.prefix, "gather": self.gather}

    def add(self, answers: Sequence[dict[str, Any]]) -> None:
        if self.gather:
            keys = np.sort(np.concatenate([np.asarray(a["keys"], np.uint64) for a in answers]))[::-1]
            self.cut, self.done = score_of(int(keys[self.k - 1])), True
            return
        counts = np.sum([a["counts"] for a in answers], axis=0) if answers else np.zeros(1 << DIGIT_BITS, np.int64)
        if self.k is None:
            self.candidates = n = int(counts.sum())
            if n == 0:
                self.done = True
                return
            self.k = max(1, int(np.ceil(self.fraction * n)))
        k = self.k
        for d in range((1 << DIGIT_BITS) - 1, -1, -1):
            if k <= counts[d]:
                break
            k -= int(counts[d])
        self.k, self.prefix, self.bits = k, (self.prefix << DIGIT_BITS) | d, self.bits + DIGIT_BITS
        if self.bits == 64:  # every key under the prefix is the same score
            self.cut, self.done = score_of(self.prefix), True
        else:
            self.gather = int(counts[d]) <= GATHER


def candidate_scores(signals: pa.Table, docs: pa.Table, cfg: FilterConfig, blocklist: str, contamination: Any = None) -> np.ndarray:
    """Quality scores of the documents that pass every rule but the model's (``docs``: their
    ``url``, and ``text`` when ``contamination`` is given: documents decontamination will drop are
    no candidates, the cut is a fraction of what stays)."""
    urls = docs.column("url").to_pylist()
    passing = np.array([r is None for r in decisions(signals, urls, cfg, parse_blocklist(blocklist), None)], dtype=bool)
    if contamination is not None and passing.any():
        rows = np.flatnonzero(passing)
        texts = docs.column("text").take(pa.array(rows)).to_pylist()
        passing[rows] = [contamination.find(t) is None for t in texts]
    scores = signals.column("quality_score").to_numpy(zero_copy_only=False)
    return scores[passing & ~np.isnan(scores)].astype(np.float64)
