"""The filter over tables of documents: score (signals), then decide (keep or the failed rule).

Signals come in families, each computed and cached on its own, so that a preset reads only the
families it decides from and switching presets computes only what the new one adds:

- ``base_table``: ``id``, the language (recomputed with fastText lid.176 only where missing), its
  score and the model ``quality_score``, which every preset reads;
- ``family_table``: one family of heuristic signals (``deepseek``, ``gopher``, ``c4``; see
  ``curation.filter.config.PRESETS``), keyed by ``id`` in row order.

``combine_signals`` joins them into the table ``decide_table`` reads. ``decide_table`` splits the
documents into kept and dropped, each dropped document naming the first rule it failed; both
carry the signals in ``metadata.filter``, the reason in ``metadata.filter_reason`` and the preset
in ``metadata.filter_preset``. Under a preset that runs datatrove's C4 step, the kept documents'
text is what its line removals leave, as datatrove writes it.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.filter.blocklist import is_blocked
from curation.filter.config import FilterConfig, families
from curation.filter.reference_signals import kept_text
from curation.filter.rules import first_failed_rule, rules_for
from curation.filter.signals import compute_family, family_names
from curation.stats import StageStats
from curation.decontam import REASON as CONTAMINATION, count as count_contamination

BASE_SCHEMA = pa.schema(
    [pa.field("id", pa.string()), pa.field("language", pa.string()), pa.field("language_score", pa.float32()),
     pa.field("quality_score", pa.float32())]
)


def family_schema(cfg: FilterConfig, family: str) -> pa.Schema:
    # The reference families keep datatrove's float64 ratios (a float32 of 3/10 is above 0.3).
    kind = pa.float32() if family == "deepseek" else pa.float64()
    return pa.schema([pa.field("id", pa.string())] + [pa.field(n, kind) for n in family_names(cfg, family)])


def signals_schema(cfg: FilterConfig) -> pa.Schema:
    """The schema of ``combine_signals`` under ``cfg.preset``."""
    fields = list(BASE_SCHEMA)
    for family in families(cfg):
        fields += list(family_schema(cfg, family))[1:]
    return pa.schema(fields)


def base_table(
    table: pa.Table, quality_model: str | None = None, identify: Callable[[str], tuple[str, float]] | None = None
) -> pa.Table:
    """Language, language score and model score of every document of ``table``, in row order."""
    if identify is None:
        from curation.langid import identify
    texts = table.column("text").to_pylist()
    langs = table.column("language").to_pylist() if "language" in table.column_names else [None] * len(texts)
    scores = table.column("language_score").to_pylist() if "language_score" in table.column_names else [None] * len(texts)
    for i, (lang, sc) in enumerate(zip(langs, scores)):
        if not lang or sc is None:
            langs[i], scores[i] = identify(texts[i])
    if quality_model:
        from curation.filter.quality import score

        quality = pa.array(score(texts, quality_model), pa.float32())
    else:
        quality = pa.nulls(len(texts), pa.float32())
    ids = table.column("id").combine_chunks()
    return pa.Table.from_arrays([ids, pa.array(langs, pa.string()), pa.array(scores, pa.float32()), quality], schema=BASE_SCHEMA)


def family_table(table: pa.Table, base: pa.Table, cfg: FilterConfig, family: str) -> pa.Table:
    """One family's signals of every document of ``table`` (languages from ``base``)."""
    schema = family_schema(cfg, family)
    names = schema.names[1:]
    columns: dict[str, list[float]] = {n: [] for n in names}
    for text, lang in zip(table.column("text").to_pylist(), base.column("language").to_pylist()):
        sig = compute_family(text, lang, cfg, family)
        for n in names:
            columns[n].append(sig[n])
    dtype = np.float32 if family == "deepseek" else np.float64
    arrays = [table.column("id").combine_chunks()] + [pa.array(np.asarray(columns[n], dtype=dtype)) for n in names]
    return pa.Table.from_arrays(arrays, schema=schema)


def combine_signals(base: pa.Table, family_tables: list[pa.Table]) -> pa.Table:
    """Base and family signals side by side (one row per document, same order everywhere)."""
    out = base
    for t in family_tables:
        if t.num_rows != base.num_rows or t.column("id") != base.column("id"):
            raise ValueError("signal families do not match (ids differ): rescore this shard")
        for name in t.column_names[1:]:
            out = out.append_column(t.schema.field(name), t.column(name))
    return out


def score_table(
    table: pa.Table,
    cfg: FilterConfig,
    quality_model: str | None = None,
    identify: Callable[[str], tuple[str, float]] | None = None,
) -> pa.Table:
    """Every signal ``cfg.preset`` decides from, for each document of ``table``, in row order."""
    base = base_table(table, quality_model, identify)
    return combine_signals(base, [family_table(table, base, cfg, f) for f in families(cfg)])


def decisions(
    signals: pa.Table, urls: list[str | None], cfg: FilterConfig, blocklist: frozenset[str], quality_cut: float | None
) -> list[str | None]:
    """The first failed rule of each document (None: kept), from its signals alone."""
    rows = signals.to_pylist()
    rules = rules_for(cfg)
    out = []
    for row, url in zip(rows, urls):
        row["url_blocked"] = is_blocked(url, blocklist)
        out.append(first_failed_rule(row, cfg, quality_cut, rules=rules))
    return out


def decide_table(
    docs: pa.Table, signals: pa.Table, cfg: FilterConfig, blocklist: frozenset[str] = frozenset(), quality_cut: float | None = None
) -> tuple[pa.Table, pa.Table, StageStats]:
    """(kept, dropped, stats): documents with ``metadata.filter`` signals and ``filter_reason``."""
    if docs.num_rows != signals.num_rows or docs.column("id") != signals.column("id"):
        raise ValueError("signals do not match the documents (ids differ): rescore this shard")
    urls = docs.column("url").to_pylist() if "url" in docs.column_names else [None] * docs.num_rows
    reasons = decisions(signals, urls, cfg, blocklist, quality_cut)
    table = _with_signals(docs, signals, reasons, cfg.preset)
    keep = pa.array([r is None for r in reasons], pa.bool_())
    kept = _kept_text(table.filter(keep), cfg)
    stats = StageStats()
    stats.seen(docs.num_rows)
    stats.kept(sum(r is None for r in reasons))
    for reason, n in sorted(Counter(r for r in reasons if r is not None).items()):
        stats.drop(reason, n)
    lang_col = signals.column("language").to_pylist()
    for lang, reason in zip(lang_col, reasons):
        stats.add(f"documents.{_lang_bucket(lang, cfg)}")
        if reason is not None:
            stats.add(f"dropped.{_lang_bucket(lang, cfg)}.{reason}")
    kept_bytes = pc.sum(pc.binary_length(pc.cast(kept.column("text"), pa.binary()))).as_py() or 0
    stats.add("bytes_out", kept_bytes)
    return kept, table.filter(pc.invert(keep)), stats


def _kept_text(kept: pa.Table, cfg: FilterConfig) -> pa.Table:
    """Kept documents with the text their preset leaves (C4's line removals, where it runs them)."""
    if "c4" not in families(cfg) or not kept.num_rows:
        return kept
    texts = [kept_text(t, cfg) for t in kept.column("text").to_pylist()]
    i = kept.column_names.index("text")
    return kept.set_column(i, kept.schema.field(i), pa.array(texts, kept.schema.field(i).type))


def _lang_bucket(lang: str | None, cfg: FilterConfig) -> str:
    return lang if lang in cfg.language.keep else "other"


def _with_signals(docs: pa.Table, signals: pa.Table, reasons: list[str | None], preset: str) -> pa.Table:
    """Documents with language filled in and ``metadata.filter`` / ``filter_reason`` / ``filter_preset`` added."""
    sig_fields = [f for f in signals.schema if f.name not in ("id", "language", "language_score")]
    filt = pa.StructArray.from_arrays(
        [signals.column(f.name).combine_chunks() for f in sig_fields], fields=list(sig_fields)
    )
    meta = docs.column("metadata").combine_chunks() if "metadata" in docs.column_names else None
    children, fields = [], []
    if meta is not None and pa.types.is_struct(meta.type):
        for f, child in zip(meta.type, meta.flatten()):
            if f.name not in ("filter", "filter_reason", "filter_preset"):
                children.append(child)
                fields.append(f)
    children += [filt, pa.array(reasons, pa.string()), pa.array([preset] * len(reasons), pa.string())]
    fields += [pa.field("filter", filt.type), pa.field("filter_reason", pa.string()), pa.field("filter_preset", pa.string())]
    metadata = pa.StructArray.from_arrays(children, fields=fields)
    out = docs
    for name in ("language", "language_score"):
        col = signals.column(name).cast(docs.schema.field(name).type) if name in docs.column_names else signals.column(name)
        if name in out.column_names:
            out = out.set_column(out.column_names.index(name), name, col)
        else:
            out = out.append_column(name, col)
    if "metadata" in out.column_names:
        return out.set_column(out.column_names.index("metadata"), "metadata", metadata)
    return out.append_column("metadata", metadata)


def decontaminate(kept: pa.Table, dropped: pa.Table, stats: StageStats, index, cfg: FilterConfig) -> tuple[pa.Table, pa.Table]:
    """Move the kept documents that share an n-gram with an evaluation set (``index``: a
    ``curation.decontam.ContaminationIndex``, or None) to the dropped ones (``filter_reason`` =
    ``contamination``), counting them per set with an example match."""
    if index is None or not kept.num_rows:
        return kept, dropped
    texts = kept.column("text").to_pylist()
    matches = [index.find(t) for t in texts]
    hit = [m is not None for m in matches]
    if not any(hit):
        return kept, dropped
    ids, langs = kept.column("id").to_pylist(), kept.column("language").to_pylist()
    urls = kept.column("url").to_pylist() if "url" in kept.column_names else [None] * kept.num_rows
    for m, doc_id, lang, url, text in zip(matches, ids, langs, urls, texts):
        if m is None:
            continue
        stats.output -= 1  # decide_table counted it kept
        count_contamination(stats, m, id=doc_id, url=url)
        stats.add(f"dropped.{_lang_bucket(lang, cfg)}.{CONTAMINATION}")
        stats.add("bytes_out", -len(text.encode("utf-8")))
    mask = pa.array(hit, pa.bool_())
    moved = _with_reason(kept.filter(mask), CONTAMINATION)
    return kept.filter(pc.invert(mask)), pa.concat_tables([dropped, moved.cast(dropped.schema)])


def _with_reason(table: pa.Table, reason: str) -> pa.Table:
    meta = table.column("metadata").combine_chunks()
    fields = list(meta.type)
    children = [meta.field(i) for i in range(meta.type.num_fields)]
    children[meta.type.get_field_index("filter_reason")] = pa.array([reason] * table.num_rows, pa.string())
    return table.set_column(table.column_names.index("metadata"), "metadata", pa.StructArray.from_arrays(children, fields=fields))
