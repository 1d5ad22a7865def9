"""A benchmark score for a checkpoint: GSM8K (Cobbe et al. 2021), the math benchmark the DeepSeek
LLM report tracks through pre-training, SFT and DPO (Table 5: the 7B chat model 62.6%, 67B 84.1%).

- **prompt**: the test question as a user turn in the report's chat format, zero-shot (how the
  report scores chat models), greedy decoding up to ``max_new_tokens`` or the end token.
  ``system`` and ``template`` (``{question}`` is replaced) let the prompt match the SFT data's
  wording; the defaults are the plain question.
- **the answer**: the number after the last ``####`` when the model writes one (GSM8K's own
  answer line, which SFT on GSM8K teaches), else the last number in the response; thousands
  separators, ``$`` and a trailing ``.`` are dropped; compared as numbers.
- a prompt longer than the model's context cannot be answered: scored wrong, counted apart
  (``prompt_too_long``).

The same :func:`score` runs over any :class:`Generator`: :class:`CheckpointGenerator` (this
project's checkpoints, the KV-cache decoder of ``training.generate``, on CPU or GPU) or
:class:`HFGenerator` (a Hugging Face model folder, as ``training.export`` writes one, through
``transformers``' ``generate``); on an exported checkpoint both give the same answers.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

import torch

# A number as GSM8K writes them: optional sign, digits with thousands separators, decimals.
_NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?")


@dataclass
class EvalConfig:
    max_new_tokens: int = 256
    # The prompt: an optional system turn, and the user turn (``{question}`` is the question).
    system: str | None = None
    template: str = "{question}"


@dataclass(frozen=True)
class Question:
    index: int  # record number in the test file
    question: str
    gold: str  # the reference's final number, normalised


def normalize_number(text: str) -> str | None:
    """``"$1,200."`` -> ``"1200"``; None when ``text`` holds no number."""
    m = _NUMBER.search(text)
    if not m:
        return None
    s = m.group(0).replace("$", "").replace(",", "").replace(" ", "")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def final_number(response: str) -> str | None:
    """The number a response answers with: after its last ``####``, else its last number."""
    if "####" in response:
        got = normalize_number(response.rsplit("####", 1)[1])
        if got is not None:
            return got
    nums = _NUMBER.findall(response)
    return normalize_number(nums[-1]) if nums else None


def same_number(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        x, y = float(a), float(b)
    except ValueError:
        return a == b
    return abs(x - y) <= 1e-6 * max(1.0, abs(y))


def questions(records: Iterable[Any]) -> tuple[list[Question], int]:
    """GSM8K ``{question, answer}`` records as questions (the gold is the number after ``####``),
    and how many records were not of that form."""
    out: list[Question] = []
    bad = 0
    for i, rec in enumerate(records):
        q = rec.get("question") if isinstance(rec, dict) else None
        a = rec.get("answer") if isinstance(rec, dict) else None
        gold = normalize_number(a.rsplit("####", 1)[1]) if isinstance(a, str) and "####" in a else None
        if not isinstance(q, str) or not q.strip() or gold is None:
            bad += 1
            continue
        out.append(Question(i, q.strip(), gold))
    return out, bad


def messages(q: Question, cfg: EvalConfig) -> list[dict[str, str]]:
    user = {"role": "user", "content": cfg.template.replace("{question}", q.question)}
    return ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [user]


class Generator(Protocol):
    context: int  # the model's context in tokens

    def prompt_ids(self, msgs: list[dict[str, str]]) -> list[int]: ...

    def greedy(self, ids: list[int], max_new_tokens: int) -> tuple[list[int], str]: ...


class CheckpointGenerator:
    """A checkpoint (or run folder) of this project, with the project tokenizer."""

    def __init__(self, checkpoint: str, tokenizer: str, device: str = "cpu"):
        from tokenizer import load
        from training.chat import special_ids
        from training.checkpoint import load_model

        self.tok = load(tokenizer)
        self.model, run_cfg = load_model(checkpoint, device=device)
        self.vocab = run_cfg["vocab_size"]
        self.eos = special_ids(self.tok)[1]
        self.context = self.model.cfg.max_seq_len

    def prompt_ids(self, msgs: list[dict[str, str]]) -> list[int]:
        from training.chat import tokenize_prompt

        return tokenize_prompt(self.tok, msgs)

    def greedy(self, ids: list[int], max_new_tokens: int) -> tuple[list[int], str]:
        from training.generate import SamplingConfig, generate

        out = list(generate(self.model, ids, self.eos, SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens), self.vocab))
        return out, self.tok.decode(out, skip_special_tokens=False)


class HFGenerator:
    """A Hugging Face causal LM folder. With this project's tokenizer in it (``training.export``)
    the prompt is the project's chat format, token for token; otherwise the folder's own chat
    template, or the plain text when it has none."""

    def __init__(self, folder: str, device: str = "cpu"):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32 if device == "cpu" else "auto").to(device).eval()
        cfg = self.model.config
        self.context = int(getattr(cfg, "max_position_embeddings", 2048))
        self.device = device
        self.ours = None
        if os.path.exists(os.path.join(folder, "tokenizer.json")):
            from tokenizer import EOS, load, special_id

            tok = load(folder)
            try:
                self.eos = special_id(tok, EOS)
                self.ours = tok
            except KeyError:
                pass
        if self.ours is None:
            from transformers import AutoTokenizer

            self.hf_tok = AutoTokenizer.from_pretrained(folder)
            self.eos = self.hf_tok.eos_token_id
        # Padding rows of a padded vocabulary are never chosen (as training.generate does).
        real = self.ours.get_vocab_size() if self.ours is not None else len(self.hf_tok)
        self.suppress = list(range(real, cfg.vocab_size)) or None

    def prompt_ids(self, msgs: list[dict[str, str]]) -> list[int]:
        if self.ours is not None:
            from training.chat import tokenize_prompt

            return tokenize_prompt(self.ours, msgs)
        if getattr(self.hf_tok, "chat_template", None):
            return list(self.hf_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True))
        return self.hf_tok("\n\n".join(m["content"] for m in msgs))["input_ids"]

    @torch.no_grad()
    def greedy(self, ids: list[int], max_new_tokens: int) -> tuple[list[int], str]:
        # As training.generate: the last token may come from a full context, none beyond it.
        budget = min(max_new_tokens, self.context - len(ids) + 1)
        x = torch.tensor([ids], device=self.device)
        y = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=budget, do_sample=False, eos_token_id=self.eos,
                                pad_token_id=self.eos, suppress_tokens=self.suppress)
        out = y[0, len(ids):].tolist()
        if self.eos in out:
            out = out[: out.index(self.eos)]
        text = self.ours.decode(out, skip_special_tokens=False) if self.ours is not None else self.hf_tok.decode(out)
        return out, text


def is_hf_folder(path: str) -> bool:
    """A Hugging Face model folder (config.json with a model_type), not a trainer run/checkpoint."""
    from training.checkpoint import is_complete

    cfg = os.path.join(path, "config.json")
    if not os.path.isfile(cfg) or is_complete(path):
        return False
    try:
        with open(cfg) as f:
            return "model_type" in json.load(f)
    except (OSError, ValueError):
        return False


def parameter_count(checkpoint: str) -> int | None:
    """Parameters of the model of a checkpoint, run folder or Hugging Face folder, from its config
    (built on the meta device: no weights are read); None when that config cannot be read."""
    from storage.errors import UserError
    from training.checkpoint import resolve_checkpoint
    from training.export import model_config_from_hf
    from training.model import build_on_meta, model_config, num_params

    try:
        if is_hf_folder(checkpoint):
            with open(os.path.join(checkpoint, "config.json")) as f:
                c = json.load(f)
            if "hidden_size" not in c:
                return None
            cfg = model_config_from_hf(c)
        else:
            _, run_cfg = resolve_checkpoint(checkpoint)
            cfg = model_config(run_cfg["model"], vocab_size=run_cfg["vocab_size"])
        return num_params(build_on_meta(cfg))
    except (OSError, KeyError, ValueError, UserError):
        return None


def load_generator(checkpoint: str, tokenizer: str | None, device: str = "cpu") -> Generator:
    """The generator for a checkpoint/run folder (needs ``tokenizer``) or a Hugging Face folder."""
    if is_hf_folder(checkpoint):
        return HFGenerator(checkpoint, device)
    if not tokenizer:
        raise ValueError(f"{checkpoint} is a trainer checkpoint: its tokenizer is needed too (--tokenizer)")
    return CheckpointGenerator(checkpoint, tokenizer, device)


def score(gen: Generator, qs: Sequence[Question], cfg: EvalConfig) -> list[dict[str, Any]]:
    """One row per question: the response, its final number, whether it is the gold one."""
    rows = []
    for q in qs:
        ids = gen.prompt_ids(messages(q, cfg))
        too_long = len(ids) > gen.context - 1
        out, text = ([], "") if too_long else gen.greedy(ids, cfg.max_new_tokens)
        pred = None if too_long else final_number(text)
        rows.append({"index": q.index, "question": q.question, "gold": q.gold, "response": text, "predicted": pred,
                     "correct": same_number(pred, q.gold), "prompt_tokens": len(ids), "new_tokens": len(out),
                     "prompt_too_long": too_long})
    return rows
