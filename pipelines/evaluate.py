"""``python -m pipelines eval --checkpoint <run|checkpoint|HF folder> [--tokenizer <dir>] --output <dir>``:
the GSM8K test accuracy of a model (``training.evaluate``): greedy answers, final number compared.

Questions go to Ray tasks in chunks (``--chunk``), each loading the model once; a single chunk
runs in this process (no worker to start), and so do all questions with ``--device cuda``, on
that GPU. Greedy decoding makes every
answer independent of the chunking. ``<output>/stats.json`` holds the accuracy and a few
examples under ``gsm8k`` (questions in = scored + dropped by reason); every answer is in
``<output>/data/responses.parquet``. A complete output with the same settings is skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from curation.stats import StageStats
from storage import io

NAME = "eval"
HELP = "score a checkpoint (or an exported Hugging Face model) on GSM8K test: greedy answer, final number compared"

DEFAULT_DATA = "data/sample/sft/gsm8k-test.jsonl"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="run folder (its latest checkpoint), checkpoint folder, or a Hugging Face model folder")
    p.add_argument("--tokenizer", help="the project tokenizer's folder (for project checkpoints; a Hugging Face folder has its own)")
    p.add_argument("--data", default=DEFAULT_DATA, help="GSM8K-format JSONL ({question, answer} with a '#### N' answer line)")
    p.add_argument("--limit", type=int, default=0, help="the first N questions only (0: all)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--system", help="a system turn before each question")
    p.add_argument("--template", default="{question}", help="the user turn; {question} is replaced by the question")
    p.add_argument("--output", required=True, help="folder for stats.json and data/responses.parquet")
    p.add_argument("--chunk", type=int, default=8, help="questions per Ray task")
    p.add_argument("--device", default="cpu", help="cpu (Ray tasks), or cuda / cuda:N (this process, on that GPU)")
    p.add_argument("--examples", type=int, default=5, help="examples kept in stats.json")


def run(args: argparse.Namespace) -> int:
    from pipelines.config import ConfigError
    from training.evaluate import EvalConfig

    cfg = EvalConfig(max_new_tokens=args.max_new_tokens, system=args.system, template=args.template)
    if "{question}" not in cfg.template:
        raise ConfigError(f"--template {cfg.template!r} has no {{question}} in it")
    summary = evaluate(args.checkpoint, args.tokenizer, args.output, args.data, cfg, limit=args.limit, chunk=args.chunk,
                       device=args.device, examples=args.examples)
    return 1 if summary.get("failed_files") else 0


def evaluate(checkpoint: str, tokenizer: str | None, output: str, data: str, cfg: Any, *, limit: int = 0, chunk: int = 8,
             device: str = "cpu", examples: int = 5) -> dict[str, Any]:
    """Score one model; returns (and writes) its stats.json."""
    import pyarrow as pa

    from curation.decontam import read_records, resolve_eval_set
    from pipelines.config import ConfigError
    from pipelines.runtime import TaskFailure, Timer, print_summary, run_tasks
    from training.evaluate import is_hf_folder, parameter_count, questions

    if not io.exists(checkpoint):
        raise ConfigError(f"--checkpoint {checkpoint}: no such folder")
    if not is_hf_folder(checkpoint) and not tokenizer:
        raise ConfigError(f"--checkpoint {checkpoint} is a trainer checkpoint: give its tokenizer too (--tokenizer)")
    try:
        data = resolve_eval_set(data)
    except FileNotFoundError:
        raise ConfigError(f"--data {data}: no such file") from None
    settings = {"checkpoint": io.absolute(checkpoint), "tokenizer": tokenizer and io.absolute(tokenizer), "data": io.absolute(data),
                "limit": limit, "eval": dataclasses.asdict(cfg)}
    stats_path = io.join(output, "stats.json")
    if io.exists(stats_path) and io.read_json(stats_path).get("settings") == settings:
        print(f"eval: {output} is complete (stats.json matches); nothing to do", file=sys.stderr)
        return io.read_json(stats_path)
    with io.open_input(data) as f:
        records = read_records(f.read())
    qs, bad = questions(records)
    stats = StageStats()
    stats.seen(len(records))
    if bad:
        stats.drop("not_a_gsm8k_record", bad)
    if limit and len(qs) > limit:
        stats.drop("over_limit", len(qs) - limit)
        qs = qs[:limit]
    cfg_dict = dataclasses.asdict(cfg)
    chunks = [qs[i : i + chunk] for i in range(0, len(qs), chunk)]
    with Timer() as t:
        if device.startswith("cuda") or len(chunks) <= 1:
            from training.evaluate import load_generator, score

            rows = score(load_generator(checkpoint, tokenizer, device), qs, cfg) if qs else []
        else:
            results = run_tasks(_score_chunk, chunks, desc="eval: gsm8k", args=(checkpoint, tokenizer, cfg_dict))
            rows = []
            for part, res in zip(chunks, results):
                if isinstance(res, TaskFailure):
                    stats.failed_files[f"questions {part[0].index}..{part[-1].index}"] = res.error
                    stats.drop("generation_failed", len(part))
                else:
                    rows.extend(res)
    stats.kept(len(rows))
    stats.check()
    correct = sum(r["correct"] for r in rows)
    stats.add("correct", correct)
    stats.add("prompt_too_long", sum(r["prompt_too_long"] for r in rows))
    stats.add("answered_with_a_number", sum(r["predicted"] is not None for r in rows))
    stats.add("new_tokens", sum(r["new_tokens"] for r in rows))
    stats.add("seconds", round(t.seconds, 3))
    if rows:
        io.write_parquet(pa.Table.from_pylist(rows), io.join(io.data_folder(output), "responses.parquet"))
    gsm8k = {
        "accuracy": correct / len(rows) if rows else None, "correct": correct, "scored": len(rows),
        "questions_in_file": len(records), "parameters": parameter_count(checkpoint),
        "examples": [{k: r[k] for k in ("index", "question", "gold", "response", "predicted", "correct")} for r in rows[:examples]],
    }
    summary = {**stats.to_dict(), "gsm8k": gsm8k, "settings": settings}
    io.write_json(summary, stats_path)
    acc = f"{gsm8k['accuracy']:.1%}" if rows else "-"
    print_summary(NAME, stats, t.seconds, {"questions scored": len(rows), "correct": correct})
    print(f"  GSM8K accuracy           {acc} ({correct}/{len(rows)}), greedy, zero-shot; {checkpoint}", file=sys.stderr)
    return summary


def _score_chunk(qs: list, checkpoint: str, tokenizer: str | None, cfg_dict: dict) -> list[dict]:
    import torch

    from training.evaluate import EvalConfig, load_generator, score

    torch.set_num_threads(1)  # one task per CPU
    return score(load_generator(checkpoint, tokenizer, "cpu"), qs, EvalConfig(**cfg_dict))
