"""Sharded checkpoints: complete or absent, resumable at any step, on a local disk or an object store.

One call saves or restores every part of a run, as torchtitan's checkpointer does: a
:class:`Checkpointer` holds the run's ``Stateful`` parts (objects with ``state_dict()`` and
``load_state_dict()``) by name, ``{"train_state": trainer, "model": ..., "optimizer": ...,
"schedule": ..., "loader": ...}``, of two kinds:
  - **sharded** ones (:class:`ShardedState`: the model and the optimiser, :class:`ModelState`,
    :class:`OptimizerState`), written by ``torch.distributed.checkpoint`` (each rank writes its
    own shards; reloadable at another world size),
  - **replicated** ones (the schedule, the loader, the trainer's counters: small, JSON-able and
    the same on every rank at a step boundary), written once, into the manifest.

Layout of a run: ``<run>/checkpoints/step-00000100/`` holding DCP's files, ``rng-rank<r>.pt``
(each rank's torch RNG states) and ``manifest.json``, written last by rank 0 once every rank's
files are written: the step, the replicated states (under ``"trainer"``) and the size of every
file of the checkpoint. A checkpoint is complete exactly when its manifest exists.

Object stores have no rename, so there is no temporary folder to rename: every file goes
straight to its final name (one upload each, which appears whole or not at all) and the
manifest, written last, is what makes the folder a checkpoint. A crash mid-save leaves a folder
without a manifest: ignored, and replaced when that step is saved again; the previous checkpoint
stays the latest complete one. Pruning deletes an old checkpoint's manifest first. On an object
store DCP writes through fsspec (s3fs, gcsfs, adlfs), its ``.metadata`` straight to its name
too; locally through DCP's own file-system writer. The folder must be one every rank reaches
(an object store, a shared file system, or a local disk for one machine).

Loading never unpickles code (:class:`_WeightsOnlyLoadPlanner`). A path that is not a usable
checkpoint raises :class:`CheckpointError`.
"""

from __future__ import annotations

import io as _bytes_io
import pickle
import re
import warnings
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful

from storage import io
from storage.errors import UserError

_STEP_DIR = re.compile(r"^step-(\d{8})$")
MANIFEST = "manifest.json"


class CheckpointError(UserError):
    """A path that is not a usable checkpoint: no manifest (incomplete or not one), no run
    config beside it, or files that cannot be read."""


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


class _WeightsOnlyLoadPlanner(DefaultLoadPlanner):
    """DCP's default planner unpickles non-tensor items with ``weights_only=False``; a crafted
    checkpoint could run code that way. Load them as weights only (tensors, numbers, containers)."""

    def load_bytes(self, read_item, value) -> None:  # type: ignore[override]
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def _dcp_load(states: dict[str, Any], path: str) -> None:
    """DCP's load of ``states`` from ``path``, weights only; a file it cannot read is the checkpoint's fault."""
    try:
        dcp.load(states, storage_reader=_reader(path), planner=_WeightsOnlyLoadPlanner())
    except (CheckpointException, OSError, EOFError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path}: its files cannot be read ({str(e).strip().splitlines()[-1]})") from e


# --------------------------------------------------------------------------------------------
# The sharded parts of a run


class ShardedState(Stateful):
    """A part each rank holds its own shards of: saved and loaded by DCP, not in the manifest."""


class ModelState(ShardedState):
    """A model (plain or FSDP-sharded) as a DCP state: each rank saves and loads its own shards."""

    def __init__(self, model: nn.Module):
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        return get_model_state_dict(self.model)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_model_state_dict(self.model, state_dict, options=StateDictOptions(strict=True))


class OptimizerState(ShardedState):
    """An optimiser's state keyed by parameter names (so it reloads at another world size)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer

    def state_dict(self) -> dict[str, Any]:
        return get_optimizer_state_dict(self.model, self.optimizer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_optimizer_state_dict(self.model, self.optimizer, state_dict)


# --------------------------------------------------------------------------------------------
# Saving and restoring a run


class PendingSave:
    """A checkpoint being written in the background; ``finish()`` (collective) waits for the
    write and then commits it (the manifest, then pruning)."""

    def __init__(self, future, run_dir: str, step: int, path: str, replicated: dict[str, Any], keep: int):
        self.future, self.run_dir, self.step, self.final = future, run_dir, step, path
        self.replicated, self.keep = replicated, keep

    def done(self) -> bool:
        """This rank's part is written (no collective; see :meth:`Checkpointer.commit_if_written`)."""
        return self.future is None or self.future.done()

    def finish(self) -> str:
        if self.future is not None:
            self.future.result()
        _barrier()
        if _rank() == 0:
            files = io.file_sizes(self.final)
            io.write_json({"step": self.step, "trainer": self.replicated, "files": files}, io.join(self.final, MANIFEST))
            if self.keep > 0:
                for old in list_checkpoints(self.run_dir)[:-self.keep]:
                    _remove_checkpoint(old)
        _barrier()
        return self.final


def _remove_checkpoint(path: str) -> None:
    io.remove(io.join(path, MANIFEST))  # first: from now on it is not a checkpoint
    io.remove_tree(path)


class Checkpointer:
    """Saves and restores every ``Stateful`` part of a run, by name, with one call.

    ``save(step)`` writes a checkpoint of them all; with ``async_save`` (the default of the
    trainer, as the report saves "often and asynchronously") the sharded parts are staged to CPU
    memory, written by a thread, and committed (manifest, pruning) later: by
    :meth:`commit_if_written` once every rank reports its part written, by the next save, or by
    :meth:`finish`. Until then the previous checkpoint stays the latest complete one. Keeps the
    newest ``keep`` checkpoints (0 keeps all). ``load(path)`` restores every part.
    """

    def __init__(self, run_dir: str, states: dict[str, Stateful], keep: int = 2, async_save: bool = True):
        self.run_dir, self.keep = run_dir, keep
        self.sharded = {name: part for name, part in states.items() if isinstance(part, ShardedState)}
        self.replicated = {name: part for name, part in states.items() if not isinstance(part, ShardedState)}
        # Background saves run their collectives on a gloo group of their own (torchtitan does
        # the same), so they never interleave with training's.
        self.async_group = dist.new_group(backend="gloo") if async_save else None
        self.pending: list[PendingSave] = []

    def save(self, step: int, final: bool = False) -> str:
        """Checkpoint every part at ``step`` (``final``: synchronously, committed on return);
        returns the checkpoint's folder."""
        self.finish()
        path = checkpoint_dir(self.run_dir, step)
        if _rank() == 0 and io.listdir(path):  # a re-save of this step, or what a crash mid-save left
            _remove_checkpoint(path)
        io.makedirs(path)
        _barrier()
        _save_rng(path)
        # JSON of the replicated parts now: a background save commits the state of this step.
        replicated = {name: part.state_dict() for name, part in self.replicated.items()}
        if self.async_group is not None and not final:
            future = dcp.async_save(self.sharded, storage_writer=_writer(path), process_group=self.async_group)
            self.pending.append(PendingSave(future, self.run_dir, step, path, replicated, self.keep))
            return path
        dcp.save(self.sharded, storage_writer=_writer(path))
        return PendingSave(None, self.run_dir, step, path, replicated, self.keep).finish()

    def writing(self) -> float:
        """1.0 while this rank still writes a background save (the trainer sums it over ranks)."""
        return float(bool(self.pending) and not self.pending[0].done())

    def commit_if_written(self, ranks_writing: float) -> None:
        """Commit a background save once no rank writes it any more (``ranks_writing`` is the
        sum of :meth:`writing` over the ranks, agreed in one all-reduce)."""
        if self.pending and ranks_writing == 0:
            self.pending.pop().finish()

    def finish(self) -> None:
        """Wait for and commit the save in flight, if any (collective)."""
        while self.pending:
            self.pending.pop().finish()

    def load(self, path: str) -> int:
        """Restore every part (and this rank's RNG) from checkpoint ``path``; returns its step."""
        state = read_trainer_state(path)  # refuses an incomplete checkpoint before reading it
        _dcp_load(self.sharded, path)
        for name, part in self.replicated.items():
            if name not in state:
                raise CheckpointError(f"{path}: its manifest holds no {name!r} state (written by another trainer?)")
            part.load_state_dict(state[name])
        _load_rng(path)
        return int(state["step"])


def _save_rng(path: str) -> None:
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    buf = _bytes_io.BytesIO()
    torch.save(rng, buf)
    io.write_bytes(buf.getvalue(), io.join(path, f"rng-rank{_rank()}.pt"))


def _load_rng(path: str) -> None:
    rng_path = io.join(path, f"rng-rank{_rank()}.pt")
    if io.exists(rng_path):
        with io.open_input(rng_path) as f:
            rng = torch.load(_bytes_io.BytesIO(f.read()), weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])


def read_trainer_state(path: str) -> dict[str, Any]:
    """``{"step": ..., **replicated states}`` of a complete checkpoint."""
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MANIFEST})")
    manifest = io.read_json(io.join(path, MANIFEST))
    trainer = manifest["trainer"]
    if "train_state" not in trainer and "tokens" in trainer:  # written before the trainer's counters were a part of their own
        trainer = {**trainer, "train_state": {"step": manifest["step"], "tokens": trainer["tokens"]}}
    return {"step": manifest["step"], **trainer}


# --------------------------------------------------------------------------------------------
# Weights alone: starting a run from another, exporting, generating


def load_model_weights(model: nn.Module, path: str) -> None:
    """Only the weights of checkpoint ``path`` into ``model`` (plain or FSDP-wrapped, any world
    size, with or without a process group): how SFT/DPO and export start from a trained model."""
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MANIFEST})")
    _dcp_load({"model": ModelState(model)}, path)


def resolve_checkpoint(path: str) -> tuple[str, dict[str, Any]]:
    """(checkpoint folder, the run's config.json) for a complete checkpoint folder or a run folder
    (its latest complete checkpoint); local paths or object-store URIs."""
    ckpt = io.absolute(path)
    if not is_complete(ckpt):
        ckpt = latest_checkpoint(ckpt) or ""
        if not ckpt:
            raise CheckpointError(f"{path}: neither a checkpoint nor a run folder with one")
    config = io.join(io.parent(io.parent(ckpt)), "config.json")
    if not io.exists(config):
        raise CheckpointError(f"{ckpt}: no {config} beside it (the run's config names the model)")
    return ckpt, io.read_json(config)


def load_model(path: str, device: Any = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A plain (unsharded) model with the weights of a checkpoint or run, in eval mode, and the
    run's config."""
    from training.model import ModelConfig, Transformer

    ckpt, run_cfg = resolve_checkpoint(path)
    model = Transformer(ModelConfig(**run_cfg["resolved"]["model"]))
    with warnings.catch_warnings():  # "torch.distributed is disabled ... single process": intended here
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        load_model_weights(model, ckpt)
    return model.to(device).eval(), run_cfg
