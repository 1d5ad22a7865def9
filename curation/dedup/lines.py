"""String-level dedup: lines (paragraphs, in extracted text) repeated across many documents.

Cookie banners, navigation and share buttons that survive extraction repeat verbatim across a
site or the whole crawl. DeepSeek's pipeline dedups at string level as well as document level;
here a line whose normalised form occurs in at least ``min_docs`` documents is removed from
every document that carries it. Counting is two-pass and distributed: each shard counts its
lines once per document (``line_hashes``), the counts are summed per hash partition, and each
frequent hash goes back only to the groups of shards that carry it (``remove_repeated_lines``):
a signature task loads the frequent lines of its own group, never the whole run's.
"""

from __future__ import annotations

import unicodedata

import numpy as np
import xxhash


def _key(line: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", line).casefold().split())


def _hash(key: str) -> int:
    return xxhash.xxh3_64_intdigest(key.encode("utf-8"))


def line_hashes(text: str, min_chars: int) -> np.ndarray:
    """Distinct 64-bit hashes of the document's lines of at least ``min_chars`` characters."""
    hs = {_hash(k) for k in map(_key, text.split("\n")) if len(k) >= min_chars}
    return np.fromiter(hs, dtype=np.uint64, count=len(hs))


def remove_repeated_lines(text: str, frequent: set[int] | frozenset[int], min_chars: int) -> tuple[str, int]:
    """The text without its lines whose hash is in ``frequent``; and how many went. Each line is
    normalised and hashed once; membership is a set lookup."""
    if not frequent:
        return text, 0
    kept = []
    lines = text.split("\n")
    for line in lines:
        k = _key(line)
        if len(k) >= min_chars and _hash(k) in frequent:
            continue
        kept.append(line)
    removed = len(lines) - len(kept)
    return ("\n".join(kept) if removed else text), removed


def count_unit(unit: dict, ctx: dict) -> dict:
    """One shard: each distinct line hash with the number of its documents carrying it, routed
    to the hash's partition."""
    import pyarrow as pa

    from curation.dedup import layout
    from storage import io

    texts = io.read_parquet(unit["path"], columns=["text"]).column("text").to_pylist()
    per_doc = [line_hashes(t or "", ctx["cfg"].line_min_chars) for t in texts]
    h, c = np.unique(np.concatenate(per_doc) if per_doc else np.zeros(0, np.uint64), return_counts=True)
    P = ctx["partitions"]
    layout.write_routed(pa.table({"hash": h, "docs": c.astype(np.int64)}), layout.partition(h, P), P, unit["out"])
    return {"distinct_lines": int(len(h))}


def frequent_unit(unit: dict, ctx: dict) -> dict:
    """One hash partition: the lines in at least ``line_repeat_min`` documents of the run, routed
    to the groups of the shards that carry them (``layout.group_of``)."""
    import pyarrow as pa

    from curation.dedup import layout
    from storage import io

    P = ctx["partitions"]
    t = layout.read_routed(ctx["count_files"], unit["p"], pa.schema([("hash", pa.uint64()), ("docs", pa.int64())]), source="file")
    h, inv = np.unique(t.column("hash").to_numpy(), return_inverse=True)
    total = np.bincount(inv, weights=t.column("docs").to_numpy()) if len(h) else np.zeros(0)
    frequent = total >= ctx["cfg"].line_repeat_min
    group = np.asarray(ctx["count_groups"], np.int64)[t.column("file").to_numpy()] if t.num_rows else np.zeros(0, np.int64)
    sel = frequent[inv]
    hg = np.unique(np.stack([t.column("hash").to_numpy()[sel].view(np.int64), group[sel]], axis=1), axis=0)
    out = pa.table({"hash": hg[:, 0].view(np.uint64), "group": hg[:, 1]})
    layout.write_routed(out, out.column("group").to_numpy(), P, unit["out"])
    return {"frequent_lines": int(frequent.sum())}
