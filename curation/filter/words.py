"""How words are counted, per language.

Gopher counts whitespace-separated words. Chinese and Japanese have no spaces, so a whole
paragraph would be "one word" and every word-count rule would drop good text. For those
languages each Han, kana or CJK character is one word (with any punctuation right after it
attached, as whitespace splitting attaches "word," in English); runs of other characters (Latin
names, numbers) between them are split on whitespace as usual. A Chinese word averages about 1.5
characters, so word-count thresholds read as character counts are somewhat lenient for Chinese,
which we prefer to dropping good pages. Mean word length is meaningless under this split and is
recorded but not judged for these languages.
"""

from __future__ import annotations

import re

# Languages written without spaces between words (fastText lid.176 codes).
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "wuu", "yue"})

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
# One CJK character plus trailing punctuation, or a run of anything else that is not a space.
_NO_SPACE_WORD = re.compile(rf"[{_CJK}](?:[^\w\s{_CJK}])*|[^\s{_CJK}]+")
_HAS_CJK = re.compile(rf"[{_CJK}]")


def uses_spaces(language: str | None) -> bool:
    return (language or "") not in NO_SPACE_LANGUAGES


def split_words(text: str, language: str | None) -> list[str]:
    """Words of ``text`` as the Gopher rules count them for ``language``."""
    if uses_spaces(language):
        return text.split()
    return _NO_SPACE_WORD.findall(text)


def has_cjk(text: str) -> bool:
    return _HAS_CJK.search(text) is not None
