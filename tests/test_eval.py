"""GSM8K scoring: the final number of every reference solution is its gold answer, and of a
wrong one is not; the eval stage scores a trained checkpoint through Ray tasks and gives the
same answers, token for token, on its Hugging Face export."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import SAMPLE
from curation.decontam import read_records
from training.evaluate import final_number, normalize_number, questions, same_number

GSM8K_TEST = SAMPLE / "sft" / "gsm8k-test.jsonl"


def test_final_number_of_real_solutions():
    recs = read_records(GSM8K_TEST.read_bytes())
    qs, bad = questions(recs)
    assert len(qs) == 1319 and bad == 0
    # Every reference solution, read as a model's response, answers its own question ...
    assert all(same_number(final_number(r["answer"]), q.gold) for r, q in zip(recs, qs))
    # ... and almost never another one (the few hits are questions that share an answer).
    shuffled = [r["answer"] for r in recs]
    random.Random(0).shuffle(shuffled)
    assert sum(same_number(final_number(a), q.gold) for a, q in zip(shuffled, qs)) < 30
    # Without its "####" line, the last number of the worked solution (calculator notes removed).
    plain = [r["answer"].rsplit("####", 1)[0].replace("<<", " ").replace(">>", " ") for r in recs]
    assert sum(same_number(final_number(a), q.gold) for a, q in zip(plain, qs)) > 0.95 * len(qs)
    assert final_number("She makes $1,234.50 a week.") == "1234.5" and normalize_number("#### -7") == "-7"
    assert final_number(" Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72!!!") == "72"
    assert final_number("I do not know.") is None and not same_number(None, "3")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few steps on GSM8K train conversations, and its tokenizer."""
    from tokenizer import TokenizerConfig, save, train
    from training.chat import conversations_from_record, iter_jsonl_records, special_ids, tokenize_conversation
    from training.sft import ChatLoader
    from training.trainer import TrainConfig
    from training.trainer import train as train_loop

    root = tmp_path_factory.mktemp("eval")
    with open(SAMPLE / "sft" / "gsm8k-chat-train.jsonl", "rb") as f:
        convs = [c for r in iter_jsonl_records(f) for c in conversations_from_record(r)[0]]
    tok = train([m["content"] for c in convs for m in c], TokenizerConfig(vocab_size=600))
    save(tok, str(root / "tok"))
    _, eos = special_ids(tok)
    exs = [e for e in (tokenize_conversation(tok, c) for c in convs) if len(e.input_ids) <= 256]
    train_loop(TrainConfig(run_dir=str(root / "run"), model="tiny", vocab_size=tok.get_vocab_size(), seq_len=256, micro_batch=4,
                           batch_tokens=1024, train_tokens=6 * 1024, lr=3e-3, warmup_steps=2, checkpoint_every=0, eval_every=0, progress=False),
               loader=ChatLoader(exs, 256, 4, eos))
    return root


def test_eval_stage_on_a_checkpoint_and_its_hf_export(ray_session, trained, tmp_path):
    from pipelines.cli import main
    from training.checkpoint import latest_checkpoint
    from training.export import export_hf, load_trained

    common = ["--limit", "6", "--max-new-tokens", "24"]
    # two Ray tasks of 3 questions
    assert main(["eval", "--checkpoint", str(trained / "run"), "--tokenizer", str(trained / "tok"), "--output", str(tmp_path / "ours"),
                 *common, "--chunk", "3"]) == 0
    ours = json.loads((tmp_path / "ours" / "stats.json").read_text())
    assert ours["input"] == 1319 and ours["output"] == 6 and ours["dropped"] == {"over_limit": 1313}
    g = ours["gsm8k"]
    assert g["scored"] == 6 and 0 <= g["accuracy"] <= 1 and g["parameters"] > 100_000 and len(g["examples"]) == 5
    rows = pq.read_table(tmp_path / "ours" / "data" / "responses.parquet").to_pylist()
    assert [r["index"] for r in rows] == list(range(6)) and all(r["new_tokens"] > 0 for r in rows)
    assert all(r["prompt_tokens"] > 20 and not r["prompt_too_long"] for r in rows)

    # The same model exported to the Hugging Face format, scored through transformers.
    from tokenizer import EOS, load, special_id

    tok = load(str(trained / "tok"))
    export_hf(load_trained(latest_checkpoint(str(trained / "run"))), str(tmp_path / "hf"), str(trained / "tok" / "tokenizer.json"),
              eos_id=special_id(tok, EOS))
    # one chunk of 6: in this process
    assert main(["eval", "--checkpoint", str(tmp_path / "hf"), "--output", str(tmp_path / "theirs"), *common]) == 0
    theirs = pq.read_table(tmp_path / "theirs" / "data" / "responses.parquet").to_pylist()
    assert [r["response"] for r in theirs] == [r["response"] for r in rows]
    theirs_g = json.loads((tmp_path / "theirs" / "stats.json").read_text())["gsm8k"]
    assert theirs_g["accuracy"] == g["accuracy"] and theirs_g["parameters"] == g["parameters"]  # one count, from either config
    # complete: a re-run with the same settings is skipped; a trainer checkpoint needs its tokenizer
    before = (tmp_path / "ours" / "stats.json").stat().st_mtime_ns
    assert main(["eval", "--checkpoint", str(trained / "run"), "--tokenizer", str(trained / "tok"), "--output", str(tmp_path / "ours"),
                 *common, "--chunk", "3"]) == 0
    assert (tmp_path / "ours" / "stats.json").stat().st_mtime_ns == before
    assert main(["eval", "--checkpoint", str(trained / "run"), "--output", str(tmp_path / "x")]) == 2
    assert np.isclose(g["accuracy"], sum(r["correct"] for r in rows) / 6)
