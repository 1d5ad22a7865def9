"""``python -m pipelines tokenize``: text shards -> token shards, one Ray task per input shard.

Input: Parquet shards with a ``text`` column (and ``id``; remix, extract and dedup shards all
have both) or Dolma JSONL(.gz) files. Output: ``<output>/data/tokens-NNNNN.parquet``, one per
input in sorted input order (so the names keep the shard order), zstd Parquet with one row per
document copy: ``id`` (string), ``epoch`` (int32: remix's copy number of the document, 0 where
the input has no ``epoch`` column, so ``(id, epoch)`` is a unique key) and ``input_ids``
(list<uint32>, the document's ids then EOS). The trainer reads these directly.

One unit of work (:mod:`pipelines.stage`) per input shard; the SHA-256 of ``tokenizer.json`` is
the units' key, so a re-run keeps the shards made with the same tokenizer and redoes the rest.
Each shard also carries, in its Parquet metadata, the input it came from, the tokenizer's SHA-256
and its stats. Deterministic: a shard depends only on its input and the tokenizer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.schema import TOKEN_SHARD_SCHEMA, document_id
from curation.stats import StageStats
from storage import io

NAME = "tokenize"
HELP = "Turn text shards into token shards (id, input_ids list<uint32> with EOS) with the trained tokenizer."

TEXT_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")
_META_KEY = b"tokenize"


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


# ---------------------------------------------------------------- text shards (shared with train-tokenizer)


def text_shards(inputs: list[str]) -> tuple[list[str], dict[str, str]]:
    """Text shard files under the inputs, sorted; ``{spec: error}`` for inputs that matched nothing.

    Inside a folder, anything under a name starting with ``_`` or ``.`` is a stage's working
    files (remix's ``_shuffle``, temporary names), not a shard.
    """
    files: set[str] = set()
    missing: dict[str, str] = {}
    for spec in inputs:
        found, bad = io.expand_inputs([spec], TEXT_SUFFIXES)
        missing.update(bad)
        root = (spec if io.is_uri(spec) else os.path.abspath(spec)).rstrip("/") + "/"
        for f in found:
            rel = f[len(root):] if f.startswith(root) else posixpath.basename(f)
            if not any(part.startswith(("_", ".")) for part in rel.replace(os.sep, "/").split("/")):
                files.add(f)
    return sorted(files), missing


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


# ---------------------------------------------------------------- the Ray task

_TOKENIZERS: dict[str, Any] = {}


def _tokenizer(tokenizer_json: str, sha: str, threads: int):
    if sha not in _TOKENIZERS:
        # Rayon's pool reads this once, on first use in the process.
        os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(tokenizer_json)
        tok.encode_special_tokens = True  # text spelling a special token stays text
        _TOKENIZERS.clear()
        _TOKENIZERS[sha] = tok
    return _TOKENIZERS[sha]


def tokenize_shard(unit: dict, tokenizer: dict) -> dict[str, Any]:
    """Tokenize one text shard (``unit["path"]``) into one token shard (``unit["out"]``); returns its stats."""
    src, dst, sha, cfg = unit["path"], unit["out"], tokenizer["sha"], tokenizer["cfg"]
    tokenizer_json = tokenizer["json"]
    from tokenizer.bpe import EOS, encode_text, special_id

    tok = _tokenizer(tokenizer_json, sha, cfg.threads_per_task)
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
        schema=TOKEN_SHARD_SCHEMA.with_metadata({_META_KEY: json.dumps(meta, sort_keys=True).encode()}),
    )
    io.write_parquet(table, dst)
    return stats.to_dict()


# ---------------------------------------------------------------- the stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines import cli

    parser.add_argument("--tokenizer", required=True, help="folder with tokenizer.json (from train-tokenizer)")
    parser.add_argument("--input", nargs="+", required=True, help="text shards: folders, files or globs (.parquet, .jsonl[.gz])")
    parser.add_argument("--output", required=True, help="folder for data/tokens-NNNNN.parquet and stats.json")
    cli.add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines import config

    cfg = config.load(TokenizeConfig, args.config, args.overrides)
    stats, _ = tokenize(args.tokenizer, args.input, args.output, cfg)
    return 1 if stats.failed_files else 0


def tokenize(tokenizer: str, inputs: list[str], output: str, cfg: TokenizeConfig) -> tuple[StageStats, int]:
    """Run the stage; returns the merged stats (also written to ``<output>/stats.json``) and the
    number of shards kept from an earlier run (done with the same tokenizer)."""
    from pipelines.stage import Resources, Runner

    tok_path = tokenizer if tokenizer.endswith(".json") else io.join(tokenizer, "tokenizer.json")
    with io.open_input(tok_path) as f:
        tokenizer_json = f.read().decode("utf-8")
    sha = hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest()
    files, missing = text_shards(inputs)
    units = [{"name": f"tokens-{i:05d}", "path": src, "out": io.join(io.data_folder(output), f"tokens-{i:05d}.parquet")}
             for i, src in enumerate(files)]
    runner = Runner(NAME, output, failed=missing)
    runner.run(tokenize_shard, units, {"json": tokenizer_json, "sha": sha, "cfg": cfg}, phase="tokenize",
               key=io.json_digest({"tokenizer_sha256": sha, "columns": TOKEN_SHARD_SCHEMA.names}),
               resources=Resources(max_in_flight=cfg.max_workers or None))
    stats = runner.stats
    # Shards of an earlier run over more inputs (or in the folder's older layout, without data/)
    # are not ours any more: the trainer reads the folder.
    current = {io.filesystem(u["out"])[1] for u in units}
    for old in io.list_shards(output) if io.exists(output) else []:
        fs, p = io.filesystem(old)
        if posixpath.basename(p).startswith("tokens-") and p not in current:
            fs.delete_file(p)
    tokens = stats.counters.get("tokens", 0)
    seconds = time.perf_counter() - runner.timer.start
    runner.finish(
        {"shards": stats.counters.get("shards", 0), "tokens out (incl. EOS)": tokens, "text bytes in": stats.counters.get("text_bytes", 0),
         "tokens/s": tokens / seconds if seconds else 0},
        extra={"tokenizer_sha256": sha, "shards": {posixpath.basename(u["out"]): u["path"] for u in units}},
        card=("Token shards", [f"{stats.output:,} documents, {int(tokens):,} tokens (with EOS); columns id, epoch, input_ids (list<uint32>)."]))
    if tokens:
        print(f"  {'bytes per token':<24} {stats.counters['text_bytes'] / tokens:.3f}", file=sys.stderr)
    return stats, runner.skipped
