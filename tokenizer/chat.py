"""The report's chat format, ``User: {q}\\n\\nAssistant: {a}<EOS>``, as text, as ids with a loss mask,
and as the Jinja chat template transformers uses (the one DeepSeek LLM released, plus a check on
roles).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from tokenizers import Tokenizer

from tokenizer.bpe import BOS, EOS, special_id

# DeepSeek LLM chat's tokenizer_config.json template; an unknown role is an error, not skipped.
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% else %}{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

_ROLES = ("system", "user", "assistant")


def _check(messages: Sequence[Mapping[str, str]]) -> None:
    for m in messages:
        if m.get("role") not in _ROLES:
            raise ValueError(f"unknown chat role {m.get('role')!r}; expected one of {_ROLES}")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"chat message content must be a string, got {type(m.get('content')).__name__}")


def format_chat(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False) -> str:
    """The chat as text, exactly as ``CHAT_TEMPLATE`` renders it."""
    _check(messages)
    parts = [BOS]
    for m in messages:
        if m["role"] == "user":
            parts.append(f"User: {m['content']}\n\n")
        elif m["role"] == "assistant":
            parts.append(f"Assistant: {m['content']}{EOS}")
        else:
            parts.append(f"{m['content']}\n\n")
    if add_generation_prompt:
        parts.append("Assistant:")
    return "".join(parts)


def encode_chat(
    tok: Tokenizer, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False
) -> tuple[list[int], list[bool]]:
    """Ids of ``format_chat(messages)`` and a mask that is True on answer tokens and their EOS.

    Each piece is encoded on its own, so BOS/EOS come only from the format. ``"Assistant:"`` is
    a punctuation boundary in the pre-tokenizer, so the pieces give the same ids as the whole
    text: the answer starts at its first token (usually one with a leading space).
    """
    _check(messages)
    bos, eos = special_id(tok, BOS), special_id(tok, EOS)
    ids: list[int] = [bos]
    mask: list[bool] = [False]

    def add(text: str, on: bool) -> None:
        if text:
            piece = tok.encode(text, add_special_tokens=False).ids
            ids.extend(piece)
            mask.extend([on] * len(piece))

    for m in messages:
        if m["role"] == "user":
            add(f"User: {m['content']}\n\n", False)
        elif m["role"] == "system":
            add(f"{m['content']}\n\n", False)
        else:
            add("Assistant:", False)
            add(f" {m['content']}", True)
            ids.append(eos)
            mask.append(True)
    if add_generation_prompt:
        add("Assistant:", False)
    return ids, mask
