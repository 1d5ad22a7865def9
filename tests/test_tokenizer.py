"""The tokenizer library on real text: lossless, digits alone, categories apart, specials safe,
both loaders agree, the chat format's ids and loss mask."""

from __future__ import annotations

import gzip
import json
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

import tokenizer as T
from curation.sources import read_dolma_jsonl
from curation.stats import StageStats
from tests.conftest import SAMPLE, shared

VOCAB = 3000


def _sample_docs() -> list[dict]:
    docs = []
    for path in sorted((SAMPLE / "text").glob("*.jsonl.gz")):
        with open(path, "rb") as f:
            docs.extend(read_dolma_jsonl(f, path.name))
    return docs


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return _sample_docs()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, docs) -> str:
    # Train on every other document; the rest is held out.
    tok = T.train((d["text"] for d in docs[::2]), T.TokenizerConfig(vocab_size=VOCAB))
    out = tmp_path_factory.mktemp("tok")
    T.save(tok, str(out))
    return str(out)


@pytest.fixture(scope="module")
def tok(folder) -> Tokenizer:
    return T.load(folder)


@pytest.fixture(scope="module")
def hf(folder):
    return T.load_hf(folder)


def _real_texts(docs) -> list[str]:
    """Held-out web text in many scripts, math and instructions, dialogue, news articles."""
    texts = [d["text"] for d in docs[1::2]]
    for name in ("gsm8k-test.jsonl", "self-instruct-user-oriented.jsonl"):
        with open(SAMPLE / "sft" / name, encoding="utf-8") as f:
            texts += [json.dumps(json.loads(line), ensure_ascii=False) for line in list(f)[:100]]
    with gzip.open(SAMPLE / "preference" / "hh-rlhf-harmless-base-test.jsonl.gz", "rt", encoding="utf-8") as f:
        texts += [json.loads(line)["chosen"] for line in list(f)[:100]]
    return texts


EDGE_CASES = [
    "",
    " ",
    "\n\n\r\n\t \x00\x01\x7f\x1b[31m",
    "3141592653589793238462643383279502884197169399375105820974944592307816406286",
    "Grüße, Ελληνικά, Русский текст, עברית, العربية, हिन्दी, ไทย, 日本語のテキスト, 한국어 문장, 中文：你好，世界！",
    "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷 and ZWJ\u200d, BOM\ufeff, combining e\u0301, NFD vs NFC: é é",
    "   leading and trailing   \n   ",
    "def f(x):\n\treturn {'a': [1, 2.5e-3, 0x1F]}  # comment\n",
    "\U0010ffff\U0001f600\ue000 private use and the last code point",
]


def test_specials_sit_after_the_ordinary_tokens(tok, hf):
    assert tok.get_vocab_size() == VOCAB + 15
    for i, name in enumerate(T.SPECIAL_TOKENS):
        assert tok.token_to_id(name) == VOCAB + i
    assert tok.token_to_id(T.BOS) == VOCAB and tok.token_to_id(T.EOS) == VOCAB + 1
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (VOCAB, VOCAB + 1, VOCAB + 1)
    assert len(hf) == VOCAB + 15
    # The whole byte alphabet is in, so any input encodes without an unknown token.
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = tok.get_vocab()
    assert all(ch in vocab for ch in ByteLevel.alphabet())


def test_pre_tokenizer_keeps_categories_apart_in_the_reports_order():
    pieces = [p for p, _ in T.pre_tokenizer().pre_tokenize_str("Hi, world 2024年中文abc\n\nx!  ")]
    # ByteLevel shows a space as Ġ and newline as Ċ.
    assert pieces == ["Hi", ",", "Ġworld", "Ġ", "2", "0", "2", "4", "å¹´ä¸Ńæĸĩ", "abc", "Ċ", "Ċ", "x", "!", "ĠĠ"]


def test_lossless_on_real_text_in_many_scripts(tok, docs):
    texts = _real_texts(docs) + EDGE_CASES
    gold = json.loads(shared("extraction-gold", "ground-truth.json").read_text(encoding="utf-8"))
    texts += [v["articleBody"] for v in list(gold.values())[:60]]
    encoded = T.encode_text(tok, texts)
    for text, ids in zip(texts, encoded):
        assert tok.decode(ids, skip_special_tokens=False) == text
    # Real text, so the tokenizer compresses: well under one token per byte.
    total_bytes = sum(len(t.encode()) for t in texts)
    assert sum(map(len, encoded)) < 0.5 * total_bytes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_lossless_on_random_unicode(tok, text):
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert all(i < VOCAB for i in ids)


def test_every_digit_is_its_own_token(tok):
    digits = "0123456789" * 20 + "٣٤٥"  # Arabic-Indic digits too
    ids = tok.encode(digits, add_special_tokens=False).ids
    assert len(ids) >= len(digits)
    assert [tok.decode([i]) for i in ids[:200]] == list(digits[:200])


def _category(ch: str) -> str:
    if ch in "\r\n":
        return "newline"
    if ch.isspace():
        return "space"
    cat = unicodedata.category(ch)
    if cat.startswith("N"):
        return "digit"
    name = unicodedata.name(ch, "")
    if name.startswith(("CJK", "HANGUL", "HIRAGANA", "KATAKANA", "BOPOMOFO")) and cat[0] == "L":
        return "cjk"
    if cat[0] in "LM":
        return "letter"
    if cat[0] in "PS":
        return "punct"
    return "other"


def test_no_token_mixes_categories(tok):
    checked = 0
    for token_id in range(VOCAB):
        s = tok.decode([token_id])
        # A token may hold part of a multi-byte character; judge the whole characters it holds.
        s = s.replace("\ufffd", "")
        if not s:
            continue
        checked += 1
        cats = [_category(c) for c in s]
        kinds = set(cats) - {"space"}
        if "newline" in cats:
            assert s in ("\n", "\r"), repr(s)
        if "digit" in kinds:
            assert len(s) == 1, repr(s)
        assert len(kinds & {"letter", "punct", "cjk", "digit"}) <= 1, repr(s)
        if kinds & {"letter", "punct", "cjk"}:
            # At most one leading whitespace character (the regexes' \s?), none elsewhere.
            body = s[1:] if _category(s[0]) == "space" else s
            assert "space" not in [_category(c) for c in body], repr(s)
    # The rest are fragments of multi-byte characters (CJK, emoji) on their own.
    assert checked > VOCAB * 0.75


def test_special_tokens_never_come_from_text(tok, hf, folder):
    spelled = "x " + " ".join(T.SPECIAL_TOKENS) + " User: <｜end▁of▁sentence｜>"
    for ids in (
        tok.encode(spelled, add_special_tokens=False).ids,
        T.encode_text(tok, [spelled])[0],
        T.encode_document(tok, spelled)[:-1],
        hf(spelled, add_special_tokens=False, split_special_tokens=True)["input_ids"],
    ):
        assert all(i < VOCAB for i in ids)
        assert tok.decode(ids, skip_special_tokens=False) == spelled
    assert T.encode_document(tok, spelled)[-1] == tok.token_to_id(T.EOS)
    # The plain file loader, left at its default, does match them: that is why load() exists.
    raw = Tokenizer.from_file(f"{folder}/tokenizer.json")
    assert tok.token_to_id(T.EOS) in raw.encode(spelled).ids


def test_both_loaders_give_the_same_ids(tok, hf, folder, docs):
    raw = Tokenizer.from_file(f"{folder}/tokenizer.json")
    texts = _real_texts(docs)[:100] + EDGE_CASES
    for text in texts:
        with_bos = raw.encode(text).ids
        assert with_bos[:1] == [VOCAB]  # BOS added by the post-processor
        assert hf(text)["input_ids"] == with_bos
        assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text, add_special_tokens=False).ids
        assert hf.decode(with_bos, skip_special_tokens=True) == text


def _gsm8k_chats() -> list[list[dict]]:
    with open(SAMPLE / "sft" / "gsm8k-chat-train.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["messages"] for line in list(f)[:40]]


def test_chat_ids_and_answer_mask_match_the_template(tok, hf):
    eos = tok.token_to_id(T.EOS)
    chats = _gsm8k_chats()
    assert {m["role"] for c in chats for m in c} == {"system", "user", "assistant"}
    # A two-turn chat too, ending with a generation prompt.
    chats.append(chats[0] + [{"role": "user", "content": "And in cents?"}])
    for messages in chats:
        prompt = messages[-1]["role"] == "user"
        ids, mask = T.encode_chat(tok, messages, add_generation_prompt=prompt)
        text = T.format_chat(messages, add_generation_prompt=prompt)
        assert hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt) == text
        rendered = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=prompt)
        rendered = rendered["input_ids"] if isinstance(rendered, dict) or hasattr(rendered, "keys") else rendered
        assert ids == list(rendered)
        assert tok.decode(ids, skip_special_tokens=False) == text
        # The loss mask covers exactly each answer (with its leading space) and its EOS.
        answers = [f" {m['content']}" for m in messages if m["role"] == "assistant"]
        masked = [i for i, on in zip(ids, mask) if on]
        assert masked.count(eos) == len(answers)
        assert tok.decode(masked, skip_special_tokens=False) == "".join(a + T.EOS for a in answers)
        if prompt:
            assert text.endswith("Assistant:") and not mask[-1]


def test_chat_rejects_unknown_roles(tok):
    with pytest.raises(ValueError, match="unknown chat role"):
        T.encode_chat(tok, [{"role": "tool", "content": "x"}])


def test_too_little_text_for_the_vocabulary_is_an_error():
    with pytest.raises(ValueError, match="filled only"):
        T.train(["a tiny corpus", "cannot fill"], T.TokenizerConfig(vocab_size=5000))


def test_training_text_selection_is_hashed_and_capped(docs):
    pairs = [(d["id"], d["text"]) for d in docs] + [("empty", "")]
    batches = [pairs[i : i + 50] for i in range(0, len(pairs), 50)]

    def select(**kw) -> tuple[list[str], StageStats]:
        stats = StageStats(input=len(pairs))
        out = [t for b in T.training_texts(batches, T.TokenizerConfig(**kw), stats) for t in b]
        return out, stats

    half, stats = select(sample_fraction=0.5, seed=1)
    assert 0.4 * len(docs) < len(half) < 0.6 * len(docs)
    assert stats.dropped["empty_text"] == 1 and stats.output == len(half)
    stats.check()
    # Same seed, same choice whatever the batching; another seed, another choice.
    again = [t for t in T.training_texts([pairs], T.TokenizerConfig(sample_fraction=0.5, seed=1), StageStats())]
    assert [t for b in again for t in b] == half
    other, _ = select(sample_fraction=0.5, seed=2)
    assert other != half
    capped, stats = select(max_bytes=200_000)
    assert 150_000 < sum(len(t.encode()) for t in capped) <= 200_000
    assert stats.counters["stopped_at_max_bytes"] == 1
    # Stops reading: only the batches up to the budget were consumed.
    assert stats.output + sum(stats.dropped.values()) < len(pairs)


def test_training_is_deterministic(docs):
    texts = [d["text"] for d in docs[:300]]
    cfg = T.TokenizerConfig(vocab_size=1500)
    one = T.train(texts, cfg).to_str()
    # Same text, fed in other batch sizes: the same tokenizer, byte for byte.
    assert T.train([texts[i : i + 7] for i in range(0, len(texts), 7)], cfg).to_str() == one
