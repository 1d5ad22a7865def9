"""Which copy of a cluster is kept, and which members may be removed for it.

Dump order. The keep rule needs the age of each dump. Common Crawl names ``CC-MAIN-YYYY-WW``
are ordered by crawl date (the Monday of ISO week WW; the early ``CC-MAIN-2012`` style names by
their first year); other names have no date, so they take a configured order, or else count as
older than every dated dump, by name.

Keep rule. In each connected component the members are ranked: newest dump first (or oldest,
with ``keep="oldest"``), ties broken by the smaller document id.

Chain check. Connected components chain: A~B and B~C put A and C together although A and C may
share little. So a member is removed only if it is similar enough to the document kept for it
(:func:`greedy_centers`): the best-ranked member is kept; every member that matches it is
removed for it; of the rest (split off: ``chain_split``) the best-ranked is kept in turn, and so
on. Each member joins the first kept document it matches, or is kept itself. With threshold 0
every member matches the first one: plain connected components.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.errors import SettingError

KEEP_RULES = ("newest", "oldest")
REASONS = {1: "exact_duplicate", 2: "near_duplicate"}

_CC_WEEK = re.compile(r"^CC-MAIN-(\d{4})-(\d{2})$")
_CC_YEARS = re.compile(r"^CC-MAIN-(\d{4})(?:-\d{4})?$")


def crawl_date(name: str) -> dt.date | None:
    """The crawl date of a Common Crawl dump name, or None for any other name."""
    m = _CC_WEEK.match(name or "")
    if m and 1 <= int(m.group(2)) <= 53:
        try:
            return dt.date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
        except ValueError:
            return None
    m = _CC_YEARS.match(name or "")
    return dt.date(int(m.group(1)), 1, 1) if m else None


def dump_ranks(names: Iterable[str], order: Sequence[str] = ()) -> dict[str, int]:
    """Age rank of each dump name (0 = oldest). ``order`` (oldest first), when given, is the
    whole order and must hold every name; else dated names by date, undated ones before them."""
    names = sorted(set(names))
    if order:
        missing = [n for n in names if n not in order]
        if missing:
            raise SettingError(f"dump {missing[0]!r} is not in dump_order; list every dump there, oldest first")
        pos = {n: i for i, n in enumerate(order)}
        ranked = sorted(names, key=pos.__getitem__)
    else:
        ranked = sorted(names, key=lambda n: (crawl_date(n) is not None, crawl_date(n) or dt.date.min, n))
    return {n: i for i, n in enumerate(ranked)}


def priority_order(labels: np.ndarray, dump_rank: np.ndarray, ids: pa.Array, keep: str = "newest") -> np.ndarray:
    """Indices that sort members by component, then by the keep rule (best first): newest (or
    oldest) dump, then the smaller id (the whole string, so no two layouts of shards differ)."""
    if keep not in KEEP_RULES:
        raise ValueError(f"keep rule {keep!r} is not 'newest' or 'oldest'")
    rank = -np.asarray(dump_rank, np.int64) if keep == "newest" else np.asarray(dump_rank, np.int64)
    t = pa.table({"label": labels, "rank": rank, "id": ids})
    return pc.sort_indices(t, sort_keys=[("label", "ascending"), ("rank", "ascending"), ("id", "ascending")]).to_numpy()


def greedy_centers(labels: np.ndarray, similarity: Callable[[np.ndarray, np.ndarray], np.ndarray],
                   threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The chain check: for members sorted by (component, keep rule), the index of the kept
    document each one is removed for (itself when kept) and their similarity.

    Rounds over all components at once: each round, every component's best remaining member is
    kept, and the remaining members that match it (``similarity(i, j) >= threshold``) are
    removed for it. A member is compared with each kept document in turn until one matches.
    """
    n = len(labels)
    center = np.full(n, -1, dtype=np.int64)
    sim = np.ones(n, dtype=np.float32)
    rem = np.arange(n, dtype=np.int64)
    while len(rem):
        lab = labels[rem]
        start = np.concatenate(([True], lab[1:] != lab[:-1]))
        head = rem[start][np.cumsum(start) - 1]
        is_head = rem == head
        s = np.ones(len(rem), dtype=np.float32)
        if (~is_head).any():
            s[~is_head] = similarity(rem[~is_head], head[~is_head])
        ok = is_head | (s >= threshold)
        center[rem[ok]] = head[ok]
        sim[rem[ok]] = s[ok]
        rem = rem[~ok]
    return center, sim


def signature_similarity(signatures: np.ndarray, chunk: int = 1 << 15) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Pairwise MinHash estimates over rows of ``signatures`` (n x num_perm), in bounded chunks."""
    def similarity(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        out = np.empty(len(i), dtype=np.float32)
        for lo in range(0, len(i), chunk):
            a, b = signatures[i[lo : lo + chunk]], signatures[j[lo : lo + chunk]]
            out[lo : lo + chunk] = (a == b).mean(axis=1)
        return out
    return similarity


def set_similarity(sets: Sequence[np.ndarray]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Pairwise true Jaccard over shingle sets (``--verify``)."""
    from curation.dedup.minhash import jaccard

    def similarity(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return np.array([jaccard(sets[a], sets[b]) for a, b in zip(i.tolist(), j.tolist())], dtype=np.float32)
    return similarity


def removal_reasons(center: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """For members in keep-rule order (as :func:`greedy_centers` sees them): 0 kept, 1 exact
    duplicate, 2 near duplicate. Members of one kept document with the same normalised-text hash
    form an exact group: a group with the kept document in it is all exact duplicates of it;
    in any other group the best-ranked member is the near duplicate and the rest are its exact
    copies (what exact dedup alone would have removed)."""
    n = len(center)
    idx = np.arange(n)
    o = np.lexsort((idx, exact, center))
    c, e = center[o], exact[o]
    first = np.concatenate(([True], (c[1:] != c[:-1]) | (e[1:] != e[:-1]))) if n else np.zeros(0, bool)
    out = np.empty(n, dtype=np.int8)
    out[o] = np.where(first, 2, 1)
    out[center == idx] = 0
    return out


def component_heads(labels: np.ndarray) -> np.ndarray:
    """For members sorted by component: the index of each member's component's first member."""
    start = np.concatenate(([True], labels[1:] != labels[:-1])) if len(labels) else np.zeros(0, bool)
    return np.flatnonzero(start)[np.cumsum(start) - 1]
