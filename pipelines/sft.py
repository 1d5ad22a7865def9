"""``python -m pipelines sft --checkpoint <pretrained> --data <files> --tokenizer <dir> --output <run>``

Supervised fine-tuning (``training.sft``) as a fine-tuning stage (``pipelines.finetune``):
records of ``messages`` / GSM8K / self-instruct are adapted, rendered in the report's chat
format and tokenised with the answer mask into ``<run>/data/``, then the trainer's loop runs
from the pre-trained checkpoint. ``<run>/stats.json`` counts conversations (in = trained + held
out + dropped by reason) and holds the held-out answer loss before and after. The second SFT
stage of the report (on conversational data only) is another run: ``--checkpoint <this run>
--data <chat files>``.
"""

from __future__ import annotations

import argparse
from typing import Any

from pipelines import finetune
from pipelines.pretrain import Launch

NAME = "sft"
HELP = "supervised fine-tuning of a checkpoint on chat data (loss on answers only), on the pre-training loop"


def add_arguments(p: argparse.ArgumentParser) -> None:
    finetune.add_arguments(p, "SFT", "data/sample/sft")
    p.add_argument("--batch-rows", type=int, help="packed rows per optimizer step")
    p.add_argument("--no-packing", action="store_true", help="one conversation per row")


def _report(result: dict[str, Any], stats) -> list[str]:
    if result.get("held_out_answer_loss_before") is None:
        return ["(no held-out conversations)"]
    return [f"held-out answer loss     {result['held_out_answer_loss_before']:.4f} -> {result['held_out_answer_loss_after']:.4f}"]


def build_config(args: argparse.Namespace):
    """The run's ``training.config.SFTConfig`` from the command line (``--dry-run`` checks the same)."""
    from training.config import SFTConfig

    return finetune.build_config(args, SFTConfig, {"batch_rows": args.batch_rows, "packing": False if args.no_packing else None})


def sft(cfg, data: list[str], tokenizer: str, how: Launch, decontamination) -> int:
    """SFT with ``cfg`` (a ``training.config.SFTConfig``) on the chat files ``data``."""
    from training.sft import examples_table, record_examples

    stage = finetune.Finetune(NAME, "conversations", "data", record_examples, examples_table, report=_report)
    return finetune.run(stage, cfg, data, tokenizer, how, decontamination)


def run(args: argparse.Namespace) -> int:
    return sft(build_config(args), args.data, args.tokenizer, Launch(args.nproc, args.launcher, args.max_failures),
               finetune.decontamination_config(args))
