"""The DPO loss on real preference pairs and the tiny model: ln 2 at the start, one step raises
the margin, and precomputed reference log-probs equal those computed on the fly."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from conftest import SAMPLE
from tokenizer import TokenizerConfig, train
from training.chat import iter_jsonl_records, pair_from_record, special_ids, tokenize_pair
from training.dpo import PairLoader, dpo_loss, evaluate, make_loss_fn, pair_logps, sequence_logps
from training.model import Transformer, model_config

PREF = SAMPLE / "preference"



def _pairs(n_each: int = 12):  # n_each * 4 of each file
    out = []
    for name in ("orca-dpo-pairs.jsonl", "hh-rlhf-harmless-base-test.jsonl.gz"):
        with open(PREF / name, "rb") as f:
            got = [p for p, _ in map(pair_from_record, iter_jsonl_records(f)) if p is not None]
        out.extend(got[: n_each * 4])
    return out


@pytest.fixture(scope="module")
def setup():
    pairs = _pairs()
    texts = [m["content"] for p in pairs for m in p.prompt] + [p.chosen for p in pairs] + [p.rejected for p in pairs]
    tok = train(texts, TokenizerConfig(vocab_size=1000))
    _, eos = special_ids(tok)
    toks = [tokenize_pair(tok, p) for p in pairs]
    toks = [(c, r) for c, r in toks if max(len(c.input_ids), len(r.input_ids)) <= 256][:24]
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", vocab_size=tok.get_vocab_size()))
    return toks, eos, model


@pytest.fixture(scope="module")
def hh():
    """hh-rlhf pairs that fit the tiny model's context, tokenised with a tokenizer of their text."""
    with open(PREF / "hh-rlhf-harmless-base-test.jsonl.gz", "rb") as f:
        pairs = [p for p, _ in map(pair_from_record, iter_jsonl_records(f)) if p is not None]
    texts = [m["content"] for p in pairs for m in p.prompt] + [p.chosen for p in pairs] + [p.rejected for p in pairs]
    tok = train(texts, TokenizerConfig(vocab_size=1000))
    toks = [tokenize_pair(tok, p) for p in pairs]
    return tok, [(c, r) for c, r in toks if max(len(c.input_ids), len(r.input_ids)) <= 256]


def test_sequence_logps_sums_only_answer_tokens():
    torch.manual_seed(1)
    logits = torch.randn(2, 6, 11)
    ids = torch.randint(0, 11, (2, 6))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]], dtype=torch.bool)
    want = torch.stack([
        sum(torch.log_softmax(logits[b, t - 1], -1)[ids[b, t]] for t in range(1, 6) if mask[b, t])
        for b in range(2)
    ])
    torch.testing.assert_close(sequence_logps(logits, ids, mask), want)


def test_loss_is_ln2_when_policy_is_the_reference(setup):
    toks, eos, model = setup
    with torch.no_grad():
        c, r = pair_logps(model, toks[:8], eos)
    loss, m = dpo_loss(c, r, c.clone(), r.clone(), beta=0.1)
    assert float(loss) == pytest.approx(math.log(2), abs=1e-7)
    assert float(m["reward_margin"]) == 0.0 and float(m["reward_accuracy"]) == 0.0
    # metrics stay tensors on the loss's device (read once per step by the trainer)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in m.values())
    # and through the trainer's loss function with the frozen copy as the on-the-fly reference
    ref = copy.deepcopy(model).eval()
    batch = PairLoader(toks[:8], 8, eos, shuffle=False).batch(range(8))
    loss_sum, n, _ = make_loss_fn(0.1, reference=ref)(model.eval(), batch)
    assert float(loss_sum.detach()) / n == pytest.approx(math.log(2), abs=1e-6)


def test_one_dpo_step_raises_the_margin(setup):
    toks, eos, model = setup
    policy = copy.deepcopy(model)
    ref = copy.deepcopy(model).eval()
    loader = PairLoader(toks[:8], 8, eos, shuffle=False)
    batch = loader.next_batch()
    fn = make_loss_fn(0.1, reference=ref)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    _, n, before = fn(policy, batch)
    loss_sum, n, _ = fn(policy, batch)
    (loss_sum / n).backward()
    opt.step()
    with torch.no_grad():
        loss_after, _, after = fn(policy, batch)
    assert float(after["reward_margin"]) / n > float(before["reward_margin"]) / n + 1e-3
    assert float(loss_after) / n < math.log(2)
    assert float(after["reward_accuracy"]) / n > 0.5


def test_precomputed_reference_equals_on_the_fly(setup):
    toks, eos, model = setup
    ref = copy.deepcopy(model).eval()
    # precomputed the way pipelines.dpo does it: in fixed batches of 4, stored as float32
    pre_c, pre_r = [], []
    with torch.no_grad():
        for i in range(0, len(toks), 4):
            c, r = pair_logps(ref, toks[i : i + 4], eos)
            pre_c.append(c.numpy())
            pre_r.append(r.numpy())
    pre = (np.concatenate(pre_c).astype(np.float32), np.concatenate(pre_r).astype(np.float32))
    # trained on shuffled batches of 6: the loss and metrics agree batch by batch
    policy = copy.deepcopy(model)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    a = PairLoader(toks, 6, eos, ref=pre, seed=3)
    b = PairLoader(toks, 6, eos, seed=3)
    for _ in range(4):
        ba, bb = a.next_batch(), b.next_batch()
        la, na, ma = make_loss_fn(0.1)(policy, ba)
        lb, nb, mb = make_loss_fn(0.1, reference=ref)(policy, bb)
        assert na == nb
        torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)
        for k in ma:
            assert float(ma[k]) == pytest.approx(float(mb[k]), abs=1e-4)
    ea = evaluate(policy, PairLoader(toks, 5, eos, ref=pre, shuffle=False, loop=False))
    eb = evaluate(policy, PairLoader(toks, 5, eos, shuffle=False, loop=False), reference=ref)
    assert ea == pytest.approx(eb, abs=1e-5)


def test_dpo_on_the_trainer_raises_held_out_reward_accuracy(hh, tmp_path):
    from training.chat import TokenizedChat
    from training.dpo import DPOConfig, pairs_table, train_dpo
    from training.sft import ChatLoader
    from training.trainer import TrainConfig
    from training.trainer import train as train_loop
    import pyarrow.parquet as pq

    tok, toks = hh
    _, eos = special_ids(tok)
    vocab = tok.get_vocab_size()
    # The starting ("SFT") checkpoint: the tiny model briefly trained on the chosen dialogues.
    lm = [TokenizedChat(c.input_ids, np.ones_like(c.loss_mask)) for c, _ in toks[400:600]]
    train_loop(TrainConfig(run_dir=str(tmp_path / "sft"), model="tiny", vocab_size=vocab, seq_len=256, micro_batch=4, batch_tokens=4 * 256,
                           train_tokens=10 * 4 * 256, lr=3e-3, warmup_steps=2, checkpoint_every=0, eval_every=0, progress=False),
               loader=ChatLoader(lm, 256, 4, eos, seed=0))
    train, held = toks[:160], toks[160:224]
    path = str(tmp_path / "pairs.parquet")
    pq.write_table(pairs_table([f"p{i}" for i in range(len(train) + len(held))], train + held, [False] * len(train) + [True] * len(held)), path)
    cfg = DPOConfig(run_dir=str(tmp_path / "dpo"), init_from=str(tmp_path / "sft"), lr=2e-3, batch_pairs=8, micro_batch=4,
                    warmup_steps=2, seq_len=256, eval_every=0, checkpoint_every=0, progress=False, data=[path])
    out = train_dpo(cfg, eos)
    before, after = out["held_out_before"], out["held_out_after"]
    print("held-out before", before, "after", after)
    assert out["reference"] == "on_the_fly" and out["steps"] == 20
    # At the SFT checkpoint the policy is the reference: every reward is 0.
    assert before["loss"] == pytest.approx(math.log(2), abs=1e-6) and before["reward_accuracy"] == 0.0
    assert after["reward_accuracy"] > 0.5 and after["reward_margin"] > 0 and after["loss"] < math.log(2)
