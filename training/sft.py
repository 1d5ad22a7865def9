"""Supervised fine-tuning on chat data, on the pre-training loop (``training.trainer``).

What SFT adds to pre-training is only data: conversations rendered in the report's chat format
(``training.chat``), a loss on the answer tokens alone (``labels`` = -100 elsewhere), and rows
that hold several whole conversations which never attend to each other (``segment_ids`` and
``position_ids`` restarting per conversation). :class:`SFT` is that recipe on the fine-tuning
core (``training.finetune``), so the loop, optimizer, schedule, checkpoints, logs, held-out
evaluation and launchers are the core's and the trainer's own.

Recipe (DeepSeek LLM report, section 5.1): 7B 4 epochs at LR 1e-5, 67B 2 epochs at 5e-6; loss
only on answers. The second stage (conversational data only, to bring down the repetition that
math-heavy SFT data caused) is the same run again from the first stage's checkpoint with
``--data`` naming conversational files only.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch

from storage import io
from training import finetune
from training.config import SFTConfig
from training.chat import ChatBatch, TokenizedChat, collate, pack
from training.data import IGNORE_INDEX

IGNORE = IGNORE_INDEX  # label of tokens without loss (prompts, padding)


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


class ChatLoader(finetune.EpochLoader):
    """Packed chat rows as a trainer data source. Rows are built once (greedy packing in input
    order, deterministic); order, batching and state are :class:`training.finetune.EpochLoader`'s."""

    empty = "no conversations to train on"

    def __init__(self, examples: Sequence[TokenizedChat], seq_len: int, micro_batch: int, pad_id: int, *, packing: bool = True, **kw: Any):
        super().__init__(pack(examples, seq_len, pad_id, packing=packing), micro_batch, **kw)

    @property
    def rows(self) -> list[ChatBatch]:
        return self.items

    def batch(self, which: Sequence[int]) -> dict[str, torch.Tensor]:
        return to_trainer_batch(collate([self.items[i] for i in which]))


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


def record_examples(tok, rec: Any) -> tuple[list[tuple], str | None]:
    """Each conversation of an SFT record, tokenised with its answer mask (keys ``:<n>``): the
    ``examples`` of ``training.prepare.prepare_chat_file``."""
    from training.chat import conversations_from_record, tokenize_conversation

    convs, reason = conversations_from_record(rec)
    items = []
    for k, conv in enumerate(convs):
        ex = tokenize_conversation(tok, conv)
        items.append((f":{k}", ex, len(ex.input_ids), int(ex.loss_mask.sum())))
    return items, reason


def split_held_out(keys: Sequence[str], fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out items, decided per item by a hash of its key (stable whatever
    the order or number of files)."""
    import xxhash

    if fraction <= 0:
        return np.zeros(len(keys), dtype=bool)
    cut = int(fraction * 2**32)
    return np.array([xxhash.xxh32_intdigest(k.encode("utf-8"), seed=seed) < cut for k in keys], dtype=bool)


# --------------------------------------------------------------------------------------------
# The recipe on the fine-tuning core


class SFT(finetune.Recipe):
    """Packed conversations, the next-token loss on answers, the held-out answer loss."""

    name, config = "sft", SFTConfig

    def __init__(self, cfg: SFTConfig, pad_id: int, examples: tuple[Sequence[TokenizedChat], Sequence[TokenizedChat]] | None = None):
        super().__init__(cfg, pad_id)
        self.train, self.val = examples or read_examples(cfg.data)

    def setup(self, env: Any, checkpoint: str, seq_len: int) -> None:
        cfg, self.env, self.seq_len = self.cfg, env, seq_len
        ranks = {"rank": env.rank, "world_size": env.world_size}
        self.loader = ChatLoader(self.train, seq_len, cfg.micro_batch, self.pad_id, seed=cfg.seed, packing=cfg.packing, **ranks)
        if self.val:
            self.make_val = lambda: ChatLoader(self.val, seq_len, cfg.micro_batch, self.pad_id, shuffle=False, loop=False, **ranks)

    def held_out(self, model: torch.nn.Module, start: bool) -> float:
        return answer_loss(model, self.val, self.pad_id, seq_len=self.seq_len, device=self.env.device)[0]

    def summary(self, before: float | None, after: float | None) -> dict[str, Any]:
        return {"held_out_answer_loss_before": before, "held_out_answer_loss_after": after, "rows": len(self.loader),
                "answer_tokens": int(sum(e.loss_mask.sum() for e in self.train)),
                "train_conversations": len(self.train), "held_out_conversations": len(self.val)}


def train_sft(cfg: SFTConfig, train_examples: Sequence[TokenizedChat], val_examples: Sequence[TokenizedChat], pad_id: int) -> dict[str, Any]:
    """Fine-tune ``cfg.init_from`` on the conversations (runs in every worker); held-out answer
    loss before and after is in the summary and ``<run>/sft.json``."""
    return finetune.finetune(SFT(cfg, pad_id, (train_examples, val_examples)))


def main(config: dict[str, Any]) -> dict[str, Any]:
    """Per-worker entry of the launchers: ``pad_id`` + :class:`SFTConfig` fields -> SFT run."""
    return finetune.main(SFT, config)


if __name__ == "__main__":
    # torchrun -m training.sft <config.json>
    main(io.read_json(sys.argv[1]))
