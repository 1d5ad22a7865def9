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
    from training.generate import SamplingConfig, load

    tok, model, eos, vocab = load(args.checkpoint, args.tokenizer)
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed)
    return tok, model, eos, sampling, vocab


class Generate:
    NAME = "generate"
    HELP = "generate an answer from a checkpoint for one prompt, streaming tokens (KV cache; greedy, temperature, top-p)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _model_arguments(p)
        p.add_argument("--prompt", required=True, help="the user's message")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from training.generate import stream_answer, with_system

        stream_answer(*load_model_and_sampling(args), with_system(args.system, [{"role": "user", "content": args.prompt}]))
        return 0


class Chat:
    NAME = "chat"
    HELP = "talk to a checkpoint interactively in the report's chat format (/reset, /quit)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _model_arguments(p)

    @staticmethod
    def run(args: argparse.Namespace, stdin=None, stdout=None) -> int:
        from training.generate import chat

        chat(*load_model_and_sampling(args), args.system, stdin or sys.stdin, stdout or sys.stdout)
        return 0


def _repetition_chunk(chunk: tuple[int, list[str]], checkpoint: str, tokenizer_path: str, system: str | None, sampling_kw: dict, tail: int, period: int) -> list[dict[str, Any]]:
    import torch

    from training.generate import SamplingConfig, load, repetition_rows

    torch.set_num_threads(1)  # one task per CPU
    start, prompts = chunk
    tok, model, eos, vocab = load(checkpoint, tokenizer_path)
    return repetition_rows(tok, model, eos, vocab, prompts, start, system, SamplingConfig(**sampling_kw), tail, period)


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

        from tokenizer import load, tokenizer_json
        from training.checkpoint import resolve_checkpoint
        from training.generate import read_prompts

        load(tokenizer_json(args.tokenizer)), resolve_checkpoint(args.checkpoint)  # missing ones: one line, before any task
        prompts, missing, stats = read_prompts(args.prompts)
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
                                args=(args.checkpoint, tokenizer_json(args.tokenizer), args.system, sampling_kw, args.tail_tokens, args.max_period))
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
