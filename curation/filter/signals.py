"""Per-document quality signals: the numbers the rules judge, computed once and stored.

``compute_signals(text, language, cfg)`` returns a flat ``{name: float}``; the decision step
(``curation.filter.rules``) reads only these, so a changed threshold never recomputes them. The
definitions follow Gopher (Rae et al. 2021, A.1.1), C4 (Raffel et al. 2020) and FineWeb (Penedo
et al. 2024); where we differ from datatrove's implementation, the comment says how.
"""

from __future__ import annotations

import functools
import re
import numpy as np

from curation.filter.config import FilterConfig
from curation.filter.words import split_words, uses_spaces

# Terminal punctuation of a sentence or line (C4's list plus the CJK full-width forms).
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "。", "！", "？", "．", "”", "」", "』", "…", "’")
_BULLETS = ("•", "●", "○", "▪", "◦", "‣", "⁃", "-", "*", "·", "–", "—", "►", "■")
_ELLIPSES = ("...", "…")
# C4: "we removed any line containing ... (terms of use, privacy policy, cookie policy, uses
# cookies, use of cookies, use cookies)" - the list in datatrove's C4QualityFilter.
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|[。！？]")
_PARAGRAPHS = re.compile(r"\n{2,}")
_NON_WORD = re.compile(r"[^\w\s]+")
# A 64-bit odd multiplier (golden ratio) to spread word ids, and a prime base for n-gram hashes.
_MIX = np.uint64(0x9E3779B97F4A7C15)
_BASE = np.uint64(1_099_511_628_211)


def signal_names(cfg: FilterConfig) -> list[str]:
    """The signals computed under ``cfg``, in their stored order."""
    rep = cfg.gopher_repetition
    return (
        [
            "n_words", "mean_word_length", "symbol_word_ratio", "bullet_lines_ratio",
            "ellipsis_lines_ratio", "alpha_words_ratio", "stop_words",
            "dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac",
        ]
        + [f"top_{n}gram_char_frac" for n in sorted(rep.top_ngrams)]
        + [f"dup_{n}gram_char_frac" for n in sorted(rep.dup_ngrams)]
        + [
            "c4_lorem_ipsum", "c4_curly_bracket", "c4_javascript_lines_ratio", "c4_policy_lines_ratio",
            "c4_sentences",
            "line_punct_ratio", "short_line_ratio", "dup_line_char_ratio", "newline_word_ratio",
        ]
    )


def compute_signals(text: str, language: str | None, cfg: FilterConfig) -> dict[str, float]:
    """Every heuristic signal of one document, as a flat dict (see ``signal_names``)."""
    words = split_words(text, language)
    lines = [ln.strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    out: dict[str, float] = {}
    out.update(gopher_quality(text, words, lines, language, cfg))
    line_dups = find_duplicates(lines)  # Gopher and FineWeb count the same duplicate lines
    out.update(gopher_repetition(text, words, lines, language, cfg, line_dups))
    out.update(c4_quality(text, lines, language, cfg))
    out.update(fineweb_quality(text, words, lines, cfg, line_dups))
    return out


def gopher_quality(text: str, words: list[str], lines: list[str], language: str | None, cfg: FilterConfig) -> dict[str, float]:
    """Gopher's quality signals of a document, given its words and non-empty stripped lines."""
    n_words = len(words)
    # Content words are datatrove's "non-symbol words" (a token of punctuation only, "-" or "|",
    # is not a word); their length counts word characters only ("word," is 4 long).
    if uses_spaces(language):
        n_content, content_chars, n_alpha = _token_classes(text)
    else:
        content = [w for w in (_NON_WORD.sub("", w) for w in words) if w]
        n_content, content_chars = len(content), sum(map(len, content))
        n_alpha = sum(1 for w in words if _has_alpha(w))
    n_lines = max(len(lines), 1)
    stop = cfg.gopher_quality.stop_words.get(language or "")
    return {
        "n_words": float(n_content),
        "mean_word_length": content_chars / n_content if n_content else 0.0,
        # Gopher: ratio of hash symbols, and of ellipses, to words; the larger of the two.
        "symbol_word_ratio": (max(text.count("#"), text.count("...") + text.count("…")) / n_words) if n_words else 0.0,
        "bullet_lines_ratio": sum(1 for ln in lines if ln.startswith(_BULLETS)) / n_lines,
        "ellipsis_lines_ratio": sum(1 for ln in lines if ln.endswith(_ELLIPSES)) / n_lines,
        "alpha_words_ratio": n_alpha / n_words if n_words else 0.0,
        # Distinct stop words present; -1 where the language has no list (the rule is skipped).
        "stop_words": float(len(set(stop).intersection(words))) if stop is not None else -1.0,
    }


_SPACE, _WORD, _ALPHA = 1, 2, 4


@functools.lru_cache(maxsize=1)
def _char_classes() -> np.ndarray:
    """Class bits of every BMP code point (isspace, word = isalnum or "_", isalpha); built once
    per process (~50 ms). Index 0x10000 stands for every code point above the BMP."""
    table = np.zeros(0x10001, dtype=np.uint8)
    for c in range(0x10000):
        ch = chr(c)
        table[c] = (_SPACE if ch.isspace() else 0) | (_WORD if ch.isalnum() or ch == "_" else 0) | (_ALPHA if ch.isalpha() else 0)
    return table


def _token_classes(text: str) -> tuple[int, int, int]:
    """Over whitespace tokens: (tokens with a word character, word characters, tokens with a
    letter), vectorised over the code points instead of a Python loop per token."""
    cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    if not len(cp):
        return 0, 0, 0
    cls = _char_classes()[np.minimum(cp, 0x10000)]
    astral = cp > 0xFFFF
    if astral.any():  # CJK extension planes are letters; emoji and the rest are symbols
        cls[astral & (cp >= 0x20000) & (cp < 0x40000)] = _WORD | _ALPHA
    space = (cls & _SPACE) != 0
    starts = ~space
    starts[1:] &= space[:-1]
    token = np.cumsum(starts)
    wt = token[(cls & _WORD) != 0]
    at = token[(cls & _ALPHA) != 0]
    n_word_tokens = int(np.count_nonzero(wt[1:] != wt[:-1])) + 1 if len(wt) else 0
    n_alpha_tokens = int(np.count_nonzero(at[1:] != at[:-1])) + 1 if len(at) else 0
    return n_word_tokens, len(wt), n_alpha_tokens


def _has_alpha(word: str) -> bool:
    for ch in word:
        if ch.isalpha():
            return True
    return False


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """(number of items equal to an earlier one, characters in them) - Gopher's definition."""
    seen: set[str] = set()
    dups = chars = 0
    for it in items:
        if it in seen:
            dups += 1
            chars += len(it)
        else:
            seen.add(it)
    return dups, chars


def gopher_repetition(
    text: str, words: list[str], lines: list[str], language: str | None, cfg: FilterConfig, line_dups: tuple[int, int] | None = None
) -> dict[str, float]:
    """Gopher's repetition signals (duplicate lines, paragraphs and n-grams); ``line_dups`` is
    :func:`find_duplicates` of the lines when the caller has it already."""
    rep = cfg.gopher_repetition
    n_chars = max(len(text), 1)
    paras = [p for p in (p.strip() for p in _PARAGRAPHS.split(text.strip())) if p] if "\n\n" in text else [text.strip()]
    p_dup, p_chars = find_duplicates(paras)
    l_dup, l_chars = line_dups or find_duplicates(lines)
    out = {
        "dup_line_frac": l_dup / len(lines) if lines else 0.0,
        "dup_para_frac": p_dup / len(paras) if paras else 0.0,
        "dup_line_char_frac": l_chars / n_chars,
        "dup_para_char_frac": p_chars / n_chars,
    }
    scale = 1.0 if uses_spaces(language) else rep.chars_per_word_no_space
    out.update(_ngram_fractions(words, sorted(rep.top_ngrams), sorted(rep.dup_ngrams), scale))
    return out


def _ngram_fractions(words: list[str], top_ns: list[int], dup_ns: list[int], scale: float = 1.0) -> dict[str, float]:
    """Gopher's n-gram repetition, vectorised with 64-bit n-gram hashes.

    top n-gram: characters of the most frequent n-gram times its count (counted only when it
    repeats), over all word characters. duplicate n-grams: characters of the words covered by any
    n-gram that occurred earlier in the document, each character counted once however many
    duplicate n-grams overlap it - the paper's definition (datatrove approximates it by skipping
    ahead n words after each duplicate). ``scale``: tokens per word (1.5 characters per word for
    languages split into characters).
    """
    out = {f"top_{n}gram_char_frac": 0.0 for n in top_ns}
    out.update({f"dup_{n}gram_char_frac": 0.0 for n in dup_ns})
    n_words = len(words)
    if n_words < 2:
        return out
    # Word ids from Python's string hash (C speed). It is salted per process, but the signals
    # only ask whether two n-grams are equal, so they are the same in every process (barring a
    # 64-bit collision).
    ids = np.fromiter(map(hash, words), dtype=np.int64, count=n_words).view(np.uint64)
    lens = np.fromiter(map(len, words), dtype=np.int64, count=n_words)
    total = float(lens.sum())
    cum = np.concatenate(([0], np.cumsum(lens)))
    with np.errstate(over="ignore"):
        mixed = (ids ^ (ids >> np.uint64(29))) * _MIX
    # Each signal's n in tokens: {token n: [(kind, word n)]}.
    wanted: dict[int, list[tuple[str, int]]] = {}
    for kind, ns in (("top", top_ns), ("dup", dup_ns)):
        for w in ns:
            wanted.setdefault(max(1, int(round(w * scale))), []).append((kind, w))
    b = np.uint64(max(1, n_words.bit_length()))
    low = (np.uint64(1) << b) - np.uint64(1)
    # Candidate start positions, and the hash of the n-gram starting at each. An n-gram can only
    # repeat where its (n-1)-gram prefix repeats, so after each n only the starts of repeated
    # n-grams stay candidates: clean text leaves few, and the sorts shrink with n.
    pos = np.arange(n_words, dtype=np.int64)
    hc = mixed
    with np.errstate(over="ignore"):
        for n in range(2, max(wanted) + 1):
            ok = pos + (n - 1) < n_words
            pos, hc = pos[ok], hc[ok]
            if len(pos) < 2:
                break
            if len(pos) <= _FEW:
                # A handful of candidates left (clean text): plain Python beats numpy's per-call cost.
                _few_candidates(words, cum, total, pos.tolist(), n, max(wanted), wanted, out)
                break
            hc = hc * _BASE + mixed[pos + (n - 1)]
            # Sorting values is several times faster than argsort: the position rides in the low
            # bits of the key (the top 64-b hash bits keep a collision negligible), so equal
            # n-grams become neighbours in order of position.
            packed = np.sort(((hc >> b) << b) | pos.view(np.uint64))
            hs = packed >> b
            order = (packed & low).view(np.int64)
            same = hs[1:] == hs[:-1]
            if not same.any():
                break  # no n-gram repeats, so no longer one can
            kinds = wanted.get(n, ())
            for kind, w in kinds:
                if kind != "top":
                    continue
                run_starts = np.flatnonzero(np.concatenate(([True], ~same)))
                sizes = np.diff(np.append(run_starts, len(hs)))
                # Among n-grams of equal count, the one that occurs first: the hash order of
                # the runs changes from process to process (salted str hashes), positions do not.
                firsts = order[run_starts]
                ties = np.flatnonzero(sizes == sizes.max())
                start = int(firsts[ties].min())
                best = int(ties[firsts[ties].argmin()])
                out[f"top_{w}gram_char_frac"] = float(sizes[best] * (cum[start + n] - cum[start])) / total
            dup_words = [w for kind, w in kinds if kind == "dup"]
            if dup_words:
                starts = order[1:][same]
                edges = np.bincount(starts, minlength=n_words + 1)[: n_words + 1] - np.bincount(
                    starts + n, minlength=n_words + 1
                )[: n_words + 1]
                covered = np.cumsum(edges)[:n_words] > 0
                frac = float(lens[covered].sum()) / total
                for w in dup_words:
                    out[f"dup_{w}gram_char_frac"] = frac
            repeated = np.zeros(len(hs), dtype=bool)
            repeated[1:] |= same
            repeated[:-1] |= same
            keep = np.sort(order[repeated])
            hc = hc[np.searchsorted(pos, keep)]
            pos = keep
    return out


_FEW = 96


def _few_candidates(words: list[str], cum: np.ndarray, total: float, pos: list[int], n0: int, n_max: int,
                    wanted: dict[int, list[tuple[str, int]]], out: dict[str, float]) -> None:
    """The n-gram loop of ``_ngram_fractions`` from n0 on, over a few candidate positions."""
    n_words = len(words)
    for n in range(n0, n_max + 1):
        groups: dict[tuple[str, ...], list[int]] = {}
        for p in pos:
            if p + n <= n_words:
                groups.setdefault(tuple(words[p : p + n]), []).append(p)
        repeated = [g for g in groups.values() if len(g) > 1]
        if not repeated:
            return
        for kind, w in wanted.get(n, ()):
            if kind == "top":
                best = max(repeated, key=len)  # among equal counts the first to occur (dict order)
                out[f"top_{w}gram_char_frac"] = float(len(best) * (cum[best[0] + n] - cum[best[0]])) / total
            else:
                starts = sorted(p for g in repeated for p in g[1:])
                chars, reach = 0, 0
                for st in starts:  # union of [st, st + n) in characters
                    lo = max(st, reach)
                    reach = st + n
                    if reach > lo:
                        chars += int(cum[reach] - cum[lo])
                out[f"dup_{w}gram_char_frac"] = chars / total
        pos = sorted(p for g in repeated for p in g)


def c4_quality(text: str, lines: list[str], language: str | None, cfg: FilterConfig) -> dict[str, float]:
    """C4's signals: lorem ipsum, curly brackets, javascript and policy lines, sentences kept."""
    lower = text.lower()
    n_lines = max(len(lines), 1)
    js = policy = sentences = 0
    min_words = cfg.c4.min_words_per_line
    spaced = uses_spaces(language)
    any_js = "javascript" in lower
    any_policy = any(p in lower for p in POLICY_PHRASES)
    for ln in lines:
        has_js = has_policy = False
        if any_js or any_policy:
            low = ln.lower()
            has_js = "javascript" in low
            has_policy = any_policy and any(p in low for p in POLICY_PHRASES)
        js += has_js
        policy += has_policy
        # The lines C4 keeps: terminal punctuation (not an ellipsis), at least 3 words, no
        # javascript or policy notice. Their sentences count towards C4's minimum of 5.
        if has_js or has_policy or not ln.endswith(TERMINAL_PUNCTUATION) or ln.endswith(_ELLIPSES):
            continue
        # maxsplit: only whether there are min_words words matters, not how many.
        n_words = len(ln.split(None, min_words - 1)) if spaced else len(split_words(ln, language))
        if n_words < min_words:
            continue
        sentences += max(1, len(_SENTENCE_END.findall(ln)))
    return {
        "c4_lorem_ipsum": float("lorem ipsum" in lower),
        "c4_curly_bracket": float("{" in text),
        "c4_javascript_lines_ratio": js / n_lines,
        "c4_policy_lines_ratio": policy / n_lines,
        "c4_sentences": float(sentences),
    }


def fineweb_quality(text: str, words: list[str], lines: list[str], cfg: FilterConfig, line_dups: tuple[int, int] | None = None) -> dict[str, float]:
    """FineWeb's line signals: terminal punctuation, short lines, duplicate line characters."""
    n_lines = len(lines)
    if not n_lines:
        return {"line_punct_ratio": 0.0, "short_line_ratio": 0.0, "dup_line_char_ratio": 0.0, "newline_word_ratio": 0.0}
    short = cfg.fineweb.short_line_length
    _, dup_chars = line_dups or find_duplicates(lines)
    return {
        "line_punct_ratio": sum(1 for ln in lines if ln.endswith(TERMINAL_PUNCTUATION)) / n_lines,
        "short_line_ratio": sum(1 for ln in lines if len(ln) <= short) / n_lines,
        "dup_line_char_ratio": dup_chars / max(len(text) - text.count("\n"), 1),
        "newline_word_ratio": text.count("\n") / max(len(words), 1),
    }



# ---- signal families ------------------------------------------------------------------------------

def family_names(cfg: FilterConfig, family: str) -> list[str]:
    """The signals of one family (``curation.filter.config.PRESETS``), in their stored order."""
    from curation.filter import reference_signals as ref

    if family == "deepseek":
        return signal_names(cfg)
    if family == "gopher":
        return ref.gopher_names(cfg)
    if family == "c4":
        return list(ref.C4_NAMES)
    raise ValueError(f"unknown signal family {family!r}")


def compute_family(text: str, language: str | None, cfg: FilterConfig, family: str) -> dict[str, float]:
    from curation.filter import reference_signals as ref

    if family == "deepseek":
        return compute_signals(text, language, cfg)
    if family == "gopher":
        return ref.gopher_signals(text, cfg)
    if family == "c4":
        return ref.c4_signals(text, cfg)
    raise ValueError(f"unknown signal family {family!r}")


def compute_families(text: str, language: str | None, cfg: FilterConfig, names: tuple[str, ...] | None = None) -> dict[str, float]:
    """Every signal the families ``names`` (default: those of ``cfg.preset``) hold, as one dict."""
    from curation.filter.config import families

    out: dict[str, float] = {}
    for family in names if names is not None else families(cfg):
        out.update(compute_family(text, language, cfg, family))
    return out
