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

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from storage import io
from training.chat import ChatBatch, TokenizedChat, pad_batch


@dataclass
class DPOConfig:
    run_dir: str = "runs/dpo"
    # The SFT checkpoint (or run folder): the policy's start and the frozen reference.
    init_from: str = ""
    # DPO's usual temperature (Rafailov et al. 2023; the default; the report gives none).
    beta: float = 0.1
    # Report section 5.2: one epoch, "learning rate of 5e-6 and batch size of 512",
    # "warm-up and cosine learning rate scheduler".
    epochs: int = 1
    lr: float = 5e-6
    batch_pairs: int = 512
    schedule: str = "cosine"
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    # No weight decay on a preference fine-tune (the report gives none; TRL's default is 0).
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # Pairs per forward pass per rank (each pair is two rows); gradient accumulation makes up
    # batch_pairs.
    micro_batch: int = 4
    # Longest chosen/rejected conversation in tokens (0: the starting run's sequence length,
    # ``training.sft.context_length``); longer pairs are dropped when tokenised.
    max_seq_len: int = 0
    checkpoint_every: int = 1000
    eval_every: int = 100
    eval_batches: int = 50
    seed: int = 0
    dtype: str = "auto"
    cpu_threads: int = 0
    progress: bool = True
    # Tokenised pair shards and, when precomputed, the reference log-prob shards beside them
    # (``pipelines.dpo`` writes both); no reference shards: the reference runs on the fly.
    data: list[str] = field(default_factory=list)
    reference_data: list[str] = field(default_factory=list)


PAIR_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("chosen_ids", pa.list_(pa.uint32())),
    ("chosen_mask", pa.list_(pa.bool_())),
    ("rejected_ids", pa.list_(pa.uint32())),
    ("rejected_mask", pa.list_(pa.bool_())),
    ("held_out", pa.bool_()),
])
REFERENCE_SCHEMA = pa.schema([("key", pa.string()), ("ref_chosen", pa.float64()), ("ref_rejected", pa.float64())])

Pair = tuple[TokenizedChat, TokenizedChat]


def pairs_table(keys: Sequence[str], pairs: Sequence[Pair], held_out: Sequence[bool]) -> pa.Table:
    col = lambda xs, dt: pa.array(xs, pa.list_(dt))  # noqa: E731
    return pa.table({
        "key": pa.array(list(keys), pa.string()),
        "chosen_ids": col([c.input_ids.astype(np.uint32) for c, _ in pairs], pa.uint32()),
        "chosen_mask": col([c.loss_mask for c, _ in pairs], pa.bool_()),
        "rejected_ids": col([r.input_ids.astype(np.uint32) for _, r in pairs], pa.uint32()),
        "rejected_mask": col([r.loss_mask for _, r in pairs], pa.bool_()),
        "held_out": pa.array(list(held_out), pa.bool_()),
    }, schema=PAIR_SCHEMA)


def read_pairs(path: str) -> tuple[list[str], list[Pair], list[bool]]:
    t = io.read_parquet(path)
    d = {name: t.column(name).to_pylist() for name in t.column_names}
    tc = lambda i, m: TokenizedChat(np.asarray(i, dtype=np.int32), np.asarray(m, dtype=bool))  # noqa: E731
    pairs = [(tc(a, b), tc(c, e)) for a, b, c, e in zip(d["chosen_ids"], d["chosen_mask"], d["rejected_ids"], d["rejected_mask"])]
    return d["key"], pairs, d["held_out"]


@torch.no_grad()
def reference_logps(model: torch.nn.Module, pairs: Sequence[Pair], pad_id: int, micro_batch: int = 8, device: Any = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The frozen reference's summed answer log-probs of every pair (what the Ray job writes)."""
    model.eval()
    cs, rs = [], []
    for i in range(0, len(pairs), micro_batch):
        c, r = pair_logps(model, pairs[i : i + micro_batch], pad_id, device)
        cs.append(c.double().cpu().numpy())
        rs.append(r.double().cpu().numpy())
    return np.concatenate(cs), np.concatenate(rs)


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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The sigmoid DPO loss (mean over pairs) and its metrics, as 0-d tensors on the loss's
    device (detached): the trainer sums them over micro-batches there and reads them once per
    step, so a GPU never waits for a metric.

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
            "loss": loss.detach(),
            "reward_accuracy": (margin > 0).float().mean(),
            "reward_margin": margin.mean(),
            "chosen_reward": chosen_reward.mean(),
            "rejected_reward": rejected_reward.mean(),
            "chosen_logps": policy_chosen.mean(),
            # The policy's own ranking, reference aside: share of pairs with log pi(y_w) > log pi(y_l).
            "logps_accuracy": (policy_chosen > policy_rejected).float().mean(),
            "rejected_logps": policy_rejected.mean(),
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
        values = torch.stack([loss_sum.detach(), *m.values()]).tolist()  # one read per batch
        out.append((n, dict(zip(["loss", *m], (v / n for v in values)))))
    model.train(was)
    return summarize(out)


# --------------------------------------------------------------------------------------------
# A DPO run on the trainer


def load_all(cfg: DPOConfig) -> tuple[list[Pair], list[Pair], tuple[np.ndarray, np.ndarray] | None, tuple[np.ndarray, np.ndarray] | None]:
    """(train pairs, held-out pairs, their reference log-probs or None) from the shards."""
    keys, pairs, held = [], [], []
    for path in sorted(cfg.data):
        k, p, h = read_pairs(path)
        keys += k
        pairs += p
        held += h
    ref = None
    if cfg.reference_data:
        by_key: dict[str, tuple[float, float]] = {}
        for path in sorted(cfg.reference_data):
            t = io.read_parquet(path).to_pydict()
            by_key.update(zip(t["key"], zip(t["ref_chosen"], t["ref_rejected"])))
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise ValueError(f"{len(missing)} pairs have no precomputed reference log-probs (e.g. {missing[0]})")
        ref = np.array([by_key[k] for k in keys], dtype=np.float64)
    tr = [i for i, h in enumerate(held) if not h]
    ho = [i for i, h in enumerate(held) if h]
    pick = lambda idx: (ref[idx, 0], ref[idx, 1]) if ref is not None else None  # noqa: E731
    return [pairs[i] for i in tr], [pairs[i] for i in ho], pick(tr), pick(ho)


def train_dpo(cfg: DPOConfig, pad_id: int) -> dict[str, Any]:
    """DPO from ``cfg.init_from`` with the trainer's loop (runs in every worker). The summary
    holds the held-out metrics before (policy = reference) and after."""
    from training.parallelize import close_distributed, init_distributed
    from training.sft import context_length, load_model, resolve_checkpoint
    from training.trainer import TrainConfig, train

    ckpt, run_cfg = resolve_checkpoint(cfg.init_from)
    train_pairs, held_pairs, train_ref, held_ref = load_all(cfg)
    env = init_distributed()
    try:
        reference = None
        if train_ref is None:
            reference, _ = load_model(ckpt, env.device)
            for p in reference.parameters():
                p.requires_grad_(False)
        loader = PairLoader(train_pairs, cfg.micro_batch, pad_id, train_ref, rank=env.rank, world_size=env.world_size, seed=cfg.seed)
        make_val = lambda: PairLoader(held_pairs, cfg.micro_batch, pad_id, held_ref, rank=env.rank, world_size=env.world_size, shuffle=False, loop=False)  # noqa: E731
        seq_len = context_length(run_cfg, cfg.max_seq_len)
        per_step = max(1, cfg.batch_pairs // (cfg.micro_batch * env.world_size)) * cfg.micro_batch * env.world_size
        steps = cfg.epochs * max(1, math.ceil(len(train_pairs) / per_step))
        # The trainer counts batches in rows of seq_len tokens; for DPO a "row" is one pair.
        tcfg = TrainConfig(
            run_dir=cfg.run_dir, model=run_cfg["model"], vocab_size=run_cfg["vocab_size"], seq_len=seq_len,
            micro_batch=cfg.micro_batch, batch_tokens=per_step * seq_len, train_tokens=steps * per_step * seq_len,
            lr=cfg.lr, warmup_steps=cfg.warmup_steps, schedule=cfg.schedule, min_lr_ratio=cfg.min_lr_ratio,
            weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, seed=cfg.seed, dtype=cfg.dtype,
            checkpoint_every=cfg.checkpoint_every, eval_every=cfg.eval_every if held_pairs else 0, eval_batches=cfg.eval_batches,
            init_from=ckpt, progress=cfg.progress, resume=True, cpu_threads=cfg.cpu_threads,
        )
        loss_fn = make_loss_fn(cfg.beta, reference)
        # At the start the policy is the reference: rewards are exactly 0 (loss ln 2).
        before = _held_out(ckpt, make_val, cfg.beta, "self", env) if held_pairs else None
        summary = train(tcfg, loader=loader, val_loader=make_val if held_pairs else None, loss_fn=loss_fn, env=env)
        after = _held_out(summary["checkpoint"], make_val, cfg.beta, reference, env) if held_pairs else None
        summary.update(held_out_before=before, held_out_after=after, train_pairs=len(train_pairs), held_out_pairs=len(held_pairs),
                       reference="precomputed" if train_ref is not None else "on_the_fly", beta=cfg.beta)
        if env.is_main:
            io.write_json({k: v for k, v in summary.items() if k != "losses"} | {"last_loss": summary["losses"][-1] if summary["losses"] else None},
                          io.join(cfg.run_dir, "dpo.json"))
        return summary
    finally:
        close_distributed(env)


def _held_out(ckpt: str, make_val, beta: float, reference, env) -> dict[str, float]:
    from training.sft import load_model

    # Every rank loads (the checkpoint read is collective) and scores the whole held-out set.
    model, _ = load_model(ckpt, env.device)
    if reference == "self":
        reference = model
    val = make_val()
    val.rank, val.world = 0, 1
    return evaluate(model, val, beta, reference)


def main(config: dict[str, Any]) -> dict[str, Any]:
    """Per-worker entry of the launchers: config dict (``pad_id`` + :class:`DPOConfig` fields)."""
    config = dict(config)
    pad_id = int(config.pop("pad_id"))
    return train_dpo(DPOConfig(**config), pad_id)


if __name__ == "__main__":
    # torchrun -m training.dpo <config.json>
    main(io.read_json(sys.argv[1]))
