"""Text shards in, token shards out: what the tokenize and train-tokenizer stages do to files.

- :func:`text_shards`: the text shards under the inputs (Parquet with a ``text`` column, Dolma
  JSONL(.gz)), skipping a stage's working files (names starting with ``_`` or ``.``).
- :func:`iter_documents`: a shard's documents in bounded batches, counted into a ``StageStats``.
- :func:`tokenize_file`: one text shard into one token shard, ``TOKEN_SHARD_SCHEMA``: ``id``,
  ``epoch`` (remix's copy number, 0 where the input has none, so ``(id, epoch)`` is a unique key)
  and ``input_ids`` (list<uint32>, the document's ids then EOS), zstd Parquet; its Parquet
  metadata holds the input, the tokenizer's SHA-256 and the stats. It depends only on the input
  and the tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.schema import TOKEN_SHARD_SCHEMA, document_id
from curation.stats import StageStats
from storage import io

TEXT_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")
META_KEY = b"tokenize"  # the token shard's Parquet metadata key


@dataclass
class TokenizeConfig:
    # Documents per encode call: large enough to amortise the Python/Rust crossing, small enough
    # that one batch of text and ids stays a few MB.
    batch_size: int = 512
    # Tokenizer threads per task; 1 matches the task's one reserved CPU (parallelism is across
    # shards, as Ray schedules them).
    threads_per_task: int = 1
    # Tasks in flight at once; 0 = as many as the cluster has CPUs.
    max_workers: int = 0


def text_shards(inputs: list[str]) -> tuple[list[str], dict[str, str]]:
    """Text shard files under the inputs, sorted (``storage.io.expand_inputs``: names starting with
    ``_`` or ``.`` inside a folder, a stage's working files, are skipped); an input that matches
    nothing is a ``MissingInput``, so the second value is always empty."""
    return io.expand_inputs(inputs, TEXT_SUFFIXES)


def iter_documents(path: str, stats: StageStats, batch_rows: int = 1024, with_epoch: bool = False) -> Iterator[list[tuple]]:
    """Batches of (id, text) from a Parquet text shard or a Dolma JSONL file, counted into ``stats``;
    (id, epoch, text) with ``with_epoch`` (remix's copy number; 0 where there is none).

    Parquet is read one record batch at a time (only ``id``, ``epoch`` and ``text``), so memory
    stays bounded by the batch, not the shard. A Parquet shard without ``id`` gets ids derived
    from its file name and row number.
    """
    name = posixpath.basename(path)
    if path.endswith(".parquet"):
        fs, p = io.filesystem(path)
        with fs.open_input_file(p) as f:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            if "text" not in names:
                raise ValueError(f"{name}: no 'text' column (columns: {', '.join(names)})")
            cols = [c for c in ("id", "epoch") if c in names and (c == "id" or with_epoch)] + ["text"]
            row = 0
            for rb in pf.iter_batches(batch_size=batch_rows, columns=cols):
                texts = rb.column("text").to_pylist()
                ids = rb.column("id").to_pylist() if "id" in cols else [None] * len(texts)
                ids = [i if i is not None else document_id(name, str(row + k)) for k, i in enumerate(ids)]
                row += len(texts)
                stats.seen(len(texts))
                if with_epoch:
                    epochs = [e or 0 for e in rb.column("epoch").to_pylist()] if "epoch" in cols else [0] * len(texts)
                    yield list(zip(ids, epochs, texts))
                else:
                    yield list(zip(ids, texts))
        return
    from curation.sources import read_dolma_jsonl

    # The reader counts what it saw and dropped (bad JSON, no text) into its own stats; pass
    # those on before each batch leaves, so a consumer that stops early leaves the sums right.
    read = StageStats()
    passed = StageStats()

    def counted(batch: list[tuple]) -> list[tuple]:
        stats.seen(read.input - passed.input)
        for reason, n in read.dropped.items():
            if n > passed.dropped[reason]:
                stats.drop(reason, n - passed.dropped[reason])
        passed.input, passed.dropped = read.input, read.dropped.copy()
        return batch

    batch: list[tuple] = []
    with io.open_input(path) as f:
        for doc in read_dolma_jsonl(f, name, read):
            batch.append((doc["id"], 0, doc["text"]) if with_epoch else (doc["id"], doc["text"]))
            if len(batch) >= batch_rows:
                yield counted(batch)
                batch = []
    counted([])
    if batch:
        yield batch


def iter_shards(files: list[str], stats: StageStats, batch_rows: int = 1024) -> Iterator[list[tuple]]:
    """:func:`iter_documents` of each file in turn; an unreadable one is named in
    ``stats.failed_files`` and the rest is read."""
    for path in files:
        try:
            yield from iter_documents(path, stats, batch_rows)
        except (OSError, ValueError) as e:
            stats.failed_files[path] = f"{type(e).__name__}: {e}"[:500]


def read_tokenizer(path: str) -> tuple[str, str]:
    """The text of a tokenizer's ``tokenizer.json`` (``path``: the folder or the file, local or
    an object-store URI) and its SHA-256, the key of the shards made with it."""
    from tokenizer.bpe import tokenizer_json

    with io.open_input(tokenizer_json(path)) as f:
        text = f.read().decode("utf-8")
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()


_TOKENIZERS: dict[str, Any] = {}


def cached_tokenizer(tokenizer_text: str, sha: str, threads: int):
    """The tokenizer of ``tokenizer_text``, built once per process (a worker reused by many shards
    keeps it); text that spells a special token stays text."""
    if sha not in _TOKENIZERS:
        # Rayon's pool reads this once, on first use in the process.
        os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(tokenizer_text)
        tok.encode_special_tokens = True
        _TOKENIZERS.clear()
        _TOKENIZERS[sha] = tok
    return _TOKENIZERS[sha]


def tokenize_file(src: str, dst: str, tokenizer_text: str, sha: str, cfg: TokenizeConfig) -> dict[str, Any]:
    """Tokenize one text shard ``src`` into one token shard ``dst``; returns its stats (empty
    texts dropped as ``empty_text``; counters ``tokens``, ``text_bytes``, ``shards``)."""
    from tokenizer.bpe import EOS, encode_text, special_id

    tok = cached_tokenizer(tokenizer_text, sha, cfg.threads_per_task)
    eos = special_id(tok, EOS)
    stats = StageStats()
    ids_out: list[str] = []
    epochs_out: list[int] = []
    chunks: list[np.ndarray] = []
    lengths: list[int] = []
    n_bytes = 0
    for batch in iter_documents(src, stats, cfg.batch_size, with_epoch=True):
        keep = [(i, e, t) for i, e, t in batch if t]
        if len(keep) < len(batch):
            stats.drop("empty_text", len(batch) - len(keep))
        if not keep:
            continue
        texts = [t for _, _, t in keep]
        n_bytes += sum(len(t.encode("utf-8")) for t in texts)
        for (doc_id, epoch, _), ids in zip(keep, encode_text(tok, texts)):
            ids.append(eos)
            chunks.append(np.asarray(ids, dtype=np.uint32))
            lengths.append(len(ids))
            ids_out.append(doc_id)
            epochs_out.append(epoch)
        stats.kept(len(keep))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint32)
    stats.add("tokens", int(offsets[-1]))
    stats.add("text_bytes", n_bytes)
    stats.add("shards")
    stats.check()
    meta = {"input": src, "tokenizer_sha256": sha, "columns": TOKEN_SHARD_SCHEMA.names, "stats": stats.to_dict()}
    table = pa.Table.from_arrays(
        [pa.array(ids_out, pa.string()), pa.array(epochs_out, pa.int32()),
         pa.LargeListArray.from_arrays(offsets, values).cast(pa.list_(pa.uint32()))],
        schema=TOKEN_SHARD_SCHEMA.with_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()}),
    )
    io.write_parquet(table, dst)
    return stats.to_dict()
