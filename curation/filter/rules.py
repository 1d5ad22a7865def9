"""The keep/drop decision: named rules over stored signals, in a fixed order.

A rule reads a document's signals (``curation.filter.signals``, ``curation.filter.reference_signals``)
and the thresholds in ``FilterConfig`` and says whether the document fails. ``rules_for(cfg)`` is
the chain of ``cfg.preset``: ``RULES`` for ``deepseek``; for ``fineweb``, ``gopher`` and ``c4``
datatrove's checks in datatrove's order, each named after the reason datatrove gives
(``REFERENCE_REASONS``). ``first_failed_rule`` returns the name of the first rule that fails (the
document's drop reason) or None. Nothing here recomputes a signal, so changing a threshold costs
one pass over the stored signals.
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

# ---- the reference presets: datatrove's checks, in its order, under its reason names ------------

def _on(threshold) -> bool:
    # datatrove skips a check whose threshold is 0 or None ("if self.x and ...").
    return bool(threshold)


def _gopher_repetition_rules(c: FilterConfig) -> list[Rule]:
    r = c.gopher_repetition
    rules: list[Rule] = [
        ("gopher_empty", lambda s, c: s["gopher_chars"] == 0),
        ("gopher_dup_para_frac", lambda s, c: _on(c.gopher_repetition.max_dup_para_frac) and s["gopher_dup_para_frac"] > c.gopher_repetition.max_dup_para_frac),
        ("gopher_dup_para_char_frac", lambda s, c: _on(c.gopher_repetition.max_dup_para_char_frac) and s["gopher_dup_para_char_frac"] > c.gopher_repetition.max_dup_para_char_frac),
        ("gopher_dup_line_frac", lambda s, c: _on(c.gopher_repetition.max_dup_line_frac) and s["gopher_dup_line_frac"] > c.gopher_repetition.max_dup_line_frac),
        ("gopher_dup_line_char_frac", lambda s, c: _on(c.gopher_repetition.max_dup_line_char_frac) and s["gopher_dup_line_char_frac"] > c.gopher_repetition.max_dup_line_char_frac),
    ]
    for n in sorted(r.top_ngrams):
        rules.append((f"gopher_top_{n}_gram", lambda s, c, n=n: s[f"gopher_top_{n}_gram_frac"] > c.gopher_repetition.top_ngrams[n]))
    for n in sorted(r.dup_ngrams):
        rules.append((f"gopher_duplicated_{n}_n_grams", lambda s, c, n=n: s[f"gopher_dup_{n}_gram_frac"] > c.gopher_repetition.dup_ngrams[n]))
    return rules


_GOPHER_QUALITY_RULES: list[Rule] = [
    ("gopher_short_doc", lambda s, c: _on(c.gopher_quality.min_words) and s["gopher_words"] < c.gopher_quality.min_words),
    ("gopher_long_doc", lambda s, c: _on(c.gopher_quality.max_words) and s["gopher_words"] > c.gopher_quality.max_words),
    # NaN (no words at all) passes both, as numpy's mean of nothing does in datatrove.
    ("gopher_below_avg_threshold", lambda s, c: _on(c.gopher_quality.min_mean_word_length) and s["gopher_mean_word_length"] < c.gopher_quality.min_mean_word_length),
    ("gopher_above_avg_threshold", lambda s, c: _on(c.gopher_quality.max_mean_word_length) and s["gopher_mean_word_length"] > c.gopher_quality.max_mean_word_length),
    ("gopher_too_many_hashes", lambda s, c: _on(c.gopher_quality.max_symbol_word_ratio) and s["gopher_hash_ratio"] > c.gopher_quality.max_symbol_word_ratio),
    ("gopher_too_many_ellipsis", lambda s, c: _on(c.gopher_quality.max_symbol_word_ratio) and s["gopher_ellipsis_ratio"] > c.gopher_quality.max_symbol_word_ratio),
    ("gopher_too_many_bullets", lambda s, c: _on(c.gopher_quality.max_bullet_lines_ratio) and s["gopher_bullet_lines_ratio"] > c.gopher_quality.max_bullet_lines_ratio),
    ("gopher_too_many_end_ellipsis", lambda s, c: _on(c.gopher_quality.max_ellipsis_lines_ratio) and s["gopher_end_ellipsis_lines_ratio"] > c.gopher_quality.max_ellipsis_lines_ratio),
    ("gopher_below_alpha_threshold", lambda s, c: _on(c.gopher_quality.min_alpha_words_ratio) and s["gopher_alpha_words_ratio"] < c.gopher_quality.min_alpha_words_ratio),
    ("gopher_enough_stop_words", lambda s, c: _on(c.gopher_quality.min_stop_words) and s["gopher_stop_words"] < c.gopher_quality.min_stop_words),
]


def _c4_lorem(s: Signals, c: FilterConfig) -> bool:
    # C4 returns at the first line that trips either page rule (lorem ipsum checked first).
    lorem, curly = s["c4_first_lorem_line"], s["c4_first_curly_line"]
    return c.c4.lorem_ipsum and lorem >= 0 and not (c.c4.curly_bracket and 0 <= curly < lorem)


_C4_RULES: list[Rule] = [
    ("c4_lorem_ipsum", _c4_lorem),
    ("c4_curly_bracket", lambda s, c: c.c4.curly_bracket and s["c4_first_curly_line"] >= 0),
    ("c4_too_few_sentences", lambda s, c: s["c4_kept_sentences"] < c.c4.min_sentences),
]


def _fineweb_punct(s: Signals, c: FilterConfig) -> bool:
    r = s["fineweb_line_punct_ratio"]
    return r < c.fineweb.min_line_punct_ratio and not (r == 0 and c.fineweb.line_punct_exclude_zero)


_FINEWEB_RULES: list[Rule] = [
    ("fineweb_empty", lambda s, c: s["fineweb_lines"] == 0),
    ("fineweb_line_punct_ratio", _fineweb_punct),
    ("fineweb_short_line_ratio", lambda s, c: s["fineweb_short_line_ratio"] > c.fineweb.max_short_line_ratio),
    ("fineweb_char_dup_ratio", lambda s, c: s["fineweb_char_dup_ratio"] > c.fineweb.max_dup_line_char_ratio),
    ("fineweb_list_ratio", lambda s, c: s["fineweb_list_ratio"] > c.fineweb.max_newline_word_ratio),
]


def rules_for(cfg: FilterConfig) -> list[Rule]:
    """The rule chain of ``cfg.preset``, in the order its reference applies them."""
    head = RULES[:2]  # url_blocklist, language
    if cfg.preset == "deepseek":
        return RULES
    if cfg.preset == "fineweb":
        return head + _gopher_repetition_rules(cfg) + _GOPHER_QUALITY_RULES + _C4_RULES + _FINEWEB_RULES
    if cfg.preset == "gopher":
        return head + _gopher_repetition_rules(cfg) + _GOPHER_QUALITY_RULES
    if cfg.preset == "c4":
        return head + _C4_RULES
    raise ValueError(f"unknown preset {cfg.preset!r}")


def _reference_reasons() -> dict[str, str]:
    """Our rule name -> datatrove's "<filter>/<reason>" for the reference presets' rules."""
    out = {}
    for name, _ in _gopher_repetition_rules(FilterConfig()):
        out[name] = "gopher_repetition/" + name.removeprefix("gopher_")
    for name, _ in _GOPHER_QUALITY_RULES:
        out[name] = "gopher_quality/" + name
    for name, _ in _C4_RULES:
        out[name] = "c4/" + name.removeprefix("c4_")
    for name, _ in _FINEWEB_RULES:
        out[name] = "fineweb/" + {"fineweb_empty": "empty", "fineweb_line_punct_ratio": "line_punct_ratio",
                                   "fineweb_short_line_ratio": "short_line_ratio", "fineweb_char_dup_ratio": "char_dup_ratio",
                                   "fineweb_list_ratio": "list_ratio"}[name]
    return out


REFERENCE_REASONS = _reference_reasons()

RULE_NAMES = [name for name, _ in RULES] + ["quality_score"]


def rule_names(cfg: FilterConfig) -> list[str]:
    return [name for name, _ in rules_for(cfg)] + ["quality_score"]


def first_failed_rule(signals: Signals, cfg: FilterConfig, quality_cut: float | None = None, rules: list[Rule] | None = None) -> str | None:
    """Name of the first rule ``signals`` fail under ``cfg`` (None: keep).

    ``quality_cut`` is the model-score threshold in force (from ``quality.threshold`` or the
    corpus-wide cut that keeps ``quality.top_fraction``); the model rule runs last. ``rules``:
    ``rules_for(cfg)``, passed in by callers that decide many documents.
    """
    disabled = cfg.disabled_rules
    for name, fails in rules if rules is not None else rules_for(cfg):
        if name not in disabled and fails(signals, cfg):
            return name
    if quality_cut is not None and "quality_score" not in disabled:
        score = signals.get("quality_score")
        if score is not None and score == score and score < quality_cut:
            return "quality_score"
    return None


def check_rule_names(names: list[str], cfg: FilterConfig | None = None) -> None:
    known = rule_names(cfg) if cfg is not None else RULE_NAMES
    unknown = sorted(set(names) - set(known))
    if unknown:
        preset = f" of preset {cfg.preset}" if cfg is not None else ""
        raise ValueError(f"unknown rule(s) {unknown}; the rules{preset} are {known}")
