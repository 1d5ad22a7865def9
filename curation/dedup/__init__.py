"""Exact and MinHash-LSH near-duplicate detection across dumps, plus string-level line dedup.

``minhash``: normalisation, shingles, signatures, band keys. ``clusters``: candidate edges,
connected components, the keep rule. ``lines``: paragraphs/lines repeated across many
documents. The Ray stage that runs them over shards is ``pipelines/dedup.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curation.dedup.minhash import MinHashConfig, ShingleConfig


@dataclass
class DedupConfig:
    shingles: ShingleConfig = field(default_factory=ShingleConfig)
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    # A target Jaccard: when set, bands x rows are chosen by datasketch's optimiser for it
    # (keeping bands*rows = minhash.bands*minhash.rows permutations).
    threshold: float | None = None
    # Which copy of a cluster survives: "newest" dump (the report keeps the freshest crawl),
    # or "oldest"; ties broken by the smallest document id.
    keep: str = "newest"
    # Band keys are shuffled to this many partitions (one Ray task each).
    partitions: int = 16
    # Verify LSH candidate pairs by the true Jaccard of their shingles; pairs below
    # `verify_threshold` are dropped as false positives.
    verify: bool = False
    verify_threshold: float = 0.6
    # String level (DeepSeek's pipeline dedups at document and string level): a line repeated in
    # at least this many documents is boilerplate and is removed from each of them. 0 = off.
    line_repeat_min: int = 0
    # Lines shorter than this (characters, after stripping) are never treated as boilerplate.
    line_min_chars: int = 20
