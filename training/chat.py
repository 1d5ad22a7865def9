"""Chat data for SFT and DPO: read conversations and preference pairs, render them in the DeepSeek
chat format, tokenise them with a loss mask on the answer tokens, and pack them.

The format (DeepSeek LLM report, and its released chat template)::

    <bos>{system}\\n\\nUser: {q1}\\n\\nAssistant: {a1}<end>User: {q2}\\n\\nAssistant: {a2}<end>

The project's tokenizer owns that format (``tokenizer.format_chat`` / ``encode_chat``: each piece
encoded on its own, so the boundary between what the model reads and the answer tokens it is
trained to write, with the ``<end>`` that stops it, is exact in token space). This module owns
what comes before and after: records of the public SFT and preference formats turned into
messages, and tokenised conversations packed into rows that never attend across each other.

Readers take one record at a time and return either an example or the name of the reason it was
skipped; the pipeline counts those reasons in its ``StageStats``.

Formats read (``../shared/data/sft`` and ``../shared/data/preference``):
- ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}``
- GSM8K ``{"question", "answer"}``
- self-instruct seed tasks and user-oriented instructions ``{"instruction", "instances": [{"input", "output"}]}``
  (one conversation per instance)
- orca DPO pairs ``{"input": {"messages"}, "preferred_output": [...], "non_preferred_output": [...]}``
- hh-rlhf ``{"chosen", "rejected"}`` dialogues; the prompt is the shared prefix up to the last
  ``"Assistant:"``
- plain ``{"prompt", "chosen", "rejected"}`` strings.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
from tokenizers import Tokenizer

from storage import io
from tokenizer import BOS, EOS, encode_chat, special_id

ROLES = ("system", "user", "assistant")


# --------------------------------------------------------------------------------------------
# Records -> conversations / pairs


@dataclass(frozen=True)
class PreferencePair:
    """A prompt (messages ending with a user turn) and two candidate answers."""

    prompt: tuple[dict[str, str], ...]
    chosen: str
    rejected: str


def conversations_from_record(rec: Any) -> tuple[list[list[dict[str, str]]], str | None]:
    """The conversations one SFT record holds, or ``([], reason)`` when it holds none."""
    if not isinstance(rec, dict):
        return [], "not_an_object"
    if "messages" in rec:
        msgs, reason = _clean_messages(rec["messages"])
        if reason:
            return [], reason
        if not any(m["role"] == "assistant" for m in msgs):
            return [], "no_assistant_turn"
        return [msgs], None
    if "question" in rec and "answer" in rec:  # GSM8K
        q, a = rec["question"], rec["answer"]
        if not _text(q) or not _text(a):
            return [], "empty_turn"
        return [[{"role": "user", "content": q.strip()}, {"role": "assistant", "content": a.strip()}]], None
    if "instruction" in rec and "instances" in rec:  # self-instruct
        instr = rec["instruction"]
        if not _text(instr) or not isinstance(rec["instances"], list):
            return [], "empty_turn"
        out = []
        for inst in rec["instances"]:
            if not isinstance(inst, dict) or not _text(inst.get("output")):
                continue
            inp = inst.get("input") or ""
            q = instr.strip() + ("\n\n" + inp.strip() if isinstance(inp, str) and inp.strip() else "")
            out.append([{"role": "user", "content": q}, {"role": "assistant", "content": inst["output"].strip()}])
        return (out, None) if out else ([], "empty_turn")
    return [], "unknown_format"


def pair_from_record(rec: Any) -> tuple[PreferencePair | None, str | None]:
    """The preference pair one record holds, or ``(None, reason)``."""
    if not isinstance(rec, dict):
        return None, "not_an_object"
    if "preferred_output" in rec and "non_preferred_output" in rec:  # orca pairs
        inp = rec.get("input")
        msgs, reason = _clean_messages(inp.get("messages") if isinstance(inp, dict) else None)
        if reason:
            return None, reason
        chosen, rejected = _assistant_text(rec["preferred_output"]), _assistant_text(rec["non_preferred_output"])
        return _pair(msgs, chosen, rejected)
    if "prompt" in rec and "chosen" in rec and "rejected" in rec:
        prompt = rec["prompt"]
        msgs, reason = (_clean_messages(prompt) if isinstance(prompt, list) else
                        ([{"role": "user", "content": prompt.strip()}], None) if _text(prompt) else (None, "empty_turn"))
        if reason:
            return None, reason
        return _pair(msgs, _assistant_text(rec["chosen"]), _assistant_text(rec["rejected"]))
    if "chosen" in rec and "rejected" in rec:  # hh-rlhf dialogues
        c, r = rec["chosen"], rec["rejected"]
        if not _text(c) or not _text(r):
            return None, "empty_turn"
        cut = _shared_prompt_end(c, r)
        if cut is None:
            return None, "no_shared_prompt"
        msgs = _parse_hh_dialogue(c[:cut])
        if not msgs or msgs[-1]["role"] != "user":
            return None, "no_shared_prompt"
        return _pair(msgs, c[cut:], r[cut:])
    return None, "unknown_format"


_HH_ASSISTANT = "\n\nAssistant:"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def _shared_prompt_end(chosen: str, rejected: str) -> int | None:
    """End of the shared prefix up to (and including) the last ``Assistant:`` of both dialogues."""
    n = 0
    limit = min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    k = chosen.rfind(_HH_ASSISTANT, 0, n)
    if k < 0:
        return None
    cut = k + len(_HH_ASSISTANT)
    # The dialogues must differ only in the last answer, not in an earlier turn.
    if "\n\nHuman:" in chosen[cut:] or "\n\nHuman:" in rejected[cut:]:
        return None
    return cut


def _parse_hh_dialogue(prefix: str) -> list[dict[str, str]]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant:"`` -> messages up to ``c``."""
    parts = _HH_TURN.split(prefix)
    msgs: list[dict[str, str]] = []
    # parts = [lead, role, text, role, text, ...]; the last role is the empty trailing Assistant cue.
    for role, text in zip(parts[1::2], parts[2::2]):
        text = text.strip()
        if not text:
            continue
        role = "user" if role == "Human" else "assistant"
        if msgs and msgs[-1]["role"] == role:
            msgs[-1] = {"role": role, "content": msgs[-1]["content"] + "\n\n" + text}
        else:
            msgs.append({"role": role, "content": text})
    return msgs


def _pair(msgs: list[dict[str, str]] | None, chosen: str | None, rejected: str | None) -> tuple[PreferencePair | None, str | None]:
    if not msgs or msgs[-1]["role"] != "user":
        return None, "prompt_not_ending_with_user"
    if not _text(chosen) or not _text(rejected):
        return None, "empty_answer"
    chosen, rejected = chosen.strip(), rejected.strip()
    if chosen == rejected:
        return None, "identical_answers"
    return PreferencePair(tuple(msgs), chosen, rejected), None


def _assistant_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        texts = [m.get("content") for m in value if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        texts = [t for t in texts if isinstance(t, str)]
        return "\n\n".join(t.strip() for t in texts) if texts else None
    return None


def _clean_messages(messages: Any) -> tuple[list[dict[str, str]] | None, str | None]:
    if not isinstance(messages, list) or not messages:
        return None, "no_messages"
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            return None, "bad_message"
        if m["role"] == "system" and i != 0:
            return None, "system_not_first"
        if not m["content"].strip():
            return None, "empty_turn"
        if out and out[-1]["role"] == m["role"]:
            return None, "roles_not_alternating"
        if m["role"] == "assistant" and (not out or out[-1]["role"] != "user"):
            return None, "roles_not_alternating"
        out.append({"role": m["role"], "content": m["content"].strip()})
    return out, None


def _text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def iter_jsonl_records(stream) -> Iterator[Any]:
    """Records of a JSONL stream (gzip sniffed); a line that is not JSON yields ``None``."""
    head = stream.read(2)
    data = head + stream.read()
    if head == b"\x1f\x8b":
        data = gzip.decompress(data)
    for line in data.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            yield None


def read_file_records(path: str) -> Iterator[Any]:
    """Records of a JSONL(.gz) or Parquet file (a local path or an object-store URI); a line
    that is not JSON is ``None``."""
    if path.endswith(".parquet"):
        yield from io.read_parquet(path).to_pylist()
        return
    with io.open_input(path) as f:
        yield from iter_jsonl_records(f)


# --------------------------------------------------------------------------------------------
# Tokenisation: the project's tokenizer owns the chat format (``tokenizer.encode_chat``)


@dataclass
class TokenizedChat:
    input_ids: np.ndarray  # int32 [T]
    loss_mask: np.ndarray  # bool [T]: token t is an answer token (a training target)


def special_ids(tok: Tokenizer) -> tuple[int, int]:
    """(bos, eos) ids; the end token is also the padding id (DESIGN.md, "Tokenizer")."""
    return special_id(tok, BOS), special_id(tok, EOS)


def tokenize_conversation(tok: Tokenizer, messages: Sequence[dict[str, str]], *, generation_prompt: bool = False) -> TokenizedChat:
    """Token ids with ``bos`` first and the answer tokens (with their ``<end>``) marked."""
    ids, mask = encode_chat(tok, messages, add_generation_prompt=generation_prompt)
    return TokenizedChat(np.asarray(ids, dtype=np.int32), np.asarray(mask, dtype=bool))


def tokenize_prompt(tok: Tokenizer, messages: Sequence[dict[str, str]]) -> list[int]:
    """The ids of a prompt ending with ``Assistant:``, ready for generation."""
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("a generation prompt ends with a user turn")
    return tokenize_conversation(tok, messages, generation_prompt=True).input_ids.tolist()


def tokenize_pair(tok: Tokenizer, pair: PreferencePair) -> tuple[TokenizedChat, TokenizedChat]:
    """The chosen and rejected conversations; they share every token before the answer."""
    c = tokenize_conversation(tok, [*pair.prompt, {"role": "assistant", "content": pair.chosen}])
    r = tokenize_conversation(tok, [*pair.prompt, {"role": "assistant", "content": pair.rejected}])
    return c, r


# --------------------------------------------------------------------------------------------
# Batching: packing with a block-diagonal mask, or one conversation per row


@dataclass
class ChatBatch:
    """A batch of rows; each row holds one or more whole conversations and padding.

    ``segment_ids`` numbers the conversations of a row from 1 (0 is padding); passed to the
    model, a token attends only to earlier tokens of its own conversation
    (``training.model.attention_mask``) and
    ``positions`` restart at 0 with each conversation, as they would if it were alone.
    """

    input_ids: np.ndarray  # int64 [B, T]
    loss_mask: np.ndarray  # bool [B, T]
    segment_ids: np.ndarray  # int32 [B, T]
    positions: np.ndarray  # int64 [B, T]


def pack(examples: Sequence[TokenizedChat], seq_len: int, pad_id: int, *, packing: bool = True) -> list[ChatBatch]:
    """Rows of ``seq_len`` tokens, filled greedily in order (deterministic).

    With ``packing=False`` each conversation has a row to itself. An example longer than
    ``seq_len`` is an error here; callers drop those first and count them.
    """
    rows: list[list[TokenizedChat]] = []
    used = 0
    for ex in examples:
        n = len(ex.input_ids)
        if n > seq_len:
            raise ValueError(f"example of {n} tokens does not fit seq_len {seq_len}")
        if not packing or not rows or used + n > seq_len:
            rows.append([])
            used = 0
        rows[-1].append(ex)
        used += n
    return [_row(r, seq_len, pad_id) for r in rows]


def _row(exs: list[TokenizedChat], seq_len: int, pad_id: int) -> ChatBatch:
    ids = np.full(seq_len, pad_id, dtype=np.int64)
    mask = np.zeros(seq_len, dtype=bool)
    seg = np.zeros(seq_len, dtype=np.int32)
    pos = np.zeros(seq_len, dtype=np.int64)
    at = 0
    for k, ex in enumerate(exs, 1):
        n = len(ex.input_ids)
        ids[at : at + n] = ex.input_ids
        mask[at : at + n] = ex.loss_mask
        seg[at : at + n] = k
        pos[at : at + n] = np.arange(n)
        at += n
    return ChatBatch(ids[None], mask[None], seg[None], pos[None])


def collate(rows: Sequence[ChatBatch]) -> ChatBatch:
    """Stack single rows (all of the same length) into one batch."""
    return ChatBatch(
        np.concatenate([r.input_ids for r in rows]),
        np.concatenate([r.loss_mask for r in rows]),
        np.concatenate([r.segment_ids for r in rows]),
        np.concatenate([r.positions for r in rows]),
    )


def pad_batch(examples: Sequence[TokenizedChat], pad_id: int, multiple_of: int = 8) -> ChatBatch:
    """One conversation per row, right-padded to the longest (rounded up to ``multiple_of``)."""
    longest = max(len(e.input_ids) for e in examples)
    seq_len = -(-longest // multiple_of) * multiple_of
    return collate([_row([e], seq_len, pad_id) for e in examples])


