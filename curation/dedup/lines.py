"""String-level dedup: lines (paragraphs, in extracted text) repeated across many documents.

Cookie banners, navigation and share buttons that survive extraction repeat verbatim across a
site or the whole crawl. DeepSeek's pipeline dedups at string level as well as document level;
here a line whose normalised form occurs in at least ``min_docs`` documents is removed from
every document that carries it. Counting is two-pass and distributed: each shard counts its
lines once per document (``line_hashes``), the counts are summed per hash partition, and the
frequent hashes come back to every shard (``remove_repeated_lines``).
"""

from __future__ import annotations

import unicodedata

import numpy as np
import xxhash


def _key(line: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", line).casefold().split())


def line_hashes(text: str, min_chars: int) -> np.ndarray:
    """Distinct 64-bit hashes of the document's lines of at least ``min_chars`` characters."""
    hs = {xxhash.xxh3_64_intdigest(k.encode("utf-8")) for k in map(_key, text.split("\n")) if len(k) >= min_chars}
    return np.fromiter(hs, dtype=np.uint64, count=len(hs))


def remove_repeated_lines(text: str, frequent: np.ndarray, min_chars: int) -> tuple[str, int]:
    """The text without its lines whose hash is in ``frequent`` (sorted); and how many went."""
    if len(frequent) == 0:
        return text, 0
    kept, removed = [], 0
    for line in text.split("\n"):
        k = _key(line)
        if len(k) >= min_chars:
            h = np.uint64(xxhash.xxh3_64_intdigest(k.encode("utf-8")))
            i = np.searchsorted(frequent, h)
            if i < len(frequent) and frequent[i] == h:
                removed += 1
                continue
        kept.append(line)
    return ("\n".join(kept) if removed else text), removed
