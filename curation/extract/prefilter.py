"""The pre-pass: before trafilatura runs, can this page possibly be kept?

The filter keeps only documents in its languages (lid.176 on the extracted text) with at least
its minimum number of words, so extracting any other page is wasted: on a Common Crawl mix that
is about half of them. A page's plain text, rendered by resiliparse (lexbor, in C) at about a
tenth of trafilatura's cost, answers both questions closely enough to skip pages that are
clearly out:

- **Length.** The rendered text holds every visible word of the page, the main text's among
  them, and words are counted as the filter counts them for Chinese (each CJK character one
  word, the rest split on spaces), which is never fewer than for any other language. A page
  with fewer words than the filter's minimum cannot give a document that passes it.
- **Language.** lid.176 scores two views of the text: its first characters, and its long lines
  (prose, where the main text usually is, rather than menus). A page is skipped only when, in
  both views, the target languages together get less than ``min_target_probability``: a page
  whose language is borderline, or whose prose and boilerplate are in different languages,
  still goes to trafilatura, which decides.

A page the renderer cannot parse goes to trafilatura too (counted, never dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _filter_languages() -> list[str]:
    from curation.filter.config import LanguageConfig

    return list(LanguageConfig().keep)


def _filter_min_words() -> int:
    from curation.filter.config import GopherQualityConfig

    return GopherQualityConfig().min_words


@dataclass
class PrefilterConfig:
    # Off for the `extract` command (extract every page). `pipelines run` turns it on in the
    # pipeline configs (`extract.prefilter: true`) and passes the filter's own languages and
    # minimum length (filter.set language.keep=..., gopher_quality.min_words=...), so one
    # setting feeds both stages. The defaults here are the filter's defaults.
    enabled: bool = False
    # Empty: no language rule (length only).
    languages: list[str] = field(default_factory=_filter_languages)
    min_words: int = field(default_factory=_filter_min_words)
    # The margin: skip for language only where lid.176 gives the target languages together less
    # than this probability in both views. 0.1 lost no page on the sample, the gold set or the
    # mixed-language set of `make bench-extract` (0.2 lost pages that the filter's 0.65 keeps).
    min_target_probability: float = 0.1
    # Characters of each view that lid.176 reads (its cost grows with them).
    sample_chars: int = 2000
    # The renderer first reads this many characters of the page from its <body> on (its cost
    # grows with them, and the head holds no text); the whole page only where they give too
    # little text to judge (fewer words than the minimum, or under a quarter of sample_chars).
    # On the bench sets: half the pre-pass's CPU, the same verdicts.
    window_chars: int = 16384
    # A "long line" of the second view: prose, not a menu entry.
    long_line_chars: int = 40


class RenderFailed(Exception):
    """The fast renderer could not parse the page; trafilatura gets it."""


def plain_text(html: str) -> str:
    """Every visible text of the page, one block per line (resiliparse's plain-text renderer)."""
    from resiliparse.extract.html2text import extract_plain_text

    try:
        text = extract_plain_text(html, preserve_formatting=True, list_bullets=False, alt_texts=False)
    except Exception as e:  # noqa: BLE001 - HTMLParserException, or anything lexbor trips on
        raise RenderFailed(f"{type(e).__name__}: {e}"[:200]) from None
    if not isinstance(text, str):
        raise RenderFailed(f"renderer returned {type(text).__name__}")
    return text


def has_words(text: str, n: int) -> bool:
    """At least ``n`` words as the filter counts them for Chinese (an upper bound of its count for
    any language). A prefix never holds more words than the whole, so a prefix that has enough
    answers without splitting the whole page."""
    from curation.filter.words import split_words

    return len(split_words(text[: 64 * (n + 1)], "zh")) >= n or len(split_words(text, "zh")) >= n


def target_probability(text: str, cfg: PrefilterConfig) -> tuple[float, str]:
    """The larger, over both views, of the probability lid.176 gives the target languages
    together; and the most likely language of the first view (the label the stats record)."""
    from curation import langid

    targets = set(cfg.languages)

    def probability(view: str) -> tuple[float, str]:
        # Five labels hold all but a sliver of lid.176's probability on real text.
        ranked = langid.top(view, k=5, max_chars=cfg.sample_chars)
        return sum(p for lang, p in ranked if lang in targets), (ranked[0][0] if ranked else "unknown")

    best, label = probability(text)
    if best < cfg.min_target_probability:  # else kept already: the second view cannot change that
        long_lines = "\n".join(line for line in text.splitlines() if len(line.strip()) >= cfg.long_line_chars)
        best = max(best, probability(long_lines)[0])
    return best, label


def check(html: str, cfg: PrefilterConfig) -> tuple[str | None, str | None]:
    """(reason, language): ``prefilter_short`` or ``prefilter_language`` where the page cannot
    be kept, else None. Raises :class:`RenderFailed` where the page could not be rendered."""
    start = html.find("<body")
    if start < 0:
        start = max(0, html.find("<BODY"))
    # The window's text is part of the page's: enough words there means enough in the page.
    text = plain_text(html[start : start + cfg.window_chars])
    if start + cfg.window_chars < len(html) and (not has_words(text, cfg.min_words) or len(text) < cfg.sample_chars // 4):
        text = plain_text(html)
    if not has_words(text, cfg.min_words):
        return "prefilter_short", None
    if not cfg.languages:  # no language rule to anticipate
        return None, None
    probability, label = target_probability(text, cfg)
    if probability < cfg.min_target_probability:
        return "prefilter_language", label
    return None, label
