"""Deterministic up/down-sampling and the global shuffle order, from a seed and document ids.

Every decision is a function of (seed, document id[, copy]) only, so it does not depend on how
documents are spread over shards or workers:

- ``unit_interval(seed, ids)``: a uniform number per document. A domain with ``epochs`` = k + f
  (k whole, 0 <= f < 1) writes every document k times and once more the documents whose number
  falls below the domain's cut, chosen so the extra copies add f of the domain's size.
- ``cut_bins``: that cut, found from a histogram of sizes over ``BINS`` equal bins of the unit
  interval (tiny, mergeable across shards), as the bin edge whose cumulative size is closest to
  the wanted amount; the error is at most one bin's worth of documents.
- ``shuffle_keys(seed, ids, copies)``: a 64-bit key per written copy; the output is sorted by it.
- rehydration: a document of weight w (``rehydration_weights``, from its duplicate cluster's
  size) stands for w virtual copies, each with a number of its own (``copy_bins``: copy 0 keeps
  the document's own, so weight 1 everywhere is exactly the plain remix). The domain's epochs
  and cut then apply to the virtual copies: a document is written w floor(epochs) times plus
  once per virtual copy below the cut, w epochs in expectation.
"""

from __future__ import annotations

import hashlib

import numpy as np

BINS = 1 << 16


def _hash64(seed: int, tag: str, keys: list[str]) -> np.ndarray:
    salt = f"{seed}:{tag}".encode()
    return np.array(
        [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8, key=salt[:64]).digest(), "big") for k in keys],
        dtype=np.uint64,
    )


def unit_bins(seed: int, ids: list[str]) -> np.ndarray:
    """Each document's bin of the unit interval (0 .. BINS-1), from its id and the seed."""
    return (_hash64(seed, "sample", ids) >> np.uint64(64 - 16)).astype(np.int64)


def size_histogram(bins: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    return np.bincount(bins, weights=sizes.astype(np.float64), minlength=BINS)


def cut_bins(histogram: np.ndarray, wanted: float) -> int:
    """Number of leading bins whose total size is closest to ``wanted``."""
    if wanted <= 0:
        return 0
    cum = np.concatenate(([0.0], np.cumsum(histogram)))
    j = int(np.searchsorted(cum, wanted))
    if j >= len(cum):
        return len(histogram)
    return j if j == 0 or cum[j] - wanted <= wanted - cum[j - 1] else j - 1


def copies(epochs: float, bins: np.ndarray, cut: int) -> np.ndarray:
    """How many times each document is written: floor(epochs), plus one below the cut."""
    whole = int(np.floor(epochs + 1e-12))
    return whole + (bins < cut).astype(np.int64)


def shuffle_keys(seed: int, ids: list[str], copy_index: np.ndarray) -> np.ndarray:
    return _hash64(seed, "shuffle", [f"{i}\x00{c}" for i, c in zip(ids, copy_index.tolist())])


def weight_keys(cluster_sizes: list[int | None], table: dict[int, int]) -> np.ndarray:
    """The row of ``table`` each document falls in: the largest key not above its duplicate
    cluster's size (None: no duplicates, size 1; below every key: the smallest key)."""
    keys = np.array(sorted(table), dtype=np.int64)
    sizes = np.array([1 if s is None else int(s) for s in cluster_sizes], dtype=np.int64)
    return keys[np.maximum(np.searchsorted(keys, sizes, side="right") - 1, 0)]


def rehydration_weights(cluster_sizes: list[int | None], table: dict[int, int]) -> np.ndarray:
    """Each document's copies from its duplicate cluster's size, by ``table`` (:func:`weight_keys`)."""
    return np.array([table[k] for k in weight_keys(cluster_sizes, table).tolist()], dtype=np.int64)


def copy_bins(seed: int, ids: list[str], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, bin) of every virtual copy: row i appears ``weights[i]`` times; its copy 0 has the
    document's own bin (``unit_bins``), copy j > 0 the bin of ``id + "\\x00r" + j``."""
    rows = np.repeat(np.arange(len(ids)), weights)
    bins = np.repeat(unit_bins(seed, ids), weights)
    j = np.arange(len(rows)) - np.repeat(np.cumsum(weights) - weights, weights)
    extra = np.flatnonzero(j > 0)
    if len(extra):
        bins[extra] = unit_bins(seed, [f"{ids[r]}\x00r{k}" for r, k in zip(rows[extra].tolist(), j[extra].tolist())])
    return rows, bins
