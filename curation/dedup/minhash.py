"""Text normalisation, word n-gram shingles, MinHash signatures and LSH band keys.

Everything here works on batches of documents with numpy so the per-shingle work never runs in
the Python interpreter:

- ``normalize`` puts a text in canonical form (NFKC, case folding, digits, punctuation, white
  space) and splits CJK runs into one token per character, so Chinese and Japanese shingle as
  character n-grams instead of one giant "word".
- A shingle is ``ngram`` consecutive tokens. Its 32-bit hash is a polynomial hash of its code
  points (computed for all shingles at once from prefix sums) passed through the MurmurHash3
  64-bit finaliser; :func:`shingle_hash` is the same function for one shingle string, the
  reference the tests and the benchmark hand to datasketch.
- ``minhash_signatures`` follows datasketch 2.x's default ``affine32`` scheme exactly (same
  permutations from ``numpy.random.RandomState(seed)``, MurmurHash3 fmix32 pre-mix, ``a*h+b``
  mod 2^32), so a signature equals ``datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash)``
  updated with the same shingles.
- ``lsh_band_keys`` hashes each band of ``rows`` values to one 64-bit key; two documents are
  LSH candidates when any band key agrees.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import xxhash

U32 = np.uint32
U64 = np.uint64
_MASK64 = (1 << 64) - 1
# Polynomial base of the shingle hash: an odd 64-bit constant (so it has an inverse mod 2^64).
_POLY = 0x9E3779B97F4A7C15
_POLY_INV = pow(_POLY, -1, 1 << 64)

# Han, Hiragana, Katakana, Hangul syllables, CJK compatibility ideographs, Thai/Lao/Khmer/Myanmar
# (scripts written without spaces between words): one token per character.
_NS = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f"
)
# A token: one character of a script without spaces, or a run of other letters and digits.
_TOKEN = re.compile(f"[^\\W_{_NS}]+|[{_NS}]")
# With punctuation kept: the same, plus runs of anything else that is not white space.
_TOKEN_PUNCT = re.compile(f"[^\\W_{_NS}]+|[{_NS}]|[^\\w\\s]+|_+")
_DIGIT = re.compile(r"\d")


@dataclass
class ShingleConfig:
    # FineWeb / datatrove MinHash defaults: word 5-grams.
    ngram: int = 5
    lowercase: bool = True
    # FineWeb normalises digits to 0 so dates and counters do not hide re-crawls.
    replace_digits: bool = True
    # Punctuation and symbols are separators (FineWeb `simplify_text`).
    strip_punctuation: bool = True


def normalize(text: str, cfg: ShingleConfig = ShingleConfig()) -> str:
    """Canonical form: tokens joined by single spaces (NFKC, casefold, digits, punctuation)."""
    t = unicodedata.normalize("NFKC", text)
    if cfg.lowercase:
        t = t.casefold()
    t = " ".join((_TOKEN if cfg.strip_punctuation else _TOKEN_PUNCT).findall(t))
    if cfg.replace_digits:
        t = _DIGIT.sub("0", t)
    return t


def exact_hash(normalized: str) -> int:
    """64-bit hash of a normalised text: equal values mean exact duplicates."""
    return xxhash.xxh3_64_intdigest(normalized.encode("utf-8"))


def shingles(normalized: str, ngram: int) -> list[str]:
    """The word n-grams of a normalised text (reference path; the batch path never builds them).

    A text shorter than ``ngram`` tokens is one shingle (all its tokens), as datatrove does;
    an empty text has none.
    """
    toks = normalized.split(" ") if normalized else []
    if not toks:
        return []
    if len(toks) <= ngram:
        return [" ".join(toks)]
    return [" ".join(toks[i : i + ngram]) for i in range(len(toks) - ngram + 1)]


def _fmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> U64(33))
    x = x * U64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> U64(33))
    x = x * U64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> U64(33))


def _fmix64_int(x: int) -> int:
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & _MASK64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & _MASK64
    return x ^ (x >> 33)


def shingle_hash(shingle: str | bytes) -> int:
    """32-bit hash of one shingle: the scalar reference of :func:`shingle_hashes`."""
    if isinstance(shingle, bytes):
        shingle = shingle.decode("utf-8")
    h, p = 0, 1
    for ch in shingle:
        h = (h + ord(ch) * p) & _MASK64
        p = (p * _POLY) & _MASK64
    return _fmix64_int(h) >> 32


@lru_cache(maxsize=4)
def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """base^j and base^-j mod 2^64 for j < n, by doubling (n a power of two)."""
    out = []
    for base in (_POLY, _POLY_INV):
        p = np.ones(n, dtype=U64)
        p[1] = U64(base)
        k = 2
        with np.errstate(over="ignore"):
            while k < n:
                step = pow(base, k, 1 << 64)
                p[k : 2 * k] = p[:k] * U64(step)
                k *= 2
        out.append(p)
    return out[0], out[1]


def _powers_for(n: int) -> tuple[np.ndarray, np.ndarray]:
    size = 1 << max(16, int(n).bit_length())  # grow in powers of two so the cache is reused
    return _powers(size)


_GROUP_CHARS = 1 << 20  # characters hashed together: bounds the power tables to 8 MiB each


def shingle_hashes(normalized: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every shingle of every normalised text, in vectorised passes.

    Returns ``(hashes uint32, counts int64)``: the shingles of text ``i`` are the ``counts[i]``
    values after the first ``counts[:i].sum()``, in text order.
    """
    hs, cs, group, size = [], [], [], 0
    for s in normalized:
        if group and size + len(s) > _GROUP_CHARS:
            h, c = _shingle_hashes(group, ngram)
            hs.append(h), cs.append(c)
            group, size = [], 0
        group.append(s)
        size += len(s) + 1
    h, c = _shingle_hashes(group, ngram)
    hs.append(h), cs.append(c)
    return np.concatenate(hs), np.concatenate(cs)


def _shingle_hashes(normalized: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    ntok = np.fromiter((len(s) and s.count(" ") + 1 for s in normalized), dtype=np.int64, count=len(normalized))
    counts = np.where(ntok > 0, np.maximum(ntok - ngram + 1, 1), 0)
    if counts.sum() == 0:
        return np.zeros(0, dtype=U32), counts
    joined = " ".join(s for s in normalized if s)
    cp = np.frombuffer(joined.encode("utf-32-le"), dtype=U32).astype(U64)
    pw, inv = _powers_for(len(cp) + 1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(cp) + 1, dtype=U64)
        np.cumsum(cp * pw[: len(cp)], out=prefix[1:])
    spaces = np.flatnonzero(cp == 32)
    tok_start = np.concatenate(([0], spaces + 1))
    tok_end = np.concatenate((spaces, [len(cp)]))
    # Token offsets of each non-empty text inside the joined token list.
    nz = ntok[ntok > 0]
    tok_off = np.concatenate(([0], np.cumsum(nz)[:-1]))
    c = counts[ntok > 0]
    first = np.repeat(tok_off, c) + _ragged_arange(c)
    last = np.minimum(first + ngram - 1, np.repeat(tok_off + nz - 1, c))
    s, e = tok_start[first], tok_end[last]
    with np.errstate(over="ignore"):
        h = (prefix[e] - prefix[s]) * inv[s]
    return (_fmix64(h) >> U64(32)).astype(U32), counts


def _ragged_arange(counts: np.ndarray) -> np.ndarray:
    """0..c-1 for each c in counts, concatenated."""
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


@dataclass
class MinHashConfig:
    # FineWeb: 14 bands x 8 rows = 112 permutations (Jaccard threshold about 0.72-0.75).
    bands: int = 14
    rows: int = 8
    seed: int = 1

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch 2.x ``affine32`` permutation parameters (odd ``a``, any ``b``), uint32."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=U32) * U32(2) + U32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=U32)
    return a, b


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> U32(16))
    h = h * U32(0x85EBCA6B)
    h = h ^ (h >> U32(13))
    h = h * U32(0xC2B2AE35)
    return h ^ (h >> U32(16))


MAX_HASH = np.iinfo(U32).max
_CHUNK = 1 << 14  # shingles per block: a (num_perm x block) uint32 buffer of 7 MiB


def minhash_signatures(hashes: np.ndarray, counts: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures (n_docs x num_perm, uint32) of the shingle hashes from :func:`shingle_hashes`.

    A document without shingles gets the all-``MAX_HASH`` signature (datasketch's empty MinHash).
    """
    a, b = permutations(num_perm, seed)
    n = len(counts)
    out = np.full((n, num_perm), MAX_HASH, dtype=U32)
    if len(hashes) == 0:
        return out
    with np.errstate(over="ignore"):
        mixed = _fmix32(hashes.astype(U32, copy=False))
    ends = np.cumsum(counts)
    starts = ends - counts
    nonempty = np.flatnonzero(counts > 0)
    # One (num_perm x block) buffer reused for every block: the reduction runs along contiguous
    # rows (~3x faster than the transposed layout) and the block stays in cache.
    buf = np.empty((num_perm, _CHUNK), dtype=U32)
    a_col, b_col = a[:, None], b[:, None]
    i = 0
    while i < len(nonempty):
        # Take whole documents until the block holds about _CHUNK shingles.
        lo = starts[nonempty[i]]
        j = max(int(np.searchsorted(ends[nonempty], lo + _CHUNK, side="right")), i + 1)
        docs = nonempty[i:j]
        hi = ends[docs[-1]]
        block = buf[:, : hi - lo] if hi - lo <= _CHUNK else np.empty((num_perm, hi - lo), dtype=U32)
        with np.errstate(over="ignore"):
            np.multiply(a_col, mixed[None, lo:hi], out=block)
            np.add(block, b_col, out=block)
        out[docs] = np.minimum.reduceat(block, starts[docs] - lo, axis=1).T
        i = j
    return out


def lsh_band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n_docs x bands) uint64 keys: the hash of each band's ``rows`` values and its band index."""
    n = signatures.shape[0]
    keys = np.empty((n, bands), dtype=U64)
    sig = signatures.astype(U64)
    with np.errstate(over="ignore"):
        for j in range(bands):
            h = np.full(n, U64(0x243F6A8885A308D3) * U64(j + 1), dtype=U64)
            for k in range(rows):
                h = _fmix64(h ^ (sig[:, j * rows + k] + U64(0x9E3779B97F4A7C15) * U64(k + 1)))
            keys[:, j] = h
    return keys


def exact_band_key(exact_hashes: np.ndarray) -> np.ndarray:
    """Exact-duplicate keys, kept apart from every LSH band key by their own mixing seed."""
    with np.errstate(over="ignore"):
        return _fmix64(exact_hashes.astype(U64) ^ U64(0x13198A2E03707344))


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of agreeing signature values, row by row: the MinHash estimate of :func:`jaccard`."""
    return (sig_a == sig_b).mean(axis=-1)


def shingle_sets(normalized: Sequence[str], ngram: int) -> list[np.ndarray]:
    """Each normalised text's distinct shingle hashes, sorted: the sets :func:`jaccard` compares
    (the same hashes the signatures are made of)."""
    h, counts = shingle_hashes(list(normalized), ngram)
    ends = np.cumsum(counts)
    return [np.unique(h[e - c : e]) for c, e in zip(counts.tolist(), ends.tolist())]


def jaccard_from_counts(inter: np.ndarray | int, size_a: np.ndarray | int, size_b: np.ndarray | int) -> np.ndarray:
    """|A & B| / |A | B| from the sizes; two empty sets are identical (1.0)."""
    inter, a, b = (np.asarray(x, dtype=np.float64) for x in (inter, size_a, size_b))
    union = a + b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """The true Jaccard of two shingle sets (sorted distinct hashes, :func:`shingle_sets`): the
    one definition the chain check, ``--verify``, the labelled corpus and the tests share."""
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return float(jaccard_from_counts(inter, len(a), len(b)))


def jaccard_many(sets: Sequence[np.ndarray], other: np.ndarray) -> np.ndarray:
    """:func:`jaccard` of each of ``sets`` with ``other`` (all sorted distinct hashes), at once."""
    sizes = np.fromiter((len(x) for x in sets), dtype=np.int64, count=len(sets))
    if len(sets) == 0:
        return np.zeros(0, np.float64)
    flat = np.concatenate(sets) if sizes.sum() else np.zeros(0, np.uint32)
    at = np.minimum(np.searchsorted(other, flat), max(len(other) - 1, 0))
    hit = other[at] == flat if len(other) else np.zeros(len(flat), bool)
    inter = np.bincount(np.repeat(np.arange(len(sets)), sizes), weights=hit, minlength=len(sets))
    return jaccard_from_counts(inter, sizes, len(other))


def candidate_probability(jaccard: np.ndarray | float, bands: int, rows: int) -> np.ndarray:
    """The LSH S-curve: probability that two documents of Jaccard s share at least one band."""
    s = np.asarray(jaccard, dtype=float)
    return 1.0 - (1.0 - s**rows) ** bands


def bands_rows_for_threshold(threshold: float, num_perm: int = 112) -> tuple[int, int]:
    """(bands, rows) minimising false positives + false negatives around ``threshold``.

    datasketch's optimiser (equal weights), as ``MinHashLSH(threshold=...)`` uses it.
    """
    from datasketch.lsh import _optimal_param

    b, r = _optimal_param(threshold, num_perm, 0.5, 0.5)
    return int(b), int(r)
