"""Settings of the quality filter: one dataclass per rule family, every threshold with its source.

Thresholds follow the open pipelines that published and ablated them: the Gopher rules
(Rae et al. 2021, "Scaling Language Models", appendix A.1.1, as implemented in datatrove's
``GopherQualityFilter`` / ``GopherRepetitionFilter``), C4 (Raffel et al. 2020, section 2.2, as in
datatrove's ``C4QualityFilter``) and FineWeb (Penedo et al. 2024, datatrove's
``FineWebQualityFilter``). The DeepSeek LLM report names no thresholds.

Scoring and deciding are separate (as in Dolma's taggers and mixer): fields marked *signal* change
what is computed per document; everything else is a decision threshold, and changing it re-runs
only the cheap decision step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curation.decontam import DecontaminationConfig

# Gopher's stop words (Rae et al. 2021, A.1.1): a document must contain at least two of them.
# Chinese has no such published list; these are its most frequent function characters/words (the
# structural particles, copula, common prepositions and pronouns), which any running Chinese
# prose contains and navigation menus, product lists and spam keyword pages mostly do not.
STOP_WORDS: dict[str, list[str]] = {
    "en": ["the", "be", "to", "of", "and", "that", "have", "with"],
    "zh": ["的", "了", "是", "在", "和", "有", "我", "不", "这", "也", "就", "都", "他", "们", "与", "为"],
}


@dataclass
class LanguageConfig:
    # The DeepSeek LLM corpus is mostly English and Chinese.
    keep: list[str] = field(default_factory=lambda: ["en", "zh"])
    # FineWeb keeps documents whose fastText lid.176 score is >= 0.65 (Penedo et al. 2024).
    min_score: float = 0.65


@dataclass
class GopherQualityConfig:
    # Rae et al. 2021 A.1.1: between 50 and 100,000 words. For languages written without spaces a
    # "word" is one Han/kana character (see curation/filter/words.py), so 50 means 50 characters.
    min_words: int = 50
    max_words: int = 100_000
    # Mean word length between 3 and 10 characters (Gopher). Not applied to languages without
    # spaces, whose words are single characters here (recorded, never a reason to drop).
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    # Symbol-to-word ratio (hash marks and ellipses) at most 0.1 (Gopher).
    max_symbol_word_ratio: float = 0.1
    # At most 90% of lines start with a bullet, at most 30% end with an ellipsis (Gopher).
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    # At least 80% of words contain an alphabetic character (Gopher).
    min_alpha_words_ratio: float = 0.8
    # At least two of the language's stop words (Gopher); languages without a list skip the rule.
    min_stop_words: int = 2
    stop_words: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in STOP_WORDS.items()})


@dataclass
class GopherRepetitionConfig:
    # Rae et al. 2021 A.1.1, table A1: duplicate lines / paragraphs as a fraction of all of them
    # (0.30) and the characters in them as a fraction of all characters (0.20).
    max_dup_line_frac: float = 0.30
    max_dup_para_frac: float = 0.30
    max_dup_line_char_frac: float = 0.20
    max_dup_para_char_frac: float = 0.20
    # Characters in the most frequent 2/3/4-gram at most 20/18/16% (Gopher table A1). *signal*: n.
    top_ngrams: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    # Characters in all duplicated 5..10-grams at most 15..10% (Gopher table A1). *signal*: n.
    dup_ngrams: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    # Languages without spaces are split into single characters (curation/filter/words.py); a
    # Chinese word averages about 1.5 characters, so an n-word n-gram there is round(1.5 n)
    # characters. Without this, 5-character repeats (names, set phrases) dropped a real
    # journal article in the sample (dup 5-gram 0.16 as characters, 0.06 as ~words). *signal*.
    chars_per_word_no_space: float = 1.5


@dataclass
class C4Config:
    # C4 (Raffel et al. 2020) drops pages containing "lorem ipsum" or a curly bracket, removes
    # lines mentioning javascript or a cookie/privacy/terms policy and lines without terminal
    # punctuation, then drops pages left with fewer than 5 sentences. We never edit the text
    # (later stages and ids see what extraction produced), so the line rules become document
    # rules: the page is dropped when the lines C4 would keep hold fewer than `min_sentences`
    # sentences, or when javascript / policy lines are more than the given fraction of lines.
    lorem_ipsum: bool = True
    curly_bracket: bool = True
    min_sentences: int = 5  # C4
    min_words_per_line: int = 3  # C4: a kept line has at least 3 words
    # Our choice (C4 removes such lines one by one): a page that is more than 10% cookie banners
    # or "enable javascript" notices is boilerplate, not text with a stray notice in it.
    max_javascript_lines_ratio: float = 0.1
    max_policy_lines_ratio: float = 0.1


@dataclass
class FineWebConfig:
    # FineWeb's own filters (Penedo et al. 2024; datatrove FineWebQualityFilter defaults):
    # at least 12% of lines end in terminal punctuation,
    min_line_punct_ratio: float = 0.12
    # at most 67% of lines are 30 characters or shorter,
    max_short_line_ratio: float = 0.67
    short_line_length: int = 30
    # at most 1% of characters are in lines that repeat an earlier line,
    max_dup_line_char_ratio: float = 0.01
    # and at most 0.3 newlines per word (list-like pages).
    max_newline_word_ratio: float = 0.3


@dataclass
class QualityModelConfig:
    # The fastText classifier trained by `python -m pipelines train-quality` (DCLM-style:
    # explanatory/instruction text vs. random web text). Empty path: no model score. *signal*.
    model: str = "models/quality.ftz"
    # Decision: keep documents scoring >= threshold, or the top fraction of those passing every
    # other rule. Both off by default: the shipped model is trained on a few thousand documents
    # and is a demo of the mechanism, not a judge to drop data by (DCLM kept its top 10%).
    threshold: float | None = None
    top_fraction: float | None = None


@dataclass
class BlocklistConfig:
    # A file with one domain per line (# comments); a listed domain also blocks its subdomains.
    # data/blocklist.example.txt is a small example. Empty: no URL blocklist.
    path: str = ""


@dataclass
class FilterConfig:
    language: LanguageConfig = field(default_factory=LanguageConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)
    quality: QualityModelConfig = field(default_factory=QualityModelConfig)
    blocklist: BlocklistConfig = field(default_factory=BlocklistConfig)
    # Rules switched off by name (e.g. ["c4_curly_bracket"]): their signals are still stored.
    disabled_rules: list[str] = field(default_factory=list)
    # Documents sharing a 13-gram with an evaluation set are dropped as "contamination"
    # (curation/decontam.py); after the rules, so a document fails its first rule first.
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)


def signal_settings(cfg: FilterConfig) -> dict:
    """The settings that change what a signal is (not a threshold): the key of cached signals."""
    rep = cfg.gopher_repetition
    return {
        "stop_words": {k: sorted(v) for k, v in sorted(cfg.gopher_quality.stop_words.items())},
        "top_ngrams": sorted(rep.top_ngrams),
        "dup_ngrams": sorted(rep.dup_ngrams),
        "chars_per_word_no_space": rep.chars_per_word_no_space,
        "c4_min_words_per_line": cfg.c4.min_words_per_line,
        "short_line_length": cfg.fineweb.short_line_length,
        "quality_model": cfg.quality.model,
    }
