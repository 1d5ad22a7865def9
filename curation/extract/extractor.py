"""WARC records in, documents out: the extraction step of the curation pipeline.

Every record is counted: it becomes a document or is dropped under a named reason, so
``input == output + sum(dropped)`` holds for each file (see ``curation.stats``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from curation import langid
from curation.extract.html import Undecodable, decode_html, is_html
from curation.extract.main_text import Extractor as ExtractorName
from curation.extract.main_text import Page, PageOptions, process
from curation.extract.prefilter import PrefilterConfig
from curation.extract.sandbox import CallTimedOut, Sandbox
from curation.extract.warc import Record
from curation.schema import document_id
from curation.sources.commoncrawl import CCIndexConfig
from curation.stats import StageStats


@dataclass
class ExtractConfig:
    # Main-text extractor: trafilatura, or resiliparse's main-content extraction (DCLM's choice:
    # about 3x less CPU per document for the stage on modern pages, held-out F1 0.910 against
    # 0.952, see `make bench-extract`).
    extractor: ExtractorName = "trafilatura"
    # trafilatura's fast mode (no readability/jusText fallback), without comments and tables:
    # chosen on one half of the 181-page article-extraction-benchmark gold set and scored on the
    # other, where it matches or beats trafilatura's defaults at far less CPU (`make
    # bench-extract` prints both). Tables on web pages are mostly layout and navigation; set
    # include_tables to keep them.
    fast: bool = True
    include_comments: bool = False
    include_tables: bool = False
    # curation/extract/trafilatura_fix.py: speed fixes that leave trafilatura's output unchanged.
    trafilatura_fix: bool = True
    # The cheap pre-pass that skips pages the filter would drop for language or length
    # (curation/extract/prefilter.py); off for the `extract` command.
    prefilter: PrefilterConfig = field(default_factory=PrefilterConfig)
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
    # With an index of Common Crawl (`extract --cc-index`): which records it selects and how their
    # byte ranges are fetched (curation/sources/commoncrawl.py). Unused for whole-file reads.
    cc_index: CCIndexConfig = field(default_factory=CCIndexConfig)


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
        c = self.cfg
        self.options = PageOptions(
            extractor=c.extractor, fast=c.fast, include_comments=c.include_comments, include_tables=c.include_tables,
            trafilatura_fix=c.trafilatura_fix, min_text_chars=c.min_text_chars, prefilter=c.prefilter if c.prefilter.enabled else None,
        )
        self._sandbox = Sandbox("curation.extract.main_text:process", c.timeout_s, c.memory_mb) if c.sandbox else None
        # CPU seconds spent in the pre-pass and in the main-text extractor (benchmarks read it).
        self.cpu_s = {"prefilter": 0.0, "extractor": 0.0}

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()

    def __enter__(self) -> "Extractor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _extract(self, recs: list[Record]) -> list:
        """Each HTML record's :class:`Page`, or the exception its extraction ended in."""
        calls = [(rec.body, rec.charset, rec.uri, self.options) for rec in recs]
        if self._sandbox is not None:
            return self._sandbox.map(calls)
        outcomes = []
        for args in calls:
            try:
                outcomes.append(process(*args))
            except Exception as e:  # noqa: BLE001 - one page's failure, counted
                outcomes.append(e)
        return outcomes

    def documents(self, records: Iterable[Record], stats: StageStats, source: str, dump: str | None = None) -> Iterator[dict]:
        warcinfo: dict[str, str] | None = None
        for chunk in _chunks(records):
            # Each step over a chunk of records at once (the pages through the sandbox in one
            # message, then lid.176 on their texts), so that each step's code and data stay in
            # the CPU's caches; one page at a time, every step came after trafilatura's trees.
            # The outcomes and their order are those of one record at a time.
            before = [self._before_extraction(rec) for rec in chunk]
            html = [rec for rec, b in zip(chunk, before) if b is None]
            extracted = iter(self._extract(html))
            outcomes = [self._after_extraction(next(extracted), stats) if b is None else b for b in before]
            labels = [_language(page.text) if isinstance(page, Page) else None for page in outcomes]
            for rec, outcome, label in zip(chunk, outcomes, labels):
                stats.seen()
                if rec.kind == "warcinfo":
                    warcinfo = warcinfo or rec.info
                if isinstance(outcome, Page) and label is None:
                    outcome = "extraction_failed"  # a text fastText refuses: counted
                if isinstance(outcome, str):
                    stats.drop(outcome)
                    continue
                outcome.language, outcome.language_score = label
                stats.kept()
                yield self._doc(rec, outcome, source, dump_name(dump, warcinfo, source))

    def pages(self, records: Iterable[Record]) -> Iterator[tuple[Record, str]]:
        """The records whose HTML goes to trafilatura, with that HTML decoded (benchmarks, tests)."""
        for rec in records:
            if self._before_extraction(rec) is None:
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

    def _before_extraction(self, rec: Record) -> str | Page | None:
        """Why a record gives no document, or the page of a WET record (its text is there),
        before any extraction; None for an HTML page to extract."""
        reason = self._unusable(rec)
        if reason:
            return reason
        if rec.kind == "conversion":  # WET: Common Crawl already extracted the text
            text = rec.body.decode("utf-8", "replace").strip()
            if len(text) < self.cfg.min_text_chars:
                return "empty_text"
            return Page(text=text, charset=rec.charset)
        if not is_html(rec.content_type, rec.body):
            return "not_html"
        return None

    def _after_extraction(self, outcome: Page | BaseException, stats: StageStats) -> str | Page:
        """The extracted page, or the reason it gives no document."""
        if isinstance(outcome, CallTimedOut):
            return "extraction_timeout"
        if isinstance(outcome, MemoryError):
            return "extraction_memory"
        if isinstance(outcome, BaseException):  # CallCrashed, or an error in process()
            return "extraction_failed"
        page = outcome
        self.cpu_s["prefilter"] += page.prefilter_cpu_s
        self.cpu_s["extractor"] += page.extractor_cpu_s
        if page.prefilter_failed:
            stats.add("prefilter_render_failed")  # not a drop: the page went to the extractor
        if page.reason:
            if page.reason == "prefilter_language":
                stats.add(f"prefilter_language.{page.prefilter_language}")
            return page.reason
        return page

    def _doc(self, rec: Record, page: Page, source: str, dump: str) -> dict:
        key = rec.record_id or f"{rec.uri}|{rec.date}"
        return {
            "id": document_id(dump, key),
            "text": page.text,
            "url": rec.uri,
            "dump": dump,
            "crawl_date": rec.date,
            "language": page.language,
            "language_score": page.language_score,
            "metadata": {
                "warc_record_id": rec.record_id,
                "warc_digest": rec.digest,
                "title": page.title,
                "source_file": source,
                "content_type": rec.content_type,
                "charset": page.charset,
            },
        }


# Records handled together (see Extractor.documents): at most this many, or this many payload bytes.
_CHUNK_RECORDS = 64
_CHUNK_BYTES = 16 << 20


def _chunks(records: Iterable[Record]) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    size = 0
    for rec in records:
        chunk.append(rec)
        size += len(rec.body)
        if len(chunk) >= _CHUNK_RECORDS or size >= _CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _language(text: str) -> tuple[str, float] | None:
    """lid.176's (label, score) of a document's text, or None where fastText refuses the text."""
    try:
        return langid.identify(text)
    except Exception:  # noqa: BLE001 - counted by the caller as extraction_failed
        return None
