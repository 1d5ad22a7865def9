"""Direct preference optimisation (Rafailov et al. 2023) as the DeepSeek LLM report uses it.

    loss = -log sigmoid(beta * ((log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))))

with summed log-probabilities over the answer tokens only (the prompt is masked out) and the
reference model frozen at the starting (SFT) checkpoint. The reference log-probabilities are
either computed once up front (``pipelines.dpo`` writes them beside the tokenised pairs) or on
the fly with the frozen model; both go through :func:`pair_logps`, so they are the same numbers.

Recipe (report section 5.2): 1 epoch, LR 5e-6, batch 512, warm-up then cosine decay, beta 0.1
(the issue's default; the report does not state beta).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from training.chat import ChatBatch, TokenizedChat, pad_batch


@dataclass
class DPOConfig:
    # DPO's usual temperature (Rafailov et al. 2023; the default).
    beta: float = 0.1
    # Report section 5.2: "learning rate of 5e-6 and batch size of 512", one epoch.
    lr: float = 5e-6
    batch_size: int = 512
    epochs: int = 1
    # "warm-up then cosine decay": warm-up share of the steps (not stated; a common 10%).
    warmup_fraction: float = 0.1
    # AdamW as in pre-training (report section 2.3), gradient clipping 1.0.
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # Pairs per forward pass (gradient accumulation makes up batch_size).
    micro_batch: int = 4
    max_seq_len: int = 1024
    # "precomputed": a Ray job writes the reference log-probs beside the pairs once;
    # "on_the_fly": the frozen reference runs in every step (one more forward per pair).
    reference: str = "precomputed"
    held_out_fraction: float = 0.1
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of the answer tokens of each row: (B,).

    Token ``t`` is predicted from the logits at ``t-1``; only tokens with ``loss_mask`` count.
    """
    targets = input_ids[:, 1:]
    mask = loss_mask[:, 1:].to(logits.dtype)
    logp = -F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
    return (logp * mask).sum(-1)


def model_logps(model: torch.nn.Module, batch: ChatBatch, device: torch.device | str = "cpu") -> torch.Tensor:
    """Summed answer log-probs of each row of a padded batch (one conversation per row)."""
    ids = torch.as_tensor(batch.input_ids, device=device)
    mask = torch.as_tensor(batch.loss_mask, device=device)
    seg = torch.as_tensor(batch.segment_ids, device=device)
    pos = torch.as_tensor(batch.positions, device=device)
    logits = model(ids, position_ids=pos, segment_ids=seg)
    return sequence_logps(logits, ids, mask)


def pair_batch(pairs: Sequence[tuple[TokenizedChat, TokenizedChat]], pad_id: int) -> ChatBatch:
    """Chosen answers in rows ``0..n-1``, rejected in ``n..2n-1``: one forward pass for both."""
    return pad_batch([c for c, _ in pairs] + [r for _, r in pairs], pad_id)


def pair_logps(model: torch.nn.Module, pairs: Sequence[tuple[TokenizedChat, TokenizedChat]], pad_id: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed answer log-probs, each (n,). The one place both the reference
    precomputation and the training step get their numbers from."""
    lp = model_logps(model, pair_batch(pairs, pad_id), device)
    n = len(pairs)
    return lp[:n], lp[n:]


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The sigmoid DPO loss (mean over pairs) and its metrics.

    Metrics: ``loss``; ``reward_accuracy`` (share of pairs whose implicit reward
    ``beta * (log pi - log ref)`` is higher for the chosen answer); ``reward_margin`` (mean
    chosen-minus-rejected reward); ``chosen_reward``/``rejected_reward``; ``chosen_logps`` and
    ``rejected_logps`` (mean summed policy log-probs).
    """
    chosen_reward = beta * (policy_chosen - ref_chosen.to(policy_chosen))
    rejected_reward = beta * (policy_rejected - ref_rejected.to(policy_rejected))
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    with torch.no_grad():
        metrics = {
            "loss": float(loss),
            "reward_accuracy": float((margin > 0).float().mean()),
            "reward_margin": float(margin.mean()),
            "chosen_reward": float(chosen_reward.mean()),
            "rejected_reward": float(rejected_reward.mean()),
            "chosen_logps": float(policy_chosen.mean()),
            "rejected_logps": float(policy_rejected.mean()),
        }
    return loss, metrics


def summarize(metrics: Sequence[tuple[int, dict[str, float]]]) -> dict[str, float]:
    """Pair-weighted mean of per-batch metrics ``[(n_pairs, metrics), ...]``."""
    total = sum(n for n, _ in metrics)
    keys = metrics[0][1].keys() if metrics else []
    return {k: float(np.sum([n * m[k] for n, m in metrics]) / total) for k in keys}


# --------------------------------------------------------------------------------------------
# On the trainer: a data source of pairs and a loss function (``training.trainer`` LossFn).


class PairLoader:
    """Tokenised pairs (with reference log-probs when precomputed) as a trainer data source.

    A batch dict holds the ``2n`` rows of :func:`pair_batch` (chosen first) under the model's
    argument names, ``n_pairs``, and ``ref_chosen``/``ref_rejected`` (n,) when known.
    """

    def __init__(self, pairs: Sequence[tuple[TokenizedChat, TokenizedChat]], micro_batch: int, pad_id: int,
                 ref: tuple[np.ndarray, np.ndarray] | None = None, *, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, loop: bool = True):
        self.loop = loop
        if not pairs:
            raise ValueError("no preference pairs")
        self.pairs, self.ref = list(pairs), ref
        self.micro_batch, self.pad_id, self.rank, self.world, self.seed, self.shuffle = micro_batch, pad_id, rank, world_size, seed, shuffle
        self.epoch = 0
        self.cursor = 0

    def _order(self, epoch: int) -> list[int]:
        idx = np.arange(len(self.pairs))
        if self.shuffle:
            idx = np.random.default_rng([self.seed, epoch]).permutation(idx)
        return idx[self.rank :: self.world].tolist() or idx[:1].tolist()

    def _batch(self, which: Sequence[int]) -> dict[str, Any]:
        b = pair_batch([self.pairs[i] for i in which], self.pad_id)
        out: dict[str, Any] = {
            "input_ids": torch.as_tensor(b.input_ids),
            "loss_mask": torch.as_tensor(b.loss_mask),
            "position_ids": torch.as_tensor(b.positions),
            "segment_ids": torch.as_tensor(b.segment_ids),
            "n_pairs": len(which),
        }
        if self.ref is not None:
            out["ref_chosen"] = torch.as_tensor(self.ref[0][list(which)], dtype=torch.float32)
            out["ref_rejected"] = torch.as_tensor(self.ref[1][list(which)], dtype=torch.float32)
        return out

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
        return self._batch(take)

    def __iter__(self):
        order = list(range(self.rank, len(self.pairs), self.world))
        for i in range(0, len(order), self.micro_batch):
            yield self._batch(order[i : i + self.micro_batch])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


def batch_logps(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed answer log-probs of a :class:`PairLoader` batch."""
    dev = next(model.parameters()).device
    ids = batch["input_ids"].to(dev)
    logits = model(ids, position_ids=batch["position_ids"].to(dev), segment_ids=batch["segment_ids"].to(dev))
    lp = sequence_logps(logits, ids, batch["loss_mask"].to(dev))
    n = int(batch["n_pairs"])
    return lp[:n], lp[n:]


def make_loss_fn(beta: float = 0.1, reference: torch.nn.Module | None = None):
    """A trainer loss: ``(model, batch) -> (loss_sum, n_pairs, metric_sums)``.

    Reference log-probs come from the batch (precomputed) or, when ``reference`` is given, from
    that frozen model on the fly; the same :func:`batch_logps` computes both.
    """

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any]):
        pc, pr = batch_logps(model, batch)
        if reference is not None:
            with torch.no_grad():
                rc, rr = batch_logps(reference, batch)
        else:
            rc, rr = batch["ref_chosen"].to(pc.device), batch["ref_rejected"].to(pc.device)
        loss, m = dpo_loss(pc, pr, rc, rr, beta)
        n = int(batch["n_pairs"])
        return loss * n, n, {k: v * n for k, v in m.items() if k != "loss"}

    return loss_fn


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: PairLoader, beta: float = 0.1, reference: torch.nn.Module | None = None) -> dict[str, float]:
    """Pair-weighted DPO metrics over one pass of ``loader`` (held-out pairs)."""
    was = model.training
    model.eval()
    fn = make_loss_fn(beta, reference)
    out = []
    for b in loader:
        loss_sum, n, m = fn(model, b)
        out.append((n, {"loss": float(loss_sum) / n, **{k: v / n for k, v in m.items()}}))
    model.train(was)
    return summarize(out)
