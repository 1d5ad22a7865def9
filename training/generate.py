"""Talking to a checkpoint: greedy, temperature and top-p sampling with a KV cache, stopping at
the end token, yielding tokens as they come; answers streamed as text, the chat loop; and the
report's repetition ratio.

The cache is the model's own (``training.model.KVCache``, an optional argument of its
forward pass): each new token costs O(T) instead of re-running the prefix, and its logits
equal ``model(ids)[:, -1]`` (checked in ``tests/test_generate.py``).

Repetition (DeepSeek LLM report, section 5.5 / Table 13, "repetition ratio"): the share of
responses that fall into endless repetition. We call a response endlessly repetitive when it
runs to the token limit without emitting ``<end>`` and its tail is a loop: the last
``tail_tokens`` tokens are covered by repeats of a period of at most ``max_period`` tokens
(:func:`is_endless_repetition`).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TextIO

import torch

from curation.stats import StageStats
from storage import io
from training.model import KVCache, Transformer


@dataclass
class SamplingConfig:
    # 0 is greedy decoding; DeepSeek's released chat demo samples at 0.7 / top-p 0.95 (assumed
    # conventional values, the report does not state them).
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None, vocab_size: int | None = None) -> int:
    """One token id from last-position logits (vocab,): greedy at temperature 0, else
    temperature-scaled nucleus sampling (the smallest set of tokens whose probability reaches
    ``top_p``). Padding rows of the embedding (ids >= ``vocab_size``) are never chosen."""
    logits = logits.float()
    if vocab_size is not None and vocab_size < logits.shape[-1]:
        logits = logits.clone()
        logits[vocab_size:] = float("-inf")
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # a token stays if the mass before it < top_p
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


def generate(
    model: Transformer,
    prompt_ids: Sequence[int],
    end_id: int,
    cfg: SamplingConfig = SamplingConfig(),
    vocab_size: int | None = None,
) -> Iterator[int]:
    """Yield new token ids one at a time (streaming) until ``end_id`` (not yielded) or
    ``max_new_tokens``. The context is capped at the model's ``max_seq_len``."""
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    cache = KVCache(model.cfg.n_layers)
    limit = model.cfg.max_seq_len

    def step(ids: list[int]) -> torch.Tensor:  # the next token's logits, the cache advanced
        with torch.no_grad():
            return model(torch.tensor([ids], device=device), cache=cache)[0, -1]

    logits = step(list(prompt_ids)[-(limit - 1):])
    for _ in range(cfg.max_new_tokens):
        tok = sample_next(logits.cpu(), cfg.temperature, cfg.top_p, gen, vocab_size)
        if tok == end_id:
            return
        yield tok
        if cache.length >= limit:
            return
        logits = step([tok])


@torch.no_grad()
def generate_uncached(model: Transformer, prompt_ids: Sequence[int], end_id: int, max_new_tokens: int, vocab_size: int | None = None) -> list[int]:
    """Greedy decoding by re-running the whole sequence each step (the cache's reference)."""
    model.eval()
    device = next(model.parameters()).device
    ids = list(prompt_ids)
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids], device=device))[0, -1]
        tok = sample_next(logits.cpu(), 0.0, 1.0, None, vocab_size)
        if tok == end_id:
            break
        out.append(tok)
        ids.append(tok)
    return out


def response(model: Transformer, prompt_ids: Sequence[int], end_id: int, cfg: SamplingConfig, vocab_size: int | None = None) -> tuple[list[int], bool]:
    """The new tokens for one prompt, and whether it stopped at ``end_id`` (not at
    ``max_new_tokens`` nor at the end of the model's context)."""
    out = list(generate(model, prompt_ids, end_id, cfg, vocab_size))
    return out, len(out) < cfg.max_new_tokens and len(prompt_ids) + len(out) < model.cfg.max_seq_len


# ---- talking to a model in the report's chat format ------------------------------------------------


def load(checkpoint: str, tokenizer: str) -> tuple[Any, Transformer, int, int]:
    """Tokenizer, model, end-of-answer id and vocabulary size of a checkpoint (or run folder) and
    the project tokenizer (a folder or its ``tokenizer.json``)."""
    from tokenizer import load as load_tokenizer
    from tokenizer import tokenizer_json
    from training.chat import special_ids
    from training.checkpoint import load_model

    tok = load_tokenizer(tokenizer_json(tokenizer))
    model, run_cfg = load_model(checkpoint)
    _, eos = special_ids(tok)
    return tok, model, eos, run_cfg["vocab_size"]


def with_system(system: str | None, history: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation with the system prompt, if any, in front."""
    return ([{"role": "system", "content": system}] if system else []) + history


def stream_answer(tok, model: Transformer, eos: int, sampling: SamplingConfig, vocab: int, messages: list[dict[str, str]],
                  out: TextIO | None = None) -> str:
    """Generate an answer to ``messages``, printing text as it is decoded (to ``out``, default the
    current ``sys.stdout``); returns the answer."""
    from training.chat import tokenize_prompt

    out = out or sys.stdout
    ids: list[int] = []
    shown = ""
    for t in generate(model, tokenize_prompt(tok, messages), eos, sampling, vocab):
        ids.append(t)
        text = tok.decode(ids, skip_special_tokens=False)
        # Print only whole characters: a byte-level token may end inside a UTF-8 sequence.
        if not text.endswith("\ufffd"):
            out.write(text[len(shown):])
            out.flush()
            shown = text
    text = tok.decode(ids, skip_special_tokens=False)
    out.write(text[len(shown):] + "\n")
    out.flush()
    return text.strip()


def chat(tok, model: Transformer, eos: int, sampling: SamplingConfig, vocab: int, system: str | None, stdin: TextIO, stdout: TextIO) -> None:
    """The interactive loop: a user line in, the answer streamed out, the conversation kept;
    ``/reset`` forgets it, an empty line, ``/quit`` or the end of ``stdin`` ends."""
    history: list[dict[str, str]] = []
    stdout.write("chat: an empty line or /quit ends, /reset forgets the conversation\n")
    while True:
        stdout.write("User: ")
        stdout.flush()
        line = stdin.readline()
        if not line or not line.strip() or line.strip() == "/quit":
            return
        if line.strip() == "/reset":
            history = []
            continue
        history.append({"role": "user", "content": line.strip()})
        stdout.write("Assistant:")
        answer = stream_answer(tok, model, eos, sampling, vocab, with_system(system, history), stdout)
        history.append({"role": "assistant", "content": answer or "..."})


# ---- the repetition ratio ----------------------------------------------------------------------


def read_prompts(specs: list[str]) -> tuple[list[str], dict[str, str], StageStats]:
    """User prompts from chat/SFT/preference files (the first user turn) or plain-text files (one
    a line); ``{spec: error}`` for inputs that matched nothing; the records counted (a record
    without a user turn dropped as ``no_user_prompt``)."""
    from training.chat import conversations_from_record, pair_from_record, read_file_records

    files, missing = io.expand_inputs(specs, (".jsonl", ".jsonl.gz", ".parquet", ".txt"))
    stats = StageStats()
    prompts: list[str] = []
    for f in files:
        if f.endswith(".txt"):
            with io.open_input(f) as fh:
                lines = [ln.strip() for ln in fh.read().decode("utf-8").splitlines()]
            for ln in lines:
                if ln:
                    stats.seen()
                    stats.kept()
                    prompts.append(ln)
            continue
        for rec in read_file_records(f):
            stats.seen()
            convs, _ = conversations_from_record(rec) if rec is not None else ([], None)
            if convs:
                user = next(m["content"] for m in convs[0] if m["role"] == "user")
            else:
                pair, _ = pair_from_record(rec) if rec is not None else (None, None)
                user = pair.prompt[-1]["content"] if pair else None
            if user is None:
                stats.drop("no_user_prompt")
                continue
            stats.kept()
            prompts.append(user)
    return prompts, missing, stats


def repetition_rows(tok, model: Transformer, eos: int, vocab: int, prompts: Sequence[str], start: int, system: str | None,
                    sampling: SamplingConfig, tail_tokens: int = 64, max_period: int = 32) -> list[dict[str, Any]]:
    """One row per prompt (prompts ``start``, ``start + 1``, ... of a prompt set): the response and
    whether it stopped and whether it loops. Prompt ``i`` samples from seed ``sampling.seed + i``,
    so the rows do not depend on how the set is split."""
    from training.chat import tokenize_prompt

    rows = []
    for i, prompt in enumerate(prompts):
        cfg = dataclasses.replace(sampling, seed=sampling.seed + start + i)
        ids = tokenize_prompt(tok, with_system(system, [{"role": "user", "content": prompt}]))
        out, stopped = response(model, ids, eos, cfg, vocab)
        rows.append({"index": start + i, "prompt": prompt, "response": tok.decode(out, skip_special_tokens=False),
                     "new_tokens": len(out), "stopped": stopped, "repetitive": bool(is_endless_repetition(out, stopped, tail_tokens, max_period))})
    return rows


def repeating_period(tokens: Sequence[int], tail_tokens: int = 64, max_period: int = 32) -> int | None:
    """The shortest period p <= ``max_period`` such that the last ``tail_tokens`` tokens repeat
    with period p (token t == token t-p throughout), or None."""
    if len(tokens) < tail_tokens + 1:
        return None
    tail = list(tokens[-tail_tokens:])
    for p in range(1, max_period + 1):
        if all(tail[i] == tail[i - p] for i in range(p, len(tail))):
            return p
    return None


def is_endless_repetition(tokens: Sequence[int], stopped: bool, tail_tokens: int = 64, max_period: int = 32) -> bool:
    """A response that never stopped and whose tail loops with a short period."""
    return not stopped and repeating_period(tokens, tail_tokens, max_period) is not None


@dataclass
class RepetitionResult:
    prompts: int
    repetitive: int
    stopped: int
    mean_new_tokens: float

    @property
    def repetition_ratio(self) -> float:
        return self.repetitive / self.prompts if self.prompts else 0.0


def repetition_ratio(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    end_id: int,
    cfg: SamplingConfig,
    vocab_size: int | None = None,
    tail_tokens: int = 64,
    max_period: int = 32,
    on_response: Callable[[int, list[int], bool], None] | None = None,
) -> RepetitionResult:
    """Generate a response per prompt and count those that fall into endless repetition."""
    rep = stopped_n = total_new = 0
    for i, p in enumerate(prompts):
        out, stopped = response(model, p, end_id, cfg, vocab_size)
        rep += is_endless_repetition(out, stopped, tail_tokens, max_period)
        stopped_n += stopped
        total_new += len(out)
        if on_response:
            on_response(i, out, stopped)
    return RepetitionResult(len(prompts), rep, stopped_n, total_new / max(1, len(prompts)))
