"""The main text of one HTML page, with trafilatura.

Kept apart from the rest of the extractor so the sandbox child that runs it imports trafilatura
alone, not pyarrow, fastText and FastWARC.
"""

from __future__ import annotations

from curation.extract import trafilatura_fix


def extract_text(html: str, url: str | None, fast: bool, include_comments: bool, include_tables: bool) -> str | None:
    """Main text of one page (plain text, no metadata), or None where trafilatura finds none."""
    import trafilatura

    trafilatura_fix.install()
    return trafilatura.extract(
        html, url=url, fast=fast, include_comments=include_comments, include_tables=include_tables,
        with_metadata=False, deduplicate=False,
    )
