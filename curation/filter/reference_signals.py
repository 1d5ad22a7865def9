"""Signals under the reference definitions: datatrove 0.10's Gopher, C4 and FineWeb filters.

The ``fineweb``, ``gopher`` and ``c4`` presets decide from these (``curation.filter.rules``); the
``deepseek`` preset reads ``curation.filter.signals`` instead. Two families, cached apart:

- ``gopher``: ``GopherRepetitionFilter`` and ``GopherQualityFilter`` on the document's text;
- ``c4``: ``C4QualityFilter``'s pass over the lines (which lines it removes, the sentences of the
  lines it keeps, the first line that would drop the page) and ``FineWebQualityFilter`` on the
  text the C4 step leaves, which is what the FineWeb rules see in datatrove's FineWeb chain.

Each signal is the number datatrove compares with its threshold, computed the same way:
words from its English word tokenizer (``curation.filter.en_words``), punctuation tokens
counted in the word ratios, n-gram fractions over ``len(text)``, the duplicated n-grams found
with datatrove's skip-ahead scan and compared as joined strings. Ratios are kept as float64, the
Python floats datatrove compares (a float32 of 3/10 is above 0.3). Where a search is vectorised
(hashes find the candidates), the answer is still decided on the strings themselves.
"""

from __future__ import annotations

import re

import numpy as np

from curation.filter import en_words
from curation.filter.config import C4Config, FilterConfig
from curation.filter.signals import find_duplicates  # datatrove's find_duplicates is Gopher's

# C4QualityFilter (datatrove/pipeline/filters/c4_filters.py)
CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_PARAGRAPHS = re.compile(r"\n{2,}")
_LINE_RUNS = re.compile("\n+")


def _punctuation() -> tuple[frozenset[str], tuple[str, ...]]:
    t = en_words.tables()
    terminal = tuple(t["terminal_punctuation"])
    return frozenset(t["punctuation"]).union(terminal), terminal


PUNCTUATION_SET, TERMINAL_PUNCTUATION = _punctuation()
_DROP_PUNCT = {ord(c): None for c in PUNCTUATION_SET}


def gopher_names(cfg: FilterConfig) -> list[str]:
    rep = cfg.gopher_repetition
    return (
        ["gopher_chars", "gopher_dup_para_frac", "gopher_dup_para_char_frac", "gopher_dup_line_frac", "gopher_dup_line_char_frac"]
        + [f"gopher_top_{n}_gram_frac" for n in sorted(rep.top_ngrams)]
        + [f"gopher_dup_{n}_gram_frac" for n in sorted(rep.dup_ngrams)]
        + ["gopher_tokens", "gopher_words", "gopher_mean_word_length", "gopher_hash_ratio", "gopher_ellipsis_ratio",
           "gopher_bullet_lines_ratio", "gopher_end_ellipsis_lines_ratio", "gopher_alpha_words_ratio", "gopher_stop_words"]
    )


C4_NAMES = [
    "c4_lines_kept", "c4_first_lorem_line", "c4_first_curly_line", "c4_kept_sentences",
    "fineweb_lines", "fineweb_line_punct_ratio", "fineweb_short_line_ratio", "fineweb_char_dup_ratio", "fineweb_list_ratio",
]


# ---- gopher --------------------------------------------------------------------------------------

def gopher_signals(text: str, cfg: FilterConfig) -> dict[str, float]:
    rep, q = cfg.gopher_repetition, cfg.gopher_quality
    out = dict.fromkeys(gopher_names(cfg), 0.0)
    n_chars = len(text)
    out["gopher_chars"] = float(n_chars)
    if not n_chars:
        return out
    paras = _PARAGRAPHS.split(text.strip())
    p_dup, p_chars = find_duplicates(paras)
    lines = _LINE_RUNS.split(text)
    l_dup, l_chars = find_duplicates(lines)
    out["gopher_dup_para_frac"] = p_dup / len(paras)
    out["gopher_dup_para_char_frac"] = p_chars / n_chars
    out["gopher_dup_line_frac"] = l_dup / len(lines)
    out["gopher_dup_line_char_frac"] = l_chars / n_chars

    words = en_words.words(text)
    n_words = len(words)
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), dtype=np.int64, count=n_words)
    lens = np.fromiter(map(len, words), dtype=np.int64, count=n_words)
    for n, frac in _top_ngrams(ids, lens, sorted(rep.top_ngrams), n_chars).items():
        out[f"gopher_top_{n}_gram_frac"] = frac
    for n, chars in _repeated_chars(words, lens, sorted(rep.dup_ngrams)).items():
        out[f"gopher_dup_{n}_gram_frac"] = chars / n_chars

    # GopherQualityFilter: "words" are the tokens with a character outside datatrove's
    # punctuation set; the ratios below divide by every token, punctuation included.
    distinct = list(vocab)
    content = np.fromiter((bool(w.translate(_DROP_PUNCT)) for w in distinct), dtype=bool, count=len(distinct))
    alpha = np.fromiter((any(c.isalpha() for c in w) for w in distinct), dtype=bool, count=len(distinct))
    is_content = content[ids]
    n_content = int(is_content.sum())
    lines = text.splitlines()
    n_lines = max(len(lines), 1)
    out.update(
        gopher_tokens=float(n_words),
        gopher_words=float(n_content),
        gopher_mean_word_length=float(lens[is_content].mean()) if n_content else float("nan"),
        gopher_hash_ratio=text.count("#") / n_words if n_words else 0.0,
        gopher_ellipsis_ratio=(text.count("...") + text.count("…")) / n_words if n_words else 0.0,
        gopher_bullet_lines_ratio=sum(s.lstrip().startswith(("•", "-")) for s in lines) / n_lines,
        gopher_end_ellipsis_lines_ratio=sum(s.rstrip().endswith(("...", "…")) for s in lines) / n_lines,
        gopher_alpha_words_ratio=float(alpha[ids].sum()) / n_words if n_words else 0.0,
        gopher_stop_words=float(len(set(q.stop_words.get("en", ())).intersection(vocab))),
    )
    return out


def _top_ngrams(ids: np.ndarray, lens: np.ndarray, ns: list[int], n_chars: int) -> dict[int, float]:
    """datatrove's ``find_top_duplicate`` over ``" ".join`` n-grams, / len(text): the characters
    of the most frequent n-gram times its count (count 1 included), the first to occur among ties."""
    out = {n: 0.0 for n in ns}
    n_words = len(ids)
    grams = ids
    for n in range(2, max(ns, default=1) + 1):
        if n_words < n:
            break
        # Exact n-gram ids: the (n-1)-gram id and the next word id, renumbered.
        key = grams[: n_words - n + 1] * (int(ids.max()) + 1) + ids[n - 1 :]
        _, first, grams, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
        if n in out:
            top = counts.max()
            start = int(first[counts == top].min())
            length = int(lens[start : start + n].sum()) + n - 1
            out[n] = float(top * length) / n_chars
    return out


_B = np.uint64(0x100000001B3)  # an odd 64-bit base (FNV prime), so it has an inverse mod 2**64
_B_INV = np.uint64(pow(0x100000001B3, -1, 2**64))


def _repeated_chars(words: list[str], lens: np.ndarray, ns: list[int]) -> dict[int, int]:
    """datatrove's ``find_all_duplicate``: scan the n-grams left to right, each compared as its
    words joined without spaces; one seen before adds its characters and the scan jumps past it.

    An n-gram whose joined string occurs once in the document never counts, so the scan only
    stops at the others, found by a hash of the joined characters (any string equal to another
    has its hash; the scan then compares the strings themselves).
    """
    out = {n: 0 for n in ns}
    n_words = len(words)
    if not ns or n_words < min(ns) + 1:
        return out
    cp = np.frombuffer("".join(words).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    cum = np.concatenate(([0], np.cumsum(lens)))
    with np.errstate(over="ignore"):
        inv_pow = np.cumprod(np.full(len(cp) + 1, _B_INV, dtype=np.uint64))
        inv_pow[1:] = inv_pow[:-1].copy()
        inv_pow[0] = np.uint64(1)
        pow_b = np.cumprod(np.full(len(cp) + 1, _B, dtype=np.uint64))
        pow_b[1:] = pow_b[:-1].copy()
        pow_b[0] = np.uint64(1)
        prefix = np.concatenate(([np.uint64(0)], np.cumsum(cp * inv_pow[: len(cp)], dtype=np.uint64)))
        for n in ns:
            m = n_words - n + 1
            if m <= 1:
                continue
            a, b = cum[:m], cum[n : n + m]
            h = (prefix[b] - prefix[a]) * pow_b[a] ^ ((b - a).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
            _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
            cand = np.flatnonzero(counts[inverse] > 1)
            if not len(cand):
                continue
            seen: set[str] = set()
            repeated, j, idx = 0, 0, 0
            cand_list = cand.tolist()
            while j < len(cand_list):
                if cand_list[j] < idx:
                    j += 1
                    continue
                idx = cand_list[j]
                gram = "".join(words[idx : idx + n])
                if gram in seen:
                    repeated += len(gram)
                    idx += n
                else:
                    seen.add(gram)
                    idx += 1
            out[n] = repeated
    return out


# ---- c4 and fineweb ------------------------------------------------------------------------------

def c4_lines(text: str, c4: C4Config) -> tuple[list[str], int, int]:
    """C4QualityFilter's pass over the lines, as if its two page rules were off: (the lines it
    keeps, the first line that would drop the page for "lorem ipsum", the first for "{"; -1:
    none). Whichever comes first drops the page where its rule is on (lorem ipsum on a tie)."""
    kept: list[str] = []
    lorem = curly = -1
    for i, line in enumerate(text.splitlines()):
        line = line.strip()
        words = line.split()
        if c4.max_word_length != -1 and any(len(w) > c4.max_word_length for w in words):
            continue
        if c4.remove_citations:
            line = CITATION.sub("", line)
        if c4.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
            continue
        if len(words) < c4.min_words_per_line:
            continue
        low = line.lower()
        if lorem < 0 and "lorem ipsum" in low:
            lorem = i
        if c4.filter_javascript and "javascript" in low:
            continue
        if curly < 0 and "{" in line:
            curly = i
        if c4.filter_policy and any(p in low for p in POLICY_SUBSTRINGS):
            continue
        kept.append(line)
    return kept, lorem, curly


def c4_edit(text: str, c4: C4Config) -> str:
    """The text C4QualityFilter leaves: its kept lines, joined by newlines."""
    return "\n".join(c4_lines(text, c4)[0]).strip()


def c4_signals(text: str, cfg: FilterConfig) -> dict[str, float]:
    kept, lorem, curly = c4_lines(text, cfg.c4)
    sentences = n_words = 0
    for ln in kept:
        toks = en_words.words(ln)
        n_words += len(toks)
        sentences += en_words.count_sentences(ln, toks)
    edited = "\n".join(kept).strip()
    out = {
        "c4_lines_kept": float(len(kept)),
        "c4_first_lorem_line": float(lorem),
        "c4_first_curly_line": float(curly),
        "c4_kept_sentences": float(sentences),
    }
    # The edited text's words are its lines' words (a word never spans a newline).
    out.update(fineweb_signals(edited, cfg, n_words))
    return out


def fineweb_signals(text: str, cfg: FilterConfig, n_words: int | None = None) -> dict[str, float]:
    """FineWebQualityFilter's ratios of ``text`` (``n_words``: ``len(en_words.words(text))``, if known)."""
    lines = [ln for ln in text.split("\n") if ln.strip() != ""]
    if not lines:
        return {"fineweb_lines": 0.0, "fineweb_line_punct_ratio": 0.0, "fineweb_short_line_ratio": 0.0,
                "fineweb_char_dup_ratio": 0.0, "fineweb_list_ratio": 0.0}
    short = cfg.fineweb.short_line_length
    if n_words is None:
        n_words = len(en_words.words(text))
    return {
        "fineweb_lines": float(len(lines)),
        "fineweb_line_punct_ratio": sum(1 for ln in lines if ln.endswith(TERMINAL_PUNCTUATION)) / len(lines),
        "fineweb_short_line_ratio": sum(1 for ln in lines if len(ln) <= short) / len(lines),
        "fineweb_char_dup_ratio": find_duplicates(lines)[1] / len(text.replace("\n", "")),
        "fineweb_list_ratio": text.count("\n") / n_words if n_words else float("inf"),
    }


def kept_text(text: str, cfg: FilterConfig) -> str:
    """The text a kept document carries under ``cfg.preset``: what C4's line removals leave where
    the preset runs datatrove's C4 step (``fineweb``, ``c4``), else the text unchanged."""
    from curation.filter.config import families

    return c4_edit(text, cfg.c4) if "c4" in families(cfg) else text
