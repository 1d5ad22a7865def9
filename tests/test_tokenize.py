"""The train-tokenizer and tokenize stages on real text shards: accounting, order, EOS, uint32,
resume, determinism across worker counts, a broken shard named and the rest done."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tokenizer as T
from curation.schema import documents_to_table
from curation.sources import read_dolma_jsonl
from pipelines import cli
from storage import io
from pipelines.tokenize import tokenize
from tokenizer.shards import TokenizeConfig
from tests.conftest import SAMPLE

VOCAB = 2000


@pytest.fixture(scope="module")
def text_shards(tmp_path_factory) -> tuple[Path, list[list[dict]]]:
    """The sample's real documents as four Parquet text shards, one with an empty document."""
    docs = []
    for path in sorted((SAMPLE / "text").glob("*.jsonl.gz")):
        with open(path, "rb") as f:
            docs.extend(read_dolma_jsonl(f, path.name))
    docs = docs[::2]  # half of the sample (~1.5 MB) keeps the default run short
    folder = tmp_path_factory.mktemp("text")
    shards = [docs[i::4] for i in range(4)]
    shards[2] = shards[2][:50] + [dict(shards[2][50], id="empty-doc", text="")] + shards[2][50:]
    for i, rows in enumerate(shards):
        io.write_parquet(documents_to_table(rows), str(folder / f"part-{i:03d}.parquet"))
    return folder, shards


@pytest.fixture(scope="module")
def tok_folder(tmp_path_factory, text_shards, ray_session) -> Path:
    folder, _ = text_shards
    out = tmp_path_factory.mktemp("tokenizer")
    rc = cli.main(["train-tokenizer", "--input", str(folder), "--output", str(out), "--set", f"vocab_size={VOCAB}"])
    assert rc == 0
    return out


def _run(tok_folder, inputs, output, **kw):
    return tokenize(str(tok_folder), [str(i) for i in inputs], str(output), TokenizeConfig(**kw))


def test_train_tokenizer_stage_writes_a_loadable_folder_with_accounting(tok_folder, text_shards):
    _, shards = text_shards
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "stats.json"):
        assert (tok_folder / name).exists()
    stats = json.loads((tok_folder / "stats.json").read_text())
    n = sum(map(len, shards))
    assert stats["input"] == n and stats["output"] == n - 1 and stats["dropped"] == {"empty_text": 1}
    assert stats["vocab_size"] == VOCAB + 15
    fig = stats["training"]
    assert fig["text_mb"] > 1.0 and fig["train_seconds"] > 0 and fig["peak_rss_mb"] > 0
    tok = T.load(str(tok_folder))
    assert tok.token_to_id(T.EOS) == VOCAB + 1


def test_tokenize_file_writes_each_documents_ids_then_eos_without_ray(tok_folder, text_shards, tmp_path):
    """The library's one-shard step in this process: the ids of each non-empty document then EOS,
    in input order; the empty text dropped and counted; input, tokenizer and stats in the metadata."""
    from tokenizer.shards import META_KEY, read_tokenizer, tokenize_file

    folder, shards = text_shards
    text, sha = read_tokenizer(str(tok_folder))
    src = str(folder / "part-002.parquet")
    stats = tokenize_file(src, str(tmp_path / "t.parquet"), text, sha, TokenizeConfig(batch_size=64))
    t = pq.read_table(tmp_path / "t.parquet")
    docs = [d for d in shards[2] if d["text"]]
    assert stats["input"] == len(shards[2]) and stats["dropped"] == {"empty_text": 1} and t.num_rows == len(docs)
    assert t.column("id").to_pylist() == [d["id"] for d in docs] and set(t.column("epoch").to_pylist()) == {0}
    tok = T.load(str(tok_folder))
    assert t.column("input_ids").to_pylist()[:25] == [T.encode_document(tok, d["text"]) for d in docs[:25]]
    meta = json.loads(t.schema.metadata[META_KEY])
    assert (meta["input"], meta["tokenizer_sha256"], meta["stats"]) == (src, sha, stats)


def test_train_tokenizer_rerun_skips_and_sampling_changes_the_text(tok_folder, text_shards, tmp_path):
    folder, shards = text_shards
    before = (tok_folder / "tokenizer.json").stat().st_mtime_ns
    assert cli.main(["train-tokenizer", "--input", str(folder), "--output", str(tok_folder), "--set", f"vocab_size={VOCAB}"]) == 0
    assert (tok_folder / "tokenizer.json").stat().st_mtime_ns == before
    out = tmp_path / "half"
    assert cli.main(["train-tokenizer", "--input", str(folder), "--output", str(out), "--set", f"vocab_size={VOCAB}",
                     "--set", "sample_fraction=0.5", "--set", "max_bytes=400000"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert 300_000 < stats["counters"]["text_bytes"] <= 400_000
    assert stats["counters"]["stopped_at_max_bytes"] == 1
    assert stats["dropped"]["not_sampled"] > 0 and stats["dropped"]["over_max_bytes"] >= 1
    assert stats["input"] == stats["output"] + sum(stats["dropped"].values())


def test_tokenize_writes_one_ordered_shard_per_input_with_eos(tok_folder, text_shards, tmp_path):
    folder, shards = text_shards
    stats, skipped = _run(tok_folder, [folder], tmp_path / "tok")
    assert skipped == 0 and not stats.failed_files
    tok = T.load(str(tok_folder))
    eos = tok.token_to_id(T.EOS)
    outputs = io.list_shards(str(tmp_path / "tok"))
    assert [os.path.basename(p) for p in outputs] == [f"tokens-{i:05d}.parquet" for i in range(4)]
    total = 0
    for path, rows in zip(outputs, shards):
        table = pq.read_table(path)
        assert table.schema.field("input_ids").type == pa.list_(pa.uint32())
        assert table.column("epoch").to_pylist() == [0] * table.num_rows  # inputs without remix's epoch
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
        kept = [r for r in rows if r["text"]]
        assert table.column("id").to_pylist() == [r["id"] for r in kept]
        for r, ids in zip(kept, table.column("input_ids").to_pylist()):
            assert ids[-1] == eos and eos not in ids[:-1]
            assert tok.decode(ids[:-1]) == r["text"]
            total += len(ids)
    assert stats.input == sum(map(len, shards)) and stats.output == stats.input - 1
    assert dict(stats.dropped) == {"empty_text": 1}
    assert stats.counters["tokens"] == total
    written = json.loads((tmp_path / "tok" / "stats.json").read_text())
    assert written["input"] == stats.input and written["counters"]["tokens"] == total


def test_tokenize_is_deterministic_across_workers_and_resumes(tok_folder, text_shards, tmp_path):
    folder, _ = text_shards
    _run(tok_folder, [folder], tmp_path / "a", max_workers=1)
    _run(tok_folder, [folder], tmp_path / "b", max_workers=2, batch_size=64)
    names = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert "data/tokens-00003.parquet" in names
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # Resume: a re-run keeps complete shards; a missing one is redone, identical.
    lost = tmp_path / "a" / "data" / "tokens-00001.parquet"
    kept = (tmp_path / "a" / "data" / "tokens-00000.parquet").stat().st_mtime_ns
    lost.unlink()
    stats, skipped = _run(tok_folder, [folder], tmp_path / "a")
    assert skipped == 3
    assert lost.read_bytes() == (tmp_path / "b" / "data" / lost.name).read_bytes()
    assert (tmp_path / "a" / "data" / "tokens-00000.parquet").stat().st_mtime_ns == kept
    assert (tmp_path / "a" / "stats.json").read_bytes() == (tmp_path / "b" / "stats.json").read_bytes()


def test_tokenize_redoes_shards_of_another_tokenizer_and_drops_stale_ones(tok_folder, text_shards, tmp_path):
    folder, shards = text_shards
    one = tmp_path / "one"
    one.mkdir()
    (one / "part.parquet").write_bytes((folder / "part-000.parquet").read_bytes())
    # A first run over two inputs; the second run has one, so its second shard must go.
    _run(tok_folder, [one, folder / "part-001.parquet"], tmp_path / "out")
    assert (tmp_path / "out" / "data" / "tokens-00001.parquet").exists()
    other = tmp_path / "tok2"
    T.save(T.train((r["text"] for r in shards[1]), T.TokenizerConfig(vocab_size=1000)), str(other))
    stats, skipped = _run(other, [one], tmp_path / "out")
    assert skipped == 0
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.parquet")) == ["tokens-00000.parquet"]
    ids = pq.read_table(tmp_path / "out" / "data" / "tokens-00000.parquet").column("input_ids").to_pylist()
    assert max(max(x) for x in ids) == 1001  # the new tokenizer's EOS


def test_tokenize_names_a_broken_shard_and_does_the_rest(tok_folder, text_shards, tmp_path):
    folder, _ = text_shards
    mixed = tmp_path / "in"
    mixed.mkdir()
    for name in ("part-000.parquet", "part-001.parquet"):
        (mixed / name).write_bytes((folder / name).read_bytes())
    (mixed / "part-002.parquet").write_bytes(b"PAR1 this is not parquet")
    out = tmp_path / "out"
    rc = cli.main(["tokenize", "--tokenizer", str(tok_folder), "--input", str(mixed), "--output", str(out)])
    assert rc == 1
    stats = json.loads((out / "stats.json").read_text())
    assert list(stats["failed_files"]) == [str(mixed / "part-002.parquet")]
    assert (out / "data" / "tokens-00000.parquet").exists() and (out / "data" / "tokens-00001.parquet").exists()
    assert not (out / "data" / "tokens-00002.parquet").exists()
    assert stats["input"] == stats["output"] + sum(stats["dropped"].values())


def test_tokenize_reads_dolma_jsonl_too(tok_folder, tmp_path, ray_session):
    src = SAMPLE / "text" / "cc_en_head-0091.jsonl.gz"
    stats, _ = _run(tok_folder, [src], tmp_path / "out")
    table = pq.read_table(tmp_path / "out" / "data" / "tokens-00000.parquet")
    assert stats.input == stats.output == table.num_rows == 10
