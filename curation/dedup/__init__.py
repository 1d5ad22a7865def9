"""Exact and MinHash-LSH near-duplicate detection across dumps, plus string-level line dedup.

One module per step, as datatrove's ``pipeline/dedup/minhash.py`` and NeMo Curator's
``stages/deduplication/fuzzy/`` split theirs. Each step is plain functions over NumPy arrays and
Arrow tables, plus a ``*_unit`` function that runs it on one unit of work (a shard, a partition)
from files to files, testable without Ray:

- ``minhash``     normalisation, shingles, signatures, band keys, the one Jaccard function
- ``lines``       lines repeated across many documents (string level)
- ``signatures``  per input shard: node table, band keys routed to partitions
- ``candidates``  per band partition: candidate edges (star per key), and old nodes mapped to
                  their components of earlier generations
- ``components``  connected components in rounds of large-star / small-star (Kiveris et al.)
- ``keep``        dump order, the keep rule and the chain check (``chain_split``)
- ``removals``    member rows, per-component decisions, the index update, kept documents and
                  the rows of ``duplicates.parquet``
- ``layout``      node ids, range partitions, hand-off files and the index layout

The Ray stage that runs them over a corpus is ``pipelines/dedup.py``.
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
    # The chain check: a document is removed only if its similarity to the document kept for it
    # is at least this (MinHash estimate, or true Jaccard with `verify`). Members of a connected
    # component below it are split off (`chain_split`) and join the first kept document they do
    # match, or are kept. 0.6 sits below the 14 x 8 band curve's midpoint (0.72), so pairs LSH
    # is meant to find pass, and 2.5 standard errors of a 112-value estimate above 0.5, the
    # similarity below which a removal is counted wrong. 0 turns the check off (plain components).
    min_similarity: float = 0.6
    # Check with the true Jaccard of the shingle sets (read from the texts) instead of the estimate.
    verify: bool = False
    # Partitions of band keys, edges and components (one Ray task each). None: one per
    # `layout.BAND_ROWS_PER_PARTITION` band rows of this run and the index.
    partitions: int | None = None
    # Age order of dump names that are not CC-MAIN-YYYY-WW (oldest first). When set it is the
    # whole order and must name every dump; unset, CC-MAIN names go by crawl date and any other
    # name counts as older than all of them (by name).
    dump_order: list[str] = field(default_factory=list)
    # String level (DeepSeek's pipeline dedups at document and string level): a line repeated in
    # at least this many documents is boilerplate and is removed from each of them. 0 = off.
    line_repeat_min: int = 0
    # Lines shorter than this (characters, after stripping) are never treated as boilerplate.
    line_min_chars: int = 20
