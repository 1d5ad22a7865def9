"""Chat data: the public SFT/preference formats read into messages, the report's chat format
through the project's tokenizer, and packing that never lets a conversation see another."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from conftest import SAMPLE
from tokenizer import TokenizerConfig, format_chat, train
from training.chat import (
    conversations_from_record,
    iter_jsonl_records,
    pack,
    pad_batch,
    pair_from_record,
    special_ids,
    tokenize_conversation,
    tokenize_pair,
)
from training.model import Transformer, attention_mask, model_config

SFT = SAMPLE / "sft"
PREF = SAMPLE / "preference"



def _records(path):
    with open(path, "rb") as f:
        return list(iter_jsonl_records(f))


def _sft_conversations():
    out = []
    for name in sorted(p.name for p in SFT.glob("*.jsonl")):
        for rec in _records(SFT / name):
            out.extend(conversations_from_record(rec)[0])
    return out


@pytest.fixture(scope="module")
def tok():
    texts = [m["content"] for c in _sft_conversations() for m in c]
    return train(texts, TokenizerConfig(vocab_size=2000))


def test_every_sft_file_reads_into_user_assistant_conversations():
    counts = {}
    for path in sorted(SFT.glob("*.jsonl")):
        reasons = collections.Counter()
        n = 0
        for rec in _records(path):
            convs, reason = conversations_from_record(rec)
            reasons[reason] += 1
            n += len(convs)
            for c in convs:
                assert c[-1]["role"] == "assistant" and c[-2]["role"] == "user"
        counts[path.name] = (n, dict(reasons))
    assert counts["gsm8k-test.jsonl"] == (1319, {None: 1319})
    assert counts["gsm8k-chat-train.jsonl"][0] == 449
    # self-instruct: one conversation per instance with an output
    assert counts["self-instruct-seed-tasks.jsonl"][0] == 175
    assert counts["self-instruct-user-oriented.jsonl"][0] >= 252


def test_gsm8k_chat_keeps_its_system_prompt_and_self_instruct_joins_the_input():
    rec = _records(SFT / "gsm8k-chat-train.jsonl")[0]
    (conv,), _ = conversations_from_record(rec)
    assert [m["role"] for m in conv] == ["system", "user", "assistant"]
    seed = next(r for r in _records(SFT / "self-instruct-seed-tasks.jsonl") if r["instances"][0]["input"])
    (conv,), _ = conversations_from_record(seed)
    assert conv[0]["content"] == seed["instruction"].strip() + "\n\n" + seed["instances"][0]["input"].strip()
    assert conv[1]["content"] == seed["instances"][0]["output"].strip()


def test_bad_records_are_named_not_fatal():
    assert conversations_from_record(None) == ([], "not_an_object")
    assert conversations_from_record({"text": "x"}) == ([], "unknown_format")
    assert conversations_from_record({"messages": [{"role": "user", "content": "q"}]})[1] == "no_assistant_turn"
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a"}]}
    assert conversations_from_record(bad)[1] == "roles_not_alternating"
    assert pair_from_record({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: hi\n\nAssistant: a"})[1] == "identical_answers"


def test_orca_pairs_keep_system_and_user_and_split_the_answers():
    recs = _records(PREF / "orca-dpo-pairs.jsonl")
    pairs = [pair_from_record(r) for r in recs]
    assert all(reason is None for _, reason in pairs)
    p, _ = pairs[0]
    assert [m["role"] for m in p.prompt] == ["system", "user"]
    assert p.chosen == recs[0]["preferred_output"][0]["content"].strip()
    assert p.rejected == recs[0]["non_preferred_output"][0]["content"].strip()


def test_hh_rlhf_prompt_is_the_shared_prefix_up_to_the_last_assistant_cue():
    recs = _records(PREF / "hh-rlhf-harmless-base-test.jsonl.gz")
    assert len(recs) == 2312
    reasons = collections.Counter()
    for rec in recs:
        p, reason = pair_from_record(rec)
        reasons[reason] += 1
        if p is None:
            continue
        # The prompt alternates user/assistant and ends with the user; re-rendering the prompt in
        # hh's own format gives back the shared prefix (up to the whitespace each turn is trimmed
        # of, and a few dialogues with two assistant turns in a row, which are merged).
        roles = [m["role"] for m in p.prompt]
        assert roles[-1] == "user" and all(a != b for a, b in zip(roles, roles[1:]))
        hh = "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in p.prompt) + "\n\nAssistant:"
        ws = lambda t: " ".join(t.split())  # noqa: E731
        reasons["same_prefix"] += ws(rec["chosen"]) == ws(hh + " " + p.chosen) and ws(rec["rejected"]) == ws(hh + " " + p.rejected)
        assert rec["chosen"].endswith(p.chosen) and rec["rejected"].endswith(p.rejected)
    assert reasons[None] >= 2300 and set(reasons) <= {None, "same_prefix", "empty_answer", "identical_answers", "no_shared_prompt"}
    assert reasons["same_prefix"] >= 0.99 * reasons[None]


def test_chat_format_round_trips_through_the_tokenizer(tok):
    bos, eos = special_ids(tok)
    convs = _sft_conversations()[::50]
    for conv in convs:
        tc = tokenize_conversation(tok, conv)
        ids = tc.input_ids.tolist()
        # The ids decode to exactly the report's format text ...
        assert tok.decode(ids, skip_special_tokens=False) == format_chat(conv)
        # ... the answer tokens decode to " {answer}<end>", and nothing else is marked.
        answer = [i for i, m in zip(ids, tc.loss_mask) if m]
        assert tok.decode(answer, skip_special_tokens=False) == " " + conv[-1]["content"] + "<｜end▁of▁sentence｜>"
        assert ids[0] == bos and ids[-1] == eos and tc.loss_mask[-1] and not tc.loss_mask[0]
        # ... and segment-wise encoding gives the ids of the whole text.
        whole = tok.encode(format_chat(conv)[len("<｜begin▁of▁sentence｜>"):-len("<｜end▁of▁sentence｜>")], add_special_tokens=False).ids
        assert ids[1:-1] == whole


def test_a_preference_pair_shares_its_prompt_tokens(tok):
    p, _ = pair_from_record(_records(PREF / "orca-dpo-pairs.jsonl")[3])
    c, r = tokenize_pair(tok, p)
    k = int(np.argmax(c.loss_mask))
    assert k == int(np.argmax(r.loss_mask)) and (c.input_ids[:k] == r.input_ids[:k]).all()


def test_packing_is_greedy_in_order_and_positions_restart(tok):
    _, eos = special_ids(tok)
    exs = [tokenize_conversation(tok, c) for c in _sft_conversations()[:40]]
    rows = pack(exs, 512, eos)
    assert sum(int((r.segment_ids > 0).sum()) for r in rows) == sum(len(e.input_ids) for e in exs)
    assert len(rows) < len(exs)  # several conversations share a row
    r = rows[0]
    for s in range(1, int(r.segment_ids.max()) + 1):
        where = np.flatnonzero(r.segment_ids[0] == s)
        assert (r.positions[0, where] == np.arange(len(where))).all()
    assert len(pack(exs, 512, eos, packing=False)) == len(exs)


def test_no_attention_crosses_packed_conversations(tok):
    torch.manual_seed(0)
    _, eos = special_ids(tok)
    model = Transformer(model_config("tiny", vocab_size=tok.get_vocab_size())).eval()
    convs = _sft_conversations()
    a, b, c = (tokenize_conversation(tok, x) for x in (convs[0], convs[500], convs[1500]))
    (row,) = pack([a, b], 1024, eos)
    (row2,) = pack([c, b], 1024, eos)  # b after a different neighbour
    mask = attention_mask(1, row.input_ids.shape[1], torch.device("cpu"), torch.as_tensor(row.segment_ids))[0, 0]
    na = len(a.input_ids)
    assert not mask[na:, :na].any() and mask[na, na] and not mask[:na, na:].any()

    def logits(r):
        with torch.no_grad():
            return model(torch.as_tensor(r.input_ids), position_ids=torch.as_tensor(r.positions), segment_ids=torch.as_tensor(r.segment_ids))[0]

    alone = pad_batch([b], eos)
    with torch.no_grad():
        lb = model(torch.as_tensor(alone.input_ids), position_ids=torch.as_tensor(alone.positions), segment_ids=torch.as_tensor(alone.segment_ids))[0, : len(b.input_ids)]
    nb = len(b.input_ids)
    packed_b = logits(row)[na : na + nb]
    packed_b2 = logits(row2)[len(c.input_ids) : len(c.input_ids) + nb]
    torch.testing.assert_close(packed_b, lb, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(packed_b2, lb, atol=1e-4, rtol=1e-4)
