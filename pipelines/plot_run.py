"""``python -m pipelines plot-run <run>``: loss (train and validation) and learning rate as PNG.

Reads ``<run>/log.jsonl`` as the trainer writes it; where a resumed run logged a step twice,
the later record wins. Writes ``<run>/loss.png`` and ``<run>/lr.png`` (or ``--output``).
"""

from __future__ import annotations

import argparse
import json
import os

NAME = "plot-run"
HELP = "draw a training run's loss and learning-rate curves (PNG) from its log.jsonl"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder holding log.jsonl")
    p.add_argument("--output", help="folder for the PNGs (default: the run folder)")


def read_log(run_dir: str) -> tuple[dict[int, dict], dict[int, float]]:
    steps: dict[int, dict] = {}
    val: dict[int, float] = {}
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if "val_loss" in rec:
                val[rec["step"]] = rec["val_loss"]
            elif "loss" in rec:
                steps[rec["step"]] = rec
    return steps, val


def plot(run_dir: str, out_dir: str | None = None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = out_dir or run_dir
    os.makedirs(out_dir, exist_ok=True)
    steps, val = read_log(run_dir)
    if not steps:
        raise ValueError(f"{run_dir}/log.jsonl has no step records")
    xs = sorted(steps)
    tokens = [steps[s]["tokens"] for s in xs]
    by_step_tokens = {s: steps[s]["tokens"] for s in xs}
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(tokens, [steps[s]["loss"] for s in xs], label="train loss", linewidth=1)
    if val:
        vs = sorted(val)
        ax.plot([by_step_tokens.get(s, s) for s in vs], [val[s] for s in vs], "o-", label="validation loss")
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(os.path.basename(os.path.abspath(run_dir)))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "loss.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(xs, [steps[s]["lr"] for s in xs])
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "lr.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def run(args: argparse.Namespace) -> int:
    for p in plot(args.run, args.output):
        print(p)
    return 0
