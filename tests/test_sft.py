"""SFT on real chat data: the loss sees answer tokens only, the loader is deterministic and
resumable, and on the tiny model the trainer's loop lowers the held-out answer loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import SAMPLE
from tokenizer import TokenizerConfig, train
from training.chat import conversations_from_record, iter_jsonl_records, pack, special_ids, tokenize_conversation
from training.model import Transformer, model_config
from training.sft import IGNORE, ChatLoader, SFTConfig, answer_loss, collate, labels_for, to_trainer_batch, train_sft

SFT = SAMPLE / "sft"



def _convs(name: str):
    with open(SFT / name, "rb") as f:
        return [c for rec in iter_jsonl_records(f) for c in conversations_from_record(rec)[0]]


@pytest.fixture(scope="module")
def data():
    convs = _convs("gsm8k-test.jsonl") + _convs("gsm8k-chat-train.jsonl")
    tok = train([m["content"] for c in convs for m in c], TokenizerConfig(vocab_size=1000))
    _, eos = special_ids(tok)
    exs = [e for e in (tokenize_conversation(tok, c) for c in convs) if len(e.input_ids) <= 256]
    return tok, eos, exs


def test_labels_are_the_answer_tokens_only(data):
    tok, eos, exs = data
    (row,) = pack(exs[:1], 256, eos)
    labels = labels_for(row)[0]
    ids, mask = row.input_ids[0], row.loss_mask[0]
    targets = labels[labels != IGNORE]
    assert len(targets) == int(mask.sum())
    assert tok.decode(targets.tolist(), skip_special_tokens=False).endswith("<｜end▁of▁sentence｜>")
    # label t is token t+1, exactly where t+1 is an answer token
    where = np.flatnonzero(labels != IGNORE)
    assert (ids[where + 1] == labels[where]).all() and mask[where + 1].all()


def test_changing_prompt_targets_does_not_change_the_loss(data):
    _, eos, exs = data
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", vocab_size=1015)).eval()
    batch = collate(pack(exs[:12], 256, eos))
    b = to_trainer_batch(batch)
    with torch.no_grad():
        logits = model(b["input_ids"], position_ids=b["position_ids"], segment_ids=b["segment_ids"])

    def loss(ids):
        lab = torch.as_tensor(labels_for(type(batch)(ids, batch.loss_mask, batch.segment_ids, batch.positions)))
        return F.cross_entropy(logits.flatten(0, 1), lab.flatten(), ignore_index=IGNORE)

    scrambled = batch.input_ids.copy()
    prompt = (~batch.loss_mask) & (batch.segment_ids > 0)
    rng = np.random.default_rng(0)
    scrambled[prompt] = rng.integers(0, 1000, int(prompt.sum()))
    assert (scrambled != batch.input_ids).sum() > 500
    assert float(loss(scrambled)) == float(loss(batch.input_ids))
    # ... while changing answer targets does change it
    answers = batch.input_ids.copy()
    answers[batch.loss_mask] = rng.integers(0, 1000, int(batch.loss_mask.sum()))
    assert float(loss(answers)) != float(loss(batch.input_ids))


def test_loader_is_deterministic_splits_ranks_and_resumes(data):
    _, eos, exs = data
    a = ChatLoader(exs[:200], 256, 4, eos, seed=1)
    b = ChatLoader(exs[:200], 256, 4, eos, seed=1)
    first = [a.next_batch()["input_ids"] for _ in range(3)]
    state = a.state_dict()
    nxt = a.next_batch()["input_ids"]
    b.load_state_dict(state)
    assert torch.equal(b.next_batch()["input_ids"], nxt)
    assert not torch.equal(first[0], first[1])
    r0 = ChatLoader(exs[:200], 256, 1, eos, rank=0, world_size=2, seed=1)
    r1 = ChatLoader(exs[:200], 256, 1, eos, rank=1, world_size=2, seed=1)
    seen = {tuple(r.next_batch()["input_ids"][0, :40].tolist()) for r in (r0, r1) for _ in range(len(r0.rows) // 2)}
    assert len(seen) == len(r0.rows) - len(r0.rows) % 2  # each row once across the two ranks
    ev = ChatLoader(exs[:10], 256, 4, eos, shuffle=False, loop=False)
    n = 0
    with pytest.raises(StopIteration):
        while True:
            n += ev.next_batch()["input_ids"].shape[0]
    assert n == len(ev.rows)


def _pretrained(tmp, vocab, exs, eos):
    """A briefly pre-trained tiny checkpoint (loss on every token of the chat text)."""
    from training.chat import TokenizedChat
    from training.trainer import TrainConfig
    from training.trainer import train as train_loop

    lm = [TokenizedChat(e.input_ids, np.ones_like(e.loss_mask)) for e in exs]
    cfg = TrainConfig(run_dir=str(tmp / "pre"), model="tiny", vocab_size=vocab, seq_len=256, micro_batch=4, batch_tokens=4 * 256,
                      train_tokens=12 * 4 * 256, lr=3e-3, warmup_steps=2, checkpoint_every=0, eval_every=0, progress=False)
    train_loop(cfg, loader=ChatLoader(lm, 256, 4, eos, seed=0))
    return str(tmp / "pre")


def test_sft_on_the_trainer_lowers_held_out_answer_loss(data, tmp_path):
    tok, eos, exs = data
    vocab = tok.get_vocab_size()
    held, rest = exs[:40], exs[40:]
    start = _pretrained(tmp_path, vocab, rest[200:400], eos)
    cfg = SFTConfig(run_dir=str(tmp_path / "sft"), init_from=start, epochs=1, lr=2e-3, warmup_steps=2, seq_len=256,
                    micro_batch=4, batch_rows=4, eval_every=10, eval_batches=5, checkpoint_every=0, progress=False)
    out = train_sft(cfg, rest[:100], held, eos)
    assert out["complete"] and out["steps"] >= 15
    assert out["held_out_answer_loss_after"] < out["held_out_answer_loss_before"] - 0.3
    # the trainer logged the held-out answer loss (its val_loss) too, and wrote the summary
    log = [json.loads(ln) for ln in open(tmp_path / "sft" / "log.jsonl")]
    assert any("val_loss" in r for r in log)
    saved = json.load(open(tmp_path / "sft" / "sft.json"))
    assert saved["held_out_answer_loss_after"] == pytest.approx(out["held_out_answer_loss_after"])
    # answer_loss on the final weights is what the summary says
    from training.checkpoint import load_model

    model, _ = load_model(str(tmp_path / "sft"))
    assert answer_loss(model, held, eos, seq_len=256)[0] == pytest.approx(out["held_out_answer_loss_after"], rel=1e-5)
