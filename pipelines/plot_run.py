"""``python -m pipelines plot-run <run>``: loss (train and validation) and learning rate as PNG.

Reads ``<run>/log.jsonl`` as the trainer writes it; where a resumed run logged a step twice,
the later record wins. Writes ``<run>/loss.png`` and ``<run>/lr.png`` (or ``--output``); the run
folder and the output may be local or on an object store.
"""

from __future__ import annotations

import argparse
import io as _bytes_io
import json

from storage import io

NAME = "plot-run"
HELP = "draw a training run's loss and learning-rate curves (PNG) from its log.jsonl"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder holding log.jsonl")
    p.add_argument("--output", help="folder for the PNGs (default: the run folder)")


def read_log(run_dir: str) -> tuple[dict[int, dict], dict[int, float]]:
    steps: dict[int, dict] = {}
    val: dict[int, float] = {}
    with io.open_input(io.join(run_dir, "log.jsonl")) as f:
        for line in f.read().decode("utf-8").splitlines():
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
    ax.set_title(io.basename(io.absolute(run_dir)))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(_save(fig, io.join(out_dir, "loss.png")))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(xs, [steps[s]["lr"] for s in xs])
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(_save(fig, io.join(out_dir, "lr.png")))
    plt.close(fig)
    return paths


def _save(fig, path: str) -> str:
    buf = _bytes_io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    io.write_bytes(buf.getvalue(), path)
    return path


def run(args: argparse.Namespace) -> int:
    for p in plot(args.run, args.output):
        print(p)
    return 0
