"""The schemas of the data the stages hand on: documents, training text shards, token shards.

A document is a row of a zstd Parquet shard. The columns below are required and keep their
meaning across stages; stage-specific fields (scores, cluster ids, domain, WARC metadata) go in
the ``metadata`` struct, which later stages may extend with new fields.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

import pyarrow as pa

# WARC-level facts attached by extraction. Later stages add their own fields next to these.
EXTRACT_METADATA = pa.struct(
    [
        pa.field("warc_record_id", pa.string()),
        pa.field("warc_digest", pa.string()),
        pa.field("title", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("content_type", pa.string()),
        pa.field("charset", pa.string()),
    ]
)

DOCUMENT_SCHEMA = pa.schema(
    [
        # Deterministic: a hash of the dump and the WARC record id (or URL and date when the record
        # has none), so a re-run or a retried task gives the same id.
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        # Crawl name, e.g. CC-MAIN-2020-34: from --dump, else the warcinfo record, else the file name.
        pa.field("dump", pa.string()),
        # WARC-Date of the record, ISO 8601 as written in the archive.
        pa.field("crawl_date", pa.string()),
        pa.field("language", pa.string()),
        pa.field("language_score", pa.float32()),
        pa.field("metadata", EXTRACT_METADATA),
    ]
)


def document_id(dump: str, key: str) -> str:
    """A stable document id: 128 bits of BLAKE2b over the dump and a per-record key."""
    return hashlib.blake2b(f"{dump}\x00{key}".encode("utf-8"), digest_size=16).hexdigest()


def documents_to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema = DOCUMENT_SCHEMA) -> pa.Table:
    """Build a table of documents from row dicts, in order, with the schema enforced."""
    rows = list(rows)
    return pa.Table.from_pylist(rows, schema=schema)


def validate(table_schema: pa.Schema) -> None:
    """Raise ValueError naming each required column that is missing or has the wrong type."""
    problems = []
    for field in DOCUMENT_SCHEMA:
        if field.name not in table_schema.names:
            problems.append(f"missing column {field.name!r}")
            continue
        got = table_schema.field(field.name).type
        if field.name == "metadata":
            if not pa.types.is_struct(got):
                problems.append(f"column 'metadata' is {got}, expected a struct")
        elif got != field.type and not (pa.types.is_large_string(got) and field.type == pa.string()):
            problems.append(f"column {field.name!r} is {got}, expected {field.type}")
    if problems:
        raise ValueError("not a document table: " + "; ".join(problems))


# A training text shard (remix's output, tokenize's and train-tokenizer's input): one row per
# copy of a document, in shuffled order.
TEXT_SHARD_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("text", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("dump", pa.string()),
        pa.field("url", pa.string()),
        pa.field("language", pa.string()),
        # 0 for a document's first copy, 1.. for its repeats (up-sampled domains).
        pa.field("epoch", pa.int32()),
    ]
)

# A token shard (tokenize's output, the trainer's input): one row per document copy, its ids then
# EOS; (id, epoch) is a unique key.
TOKEN_SHARD_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("epoch", pa.int32(), nullable=False),
    pa.field("input_ids", pa.list_(pa.uint32()), nullable=False),
])
