"""Generation: the KV cache gives the model's own logits, decoding stops at the end token and
streams, top-p keeps the nucleus, and the repetition ratio finds loops; the CLI end to end."""

from __future__ import annotations

import io as _io
import json

import numpy as np
import pytest
import torch

from conftest import SAMPLE
from training.generate import (
    SamplingConfig,
    generate,
    generate_uncached,
    is_endless_repetition,
    repeating_period,
    repetition_ratio,
    sample_next,
)
from training.model import KVCache, Transformer, model_config



@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Transformer(model_config("tiny", vocab_size=1015)).eval()
    with torch.no_grad():  # sharper than the 0.006-std init, so greedy paths are not all ties
        for p in m.parameters():
            if p.dim() > 1:
                p.mul_(30)
    return m


def test_kv_cache_logits_equal_the_full_forward(model):
    ids = torch.randint(0, 1000, (1, 40), generator=torch.Generator().manual_seed(1))
    cache = KVCache(model.cfg.n_layers)
    with torch.no_grad():
        parts = [model(ids[:, :17], cache=cache), model(ids[:, 17:18], cache=cache), model(ids[:, 18:], cache=cache)]
        full = model(ids)
    assert cache.length == 40
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-4, rtol=1e-4)


def test_greedy_with_cache_equals_greedy_without(model):
    prompt = list(range(100, 130))
    cached = list(generate(model, prompt, end_id=1001, cfg=SamplingConfig(max_new_tokens=40), vocab_size=1015))
    assert cached == generate_uncached(model, prompt, 1001, 40, vocab_size=1015)
    assert len(cached) == 40 and all(t < 1015 for t in cached)


def test_stops_at_the_end_token_and_streams(model):
    prompt = list(range(100, 130))
    first = list(generate(model, prompt, end_id=-1, cfg=SamplingConfig(max_new_tokens=10)))
    # make the 4th greedy token the end token: generation stops before its first appearance
    out = list(generate(model, prompt, end_id=first[3], cfg=SamplingConfig(max_new_tokens=10)))
    assert out == first[: first.index(first[3])]
    it = generate(model, prompt, end_id=-1, cfg=SamplingConfig(max_new_tokens=10))
    assert next(it) == first[0]  # a generator: the first token comes before the rest are made


def test_sampling_is_seeded_and_top_p_keeps_the_nucleus():
    logits = torch.tensor([4.0, 3.0, 0.0, -1.0, -2.0])
    g = torch.Generator().manual_seed(0)
    draws = [sample_next(logits, 1.0, 0.8, g) for _ in range(300)]
    p = torch.softmax(logits, -1)
    assert p[0] < 0.8 <= p[0] + p[1]  # the nucleus is tokens 0 and 1
    assert set(draws) == {0, 1}
    assert sample_next(logits, 0.0, 1.0, None) == 0
    assert sample_next(logits, 1.0, 1.0, None, vocab_size=2) in (0, 1)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert [sample_next(logits, 2.0, 1.0, g1) for _ in range(20)] == [sample_next(logits, 2.0, 1.0, g2) for _ in range(20)]


def test_repetition_detection():
    loop = [5, 6, 7] * 40
    assert repeating_period(loop) == 3
    assert is_endless_repetition([1, 2, 3, 4] + loop, stopped=False)
    assert not is_endless_repetition(loop, stopped=True)  # it ended: not endless
    rng = np.random.default_rng(0)
    assert not is_endless_repetition(rng.integers(0, 1000, 200).tolist(), stopped=False)
    assert repeating_period([9] * 100) == 1


def test_repetition_ratio_of_a_model(model):
    prompts = [list(range(100 + i, 130 + i)) for i in range(4)]
    res = repetition_ratio(model, prompts, end_id=-1, cfg=SamplingConfig(max_new_tokens=100), vocab_size=1015, tail_tokens=32)
    assert res.prompts == 4 and res.stopped == 0 and res.mean_new_tokens == 100
    # a greedy random network falls into loops; the ratio counts exactly those responses
    outs = [list(generate(model, p, -1, SamplingConfig(max_new_tokens=100), 1015)) for p in prompts]
    assert res.repetitive == sum(is_endless_repetition(o, False, 32) for o in outs)


def test_cli_chain_sft_dpo_generate(tmp_path, ray_session):
    """pipelines sft -> dpo (precomputed reference by Ray) -> generate / chat / eval-repetition, at
    CI size. The starting model was pre-trained on 128-token rows (the tiny model's context is
    256): SFT without --seq-len takes the run's 128 for dropping long conversations and for
    packing alike."""
    from pipelines.cli import main
    from tokenizer import TokenizerConfig, save, train
    from training.chat import TokenizedChat, conversations_from_record, iter_jsonl_records, special_ids, tokenize_conversation
    from training.sft import ChatLoader
    from training.trainer import TrainConfig
    from training.trainer import train as train_loop

    with open(SAMPLE / "sft" / "gsm8k-test.jsonl", "rb") as f:
        convs = [c for r in iter_jsonl_records(f) for c in conversations_from_record(r)[0]]
    convs = convs[:300]
    tok = train([m["content"] for c in convs for m in c], TokenizerConfig(vocab_size=1000))
    save(tok, str(tmp_path / "tok"))
    _, eos = special_ids(tok)
    lm = [TokenizedChat(e.input_ids, np.ones_like(e.loss_mask)) for e in (tokenize_conversation(tok, c) for c in convs) if len(e.input_ids) <= 128]
    train_loop(TrainConfig(run_dir=str(tmp_path / "pre"), model="tiny", vocab_size=tok.get_vocab_size(), seq_len=128, micro_batch=4,
                           batch_tokens=512, train_tokens=4 * 512, lr=3e-3, warmup_steps=2, checkpoint_every=0, eval_every=0, progress=False),
               loader=ChatLoader(lm, 128, 4, eos))
    with open(SAMPLE / "sft" / "self-instruct-seed-tasks.jsonl") as f:
        (tmp_path / "chat-120.jsonl").write_text("".join(f.readline() for _ in range(120)))
    common = ["--tokenizer", str(tmp_path / "tok"), "--set", "progress=false", "--set", "cpu_threads=1", "--set", "checkpoint_every=0"]
    assert main(["sft", "--checkpoint", str(tmp_path / "pre"), "--data", str(tmp_path / "chat-120.jsonl"),
                 "--output", str(tmp_path / "sft"), "--epochs", "2", "--lr", "2e-3", "--batch-rows", "8",
                 "--set", "held_out_fraction=0.2", *common]) == 0
    st = json.load(open(tmp_path / "sft" / "stats.json"))
    assert st["input"] == st["output"] + sum(st["dropped"].values())
    assert st["dropped"]["too_long"] > 0 and st["output"] > 20  # longer than the run's 128, not the model's 256
    assert json.load(open(tmp_path / "sft" / "config.json"))["resolved"]["seq_len"] == 128
    assert st["sft"]["held_out_answer_loss_after"] < st["sft"]["held_out_answer_loss_before"]
    import gzip

    with gzip.open(SAMPLE / "preference" / "hh-rlhf-harmless-base-test.jsonl.gz", "rt") as f:
        (tmp_path / "hh-80.jsonl").write_text("".join(f.readline() for _ in range(80)))
    assert main(["dpo", "--checkpoint", str(tmp_path / "sft"), "--data", str(tmp_path / "hh-80.jsonl"),
                 "--output", str(tmp_path / "dpo"), "--lr", "2e-3", "--batch-pairs", "8", *common]) == 0
    st = json.load(open(tmp_path / "dpo" / "stats.json"))
    assert st["dpo"]["reference"] == "precomputed" and st["dpo"]["held_out_before"]["reward_accuracy"] == 0.0
    assert st["input"] == 80 == st["output"] + sum(st["dropped"].values())
    assert (tmp_path / "dpo" / "reference" / "hh-80.parquet").exists()
    model_args = ["--checkpoint", str(tmp_path / "dpo"), "--tokenizer", str(tmp_path / "tok"), "--max-new-tokens", "12"]
    assert main(["generate", *model_args, "--prompt", "What is 2+3?"]) == 0
    assert main(["eval-repetition", *model_args, "--limit", "4", "--output", str(tmp_path / "rep")]) == 0
    rep = json.load(open(tmp_path / "rep" / "stats.json"))
    assert rep["counters"]["responses"] == 4 and 0.0 <= rep["repetition_ratio"] <= 1.0
    from pipelines.generate import Chat
    from pipelines.cli import build_parser

    out = _io.StringIO()
    args = build_parser().parse_args(["chat", *model_args])
    assert Chat.run(args, stdin=_io.StringIO("Hello\n/reset\nHi again\n\n"), stdout=out) == 0
    assert out.getvalue().count("Assistant:") == 2


def test_chat_loop_prompt_files_and_repetition_rows_without_ray(tmp_path):
    """The library's chat loop and repetition evaluation in this process: prompts from a chat file
    and a text file, rows that do not depend on how the prompt set is split, a conversation kept
    until /reset."""
    from storage.errors import MissingInput
    from tokenizer import TokenizerConfig, train
    from training.chat import special_ids
    from training.generate import chat, read_prompts, repetition_rows

    (tmp_path / "extra.txt").write_text("What is 2+3?\n\nName a colour.\n")
    with pytest.raises(MissingInput, match="none.jsonl"):
        read_prompts([str(tmp_path / "extra.txt"), str(tmp_path / "none.jsonl")])
    prompts, missing, stats = read_prompts([str(SAMPLE / "sft" / "gsm8k-test.jsonl"), str(tmp_path / "extra.txt")])
    assert not missing
    assert len(prompts) == stats.input == stats.output == 1319 + 2 and {"What is 2+3?", "Name a colour."} <= set(prompts)
    tok = train(prompts[:300], TokenizerConfig(vocab_size=400))
    _, eos = special_ids(tok)
    vocab = tok.get_vocab_size()
    torch.manual_seed(0)
    net = Transformer(model_config("tiny", vocab_size=vocab)).eval()
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=8, seed=3)
    whole = repetition_rows(tok, net, eos, vocab, prompts[:4], 0, None, sampling, tail_tokens=4, max_period=2)
    split = (repetition_rows(tok, net, eos, vocab, prompts[:2], 0, None, sampling, tail_tokens=4, max_period=2)
             + repetition_rows(tok, net, eos, vocab, prompts[2:4], 2, None, sampling, tail_tokens=4, max_period=2))
    assert whole == split and [r["index"] for r in whole] == [0, 1, 2, 3] and all(r["new_tokens"] <= 8 for r in whole)
    out = _io.StringIO()
    chat(tok, net, eos, SamplingConfig(max_new_tokens=4), vocab, "Be brief.", _io.StringIO("Hello\n/reset\nHi again\n\n"), out)
    text = out.getvalue()
    assert text.startswith("chat: ") and text.count("Assistant:") == 2 and text.endswith("User: ")
