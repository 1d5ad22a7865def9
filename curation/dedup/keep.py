"""Which copy of a cluster is kept: the dump order and the keep rule.

Dump order. The keep rule needs the age of each dump. Common Crawl names ``CC-MAIN-YYYY-WW``
are ordered by crawl date (the Monday of ISO week WW; the early ``CC-MAIN-2012`` style names by
their first year); other names have no date, so they take a configured order, or else count as
older than every dated dump, by name.

Keep rule. In each connected component the members are ranked: newest dump first (or oldest,
with ``keep="oldest"``), ties broken by the smaller document id (:func:`priority`, then the id).
Which members are removed for which kept document is the chain check (``decide``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Iterable, Sequence

import numpy as np

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


def priority(dump_rank: np.ndarray, keep: str = "newest") -> np.ndarray:
    """Each member's keep-rule priority, smaller first: minus its dump's age rank (newest first),
    or the rank itself with ``keep="oldest"``; ties go to the smaller id."""
    if keep not in KEEP_RULES:
        raise ValueError(f"keep rule {keep!r} is not 'newest' or 'oldest'")
    rank = np.asarray(dump_rank, np.int64)
    return -rank if keep == "newest" else rank
