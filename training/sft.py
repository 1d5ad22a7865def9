"""Supervised fine-tuning on chat data, on the pre-training loop (``training.trainer``).

What SFT adds to pre-training is only data: conversations rendered in the report's chat format
(``training.chat``), a loss on the answer tokens alone (``labels`` = -100 elsewhere), and rows
that hold several whole conversations which never attend to each other (``segment_ids`` and
``position_ids`` restarting per conversation). :class:`ChatLoader` is a data source for
``training.trainer.train`` like the pre-training loader, so the loop, optimizer, schedule,
checkpoints, logs and launchers are the trainer's own.

Recipe (DeepSeek LLM report, section 5.1): 7B 4 epochs at LR 1e-5, 67B 2 epochs at 5e-6; loss
only on answers. The second stage (conversational data only, to bring down the repetition that
math-heavy SFT data caused) is the same run again from the first stage's checkpoint with
``--data`` naming conversational files only.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch

from storage import io
from training.chat import ChatBatch, TokenizedChat, collate, pack
from training.data import IGNORE_INDEX

IGNORE = IGNORE_INDEX  # label of tokens without loss (prompts, padding)


@dataclass
class SFTConfig:
    run_dir: str = "runs/sft"
    # The checkpoint (or run folder: its latest checkpoint) whose weights start SFT.
    init_from: str = ""
    # Report section 5.1, the 7B model: "4 epochs", "learning rate 1e-5" (67B: 2 epochs, 5e-6).
    epochs: int = 4
    lr: float = 1e-5
    # The report names no SFT schedule; a short warm-up, then cosine decay to 10% (as its DPO).
    schedule: str = "cosine"
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    # AdamW of pre-training (report section 2.3); weight decay 0.1, clipping 1.0.
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # Conversations are packed into rows of this many tokens (block-diagonal attention);
    # 0: the starting run's sequence length (what the model was trained on). Longer
    # conversations are dropped (too_long). packing=False gives each conversation a row of its own.
    seq_len: int = 0
    packing: bool = True
    # Rows per micro-batch per rank, and rows per optimizer step over all ranks (accumulated).
    # The report gives no SFT batch size.
    micro_batch: int = 4
    batch_rows: int = 32
    # Held-out share of conversations for the before/after answer loss (decided by a hash).
    held_out_fraction: float = 0.05
    checkpoint_every: int = 1000
    eval_every: int = 100
    eval_batches: int = 50
    seed: int = 0
    dtype: str = "auto"
    # Torch threads per worker (0: torch's default); the Ray launcher sets it per worker.
    cpu_threads: int = 0
    progress: bool = True
    # Tokenised example shards (``pipelines.sft`` writes them; columns of EXAMPLE_SCHEMA).
    data: list[str] = field(default_factory=list)


EXAMPLE_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("input_ids", pa.list_(pa.uint32())),
    ("loss_mask", pa.list_(pa.bool_())),
    ("held_out", pa.bool_()),
])


def examples_table(keys: Sequence[str], examples: Sequence[TokenizedChat], held_out: Sequence[bool]) -> pa.Table:
    return pa.table({
        "key": pa.array(list(keys), pa.string()),
        "input_ids": pa.array([e.input_ids.astype(np.uint32) for e in examples], pa.list_(pa.uint32())),
        "loss_mask": pa.array([e.loss_mask for e in examples], pa.list_(pa.bool_())),
        "held_out": pa.array(list(held_out), pa.bool_()),
    }, schema=EXAMPLE_SCHEMA)


def read_examples(paths: Sequence[str]) -> tuple[list[TokenizedChat], list[TokenizedChat]]:
    """(train, held-out) examples from shards, in path then row order (deterministic)."""
    train, held = [], []
    for path in sorted(paths):
        t = io.read_parquet(path)
        ids = t.column("input_ids").to_pylist()
        masks = t.column("loss_mask").to_pylist()
        for i, m, h in zip(ids, masks, t.column("held_out").to_pylist()):
            (held if h else train).append(TokenizedChat(np.asarray(i, dtype=np.int32), np.asarray(m, dtype=bool)))
    return train, held


def labels_for(batch: ChatBatch) -> np.ndarray:
    """Next-token targets (B, T): ``labels[t] = ids[t+1]`` where ``t+1`` is an answer token,
    else -100; the last position has no target. Padding and prompts never carry loss."""
    ids, mask = batch.input_ids, batch.loss_mask
    labels = np.full_like(ids, IGNORE)
    same = batch.segment_ids[:, 1:] == batch.segment_ids[:, :-1]
    take = mask[:, 1:] & same
    labels[:, :-1] = np.where(take, ids[:, 1:], IGNORE)
    return labels


def to_trainer_batch(batch: ChatBatch, device: Any = None) -> dict[str, torch.Tensor]:
    """The trainer's batch dict; ``segment_ids`` + ``position_ids`` make attention block-diagonal."""
    t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    return {
        "input_ids": t(batch.input_ids),
        "labels": t(labels_for(batch)),
        "position_ids": t(batch.positions),
        "segment_ids": t(batch.segment_ids),
    }


class ChatLoader:
    """Packed chat rows as a ``training.trainer`` data source.

    Rows are built once (greedy packing in input order, deterministic), then each epoch visits
    them in an order drawn from ``seed`` and the epoch number; rank ``r`` of ``w`` takes every
    ``w``-th row of that order, so the global batch does not depend on the number of workers
    beyond its split. ``state_dict`` is the position, so a resumed run continues where it was.
    """

    def __init__(self, examples: Sequence[TokenizedChat], seq_len: int, micro_batch: int, pad_id: int,
                 *, rank: int = 0, world_size: int = 1, seed: int = 0, packing: bool = True, shuffle: bool = True, loop: bool = True):
        self.rows = pack(examples, seq_len, pad_id, packing=packing)
        self.loop = loop
        if not self.rows:
            raise ValueError("no conversations to train on")
        self.micro_batch, self.rank, self.world, self.seed, self.shuffle = micro_batch, rank, world_size, seed, shuffle
        self.epoch = 0
        self.cursor = 0  # index into this rank's rows of the current epoch

    def _order(self, epoch: int) -> list[int]:
        idx = np.arange(len(self.rows))
        if self.shuffle:
            idx = np.random.default_rng([self.seed, epoch]).permutation(idx)
        mine = idx[self.rank :: self.world]
        return mine.tolist() or idx[:1].tolist()

    def next_batch(self) -> dict[str, torch.Tensor]:
        order = self._order(self.epoch)
        take: list[ChatBatch] = []
        while len(take) < self.micro_batch:
            if self.cursor >= len(order):
                if not self.loop:  # evaluation: one pass, a short last batch, then stop
                    if take:
                        break
                    raise StopIteration
                self.epoch += 1
                self.cursor = 0
                order = self._order(self.epoch)
            take.append(self.rows[order[self.cursor]])
            self.cursor += 1
        return to_trainer_batch(collate(take))

    def __iter__(self):
        """One pass over this rank's rows in order (evaluation)."""
        order = self._order(0) if self.shuffle else list(range(self.rank, len(self.rows), self.world))
        for i in range(0, len(order), self.micro_batch):
            yield to_trainer_batch(collate([self.rows[j] for j in order[i : i + self.micro_batch]]))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


@torch.no_grad()
def answer_loss(model: torch.nn.Module, examples: Sequence[TokenizedChat], pad_id: int, *, seq_len: int = 2048, micro_batch: int = 8, device: Any = "cpu") -> tuple[float, int]:
    """Mean cross-entropy per answer token on ``examples`` (held-out), and the token count."""
    from training.trainer import causal_lm_loss

    was = model.training
    model.eval()
    total, n = 0.0, 0
    rows = pack(examples, seq_len, pad_id, packing=True)
    for i in range(0, len(rows), micro_batch):
        loss, count = causal_lm_loss(model, to_trainer_batch(collate(rows[i : i + micro_batch]), device))
        total += float(loss)
        n += int(count)
    model.train(was)
    return total / max(1, n), n


def split_held_out(keys: Sequence[str], fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out items, decided per item by a hash of its key (stable whatever
    the order or number of files)."""
    import xxhash

    if fraction <= 0:
        return np.zeros(len(keys), dtype=bool)
    cut = int(fraction * 2**32)
    return np.array([xxhash.xxh32_intdigest(k.encode("utf-8"), seed=seed) < cut for k in keys], dtype=bool)


# --------------------------------------------------------------------------------------------
# Checkpoints and runs


def resolve_checkpoint(path: str) -> tuple[str, dict[str, Any]]:
    """(checkpoint folder, the run's config.json) for a complete checkpoint folder or a run folder
    (its latest complete checkpoint); local paths or object-store URIs."""
    from training.checkpoint import is_complete, latest_checkpoint

    ckpt = io.absolute(path)
    if not is_complete(ckpt):
        ckpt = latest_checkpoint(ckpt) or ""
        if not ckpt:
            raise FileNotFoundError(f"{path}: neither a checkpoint nor a run folder with one")
    run_dir = io.parent(io.parent(ckpt))
    return ckpt, io.read_json(io.join(run_dir, "config.json"))


def context_length(run_cfg: dict[str, Any], seq_len: int = 0) -> int:
    """The one sequence length of a fine-tuning run: ``seq_len`` when given, else the starting
    run's (what its model was trained on), else its model's context. Dropping long examples
    (``too_long``), packing and the trainer's batches all use it."""
    from training.model import model_config

    return seq_len or run_cfg.get("resolved", {}).get("seq_len") or model_config(run_cfg["model"]).max_seq_len


def load_model(path: str, device: Any = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """A plain (unsharded) model with the weights of a checkpoint or run, in eval mode."""
    from training.checkpoint import load_model_weights
    from training.model import Transformer, model_config

    ckpt, run_cfg = resolve_checkpoint(path)
    model = Transformer(model_config(run_cfg["model"], vocab_size=run_cfg["vocab_size"]))
    with warnings.catch_warnings():  # "torch.distributed is disabled ... single process": intended here
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        load_model_weights(model, ckpt)
    return model.to(device).eval(), run_cfg


def train_config_for(cfg: SFTConfig, run_cfg: dict[str, Any], rows: int, world_size: int) -> Any:
    """The trainer's config for an SFT run over ``rows`` packed rows: model and vocabulary of the
    starting run, ``epochs`` passes, batches counted in rows of ``seq_len`` tokens."""
    from training.trainer import TrainConfig

    seq_len = context_length(run_cfg, cfg.seq_len)
    per_step = max(cfg.micro_batch * world_size, cfg.batch_rows // (cfg.micro_batch * world_size) * cfg.micro_batch * world_size)
    steps = cfg.epochs * max(1, math.ceil(rows / per_step))
    return TrainConfig(
        run_dir=cfg.run_dir, model=run_cfg["model"], vocab_size=run_cfg["vocab_size"], seq_len=seq_len,
        micro_batch=cfg.micro_batch, batch_tokens=per_step * seq_len, train_tokens=steps * per_step * seq_len,
        lr=cfg.lr, warmup_steps=cfg.warmup_steps, schedule=cfg.schedule, min_lr_ratio=cfg.min_lr_ratio,
        weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, seed=cfg.seed, dtype=cfg.dtype,
        checkpoint_every=cfg.checkpoint_every, eval_every=cfg.eval_every, eval_batches=cfg.eval_batches,
        init_from=resolve_checkpoint(cfg.init_from)[0], progress=cfg.progress, resume=True, cpu_threads=cfg.cpu_threads,
    )


def train_sft(cfg: SFTConfig, train_examples: Sequence[TokenizedChat], val_examples: Sequence[TokenizedChat], pad_id: int) -> dict[str, Any]:
    """Fine-tune ``cfg.init_from`` on the conversations with the trainer's loop (runs in every
    worker); held-out answer loss before and after is in the summary."""
    from training.parallelize import close_distributed, init_distributed
    from training.trainer import train

    _, run_cfg = resolve_checkpoint(cfg.init_from)
    env = init_distributed()
    try:
        seq_len = context_length(run_cfg, cfg.seq_len)
        loader = ChatLoader(train_examples, seq_len, cfg.micro_batch, pad_id, rank=env.rank, world_size=env.world_size, seed=cfg.seed, packing=cfg.packing)
        val = (lambda: ChatLoader(val_examples, seq_len, cfg.micro_batch, pad_id, rank=env.rank, world_size=env.world_size, shuffle=False, loop=False)) if val_examples else None
        tcfg = train_config_for(cfg, run_cfg, len(loader.rows), env.world_size)
        before = _held_out_loss(tcfg.init_from, val_examples, pad_id, seq_len, env) if val_examples else None
        summary = train(tcfg, loader=loader, val_loader=val, env=env)
        after = _held_out_loss(summary["checkpoint"], val_examples, pad_id, seq_len, env) if val_examples else None
        summary.update(held_out_answer_loss_before=before, held_out_answer_loss_after=after, rows=len(loader.rows),
                       answer_tokens=int(sum(e.loss_mask.sum() for e in train_examples)),
                       train_conversations=len(train_examples), held_out_conversations=len(val_examples))
        if env.is_main:
            io.write_json({k: v for k, v in summary.items() if k != "losses"} | {"last_loss": summary["losses"][-1] if summary["losses"] else None},
                          io.join(cfg.run_dir, "sft.json"))
        return summary
    finally:
        close_distributed(env)


def _held_out_loss(ckpt: str, examples: Sequence[TokenizedChat], pad_id: int, seq_len: int, env: Any) -> float:
    # Every rank loads and scores (the checkpoint read is collective); the held-out set is small.
    model, _ = load_model(ckpt, env.device)
    return answer_loss(model, examples, pad_id, seq_len=seq_len, device=env.device)[0]


def main(config: dict[str, Any]) -> dict[str, Any]:
    """Per-worker entry of the launchers (``pipelines.pretrain.launch``): config dict -> SFT run.

    ``pad_id`` (the end token id) comes with the config; the rest are :class:`SFTConfig` fields.
    Writes ``<run>/sft.json`` (held-out answer loss before and after) from rank 0.
    """
    config = dict(config)
    pad_id = int(config.pop("pad_id"))
    cfg = SFTConfig(**config)
    train, held = read_examples(cfg.data)
    return train_sft(cfg, train, held, pad_id)


if __name__ == "__main__":
    # torchrun -m training.sft <config.json>
    main(io.read_json(sys.argv[1]))
