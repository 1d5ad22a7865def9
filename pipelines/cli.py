"""``python -m pipelines <stage> ...``: one subcommand per stage.

Each stage lives in a module of this package exposing ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int`` (the exit status). Register a new stage by
adding its module to ``STAGES``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# In pipeline order (curation, training, evaluation), then the whole run; `--help` lists them so.
STAGES = [
    "pipelines.import_jsonl",
    "pipelines.extract",
    "pipelines.dedup",
    "pipelines.dedup_stats",
    "pipelines.dedup_explain",
    "pipelines.filter",
    "pipelines.remix",
    "pipelines.train_tokenizer",
    "pipelines.tokenize",
    "pipelines.train_quality",
    "pipelines.pretrain",
    "pipelines.plot_run",
    "pipelines.sft",
    "pipelines.dpo",
    "pipelines.evaluate",
    "pipelines.generate",
    "pipelines.run",
]


def _stage_modules(only: str | None = None):
    """The stage modules (``only``: just the one named after that subcommand, when there is one:
    a command starts without importing every stage)."""
    own = f"pipelines.{only.replace('-', '_')}" if only else None
    mods = []
    for name in [own] if own in STAGES else STAGES:
        try:
            mod = importlib.import_module(name)
            # A module may define several subcommands: COMMANDS lists objects with the same four names.
            mods.extend(getattr(mod, "COMMANDS", [mod]))
        except ImportError as e:  # a stage whose optional dependency is missing stays listed
            print(f"warning: stage module {name} could not be imported: {e}", file=sys.stderr)
    return mods


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipelines",
        description="Common Crawl to a trained language model (DeepSeek LLM recipe), one Ray job per stage. "
        "Runs on an embedded local Ray instance, or on the cluster named by RAY_ADDRESS.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="<stage>", required=True)
    mods = _stage_modules(only)
    if only and only not in {m.NAME for m in mods}:
        mods = _stage_modules()
    for mod in mods:
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The config options every stage with a config takes."""
    parser.add_argument("--config", help="YAML file with this stage's settings (see the config dataclass for defaults)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config value, e.g. --set timeout_s=5 (repeatable)",
    )


def main(argv: list[str] | None = None) -> int:
    from storage.errors import UserError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv and not argv[0].startswith("-") else None).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as e:  # a user's mistake (a setting, an input, a checkpoint): one line, no traceback
        print(f"pipelines {args.stage}: error: {e}", file=sys.stderr)
        return 2
