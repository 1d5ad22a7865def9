"""One page's work, from payload bytes to main text: what the sandbox process runs.

Everything a hostile page can make slow or large runs here, under the sandbox's time limit and
memory cap: charset detection and decoding, the pre-pass (resiliparse's renderer and lid.176),
and main-text extraction (trafilatura, or resiliparse's main-content heuristics). The parent
sends the payload's bytes, which cost less to pass between processes than the decoded text, and
gets back a small :class:`Page`. It identifies the text's language itself (lid.176 reads at most
4,000 characters, so nothing a page holds can make it slow), a chunk of pages at a time, so the
model's rows stay in the CPU's caches (see ``Extractor.documents``).

Kept apart from the rest of the extractor so the sandbox child imports only what this needs,
not pyarrow and FastWARC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from curation.extract import prefilter, trafilatura_fix
from curation.extract.html import Undecodable, decode_html, html_title
from curation.extract.prefilter import PrefilterConfig, RenderFailed

Extractor = Literal["trafilatura", "resiliparse"]


@dataclass(frozen=True)
class PageOptions:
    """What the work on one page depends on (from ``ExtractConfig``)."""

    extractor: Extractor = "trafilatura"
    fast: bool = True
    include_comments: bool = False
    include_tables: bool = False
    trafilatura_fix: bool = True
    min_text_chars: int = 1
    prefilter: PrefilterConfig | None = None


@dataclass
class Page:
    """The outcome for one page: a document (``reason`` None) or the reason it gives none."""

    reason: str | None = None
    text: str = ""
    language: str = "unknown"
    language_score: float = 0.0
    charset: str | None = None
    title: str | None = None
    # The pre-pass's language of the page (recorded in the stats for pages it skips).
    prefilter_language: str | None = None
    # The pre-pass could not render the page, which went to the extractor.
    prefilter_failed: bool = False
    # CPU seconds (of the process that did the work) in the pre-pass and in the extractor: where
    # the stage's time goes (`make bench-extract`), never in the stats (they must not vary).
    prefilter_cpu_s: float = 0.0
    extractor_cpu_s: float = 0.0

    def __reduce__(self):
        # Pickled as its values alone (it crosses from the sandbox for every page).
        return (Page, tuple(self.__dict__.values()))


def process(body: bytes, header_charset: str | None, url: str | None, opt: PageOptions) -> Page:
    """Decode, pre-pass and extract one HTML payload."""
    try:
        html, charset = decode_html(body, header_charset)
    except Undecodable:
        return Page("undecodable", charset=header_charset)
    page = Page(charset=charset, title=html_title(html))
    if opt.prefilter is not None and opt.prefilter.enabled:
        t0 = time.process_time()
        try:
            page.reason, page.prefilter_language = prefilter.check(html, opt.prefilter)
        except RenderFailed:
            page.prefilter_failed = True
        page.prefilter_cpu_s = time.process_time() - t0
        if page.reason:
            return page
    prepare(opt)  # the extractor's import and set-up are start-up, not this page's extraction
    t0 = time.process_time()
    text = (main_text(html, url, opt) or "").strip()
    page.extractor_cpu_s = time.process_time() - t0
    if len(text) < opt.min_text_chars:
        page.reason = "empty_text"
        return page
    page.text = text  # its language is identified by the caller (lid.176 on at most 4,000 characters)
    return page


def prepare(opt: PageOptions) -> None:
    """Import the configured extractor and install or remove ``trafilatura_fix`` (once a process)."""
    if opt.extractor == "resiliparse":
        import resiliparse.extract.html2text  # noqa: F401
    else:
        import trafilatura  # noqa: F401

        trafilatura_fix.use(opt.trafilatura_fix)


def main_text(html: str, url: str | None, opt: PageOptions) -> str | None:
    """The page's main text with the configured extractor, or None where it finds none."""
    if opt.extractor == "resiliparse":
        return resiliparse_text(html)
    trafilatura_fix.use(opt.trafilatura_fix)
    return extract_text(html, url, opt.fast, opt.include_comments, opt.include_tables)


def extract_text(html: str, url: str | None, fast: bool, include_comments: bool, include_tables: bool) -> str | None:
    """Main text of one page with trafilatura (plain text, no metadata), or None where it finds none."""
    import trafilatura

    return trafilatura.extract(
        html, url=url, fast=fast, include_comments=include_comments, include_tables=include_tables,
        with_metadata=False, deduplicate=False,
    )


# resiliparse's main-content options, chosen on the tuning half of the gold set (`make
# bench-extract`): image alt texts cost F1 (0.906 against 0.924), list bullets change nothing.
RESILIPARSE_OPTIONS = {"main_content": True, "alt_texts": False, "list_bullets": False}


def resiliparse_text(html: str) -> str | None:
    """Main text by resiliparse's main-content heuristics (DCLM's extractor), one block per line."""
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(html, preserve_formatting=True, **RESILIPARSE_OPTIONS)
