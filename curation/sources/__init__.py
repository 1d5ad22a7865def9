"""Where documents come from, other than the WARC reader itself.

- :mod:`curation.sources.dolma`: already-extracted text in other pipelines' formats
  (``read_dolma_jsonl``: Dolma / CCNet JSONL, as in ``data/sample/text``).
- :mod:`curation.sources.commoncrawl`: Common Crawl itself: a dump's file listings, its index
  (columnar Parquet or CDXJ), the selection of records from it, and those records read by byte
  ranges.
"""

from curation.sources.dolma import read_dolma_jsonl

__all__ = ["read_dolma_jsonl"]
