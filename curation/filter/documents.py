"""The filter over tables of documents: score (signals), then decide (keep or the failed rule).

``score_table`` turns a table of documents (``DOCUMENT_SCHEMA``) into a table of signals keyed by
``id``: the language (recomputed with fastText lid.176 only where missing), every heuristic signal
and the model ``quality_score``. ``decide_table`` joins the documents with their signals and
splits them into kept and dropped, each dropped document naming the first rule it failed; both
carry the signals in ``metadata.filter`` and the reason in ``metadata.filter_reason``.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.filter.blocklist import is_blocked
from curation.filter.config import FilterConfig
from curation.filter.rules import first_failed_rule
from curation.filter.signals import compute_signals, signal_names
from curation.stats import StageStats


def signals_schema(cfg: FilterConfig) -> pa.Schema:
    return pa.schema(
        [pa.field("id", pa.string()), pa.field("language", pa.string()), pa.field("language_score", pa.float32())]
        + [pa.field(n, pa.float32()) for n in signal_names(cfg)]
        + [pa.field("quality_score", pa.float32())]
    )


def score_table(
    table: pa.Table,
    cfg: FilterConfig,
    quality_model: str | None = None,
    identify: Callable[[str], tuple[str, float]] | None = None,
) -> pa.Table:
    """Signals of every document of ``table``, in row order (see ``signals_schema``)."""
    if identify is None:
        from curation.langid import identify
    texts = table.column("text").to_pylist()
    langs = table.column("language").to_pylist() if "language" in table.column_names else [None] * len(texts)
    scores = table.column("language_score").to_pylist() if "language_score" in table.column_names else [None] * len(texts)
    for i, (lang, sc) in enumerate(zip(langs, scores)):
        if not lang or sc is None:
            langs[i], scores[i] = identify(texts[i])
    names = signal_names(cfg)
    columns: dict[str, list[float]] = {n: [] for n in names}
    for text, lang in zip(texts, langs):
        sig = compute_signals(text, lang, cfg)
        for n in names:
            columns[n].append(sig[n])
    if quality_model:
        from curation.filter.quality import score

        quality = pa.array(score(texts, quality_model), pa.float32())
    else:
        quality = pa.nulls(len(texts), pa.float32())
    arrays = [table.column("id"), pa.array(langs, pa.string()), pa.array(scores, pa.float32())]
    arrays += [pa.array(np.asarray(columns[n], dtype=np.float32)) for n in names] + [quality]
    return pa.Table.from_arrays([a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays], schema=signals_schema(cfg))


def decisions(
    signals: pa.Table, urls: list[str | None], cfg: FilterConfig, blocklist: frozenset[str], quality_cut: float | None
) -> list[str | None]:
    """The first failed rule of each document (None: kept), from its signals alone."""
    rows = signals.to_pylist()
    out = []
    for row, url in zip(rows, urls):
        row["url_blocked"] = is_blocked(url, blocklist)
        out.append(first_failed_rule(row, cfg, quality_cut))
    return out


def decide_table(
    docs: pa.Table, signals: pa.Table, cfg: FilterConfig, blocklist: frozenset[str] = frozenset(), quality_cut: float | None = None
) -> tuple[pa.Table, pa.Table, StageStats]:
    """(kept, dropped, stats): documents with ``metadata.filter`` signals and ``filter_reason``."""
    if docs.num_rows != signals.num_rows or docs.column("id") != signals.column("id"):
        raise ValueError("signals do not match the documents (ids differ): rescore this shard")
    urls = docs.column("url").to_pylist() if "url" in docs.column_names else [None] * docs.num_rows
    reasons = decisions(signals, urls, cfg, blocklist, quality_cut)
    table = _with_signals(docs, signals, reasons)
    keep = pa.array([r is None for r in reasons], pa.bool_())
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
    kept_bytes = pc.sum(pc.binary_length(pc.cast(pc.filter(docs.column("text"), keep), pa.binary()))).as_py() or 0
    stats.add("bytes_out", kept_bytes)
    return table.filter(keep), table.filter(pc.invert(keep)), stats


def _lang_bucket(lang: str | None, cfg: FilterConfig) -> str:
    return lang if lang in cfg.language.keep else "other"


def _with_signals(docs: pa.Table, signals: pa.Table, reasons: list[str | None]) -> pa.Table:
    """Documents with language filled in and ``metadata.filter`` / ``metadata.filter_reason`` added."""
    sig_fields = [f for f in signals.schema if f.name not in ("id", "language", "language_score")]
    filt = pa.StructArray.from_arrays(
        [signals.column(f.name).combine_chunks() for f in sig_fields], fields=list(sig_fields)
    )
    meta = docs.column("metadata").combine_chunks() if "metadata" in docs.column_names else None
    children, fields = [], []
    if meta is not None and pa.types.is_struct(meta.type):
        for f, child in zip(meta.type, meta.flatten()):
            if f.name not in ("filter", "filter_reason"):
                children.append(child)
                fields.append(f)
    children += [filt, pa.array(reasons, pa.string())]
    fields += [pa.field("filter", filt.type), pa.field("filter_reason", pa.string())]
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
