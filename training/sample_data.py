"""Real token shards from the bundled sample, for tests, benchmarks and the local demo.

Trains a small byte-level BPE with Hugging Face ``tokenizers`` on the real Common Crawl text in
``data/sample/text`` (a few seconds), then writes the documents as token shards in the tokenize
stage's format: zstd Parquet, ``id`` (string) and ``input_ids`` (list<uint32>, EOS appended),
several shards of several row groups each, so the loader's shard/row-group walk is exercised.

``python -m training.sample_data OUT_DIR [--vocab 2048]``
"""

from __future__ import annotations

import argparse
import glob
import os

import pyarrow as pa
import pyarrow.parquet as pq

from curation.sources import read_dolma_jsonl
from curation.schema import TOKEN_SHARD_SCHEMA

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_TEXT = os.path.join(REPO, "data", "sample", "text")
EOS = "<|end_of_text|>"


def sample_documents(text_dir: str = SAMPLE_TEXT) -> list[dict]:
    docs = []
    for path in sorted(glob.glob(os.path.join(text_dir, "*.jsonl.gz"))):
        with open(path, "rb") as f:
            docs.extend(read_dolma_jsonl(f, os.path.basename(path)))
    return docs


def train_small_bpe(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def write_token_shards(out_dir: str, vocab_size: int = 2048, n_shards: int = 4, row_group_size: int = 64, text_dir: str = SAMPLE_TEXT) -> dict:
    """Write ``shard-XXXXX.parquet`` files and ``tokenizer.json`` into ``out_dir``; returns facts."""
    os.makedirs(out_dir, exist_ok=True)
    docs = sample_documents(text_dir)
    tok = train_small_bpe([d["text"] for d in docs], vocab_size)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    eos = tok.token_to_id(EOS)
    encoded = tok.encode_batch([d["text"] for d in docs])
    ids = [e.ids + [eos] for e in encoded]
    per = (len(docs) + n_shards - 1) // n_shards
    total = 0
    for s in range(n_shards):
        part = slice(s * per, (s + 1) * per)
        rows = docs[part]
        table = pa.table({"id": [d["id"] for d in rows], "epoch": pa.array([0] * len(rows), pa.int32()),
                          "input_ids": pa.array(ids[part], type=pa.list_(pa.uint32()))}, schema=TOKEN_SHARD_SCHEMA)
        total += sum(len(x) for x in ids[part])
        tmp = os.path.join(out_dir, f".shard-{s:05d}.parquet.tmp")
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
        os.replace(tmp, os.path.join(out_dir, f"shard-{s:05d}.parquet"))
    return {"documents": len(docs), "tokens": total, "vocab_size": tok.get_vocab_size(), "eos_id": eos, "shards": n_shards}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args(argv)
    print(write_token_shards(args.out_dir, args.vocab, args.shards))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
