"""Sharded checkpoints: complete or absent, resumable at any step, on a local disk or an object store.

Layout of a run: ``<run>/checkpoints/step-00000100/`` holding
  - the model and optimiser, written by ``torch.distributed.checkpoint`` (each rank writes its
    own shards; reloadable at another world size),
  - ``rng-rank<r>.pt``: each rank's torch RNG states,
  - ``manifest.json``, written last by rank 0 once every rank's files are written: the step, the
    trainer state (schedule, loader, counters; the same on every rank) and the size of every
    file of the checkpoint. A checkpoint is complete exactly when its manifest exists.

Object stores have no rename, so there is no temporary folder to rename: every file goes
straight to its final name (one upload each, which appears whole or not at all) and the
manifest, written last, is what makes the folder a checkpoint. A crash mid-save leaves a folder
without a manifest: ignored, and replaced when that step is saved again; the previous checkpoint
stays the latest complete one. Pruning deletes an old checkpoint's manifest first. On an object
store DCP writes through fsspec (s3fs, gcsfs, adlfs), its ``.metadata`` straight to its name
too; locally through DCP's own file-system writer. The folder must be one every rank reaches
(an object store, a shared file system, or a local disk for one machine).
"""

from __future__ import annotations

import io as _bytes_io
import pickle
import re
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict, set_model_state_dict, set_state_dict

from storage import io

_STEP_DIR = re.compile(r"^step-(\d{8})$")
MANIFEST = "manifest.json"


def checkpoint_dir(run_dir: str, step: int) -> str:
    return io.join(run_dir, "checkpoints", f"step-{step:08d}")


def is_complete(path: str) -> bool:
    """A checkpoint folder whose manifest was written (all its files are there)."""
    return io.exists(io.join(path, MANIFEST))


def list_checkpoints(run_dir: str) -> list[str]:
    """Complete checkpoints of a run, oldest first (folders without a manifest are skipped)."""
    root = io.join(run_dir, "checkpoints")
    names = [n for n in io.listdir(root) if _STEP_DIR.match(n)]
    return [io.join(root, n) for n in names if is_complete(io.join(root, n))]


def latest_checkpoint(run_dir: str) -> str | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


class _ObjectStoreWriter(FsspecWriter):
    """DCP's fsspec writer, with its ``.metadata`` written straight to its name: the stock
    ``finish`` writes ``.metadata.tmp`` and renames it, which an object store can only mimic
    with a copy and a delete. Completeness comes from our manifest, written after this."""

    def finish(self, metadata, results) -> None:  # type: ignore[override]
        from torch.distributed.checkpoint.filesystem import CURRENT_DCP_VERSION

        metadata.version = CURRENT_DCP_VERSION
        metadata.storage_data = {wr.index: wr.storage_data for wrs in results for wr in wrs}
        metadata.storage_meta = self.storage_meta()
        with self.fs.create_stream(self._get_metadata_path(), "wb") as f:
            pickle.dump(metadata, f)


def _writer(path: str):
    # An upload is durable when it completes: no fsync (which fsspec files lack, so DCP would
    # fall back to os.sync() of the whole machine).
    return _ObjectStoreWriter(path, sync_files=False) if io.is_object_store(path) else dcp.FileSystemWriter(path)


def _reader(path: str):
    return FsspecReader(path) if io.is_object_store(path) else dcp.FileSystemReader(path)


class PendingSave:
    """A checkpoint being written in the background; ``finish()`` (collective) waits for the
    write and then commits it (the manifest, then pruning)."""

    def __init__(self, future, run_dir: str, step: int, path: str, trainer_state: dict[str, Any], keep: int):
        self.future, self.run_dir, self.step, self.final = future, run_dir, step, path
        self.trainer_state, self.keep = trainer_state, keep

    def done(self) -> bool:
        """This rank's part is written (no collective; see ``training.trainer`` for the agreement)."""
        return self.future is None or self.future.done()

    def finish(self) -> str:
        if self.future is not None:
            self.future.result()
        _barrier()
        if _rank() == 0:
            files = io.file_sizes(self.final)
            io.write_json({"step": self.step, "trainer": self.trainer_state, "files": files}, io.join(self.final, MANIFEST))
            if self.keep > 0:
                for old in list_checkpoints(self.run_dir)[:-self.keep]:
                    _remove_checkpoint(old)
        _barrier()
        return self.final


def _remove_checkpoint(path: str) -> None:
    io.remove(io.join(path, MANIFEST))  # first: from now on it is not a checkpoint
    io.remove_tree(path)


def save_checkpoint(
    run_dir: str,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    keep: int = 2,
    async_group: Any = None,
) -> str | PendingSave:
    """Save at ``step``; ``trainer_state`` (JSON-able: schedule, loader, counters) goes into the
    manifest. Keeps the newest ``keep`` checkpoints (0 keeps all).

    With ``async_group`` (a gloo process group of its own, so the background collectives never
    interleave with training's), the state is staged to CPU memory now, written by a thread,
    and a :class:`PendingSave` is returned: call its ``finish()`` before the next save and at
    the end. Until then the previous checkpoint stays the latest complete one."""
    final = checkpoint_dir(run_dir, step)
    rank = _rank()
    if rank == 0 and io.listdir(final):  # a re-save of this step, or what a crash mid-save left
        _remove_checkpoint(final)
    io.makedirs(final)
    _barrier()
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    buf = _bytes_io.BytesIO()
    torch.save(rng, buf)
    io.write_bytes(buf.getvalue(), io.join(final, f"rng-rank{rank}.pt"))
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optimizer": optim_sd}
    if async_group is not None:
        future = dcp.async_save(state, storage_writer=_writer(final), process_group=async_group)
        return PendingSave(future, run_dir, step, final, trainer_state, keep)
    dcp.save(state, storage_writer=_writer(final))
    return PendingSave(None, run_dir, step, final, trainer_state, keep).finish()


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
    state_out = read_trainer_state(path)  # refuses an incomplete checkpoint before reading it
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optimizer": optim_sd}
    dcp.load(state, storage_reader=_reader(path), planner=_WeightsOnlyLoadPlanner())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    rng_path = io.join(path, f"rng-rank{_rank()}.pt")
    if io.exists(rng_path):
        with io.open_input(rng_path) as f:
            rng = torch.load(_bytes_io.BytesIO(f.read()), weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return state_out


def load_model_weights(model: nn.Module, path: str) -> None:
    """Only the weights of checkpoint ``path`` into ``model`` (plain or FSDP-wrapped, any world
    size, with or without a process group): how SFT/DPO and export start from a trained model."""
    if not is_complete(path):
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {MANIFEST})")
    sd = get_model_state_dict(model)
    state = {"model": sd}
    dcp.load(state, storage_reader=_reader(path), planner=_WeightsOnlyLoadPlanner())
    set_model_state_dict(model, state["model"], options=StateDictOptions(strict=True))


def read_trainer_state(path: str) -> dict[str, Any]:
    """``{"step": ..., **trainer_state}`` of a complete checkpoint."""
    if not is_complete(path):
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {MANIFEST})")
    manifest = io.read_json(io.join(path, MANIFEST))
    return {"step": manifest["step"], **manifest["trainer"]}
