"""The keep/drop decision: named rules over stored signals, in a fixed order.

A rule reads a document's signals (``curation.filter.signals``) and the thresholds in
``FilterConfig`` and says whether the document fails. ``first_failed_rule`` returns the name of
the first rule that fails (the document's drop reason) or None. Nothing here recomputes a signal,
so changing a threshold costs one pass over the stored signals.
"""

from __future__ import annotations

from typing import Any, Callable

from curation.filter.config import FilterConfig
from curation.filter.words import uses_spaces

Signals = dict[str, Any]
# (name, fails(signals, cfg)). The signals dict also carries "language", "language_score",
# "url_blocked" and "quality_score" next to the heuristic signals.
Rule = tuple[str, Callable[[Signals, FilterConfig], bool]]


def _language(s: Signals, c: FilterConfig) -> bool:
    return s["language"] not in c.language.keep or s["language_score"] < c.language.min_score


def _top_ngram(s: Signals, c: FilterConfig) -> bool:
    return any(s.get(f"top_{n}gram_char_frac", 0.0) > t for n, t in c.gopher_repetition.top_ngrams.items())


def _dup_ngram(s: Signals, c: FilterConfig) -> bool:
    return any(s.get(f"dup_{n}gram_char_frac", 0.0) > t for n, t in c.gopher_repetition.dup_ngrams.items())


def _mean_word_length(s: Signals, c: FilterConfig) -> bool:
    if not uses_spaces(s["language"]):
        return False  # words are single characters there (curation/filter/words.py)
    g = c.gopher_quality
    return not (g.min_mean_word_length <= s["mean_word_length"] <= g.max_mean_word_length)


def _stop_words(s: Signals, c: FilterConfig) -> bool:
    return s["stop_words"] >= 0 and s["stop_words"] < c.gopher_quality.min_stop_words


RULES: list[Rule] = [
    ("url_blocklist", lambda s, c: bool(s.get("url_blocked", False))),
    ("language", _language),
    # Gopher quality (Rae et al. 2021, A.1.1)
    ("gopher_word_count", lambda s, c: not (c.gopher_quality.min_words <= s["n_words"] <= c.gopher_quality.max_words)),
    ("gopher_mean_word_length", _mean_word_length),
    ("gopher_symbol_ratio", lambda s, c: s["symbol_word_ratio"] > c.gopher_quality.max_symbol_word_ratio),
    ("gopher_bullet_lines", lambda s, c: s["bullet_lines_ratio"] > c.gopher_quality.max_bullet_lines_ratio),
    ("gopher_ellipsis_lines", lambda s, c: s["ellipsis_lines_ratio"] > c.gopher_quality.max_ellipsis_lines_ratio),
    ("gopher_alpha_words", lambda s, c: s["alpha_words_ratio"] < c.gopher_quality.min_alpha_words_ratio),
    ("gopher_stop_words", _stop_words),
    # Gopher repetition (Rae et al. 2021, table A1)
    ("gopher_dup_lines", lambda s, c: s["dup_line_frac"] > c.gopher_repetition.max_dup_line_frac),
    ("gopher_dup_paragraphs", lambda s, c: s["dup_para_frac"] > c.gopher_repetition.max_dup_para_frac),
    ("gopher_dup_line_chars", lambda s, c: s["dup_line_char_frac"] > c.gopher_repetition.max_dup_line_char_frac),
    ("gopher_dup_paragraph_chars", lambda s, c: s["dup_para_char_frac"] > c.gopher_repetition.max_dup_para_char_frac),
    ("gopher_top_ngram", _top_ngram),
    ("gopher_dup_ngram", _dup_ngram),
    # C4 (Raffel et al. 2020)
    ("c4_lorem_ipsum", lambda s, c: c.c4.lorem_ipsum and s["c4_lorem_ipsum"] > 0),
    ("c4_curly_bracket", lambda s, c: c.c4.curly_bracket and s["c4_curly_bracket"] > 0),
    ("c4_javascript", lambda s, c: s["c4_javascript_lines_ratio"] > c.c4.max_javascript_lines_ratio),
    ("c4_policy", lambda s, c: s["c4_policy_lines_ratio"] > c.c4.max_policy_lines_ratio),
    ("c4_terminal_punct", lambda s, c: s["c4_sentences"] < c.c4.min_sentences),
    # FineWeb (Penedo et al. 2024)
    ("fineweb_line_punct", lambda s, c: s["line_punct_ratio"] < c.fineweb.min_line_punct_ratio),
    ("fineweb_short_lines", lambda s, c: s["short_line_ratio"] > c.fineweb.max_short_line_ratio),
    ("fineweb_dup_line_chars", lambda s, c: s["dup_line_char_ratio"] > c.fineweb.max_dup_line_char_ratio),
    ("fineweb_list_ratio", lambda s, c: s["newline_word_ratio"] > c.fineweb.max_newline_word_ratio),
]

RULE_NAMES = [name for name, _ in RULES] + ["quality_score"]


def first_failed_rule(signals: Signals, cfg: FilterConfig, quality_cut: float | None = None) -> str | None:
    """Name of the first rule ``signals`` fail under ``cfg`` (None: keep).

    ``quality_cut`` is the model-score threshold in force (from ``quality.threshold`` or the
    corpus-wide cut that keeps ``quality.top_fraction``); the model rule runs last.
    """
    disabled = cfg.disabled_rules
    for name, fails in RULES:
        if name not in disabled and fails(signals, cfg):
            return name
    if quality_cut is not None and "quality_score" not in disabled:
        score = signals.get("quality_score")
        if score is not None and score == score and score < quality_cut:
            return "quality_score"
    return None


def check_rule_names(names: list[str]) -> None:
    unknown = sorted(set(names) - set(RULE_NAMES))
    if unknown:
        raise ValueError(f"unknown rule(s) {unknown}; rules are {RULE_NAMES}")
