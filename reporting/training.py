"""A training run's curves: loss (train and validation) against tokens, and the learning rate.

Reads ``<run>/log.jsonl`` as the trainer writes it; where a resumed run logged a step twice, the
later record wins. Writes ``loss.png`` and ``lr.png``; the run folder and the output may be local
or on an object store.
"""

from __future__ import annotations

import json

from reporting.plots import png, pyplot
from storage import io
from storage.errors import MissingInput


def read_log(run_dir: str) -> tuple[dict[int, dict], dict[int, float]]:
    """({step: its training record}, {step: validation loss}) from ``<run_dir>/log.jsonl``."""
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
    """Write ``loss.png`` and ``lr.png`` into ``out_dir`` (default: the run folder); their paths."""
    plt = pyplot()
    out_dir = out_dir or run_dir
    steps, val = read_log(run_dir)
    if not steps:
        raise MissingInput(f"{run_dir}/log.jsonl has no step records: is it a training run folder?")
    xs = sorted(steps)
    tokens = [steps[s]["tokens"] for s in xs]
    by_step_tokens = {s: steps[s]["tokens"] for s in xs}

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
    paths = [io.join(out_dir, "loss.png")]
    io.write_bytes(png(fig, dpi=110), paths[-1])

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(xs, [steps[s]["lr"] for s in xs])
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    paths.append(io.join(out_dir, "lr.png"))
    io.write_bytes(png(fig, dpi=110), paths[-1])
    return paths
