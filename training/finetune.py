"""The one fine-tuning core: SFT and DPO are recipes on it.

A fine-tune is the pre-training loop (``training.trainer``) started from a checkpoint's
weights, on examples instead of token shards, for a number of epochs. What every fine-tune
shares lives here:

- ``FinetuneConfig`` (in ``training.config``), the settings of any fine-tune (``SFTConfig`` and ``DPOConfig``
  extend it with their own and their recipe's defaults);
- :class:`EpochLoader`, examples visited epoch after epoch in a seeded order, split over the
  ranks, batched, with its position as its state (so a resumed run continues where it was);
- :func:`train_config`, the trainer's config of a fine-tune (steps from epochs);
- :func:`finetune`, the run: held-out evaluation of the starting weights, training, held-out
  evaluation of the final ones, and ``<run>/<recipe>.json``;
- :func:`main`, the per-worker entry the launchers call.

A :class:`Recipe` adds what is particular to its method: its data (read from ``cfg.data``),
its loaders' batches, its loss and its held-out figures. ``training.sft.SFT`` and
``training.dpo.DPO`` are the two.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from storage import io
from training.config import FinetuneConfig


def context_length(run_cfg: dict[str, Any], seq_len: int = 0) -> int:
    """The one sequence length of a fine-tuning run: ``seq_len`` when given, else the starting
    run's (what its model was trained on), else its model's context. Dropping long examples
    (``too_long``), packing and the trainer's batches all use it."""
    from training.model import model_config

    return seq_len or run_cfg.get("resolved", {}).get("seq_len") or model_config(run_cfg["model"]).max_seq_len


class EpochLoader:
    """Examples (packed rows, preference pairs) as a ``training.trainer`` data source.

    Each epoch visits them in an order drawn from ``seed`` and the epoch number; rank ``r`` of
    ``w`` takes every ``w``-th example of that order, so the global batch does not depend on the
    number of workers beyond its split. ``state_dict`` is the position. With ``loop=False``
    (evaluation) one pass ends with a short last batch, then ``StopIteration``. A subclass says
    how indices become a batch dict (:meth:`batch`).
    """

    empty = "no examples to train on"

    def __init__(self, items: Sequence[Any], micro_batch: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, loop: bool = True):
        if not items:
            raise ValueError(self.empty)
        self.items = list(items)
        self.micro_batch, self.rank, self.world, self.seed, self.shuffle, self.loop = micro_batch, rank, world_size, seed, shuffle, loop
        self.epoch = 0
        self.cursor = 0  # index into this rank's examples of the current epoch

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, which: Sequence[int]) -> dict[str, Any]:
        raise NotImplementedError

    def _order(self, epoch: int) -> list[int]:
        idx = np.arange(len(self.items))
        if self.shuffle:
            idx = np.random.default_rng([self.seed, epoch]).permutation(idx)
        return idx[self.rank :: self.world].tolist() or idx[:1].tolist()

    def next_batch(self) -> dict[str, Any]:
        order = self._order(self.epoch)
        take: list[int] = []
        while len(take) < self.micro_batch:
            if self.cursor >= len(order):
                if not self.loop:
                    if take:
                        break
                    raise StopIteration
                self.epoch += 1
                self.cursor = 0
                order = self._order(self.epoch)
            take.append(order[self.cursor])
            self.cursor += 1
        return self.batch(take)

    def __iter__(self):
        """One pass over this rank's examples (evaluation)."""
        order = self._order(0) if self.shuffle else list(range(self.rank, len(self.items), self.world))
        for i in range(0, len(order), self.micro_batch):
            yield self.batch(order[i : i + self.micro_batch])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


def train_config(cfg: FinetuneConfig, run_cfg: dict[str, Any], checkpoint: str, seq_len: int, examples: int, world_size: int,
                 held_out: bool) -> Any:
    """The trainer's config for a fine-tune over ``examples`` examples: model and vocabulary of
    the starting run, ``epochs`` passes. The trainer counts batches in rows of ``seq_len``
    tokens; here a "row" is one example (a packed row for SFT, a pair for DPO)."""
    from training.config import TrainConfig

    unit = cfg.micro_batch * world_size
    per_step = max(1, cfg.step_examples() // unit) * unit
    steps = cfg.epochs * max(1, math.ceil(examples / per_step))
    return TrainConfig(
        run_dir=cfg.run_dir, model=run_cfg["model"], vocab_size=run_cfg["vocab_size"], seq_len=seq_len,
        micro_batch=cfg.micro_batch, batch_tokens=per_step * seq_len, train_tokens=steps * per_step * seq_len,
        lr=cfg.lr, warmup_steps=cfg.warmup_steps, schedule=cfg.schedule, min_lr_ratio=cfg.min_lr_ratio,
        weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, seed=cfg.seed, dtype=cfg.dtype,
        checkpoint_every=cfg.checkpoint_every, eval_every=cfg.eval_every if held_out else 0, eval_batches=cfg.eval_batches,
        init_from=checkpoint, progress=cfg.progress, resume=True, cpu_threads=cfg.cpu_threads,
    )


class Recipe:
    """What a fine-tuning method adds to the core. ``__init__`` reads the data (in every worker);
    :meth:`setup` builds, on the worker's ranks, ``loader`` (an :class:`EpochLoader`),
    ``make_val`` (a factory of held-out loaders, or None without held-out examples) and
    ``loss_fn`` (None: the trainer's next-token loss)."""

    name = ""  # the summary is <run>/<name>.json
    config: type[FinetuneConfig] = FinetuneConfig

    def __init__(self, cfg: FinetuneConfig, pad_id: int):
        self.cfg, self.pad_id = cfg, pad_id
        self.loader: EpochLoader | None = None
        self.make_val = None
        self.loss_fn = None

    def setup(self, env: Any, checkpoint: str, seq_len: int) -> None:
        raise NotImplementedError

    def held_out(self, model: Any, start: bool) -> Any:
        """The held-out figures of ``model`` (``start``: the starting weights)."""
        raise NotImplementedError

    def summary(self, before: Any, after: Any) -> dict[str, Any]:
        """What the recipe adds to the run's summary."""
        raise NotImplementedError


def finetune(recipe: Recipe) -> dict[str, Any]:
    """Fine-tune ``recipe.cfg.init_from`` with the trainer's loop (runs in every worker); the
    held-out figures before and after are in the summary, written to ``<run>/<name>.json``."""
    from training.checkpoint import load_model, resolve_checkpoint
    from training.parallelize import close_distributed, init_distributed
    from training.trainer import train, write_summary

    cfg = recipe.cfg
    checkpoint, run_cfg = resolve_checkpoint(cfg.init_from)
    env = init_distributed()
    try:
        seq_len = context_length(run_cfg, cfg.seq_len)
        recipe.setup(env, checkpoint, seq_len)
        held_out = recipe.make_val is not None
        tcfg = train_config(cfg, run_cfg, checkpoint, seq_len, len(recipe.loader), env.world_size, held_out)

        # Every rank loads and scores (the checkpoint read is collective); the held-out set is small.
        def score(path: str, start: bool) -> Any:
            return recipe.held_out(load_model(path, env.device)[0], start) if held_out else None

        before = score(checkpoint, True)
        summary = train(tcfg, loader=recipe.loader, val_loader=recipe.make_val, loss_fn=recipe.loss_fn, env=env, name=recipe.name)
        summary.update(recipe.summary(before, score(summary["checkpoint"], False)))
        if env.is_main:
            write_summary(summary, io.join(cfg.run_dir, f"{recipe.name}.json"))
        return summary
    finally:
        close_distributed(env)


def main(recipe: type[Recipe], config: dict[str, Any]) -> dict[str, Any]:
    """Per-worker entry of the launchers (``pipelines.pretrain.launch``): ``pad_id`` (the end
    token id) and the recipe's config fields -> :func:`finetune`."""
    config = dict(config)
    pad_id = int(config.pop("pad_id"))
    return finetune(recipe(recipe.config(**config), pad_id))
