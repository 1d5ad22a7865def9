"""Sharded checkpoints: complete or absent, resumable at any step.

Layout of a run: ``<run>/checkpoints/step-00000100/`` holding
  - the model and optimiser, written by ``torch.distributed.checkpoint`` (each rank writes its
    own shards; reloadable at another world size),
  - ``trainer.json``: step, schedule and loader state (the same on every rank, written once),
  - ``rng-rank<r>.pt``: each rank's torch RNG states.
Everything is written into ``.tmp-step-.../`` and renamed to ``step-...`` by rank 0 after a
barrier, so a crash mid-save leaves the previous checkpoint as the latest complete one. The
folder must be on a file system all ranks share (a local disk for one machine).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict, set_model_state_dict, set_state_dict

_STEP_DIR = re.compile(r"^step-(\d{8})$")


def checkpoint_dir(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, "checkpoints", f"step-{step:08d}")


def list_checkpoints(run_dir: str) -> list[str]:
    root = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    names = sorted(n for n in os.listdir(root) if _STEP_DIR.match(n) and os.path.exists(os.path.join(root, n, "trainer.json")))
    return [os.path.join(root, n) for n in names]


def latest_checkpoint(run_dir: str) -> str | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


class PendingSave:
    """A checkpoint being written in the background; ``finish()`` (collective) waits for the
    write and then commits it (trainer.json, rename, pruning)."""

    def __init__(self, future, run_dir: str, step: int, tmp: str, final: str, trainer_state: dict[str, Any], keep: int):
        self.future, self.run_dir, self.step, self.tmp, self.final = future, run_dir, step, tmp, final
        self.trainer_state, self.keep = trainer_state, keep

    def finish(self) -> str:
        if self.future is not None:
            self.future.result()
        _barrier()
        if _rank() == 0:
            with open(os.path.join(self.tmp, "trainer.json"), "w") as f:
                json.dump({"step": self.step, **self.trainer_state}, f)
            if os.path.exists(self.final):  # a re-save of the same step: replace it whole
                shutil.rmtree(self.final)
            os.rename(self.tmp, self.final)
            if self.keep > 0:
                for old in list_checkpoints(self.run_dir)[:-self.keep]:
                    shutil.rmtree(old, ignore_errors=True)
        _barrier()
        return self.final


def save_checkpoint(
    run_dir: str,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    keep: int = 2,
    async_group: Any = None,
) -> str | PendingSave:
    """Save at ``step``; ``trainer_state`` (JSON-able: schedule, loader, counters) is written once.
    Keeps the newest ``keep`` checkpoints (0 keeps all).

    With ``async_group`` (a gloo process group of its own, so the background collectives never
    interleave with training's), the state is staged to CPU memory now, written by a thread,
    and a :class:`PendingSave` is returned: call its ``finish()`` before the next save and at
    the end. Until then the previous checkpoint stays the latest complete one."""
    final = checkpoint_dir(run_dir, step)
    tmp = os.path.join(os.path.dirname(final), ".tmp-" + os.path.basename(final))
    rank = _rank()
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    _barrier()
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, os.path.join(tmp, f"rng-rank{rank}.pt"))
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optimizer": optim_sd}
    if async_group is not None:
        future = dcp.async_save(state, checkpoint_id=tmp, process_group=async_group)
        return PendingSave(future, run_dir, step, tmp, final, trainer_state, keep)
    dcp.save(state, checkpoint_id=tmp)
    return PendingSave(None, run_dir, step, tmp, final, trainer_state, keep).finish()


class _WeightsOnlyLoadPlanner(DefaultLoadPlanner):
    """DCP's default planner unpickles non-tensor items with ``weights_only=False``; a crafted
    checkpoint could run code that way. Load them as weights only (tensors, numbers, containers)."""

    def load_bytes(self, read_item, value) -> None:  # type: ignore[override]
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def load_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimiser and this rank's RNG from ``path``; returns the trainer state."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optimizer": optim_sd}
    dcp.load(state, checkpoint_id=path, planner=_WeightsOnlyLoadPlanner())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    rng_path = os.path.join(path, f"rng-rank{_rank()}.pt")
    if os.path.exists(rng_path):
        rng = torch.load(rng_path, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    with open(os.path.join(path, "trainer.json")) as f:
        return json.load(f)


def load_model_weights(model: nn.Module, path: str) -> None:
    """Only the weights of checkpoint ``path`` into ``model`` (plain or FSDP-wrapped, any world
    size, with or without a process group): how SFT/DPO and export start from a trained model."""
    sd = get_model_state_dict(model)
    state = {"model": sd}
    dcp.load(state, checkpoint_id=path, planner=_WeightsOnlyLoadPlanner())
    set_model_state_dict(model, state["model"], options=StateDictOptions(strict=True))


def read_trainer_state(path: str) -> dict[str, Any]:
    with open(os.path.join(path, "trainer.json")) as f:
        return json.load(f)
