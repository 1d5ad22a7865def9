"""WARC records in, documents out: the extraction step of the curation pipeline.

Every record is counted: it becomes a document or is dropped under a named reason, so
``input == output + sum(dropped)`` holds for each file (see ``curation.stats``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from curation import langid
from curation.extract.html import Undecodable, decode_html, html_title, is_html
from curation.extract.main_text import extract_text
from curation.extract.sandbox import CallCrashed, CallTimedOut, Sandbox
from curation.extract.warc import Record
from curation.schema import document_id
from curation.stats import StageStats


@dataclass
class ExtractConfig:
    # trafilatura's fast mode (no readability/jusText fallback), without comments and tables:
    # F1 0.959 on the 181-page article-extraction-benchmark gold set against 0.953 for its
    # defaults, at 1.6x less CPU than the defaults on those pages; with trafilatura_fix the
    # whole stage takes 3x less CPU than a plain loop over the sample WARCs (`make bench-extract`).
    # Tables on web pages are mostly layout and navigation; set include_tables to keep them
    # (F1 0.962, ~1.0x the defaults' cost).
    fast: bool = True
    include_comments: bool = False
    include_tables: bool = False
    # Per-document limits: a page that hangs or explodes costs that one document (datatrove uses
    # a per-document timeout too). Memory is the extractor process's address-space cap.
    timeout_s: float = 20.0
    memory_mb: int = 4096
    sandbox: bool = True
    # Payloads beyond this are not HTML pages worth extracting (CC truncates at 1 MiB anyway).
    max_payload_bytes: int = 10_000_000
    # Only successful fetches carry the page they claim to (redirects, errors are dropped).
    keep_status: tuple[int, ...] = (200, 203)
    # Documents shorter than this after extraction count as empty.
    min_text_chars: int = 1


_CRAWL = re.compile(r"CC-MAIN-\d{4}-\d{2}", re.I)


def dump_name(explicit: str | None, warcinfo: dict[str, str] | None, source: str) -> str:
    """--dump, else the warcinfo's isPartOf (Common Crawl sets it), else the file name."""
    if explicit:
        return explicit
    for value in ((warcinfo or {}).get("isPartOf"), source):
        m = _CRAWL.search(value or "")
        if m:
            return m.group(0).upper()
    if warcinfo and warcinfo.get("isPartOf"):
        return warcinfo["isPartOf"]
    base = source.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"(\.(warc|wet|wat|arc))?(\.gz)?$", "", base, flags=re.I)


class Extractor:
    """Turn a file's records into documents; counts into ``stats``."""

    def __init__(self, cfg: ExtractConfig | None = None):
        self.cfg = cfg or ExtractConfig()
        self._sandbox = Sandbox("curation.extract.main_text:extract_text", self.cfg.timeout_s, self.cfg.memory_mb) if self.cfg.sandbox else None

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()

    def __enter__(self) -> "Extractor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _main_text(self, html: str, url: str | None) -> str | None:
        args = (html, url, self.cfg.fast, self.cfg.include_comments, self.cfg.include_tables)
        return self._sandbox(*args) if self._sandbox is not None else extract_text(*args)

    def documents(self, records: Iterable[Record], stats: StageStats, source: str, dump: str | None = None) -> Iterator[dict]:
        warcinfo: dict[str, str] | None = None
        for rec in records:
            stats.seen()
            if rec.kind == "warcinfo":
                warcinfo = warcinfo or rec.info
                stats.drop("not_response")
                continue
            reason, doc = self._document(rec, source, dump_name(dump, warcinfo, source))
            if doc is None:
                stats.drop(reason)
                continue
            stats.kept()
            yield doc

    def pages(self, records: Iterable[Record]) -> Iterator[tuple[Record, str]]:
        """The records whose HTML goes to trafilatura, with that HTML decoded (benchmarks, tests)."""
        for rec in records:
            if self._unusable(rec) is None and rec.kind != "conversion" and is_html(rec.content_type, rec.body):
                try:
                    yield rec, decode_html(rec.body, rec.charset)[0]
                except Undecodable:
                    continue

    def _unusable(self, rec: Record) -> str | None:
        """Why a record can give no document before its payload is read, or None."""
        if rec.kind == "corrupt":
            # A gzip member cut short reads as a truncated stream; anything else is corrupt framing.
            return "truncated_record" if "truncat" in (rec.error or "").lower() else "corrupt_record"
        if rec.kind not in ("response", "conversion", "resource"):
            return "not_response"
        if rec.truncated:
            return "truncated_record"
        if rec.error:
            return "corrupt_record"
        if rec.status is not None and rec.status not in self.cfg.keep_status:
            return "http_status"
        if len(rec.body) > self.cfg.max_payload_bytes:
            return "too_large"
        return None

    def _document(self, rec: Record, source: str, dump: str) -> tuple[str, dict | None]:
        reason = self._unusable(rec)
        if reason:
            return reason, None
        title = None
        charset = rec.charset
        if rec.kind == "conversion":  # WET: Common Crawl already extracted the text
            text = rec.body.decode("utf-8", "replace")
        else:
            if not is_html(rec.content_type, rec.body):
                return "not_html", None
            try:
                html, charset = decode_html(rec.body, rec.charset)
            except Undecodable:
                return "undecodable", None
            title = html_title(html)
            try:
                text = self._main_text(html, rec.uri)
            except CallTimedOut:
                return "extraction_timeout", None
            except MemoryError:
                return "extraction_memory", None
            except (CallCrashed, Exception):  # noqa: BLE001 - one page's failure, counted
                return "extraction_failed", None
        text = (text or "").strip()
        if len(text) < self.cfg.min_text_chars:
            return "empty_text", None
        language, score = langid.identify(text)
        key = rec.record_id or f"{rec.uri}|{rec.date}"
        return "", {
            "id": document_id(dump, key),
            "text": text,
            "url": rec.uri,
            "dump": dump,
            "crawl_date": rec.date,
            "language": language,
            "language_score": score,
            "metadata": {
                "warc_record_id": rec.record_id,
                "warc_digest": rec.digest,
                "title": title,
                "source_file": source,
                "content_type": rec.content_type,
                "charset": charset,
            },
        }
