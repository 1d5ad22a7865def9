"""Extraction: WARC/WET/ARC records -> main text, language, metadata -> documents."""

import importlib

# Names load on first use (PEP 562): the extractor's sandbox child imports this package on its
# way to `main_text` and needs none of pyarrow or FastWARC.
_EXPORTS = {
    "ExtractConfig": "extractor", "Extractor": "extractor", "dump_name": "extractor",
    "extract_text": "main_text", "NotAnArchive": "warc", "Record": "warc", "iter_records": "warc",
    "PrefilterConfig": "prefilter",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
