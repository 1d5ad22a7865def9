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
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from training.chat import ChatBatch, TokenizedChat, collate, pack

IGNORE = -100


@dataclass
class SFTConfig:
    # Report section 5.1, the 7B model: "4 epochs", "learning rate 1e-5" (67B: 2 epochs, 5e-6).
    epochs: int = 4
    lr: float = 1e-5
    # Conversations are packed into rows of this many tokens (block-diagonal attention).
    seq_len: int = 2048
    packing: bool = True
    # Rows per micro-batch and per optimizer step (accumulated); the report gives no SFT batch.
    micro_batch: int = 4
    batch_rows: int = 32
    # Short linear warm-up, then the trainer's schedule (the report names none for SFT).
    warmup_steps: int = 10
    # Held-out share of conversations for the before/after answer loss (deterministic by id).
    held_out_fraction: float = 0.05
    seed: int = 0


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
                 *, rank: int = 0, world_size: int = 1, seed: int = 0, packing: bool = True, shuffle: bool = True):
        self.rows = pack(examples, seq_len, pad_id, packing=packing)
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

    @property
    def rows_per_epoch(self) -> int:
        return len(self.rows)

    def steps_per_epoch(self, rows_per_step: int) -> int:
        return max(1, math.ceil(len(self.rows) / rows_per_step))

    def next_batch(self) -> dict[str, torch.Tensor]:
        order = self._order(self.epoch)
        take: list[ChatBatch] = []
        while len(take) < self.micro_batch:
            if self.cursor >= len(order):
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
    was = model.training
    model.eval()
    total, n = 0.0, 0
    rows = pack(examples, seq_len, pad_id, packing=True)
    for i in range(0, len(rows), micro_batch):
        b = to_trainer_batch(collate(rows[i : i + micro_batch]), device)
        logits = model(b["input_ids"], position_ids=b["position_ids"], segment_ids=b["segment_ids"])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), b["labels"].flatten(), ignore_index=IGNORE, reduction="sum")
        total += float(loss)
        n += int((b["labels"] != IGNORE).sum())
    model.train(was)
    return total / max(1, n), n


def split_held_out(keys: Sequence[str], fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out items, decided per item by a hash of its key (stable whatever
    the order or number of files)."""
    import xxhash

    if fraction <= 0:
        return np.zeros(len(keys), dtype=bool)
    cut = int(fraction * 2**32)
    return np.array([xxhash.xxh32_intdigest(k, seed=seed) < cut for k in keys], dtype=bool)
