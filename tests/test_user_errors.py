"""A user's mistake ends in one line naming the thing and the fix, exit 2; a real bug keeps its
traceback. Each case runs the command line (``pipelines.cli.main``) as a new user would: a path
that does not exist given to any stage, a config error inside ``pipelines run``, an unknown
setting, an impossible batch, a missing tokenizer, missing token data, a corpus too small for the
vocabulary, and a missing, incomplete or unreadable checkpoint."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SAMPLE
from pipelines.cli import main

VOCAB = 300
SMALL = ["--vocab-size", str(VOCAB), "--model", "tiny", "--seq-len", "32", "--micro-batch", "2", "--batch", "64",
         "--train-tokens", "64", "--launcher", "inline", "--set", "progress=false"]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> str:
    """One token shard (random ids: these tests never get as far as learning anything)."""
    from curation.schema import TOKEN_SHARD_SCHEMA

    out = tmp_path_factory.mktemp("tokens")
    ids = np.random.default_rng(0).integers(0, VOCAB, size=(8, 200)).astype(np.uint32)
    table = pa.table({"id": [f"d{i}" for i in range(8)], "epoch": [0] * 8, "input_ids": pa.array(list(ids), pa.list_(pa.uint32()))}, schema=TOKEN_SHARD_SCHEMA)
    pq.write_table(table, out / "shard-00000.parquet")
    return str(out)


@pytest.fixture(scope="module")
def checkpoint(tokens, tmp_path_factory) -> str:
    """A real one-step checkpoint of the tiny model."""
    from training.trainer import TrainConfig, train

    run = tmp_path_factory.mktemp("pre")
    out = train(TrainConfig(run_dir=str(run), data=[tokens], holdout_shards=0, vocab_size=VOCAB, seq_len=32, micro_batch=2,
                            batch_tokens=64, train_tokens=64, eval_every=0, progress=False))
    return out["checkpoint"]


def _one_line(capsys, rc: int, *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    line = err[-1]
    assert line.startswith("pipelines ") and ": error: " in line, err
    assert "Traceback" not in "\n".join(err), err
    for w in words:
        assert w in line, line
    return line


def test_unknown_setting(tokens, tmp_path, capsys):
    rc = main(["pretrain", "--data", tokens, "--output", str(tmp_path / "run"), *SMALL, "--set", "learning_rate=1"])
    _one_line(capsys, rc, "learning_rate", "known:")


def test_batch_that_does_not_split_over_the_ranks(tokens, tmp_path, capsys):
    rc = main(["pretrain", "--data", tokens, "--output", str(tmp_path / "run"), *SMALL, "--batch", "100"])
    _one_line(capsys, rc, "batch of 100 tokens", "use 128")


def test_missing_tokenizer(tokens, tmp_path, capsys):
    rc = main(["pretrain", "--data", tokens, "--output", str(tmp_path / "run"), *SMALL, "--tokenizer", str(tmp_path / "no-tok")])
    _one_line(capsys, rc, "no-tok", "not found", "train-tokenizer")


def test_missing_token_data(tmp_path, capsys):
    rc = main(["pretrain", "--data", str(tmp_path / "no-tokens"), "--output", str(tmp_path / "run"), *SMALL])
    _one_line(capsys, rc, "token shards not found", "no-tokens", "tokenize")


def test_corpus_too_small_for_the_vocabulary(ray_session, tmp_path, capsys):
    from curation.schema import documents_to_table
    from curation.sources import read_dolma_jsonl

    with open(SAMPLE / "text" / "cc_en_head-0091.jsonl.gz", "rb") as f:
        docs = list(read_dolma_jsonl(f, "cc_en_head-0091.jsonl.gz"))[:3]
    pq.write_table(documents_to_table(docs), tmp_path / "few.parquet")
    rc = main(["train-tokenizer", "--input", str(tmp_path / "few.parquet"), "--output", str(tmp_path / "tok"), "--set", "vocab_size=50000"])
    _one_line(capsys, rc, "filled only", "50,000", "vocab_size")
    assert not (tmp_path / "tok" / "tokenizer.json").exists()


def test_checkpoint_that_is_not_one(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["sft", "--checkpoint", str(tmp_path / "empty"), "--tokenizer", str(tmp_path / "tok"), "--output", str(tmp_path / "sft")])
    _one_line(capsys, rc, "--checkpoint", "neither a checkpoint nor a run folder")


def test_init_from_an_incomplete_checkpoint(tokens, checkpoint, tmp_path, capsys):
    import shutil

    cut = tmp_path / "step-00000001"
    shutil.copytree(checkpoint, cut)
    (cut / "manifest.json").unlink()  # what a crash mid-save leaves
    rc = main(["pretrain", "--data", tokens, "--output", str(tmp_path / "run"), *SMALL, "--init-from", str(cut)])
    _one_line(capsys, rc, "--init-from", "not a complete checkpoint")


def test_init_from_an_unreadable_checkpoint(tokens, checkpoint, tmp_path, capsys):
    import shutil

    bad = tmp_path / "step-00000001"
    shutil.copytree(checkpoint, bad)
    (bad / ".metadata").write_bytes(b"not a pickle")
    rc = main(["pretrain", "--data", tokens, "--output", str(tmp_path / "run"), *SMALL, "--init-from", str(bad)])
    _one_line(capsys, rc, str(bad), "cannot be read")


def test_a_real_bug_keeps_its_traceback(tokens, tmp_path, monkeypatch):
    import pipelines.pretrain

    def broken(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipelines.pretrain, "launch", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["pretrain", "--data", tokens, "--output", str(tmp_path / "run"), *SMALL])


def _missing_path_commands(tmp_path) -> list[list[str]]:
    """Every stage's command line with a path that is not there (``@`` marks it)."""
    real = str(SAMPLE / "text")
    out = str(tmp_path / "out")
    return [
        ["import", "--input", "@", "--output", out],
        ["extract", "--input", "@", "--output", out],
        ["dedup", "--input", "@", "--output", out],
        ["dedup", "--input", str(SAMPLE / "warc"), "--output", out],  # a folder without document shards
        ["dedup-stats", "@"],
        ["dedup-explain", "@", "some-id"],
        ["filter", "--input", "@", "--output", out],
        ["filter", "--input", real, "--output", out, "--config", "@"],
        ["remix", "--input", "@", "--output", out],
        ["train-tokenizer", "--input", "@", "--output", out],
        ["tokenize", "--tokenizer", "@", "--input", real, "--output", out],
        ["tokenize", "--tokenizer", "@", "--input", "@", "--output", out],
        ["train-quality", "--gold", "@", "--output", out],
        ["pretrain", "--data", "@", "--output", out],
        ["plot-run", "@"],
        ["sft", "--checkpoint", "@", "--tokenizer", "@", "--output", out],
        ["dpo", "--checkpoint", "@", "--tokenizer", "@", "--output", out],
        ["eval", "--checkpoint", "@", "--output", out],
        ["generate", "--checkpoint", "@", "--tokenizer", "@", "--prompt", "hi"],
        ["chat", "--checkpoint", "@", "--tokenizer", "@"],
        ["eval-repetition", "--checkpoint", "@", "--tokenizer", "@", "--output", out],
        ["run", "--config", "@"],
    ]


def test_a_path_that_is_not_there_ends_in_one_line_in_every_stage(tmp_path, capsys):
    """No stage starts work on a path that does not exist: one line naming it, exit 2."""
    import shutil

    from pipelines.cli import STAGES, _stage_modules

    missing = str(tmp_path / "no-such-path")
    commands = _missing_path_commands(tmp_path)
    assert {m.NAME for m in _stage_modules()} == {c[0] for c in commands}, STAGES
    for argv in commands:
        rc = main([missing if a == "@" else a for a in argv])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert rc == 2, (argv, err)
        assert len(err) == 1 and "Traceback" not in err[0], (argv, err)
        assert missing in err[0] or f"{SAMPLE / 'warc'} (folder holds no .parquet files)" in err[0], (argv, err)
        if argv[0] == "dedup":  # dedup records its index settings before it reads its inputs
            shutil.rmtree(tmp_path / "out", ignore_errors=True)
        assert not (tmp_path / "out").exists(), argv


def test_a_config_error_inside_a_pipeline_run_exits_2(ray_session, tmp_path, capsys):
    """Settings that load but cannot run stop the run with one line and exit 2, as a single stage does."""
    import yaml

    cfg = {"output": str(tmp_path / "run"), "stages": ["extract"],
           "extract": {"inputs": [str(SAMPLE / "warc" / "cc-main-2020-34-sample.warc.gz")], "config": {"prefilter": {"min_words": 5}}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", "--config", str(tmp_path / "bad.yaml"), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "run: extract: error: extract.config gives prefilter.min_words" in err and "Traceback" not in err
    cfg.update(stages=["dedup"], extract={"inputs": [str(tmp_path / "none.warc.gz")]})
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", "--config", str(tmp_path / "missing.yaml"), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "run: dedup: error: input not found: " + str(tmp_path / "run" / "extracted") in err and "Traceback" not in err
