"""Extraction: WARC/WET/ARC records -> main text, language, metadata -> documents."""

from curation.extract.extractor import ExtractConfig, Extractor, dump_name, extract_text
from curation.extract.warc import NotAnArchive, Record, iter_records

__all__ = ["ExtractConfig", "Extractor", "NotAnArchive", "Record", "dump_name", "extract_text", "iter_records"]
