"""Talking to a checkpoint: three subcommands over ``training.generate``.

- ``python -m pipelines generate --checkpoint <run> --tokenizer <dir> --prompt "..."``: one
  answer, streamed token by token to stdout (greedy by default; ``--temperature``/``--top-p``).
- ``python -m pipelines chat --checkpoint <run> --tokenizer <dir>``: an interactive REPL that keeps
  the conversation (``/reset`` starts over, ``/quit`` or an empty line ends).
- ``python -m pipelines eval-repetition --checkpoint <run> --tokenizer <dir> --prompts <files>
  --output <dir>``: the report's repetition ratio (share of responses that fall into endless
  repetition) on a prompt set, as Ray tasks over prompt chunks; ``<output>/stats.json`` and
  ``<output>/responses.parquet``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from curation.stats import StageStats
from storage import io
from pipelines.runtime import TaskFailure, Timer, print_summary, run_tasks


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, or run folder (its latest checkpoint)")
    p.add_argument("--tokenizer", required=True, help="the project tokenizer's folder (or its tokenizer.json)")
    p.add_argument("--system", help="a system prompt put before the conversation")
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)


def load_model_and_sampling(args: argparse.Namespace):
    """Tokenizer, model, end-of-answer id, sampling settings and vocabulary size from the command's flags."""
    from pipelines.finetune import tokenizer_file
    from tokenizer import load
    from training.chat import special_ids
    from training.generate import SamplingConfig
    from training.checkpoint import load_model

    tok = load(tokenizer_file(args.tokenizer))
    model, run_cfg = load_model(args.checkpoint)
    _, eos = special_ids(tok)
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed)
    return tok, model, eos, sampling, run_cfg["vocab_size"]


def stream_answer(tok, model, eos: int, sampling, vocab: int, messages: list[dict[str, str]], out=None) -> str:
    """Generate an answer to ``messages``, printing text as it is decoded (to ``out``, default the
    current ``sys.stdout``); returns the answer."""
    from training.chat import tokenize_prompt
    from training.generate import generate

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


def with_system(system: str | None, history: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation with the system prompt, if any, in front."""
    return ([{"role": "system", "content": system}] if system else []) + history


class Generate:
    NAME = "generate"
    HELP = "generate an answer from a checkpoint for one prompt, streaming tokens (KV cache; greedy, temperature, top-p)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _model_arguments(p)
        p.add_argument("--prompt", required=True, help="the user's message")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        tok, model, eos, sampling, vocab = load_model_and_sampling(args)
        stream_answer(tok, model, eos, sampling, vocab, with_system(args.system, [{"role": "user", "content": args.prompt}]))
        return 0


class Chat:
    NAME = "chat"
    HELP = "talk to a checkpoint interactively in the report's chat format (/reset, /quit)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _model_arguments(p)

    @staticmethod
    def run(args: argparse.Namespace, stdin=None, stdout=None) -> int:
        stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
        tok, model, eos, sampling, vocab = load_model_and_sampling(args)
        history: list[dict[str, str]] = []
        stdout.write("chat: an empty line or /quit ends, /reset forgets the conversation\n")
        while True:
            stdout.write("User: ")
            stdout.flush()
            line = stdin.readline()
            if not line or not line.strip() or line.strip() == "/quit":
                return 0
            if line.strip() == "/reset":
                history = []
                continue
            history.append({"role": "user", "content": line.strip()})
            stdout.write("Assistant:")
            answer = stream_answer(tok, model, eos, sampling, vocab, with_system(args.system, history), stdout)
            history.append({"role": "assistant", "content": answer or "..."})


def _repetition_chunk(chunk: tuple[int, list[str]], checkpoint: str, tokenizer_path: str, system: str | None, sampling_kw: dict, tail: int, period: int) -> list[dict[str, Any]]:
    import torch

    from tokenizer import load
    from training.chat import special_ids, tokenize_prompt
    from training.generate import SamplingConfig, generate, is_endless_repetition
    from training.checkpoint import load_model

    torch.set_num_threads(1)  # one task per CPU
    start, prompts = chunk
    tok = load(tokenizer_path)
    model, run_cfg = load_model(checkpoint)
    _, eos = special_ids(tok)
    rows = []
    for i, prompt in enumerate(prompts):
        # Each prompt samples from its own seed, so results do not depend on the chunking.
        cfg = SamplingConfig(**{**sampling_kw, "seed": sampling_kw["seed"] + start + i})
        ids = tokenize_prompt(tok, with_system(system, [{"role": "user", "content": prompt}]))
        out = list(generate(model, ids, eos, cfg, run_cfg["vocab_size"]))
        stopped = len(out) < cfg.max_new_tokens and len(ids) + len(out) < model.cfg.max_seq_len
        rows.append({"index": start + i, "prompt": prompt, "response": tok.decode(out, skip_special_tokens=False),
                     "new_tokens": len(out), "stopped": stopped, "repetitive": bool(is_endless_repetition(out, stopped, tail, period))})
    return rows


def _prompts(specs: list[str]) -> tuple[list[str], dict[str, str], StageStats]:
    """User prompts from chat/SFT files (the first user turn) or plain-text files (one a line)."""
    from pipelines.finetune import read_records
    from training.chat import conversations_from_record, pair_from_record

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
        for rec in read_records(f):
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


class EvalRepetition:
    NAME = "eval-repetition"
    HELP = "the report's repetition ratio: share of responses that fall into endless repetition on a prompt set"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _model_arguments(p)
        p.add_argument("--prompts", nargs="+", default=["data/sample/sft/gsm8k-test.jsonl"],
                       help="prompt files: chat/SFT/preference JSONL or Parquet (first user turn), or .txt (one per line)")
        p.add_argument("--limit", type=int, default=200, help="first N prompts (0: all)")
        p.add_argument("--output", required=True, help="folder for responses.parquet and stats.json")
        p.add_argument("--tail-tokens", type=int, default=64, help="a response loops when its last N tokens repeat ...")
        p.add_argument("--max-period", type=int, default=32, help="... with a period of at most this many tokens")
        p.add_argument("--chunk", type=int, default=16, help="prompts per Ray task")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import pyarrow as pa

        from pipelines.finetune import tokenizer_file
        from tokenizer import load
        from training.checkpoint import resolve_checkpoint

        load(tokenizer_file(args.tokenizer)), resolve_checkpoint(args.checkpoint)  # missing ones: one line, before any task
        prompts, missing, stats = _prompts(args.prompts)
        stats.failed_files.update(missing)
        if args.limit:
            over = max(0, len(prompts) - args.limit)
            prompts = prompts[: args.limit]
            stats.output -= over
            stats.drop("over_limit", over)
        chunks = [(i, prompts[i : i + args.chunk]) for i in range(0, len(prompts), args.chunk)]
        sampling_kw = {"temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens, "seed": args.seed}
        with Timer() as t:
            results = run_tasks(_repetition_chunk, chunks, desc="eval-repetition",
                                args=(args.checkpoint, tokenizer_file(args.tokenizer), args.system, sampling_kw, args.tail_tokens, args.max_period))
        rows: list[dict[str, Any]] = []
        for (start, chunk), res in zip(chunks, results):
            if isinstance(res, TaskFailure):
                stats.failed_files[f"prompts {start}..{start + len(chunk) - 1}"] = res.error
                stats.output -= len(chunk)
                stats.drop("generation_failed", len(chunk))
            else:
                rows.extend(res)
        stats.check()
        rep = sum(r["repetitive"] for r in rows)
        stats.add("responses", len(rows))
        stats.add("repetitive", rep)
        stats.add("stopped_at_end_token", sum(r["stopped"] for r in rows))
        stats.add("new_tokens", sum(r["new_tokens"] for r in rows))
        ratio = rep / len(rows) if rows else 0.0
        if rows:
            io.write_parquet(pa.Table.from_pylist(rows), io.join(args.output, "responses.parquet"))
        io.write_json({**stats.to_dict(), "repetition_ratio": ratio, "checkpoint": args.checkpoint,
                       "sampling": sampling_kw, "tail_tokens": args.tail_tokens, "max_period": args.max_period},
                      io.join(args.output, "stats.json"))
        print_summary(EvalRepetition.NAME, stats, t.seconds, {"responses": len(rows), "repetitive": rep})
        print(f"  repetition ratio         {ratio:.3f} ({rep}/{len(rows)}); stopped at <end>: {int(stats.counters['stopped_at_end_token'])}", file=sys.stderr)
        return 1 if stats.failed_files else 0


COMMANDS = [Generate, Chat, EvalRepetition]
