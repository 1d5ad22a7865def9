"""Our presets against the reference implementations they follow: datatrove's own filters.

Only tests (``tests/test_filter.py``) and ``make bench-filter`` use this module; the pipeline never
does. It needs the ``test`` extra (``datatrove`` 0.10 and ``spacy``), imported lazily here.

- ``datatrove_decisions(texts, preset)`` runs datatrove's filter chain of a preset on each text:
  (kept, the filter and reason that dropped it, the text it leaves).
- ``our_decisions(texts, cfg)`` runs ours the same way, from ``compute_families`` and the
  preset's rules, so that both sides see the same documents (the language step is left to the
  caller: datatrove's ``LanguageFilter`` downloads ``lid.176.bin``, ours reads lid.176.ftz).
- ``agreement(ours, theirs)`` counts both keep / both drop / only ours keeps / only datatrove keeps.
- ``write_tables(path)`` regenerates ``data/reference_tables.json``, the rule tables our word
  tokenizer runs on, from the installed spaCy and datatrove (``python -m curation.filter.compare``).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

from curation.filter.config import FilterConfig

# A preset's datatrove chain, by the names below (the language step is the caller's).
CHAINS = {
    "fineweb": ["gopher_repetition", "gopher_quality", "c4", "fineweb"],
    "gopher": ["gopher_repetition", "gopher_quality"],
    "c4": ["c4"],
}


@dataclass
class Decision:
    kept: bool
    reason: str | None  # "<filter>/<reason>" of the step that dropped it
    text: str  # the text after every step it passed (C4 removes lines)


def _datatrove_filters(preset: str, cfg: FilterConfig) -> list:
    try:
        from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
    except ImportError as e:  # pragma: no cover - the test extra is missing
        raise RuntimeError("the datatrove comparison needs the test extra: pip install -e '.[test]'") from e
    g, r, c, f = cfg.gopher_quality, cfg.gopher_repetition, cfg.c4, cfg.fineweb
    make = {
        "gopher_repetition": lambda: GopherRepetitionFilter(
            dup_line_frac=r.max_dup_line_frac, dup_para_frac=r.max_dup_para_frac,
            dup_line_char_frac=r.max_dup_line_char_frac, dup_para_char_frac=r.max_dup_para_char_frac,
            top_n_grams=tuple(sorted(r.top_ngrams.items())), dup_n_grams=tuple(sorted(r.dup_ngrams.items())),
        ),
        "gopher_quality": lambda: GopherQualityFilter(
            min_doc_words=g.min_words, max_doc_words=g.max_words, min_avg_word_length=g.min_mean_word_length,
            max_avg_word_length=g.max_mean_word_length, max_symbol_word_ratio=g.max_symbol_word_ratio,
            max_bullet_lines_ratio=g.max_bullet_lines_ratio, max_ellipsis_lines_ratio=g.max_ellipsis_lines_ratio,
            max_non_alpha_words_ratio=g.min_alpha_words_ratio, min_stop_words=g.min_stop_words,
            stop_words=g.stop_words["en"],
        ),
        "c4": lambda: C4QualityFilter(
            remove_citations=c.remove_citations, filter_no_terminal_punct=c.filter_no_terminal_punct,
            min_num_sentences=c.min_sentences, min_words_per_line=c.min_words_per_line,
            max_word_length=c.max_word_length, filter_lorem_ipsum=c.lorem_ipsum, filter_javascript=c.filter_javascript,
            filter_curly_bracket=c.curly_bracket, filter_policy=c.filter_policy,
        ),
        "fineweb": lambda: FineWebQualityFilter(
            line_punct_thr=f.min_line_punct_ratio, line_punct_exclude_zero=f.line_punct_exclude_zero,
            short_line_thr=f.max_short_line_ratio, short_line_length=f.short_line_length,
            char_duplicates_ratio=f.max_dup_line_char_ratio, new_line_ratio=f.max_newline_word_ratio,
        ),
    }
    return [(name, make[name]()) for name in CHAINS[preset]]


def datatrove_decisions(texts: list[str], preset: str, cfg: FilterConfig | None = None) -> list[Decision]:
    """datatrove's chain for ``preset`` over each text (its filters' ``filter`` method, in order)."""
    from datatrove.data import Document

    cfg = cfg or _preset_config(preset)
    filters = _datatrove_filters(preset, cfg)
    out = []
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        reason = None
        for name, flt in filters:
            res = flt.filter(doc)
            ok, why = res if isinstance(res, tuple) else (res, None)
            if not ok:
                reason = f"{name}/{why}"
                break
        out.append(Decision(reason is None, reason, doc.text))
    return out


def our_decisions(texts: list[str], cfg: FilterConfig) -> list[Decision]:
    """Our preset ``cfg.preset`` over each text, language taken as English with score 1."""
    from curation.filter.reference_signals import kept_text
    from curation.filter.rules import first_failed_rule, rules_for
    from curation.filter.signals import compute_families

    rules = rules_for(cfg)
    out = []
    for text in texts:
        sig = compute_families(text, "en", cfg)
        sig.update(language="en", language_score=1.0, url_blocked=False)
        reason = first_failed_rule(sig, cfg, rules=rules)
        out.append(Decision(reason is None, reason, kept_text(text, cfg) if reason is None else text))
    return out


def agreement(ours: list[Decision], theirs: list[Decision]) -> dict[str, int]:
    table = {"both keep": 0, "both drop": 0, "only ours keeps": 0, "only datatrove keeps": 0}
    for a, b in zip(ours, theirs):
        key = ("both keep" if b.kept else "only ours keeps") if a.kept else ("only datatrove keeps" if b.kept else "both drop")
        table[key] += 1
    return table


def _preset_config(preset: str) -> FilterConfig:
    from curation.filter.config import preset_config

    return preset_config(preset)


# ---- the rule tables our word tokenizer runs on -------------------------------------------------

TABLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "reference_tables.json")


def tables() -> dict:
    """spaCy's English tokenizer rules and datatrove's punctuation sets, from the installed packages."""
    import datatrove
    import datatrove.utils.text as dt_text
    import spacy
    from spacy.pipeline import Sentencizer

    tok = spacy.blank("en").tokenizer
    return {
        "_about": (
            "Rule tables of the reference word tokenizer (curation/filter/en_words.py): spaCy's English "
            "tokenizer patterns and special cases (spaCy, MIT license, (c) ExplosionAI GmbH) and datatrove's "
            "punctuation sets (datatrove, Apache-2.0, (c) Hugging Face). Generated by "
            "`python -m curation.filter.compare`; tests/test_filter.py checks them against the installed packages."
        ),
        "spacy_version": spacy.__version__,
        "datatrove_version": datatrove.__version__ if hasattr(datatrove, "__version__") else _dist_version("datatrove"),
        "prefix": tok.prefix_search.__self__.pattern,
        "suffix": tok.suffix_search.__self__.pattern,
        "infix": tok.infix_finditer.__self__.pattern,
        "url": tok.url_match.__self__.pattern,
        "specials": {orth: [t[65] if 65 in t else t["ORTH"] for t in toks] for orth, toks in sorted(tok.rules.items())},
        "sentence_punct": sorted(Sentencizer.default_punct_chars),
        "punctuation": dt_text.PUNCTUATION,
        "terminal_punctuation": sorted(dt_text.TERMINAL_PUNCTUATION),
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def write_tables(path: str = TABLES) -> None:
    data = tables()
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=0, sort_keys=True)
        f.write("\n")
    print(f"wrote {path}: {len(data['specials'])} special cases (spaCy {data['spacy_version']}, datatrove {data['datatrove_version']})", file=sys.stderr)


if __name__ == "__main__":
    write_tables()
