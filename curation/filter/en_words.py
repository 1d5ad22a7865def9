"""English words and sentences as datatrove counts them, without spaCy at run time.

datatrove's Gopher, C4 and FineWeb filters split English text with ``spacy.blank("en")`` (its
rule-based tokenizer) and count C4's sentences with spaCy's ``sentencizer``. This module is our
own implementation of those two algorithms, run over spaCy's English rule tables, which are data
(regular expressions and special cases) copied into ``data/reference_tables.json``:

1. Split the text at whitespace. A run of whitespace is a token of its own, less one leading
   ``" "`` (spaCy keeps a single space as the previous token's trailing space); datatrove then
   drops blank tokens, so only the sentence counter sees them.
2. Each piece: a special case (``"don't"`` -> ``do``, ``n't``) is taken whole. Otherwise peel
   prefixes and suffixes off, one of each per round, stopping where what is left is a special
   case; what remains is one token if it is a URL, else it is cut at its infixes (hyphens
   between letters, ``/`` and ``:`` between words, ``...``).
3. Special cases that the affix rules would cut (``"8)"``, ``"a."``, ``"St."`` inside
   ``"St.Louis"``) are then matched over each piece's tokens and put back whole, longest first.

``tests/test_filter.py`` checks the tokens against spaCy on the bundled English documents.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from functools import lru_cache

_TABLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "reference_tables.json")


@lru_cache(maxsize=1)
def tables() -> dict:
    with open(_TABLES, encoding="utf-8") as f:
        return json.load(f)


class _Rules:
    def __init__(self) -> None:
        t = tables()
        self.prefix = re.compile(t["prefix"]).search
        self.suffix = re.compile(t["suffix"]).search
        self.infix = re.compile(t["infix"]).finditer
        self.url = re.compile(t["url"]).match
        self.specials: dict[str, list[str]] = t["specials"]
        self.sentence_punct = frozenset(t["sentence_punct"])
        # Step 3's patterns: the specials that a prefix, suffix or infix rule would cut (or that
        # hold a space), as the affix rules alone cut them, indexed by their first token.
        self.matcher: dict[str, list[tuple[str, ...]]] = {}
        for orth in self.specials:
            if self._affix_len(orth) or " " in orth:
                pattern = tuple(self.piece(orth, specials=False))
                self.matcher.setdefault(pattern[0], []).append(pattern)
        self.cache: dict[str, list[str]] = {}

    def _affix_len(self, s: str) -> bool:
        return bool(self.prefix(s) or self.suffix(s) or next(self.infix(s), None))

    def piece(self, s: str, specials: bool = True) -> list[str]:
        """Tokens of one whitespace-free piece (steps 2 and 3)."""
        if specials:
            hit = self.cache.get(s)
            if hit is not None:
                return hit
            out = self._match_specials(list(self.specials[s]) if s in self.specials else self._affixes(s, True))
            if len(self.cache) > 200_000:
                self.cache.clear()
            self.cache[s] = out
            return out
        return self._affixes(s, False)

    def _affixes(self, s: str, specials: bool) -> list[str]:
        sp = self.specials if specials else {}
        prefixes: list[str] = []
        suffixes: list[str] = []
        last = -1
        while s and len(s) != last:
            if s in sp:
                break
            last = len(s)
            m = self.prefix(s)
            pre = m.end() - m.start() if m else 0
            if pre:
                prefix, minus_pre = s[:pre], s[pre:]
                if minus_pre and minus_pre in sp:
                    s = minus_pre
                    prefixes.append(prefix)
                    break
            m = self.suffix(s[pre:])
            suf = m.end() - m.start() if m else 0
            if suf:
                suffix, minus_suf = s[-suf:], s[:-suf]
                if minus_suf and minus_suf in sp:
                    s = minus_suf
                    suffixes.append(suffix)
                    break
            if pre and suf and pre + suf <= len(s):
                s = s[pre:-suf]
                prefixes.append(prefix)
                suffixes.append(suffix)
            elif pre:
                s = minus_pre
                prefixes.append(prefix)
            elif suf:
                s = minus_suf
                suffixes.append(suffix)
        out = prefixes
        if s:
            if s in sp:
                out += sp[s]
            elif self.url(s):
                out.append(s)
            else:
                start = 0
                for m in self.infix(s):
                    a, b = m.start(), m.end()
                    if a == 0:  # an infix at the very start is no split point
                        continue
                    if a != start:
                        out.append(s[start:a])
                    if a != b:
                        out.append(s[a:b])
                    start = b
                if s[start:]:
                    out.append(s[start:])
        out += reversed(suffixes)
        return out

    def _match_specials(self, toks: list[str]) -> list[str]:
        found = []
        for i, t in enumerate(toks):
            for pattern in self.matcher.get(t, ()):
                n = len(pattern)
                if tuple(toks[i : i + n]) == pattern:
                    found.append((i, i + n))
        if not found:
            return toks
        # Longest first, then leftmost; a match whose first or last token is taken is dropped
        # (and still takes its tokens).
        found.sort(key=lambda se: (se[0] - se[1], se[0]))
        seen: set[int] = set()
        chosen = []
        for s, e in found:
            if s not in seen and e - 1 not in seen:
                chosen.append((s, e))
            seen.update(range(s, e))
        out, i = [], 0
        for s, e in sorted(chosen):
            out += toks[i:s]
            text = "".join(toks[s:e])
            out += self.specials.get(text, toks[s:e])
            i = e
        return out + toks[i:]


@lru_cache(maxsize=1)
def _rules() -> _Rules:
    return _Rules()


def clear_cache() -> None:
    """Forget the words of the pieces seen so far (a cold start, as a benchmark measures it)."""
    _rules().cache.clear()


_PIECES = re.compile(r"\S+|\s+")


def raw_tokens(text: str) -> list[str]:
    """spaCy's tokens of ``text``, whitespace tokens included (step 1)."""
    r = _rules()
    out: list[str] = []
    first = True
    for m in _PIECES.finditer(text):
        s = m.group()
        if s[0].isspace():
            if s[0] == " " and not first:
                s = s[1:]
            if s:
                out.append(s)
        else:
            out += r.piece(s)
        first = False
    return out


def words(text: str) -> list[str]:
    """The words datatrove's filters count in English ``text`` (its ``split_into_words``)."""
    r = _rules()
    get, piece = r.cache.get, r.piece
    out: list[str] = []
    for s in text.split():
        toks = get(s)
        out += toks if toks is not None else piece(s)
    return out


@lru_cache(maxsize=65536)
def _is_punct(token: str) -> bool:
    return all(unicodedata.category(ch).startswith("P") for ch in token)


# Whitespace that spaCy makes a token of: a run of two or more, or any whitespace but " ".
_WHITESPACE_TOKEN = re.compile(r"[^\S ]| {2}")


def count_sentences(text: str, tokens: list[str] | None = None) -> int:
    """Sentences of ``text`` as spaCy's sentencizer splits them (datatrove's ``split_into_sentences``):
    a new sentence starts at the first token that is not punctuation after a sentence-final mark.
    ``tokens``: ``words(text)``, where the caller has them."""
    if _WHITESPACE_TOKEN.search(text) is None:
        toks = tokens if tokens is not None else words(text)  # no whitespace tokens: the words are all
        if not toks and text:
            toks = raw_tokens(text)
    else:
        toks = raw_tokens(text)
    punct = _rules().sentence_punct
    n, seen = 1, False
    for t in toks:
        final = t in punct
        if seen and not final and not _is_punct(t):
            n += 1
            seen = False
        elif final:
            seen = True
    return n
