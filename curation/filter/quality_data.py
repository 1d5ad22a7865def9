"""The quality classifier's training files: the committed ones and the defaults that name them.

Every default input is a file in the repository, so a fresh clone reproduces ``models/quality.ftz``:

- positives: the 181 human-annotated article bodies of the article-extraction benchmark
  (``data/sample/quality/gold-articles.jsonl.gz``, with their URLs) and instruction data
  (``data/sample/sft``, without GSM8K test, which is an evaluation set);
- negatives: the sample's web documents (``data/sample/text``) and the pages the extraction library
  takes out of ``data/sample/warc`` (``data/sample/quality/warc-pages.jsonl.gz``).

:func:`derive_data` rewrites those two files from their origins (the shared gold set, the sample
WARCs), deterministically: same inputs, same bytes (sorted, gzip mtime 0).
"""

from __future__ import annotations

import glob
import gzip
import json
import os

from curation.filter.quality import gold_articles
from storage import io

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(REPO, "data", "sample")
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
QUALITY_DATA = os.path.join(SAMPLE, "quality")
GOLD = os.path.join(QUALITY_DATA, "gold-articles.jsonl.gz")
WARC_PAGES = os.path.join(QUALITY_DATA, "warc-pages.jsonl.gz")
SFT = [os.path.join(SAMPLE, "sft", f) for f in
       ("gsm8k-chat-train.jsonl", "self-instruct-seed-tasks.jsonl", "self-instruct-user-oriented.jsonl")]
WEB = [os.path.join(SAMPLE, "text"), WARC_PAGES]
LANGUAGES = ["en", "zh"]
GOLD_JSON = os.path.join(SHARED, "extraction-gold", "ground-truth.json")  # the article-extraction benchmark's ground truth
WARCS = os.path.join(SAMPLE, "warc")


def derive_data(gold_json: str = GOLD_JSON, warcs: str = WARCS) -> dict[str, int]:
    """Write :data:`GOLD` (the gold article bodies with their URLs) and :data:`WARC_PAGES` (the
    documents the extraction library takes out of the WARCs); ``{file: documents written}``."""
    from curation.extract import Extractor, iter_records
    from curation.stats import StageStats

    gold = [{"id": f"gold-{i:03d}", "text": text, "metadata": {"url": url}} for i, (text, url) in enumerate(gold_articles(gold_json))]
    pages = []
    with Extractor() as ex:
        for path in sorted(glob.glob(os.path.join(warcs, "*.warc*"))):
            with open(path, "rb") as f:
                for d in ex.documents(iter_records(f), StageStats(), os.path.basename(path)):
                    pages.append({"id": d["id"], "text": d["text"],
                                  "metadata": {"url": d["url"], "language": d["language"], "language_score": d["language_score"],
                                               "source_file": os.path.basename(path)}})
    written = {}
    for rows, out in ((gold, GOLD), (pages, WARC_PAGES)):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode("utf-8")
        with open(out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
            f.write(data)
        written[out] = len(rows)
    return written


def shards_as_jsonl(specs: list[str], path: str) -> list[str]:
    """Document shards (files or folders) as one Dolma JSONL file at ``path`` (the negatives
    reader's format); ``[path]``."""
    with open(path, "w", encoding="utf-8") as f:
        for spec in specs:
            for shard in io.list_shards(spec) if os.path.isdir(spec) else [spec]:
                t = io.read_parquet(shard, columns=["id", "text", "url"])
                for i, text, url in zip(*(t.column(c).to_pylist() for c in ("id", "text", "url"))):
                    f.write(json.dumps({"id": i, "text": text, "metadata": {"url": url}}, ensure_ascii=False) + "\n")
    return [path]
