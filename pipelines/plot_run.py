"""``python -m pipelines plot-run <run>``: loss and learning rate as PNG (:mod:`reporting.training`)."""

from __future__ import annotations

import argparse

NAME = "plot-run"
HELP = "draw a training run's loss and learning-rate curves (PNG) from its log.jsonl"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder holding log.jsonl")
    p.add_argument("--output", help="folder for the PNGs (default: the run folder)")


def run(args: argparse.Namespace) -> int:
    from reporting.training import plot

    for p in plot(args.run, args.output):
        print(p)
    return 0
