"""Exact and MinHash-LSH near-duplicate detection across dumps, plus string-level line dedup.

One module per step, as datatrove's ``pipeline/dedup/minhash.py`` and NeMo Curator's
``stages/deduplication/fuzzy/`` split theirs. Each step is plain functions over NumPy arrays and
Arrow tables, plus a ``*_unit`` function that runs it on one unit of work (a shard, a partition)
from files to files, testable without Ray:

- ``minhash``     normalisation, shingles, signatures, band keys, the one Jaccard function
- ``lines``       lines repeated across many documents (string level)
- ``signatures``  per input shard: node table, band keys routed to partitions
- ``candidates``  per band partition: candidate pairs (a star per key)
- ``edges``       per group of node files: candidate pairs checked (estimate >= min_similarity)
- ``components``  connected components by local contraction, the rest in one task's memory;
                  old nodes mapped to their components of earlier generations
- ``decide``      the chain check in rounds: each member against its component's kept document
                  and its buckets' pivots, by groups of node files, never a whole component
- ``keep``        dump order and the keep rule
- ``removals``    cluster sizes and reasons, the index update, kept documents and the rows of
                  ``duplicates.parquet``
- ``layout``      node ids, range partitions, groups, hand-off files and the index layout

The Ray stage that runs them over a corpus is ``pipelines/dedup.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curation.dedup.minhash import MinHashConfig, ShingleConfig
from storage.errors import SettingError


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
    # is at least this (MinHash estimate, or true Jaccard - see `uncertain_band`, `verify`); a
    # candidate pair becomes an edge only if its estimate is. Members of a connected component
    # below it are split off (`chain_split`) and join a kept document they do match, or are kept.
    # 0.6 sits below the 14 x 8 band curve's midpoint (0.72), so pairs LSH is meant to find pass,
    # and 2 standard errors of a 112-value estimate above 0.5, the similarity below which a removal
    # is counted wrong. 0 turns the check off (plain components).
    min_similarity: float = 0.6
    # Estimates within this many standard errors of min_similarity (sqrt(s(1-s)/num_perm) at
    # s = min_similarity) do not settle a removal: the true Jaccard of the two shingle sets does.
    # 3 makes the band 0.461-0.739 for 0.6 and 112 values: a pair of true Jaccard 0.5 reaches its
    # top with probability about 2e-7. 0: the estimate alone.
    uncertain_band: float = 3.0
    # Check every removal and every edge with the true Jaccard instead of the estimate.
    verify: bool = False
    # Rounds of the chain check. Round 1 compares every member with its component's kept
    # document; later rounds add each bucket's local pivot: a drifting chain of 100k pages takes
    # about 10. Members that resemble each other only a little (the leftovers of a template
    # cluster, pairwise near 0.55) are kept a few local heads per round, about 5% of them a
    # round; past a handful of rounds they are in one task (decide_members_in_memory), where a
    # round costs little. Members still open after the last are kept (counted as `left_open`).
    max_rounds: int = 128
    # Open members one task holds to run the chain check's remaining rounds itself: a run's tail
    # of rounds, a few members each, costs one task instead of six phases a round; 20,000 keep
    # that task below a group task's size. 0 keeps every round on the groups' tasks.
    decide_members_in_memory: int = 20_000
    # Rows of the candidate graph one task holds to finish the components in memory (16 bytes a
    # row, about 10x that while the union-find runs); above it, rounds of local contraction.
    component_rows_in_memory: int = 3_000_000
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


def resolve(cfg: DedupConfig) -> DedupConfig:
    """Apply ``threshold`` (bands x rows for it, same permutations) and check the settings; a bad
    one is a :class:`SettingError` naming it."""
    from curation.dedup import keep, layout, minhash

    if cfg.threshold is not None:
        cfg.minhash.bands, cfg.minhash.rows = minhash.bands_rows_for_threshold(cfg.threshold, cfg.minhash.num_perm)
    checks = [
        (cfg.keep in keep.KEEP_RULES, f"keep: {cfg.keep!r} is not 'newest' or 'oldest'"),
        (0.0 <= cfg.min_similarity <= 1.0, f"min_similarity: {cfg.min_similarity} is not between 0 and 1"),
        (cfg.partitions is None or 1 <= cfg.partitions <= layout.MAX_PARTITIONS,
         f"partitions: {cfg.partitions} is not between 1 and {layout.MAX_PARTITIONS}"),
        (cfg.max_rounds >= 1, f"max_rounds: {cfg.max_rounds} is below 1; give at least one round of the chain check"),
        (cfg.uncertain_band >= 0, f"uncertain_band: {cfg.uncertain_band} is negative; 0 lets the estimate alone decide"),
        (cfg.component_rows_in_memory >= 1, f"component_rows_in_memory: {cfg.component_rows_in_memory} is below 1"),
        (cfg.decide_members_in_memory >= 0, f"decide_members_in_memory: {cfg.decide_members_in_memory} is negative"),
    ]
    for ok, message in checks:
        if not ok:
            raise SettingError(message)
    return cfg
