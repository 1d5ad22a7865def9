"""Readers for already-extracted text in other pipelines' formats, mapped onto our schema.

``read_dolma_jsonl`` reads Dolma / CCNet-style JSONL(.gz) (``id``, ``text``, ``created``,
``metadata`` with the URL and crawl facts), as in ``data/sample/text``. A line that is not valid
JSON or has no text is counted by the caller's stats under a named reason, never fatal.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from typing import Any, BinaryIO, Iterator

from curation.schema import document_id
from curation.stats import StageStats

_CRAWL = re.compile(r"CC-MAIN-\d{4}-\d{2}")


def read_dolma_jsonl(stream: BinaryIO, source: str, stats: StageStats | None = None, dump: str | None = None) -> Iterator[dict[str, Any]]:
    """Yield documents (DOCUMENT_SCHEMA dicts) from a Dolma/CCNet JSONL stream (gzip sniffed)."""
    stats = stats if stats is not None else StageStats()
    head = stream.read(2)
    raw = io.BufferedReader(_Prepend(head, stream))  # type: ignore[arg-type]
    text_stream = io.TextIOWrapper(gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw, encoding="utf-8", errors="replace")
    for lineno, line in enumerate(text_stream, 1):
        if not line.strip():
            continue
        stats.seen()
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            stats.drop("invalid_json")
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str) or not rec["text"].strip():
            stats.drop("empty_text")
            continue
        meta = rec.get("metadata") if isinstance(rec.get("metadata"), dict) else {}
        url = meta.get("warc_url") or meta.get("url") or (rec["id"] if str(rec.get("id", "")).startswith("http") else None)
        crawl = dump or _crawl_name(meta) or _crawl_from_name(source) or source
        key = str(rec.get("id") or f"{url}|{lineno}")
        stats.kept()
        yield {
            "id": document_id(crawl, key),
            "text": rec["text"],
            "url": url,
            "dump": crawl,
            "crawl_date": meta.get("warc_date") or meta.get("date_download") or rec.get("created"),
            "language": meta.get("language"),
            "language_score": meta.get("language_score"),
            "metadata": {
                "warc_record_id": meta.get("warc_filename") if str(meta.get("warc_filename", "")).startswith("<urn:") else None,
                "warc_digest": meta.get("digest"),
                "title": meta.get("title"),
                "source_file": source,
                "content_type": meta.get("content_type"),
                "charset": None,
            },
        }


def _crawl_name(meta: dict[str, Any]) -> str | None:
    for key in ("cc_segment", "warc_filename", "provenance"):
        m = _CRAWL.search(str(meta.get(key, "")))
        if m:
            return m.group(0)
    return None


def _crawl_from_name(source: str) -> str | None:
    m = _CRAWL.search(source.upper())
    return m.group(0) if m else None


class _Prepend(io.RawIOBase):
    """A stream with some already-read bytes put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(b))
        b[: len(data)] = data
        return len(data)
