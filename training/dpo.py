"""Direct preference optimisation (Rafailov et al. 2023) as the DeepSeek LLM report uses it.

    loss = -log sigmoid(beta * ((log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))))

with summed log-probabilities over the answer tokens only (the prompt is masked out) and the
reference model frozen at the starting (SFT) checkpoint. The reference log-probabilities are
either computed once up front (the ``dpo`` stage writes them beside the tokenised pairs) or on
the fly with the frozen model; both go through :func:`pair_logps`, so they are the same numbers.

Recipe (report section 5.2): 1 epoch, LR 5e-6, batch 512, warm-up then cosine decay, beta 0.1
(the DPO paper's default, Rafailov et al. 2023, appendix B; the report does not state beta).
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from storage import io
from training import finetune
from training.config import DPOConfig
from training.chat import ChatBatch, TokenizedChat, pad_batch


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


def record_examples(tok, rec: Any) -> tuple[list[tuple], str | None]:
    """The chosen and rejected conversations of one preference record (the longer one counts for
    ``too_long``): the ``examples`` of ``training.prepare.prepare_chat_file``."""
    from training.chat import pair_from_record, tokenize_pair

    pair, reason = pair_from_record(rec)
    if pair is None:
        return [], reason
    c, r = tokenize_pair(tok, pair)
    return [("", (c, r), max(len(c.input_ids), len(r.input_ids)), int(c.loss_mask.sum() + r.loss_mask.sum()))], None


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


def reference_shard(pair_shard: str, out_dir: str, checkpoint: str, pad_id: int, micro_batch: int = 8) -> int:
    """The frozen reference's log-probs of one pair shard, written to ``<out_dir>/<same name>``
    (``REFERENCE_SCHEMA``; kept when it exists); returns its pairs. One CPU thread: one per task."""
    from training.checkpoint import load_model

    out = io.join(out_dir, io.basename(pair_shard))
    if io.exists(out):
        return io.read_parquet(out).num_rows
    torch.set_num_threads(1)
    keys, pairs, _ = read_pairs(pair_shard)
    model, _ = load_model(checkpoint)
    c, r = reference_logps(model, pairs, pad_id, micro_batch) if pairs else ([], [])
    io.write_parquet(pa.table({"key": keys, "ref_chosen": list(c), "ref_rejected": list(r)}, schema=REFERENCE_SCHEMA), out)
    return len(keys)


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


class PairLoader(finetune.EpochLoader):
    """Tokenised pairs (with reference log-probs when precomputed) as a trainer data source.

    A batch dict holds the ``2n`` rows of :func:`pair_batch` (chosen first) under the model's
    argument names, ``n_pairs``, and ``ref_chosen``/``ref_rejected`` (n,) when known. Order,
    batching and state are :class:`training.finetune.EpochLoader`'s.
    """

    empty = "no preference pairs"

    def __init__(self, pairs: Sequence[Pair], micro_batch: int, pad_id: int, ref: tuple[np.ndarray, np.ndarray] | None = None, **kw: Any):
        super().__init__(pairs, micro_batch, **kw)
        self.pad_id, self.ref = pad_id, ref

    @property
    def pairs(self) -> list[Pair]:
        return self.items

    def batch(self, which: Sequence[int]) -> dict[str, Any]:
        b = pair_batch([self.items[i] for i in which], self.pad_id)
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


class DPO(finetune.Recipe):
    """Preference pairs, the DPO loss against the frozen start, held-out rewards and log-probs."""

    name, config = "dpo", DPOConfig

    def __init__(self, cfg: DPOConfig, pad_id: int):
        super().__init__(cfg, pad_id)
        self.train, self.val, self.train_ref, self.val_ref = load_all(cfg)
        self.reference: torch.nn.Module | None = None

    def setup(self, env: Any, checkpoint: str, seq_len: int) -> None:
        from training.checkpoint import load_model

        cfg = self.cfg
        if self.train_ref is None:  # no precomputed log-probs: the frozen start runs in every step
            self.reference, _ = load_model(checkpoint, env.device)
            for p in self.reference.parameters():
                p.requires_grad_(False)
        ranks = {"rank": env.rank, "world_size": env.world_size}
        self.loader = PairLoader(self.train, cfg.micro_batch, self.pad_id, self.train_ref, seed=cfg.seed, **ranks)
        if self.val:
            self.make_val = lambda: PairLoader(self.val, cfg.micro_batch, self.pad_id, self.val_ref, shuffle=False, loop=False, **ranks)
        self.loss_fn = make_loss_fn(cfg.beta, self.reference)

    def held_out(self, model: torch.nn.Module, start: bool) -> dict[str, float]:
        val = self.make_val()
        val.rank, val.world = 0, 1  # every rank scores the whole held-out set
        # At the start the policy is the reference: rewards are exactly 0 (loss ln 2).
        return evaluate(model, val, self.cfg.beta, model if start else self.reference)

    def summary(self, before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, Any]:
        return {"held_out_before": before, "held_out_after": after, "train_pairs": len(self.train), "held_out_pairs": len(self.val),
                "reference": "precomputed" if self.train_ref is not None else "on_the_fly", "beta": self.cfg.beta}


def train_dpo(cfg: DPOConfig, pad_id: int) -> dict[str, Any]:
    """DPO from ``cfg.init_from`` (runs in every worker); the summary holds the held-out metrics
    before (policy = reference) and after."""
    return finetune.finetune(DPO(cfg, pad_id))


def main(config: dict[str, Any]) -> dict[str, Any]:
    """Per-worker entry of the launchers: ``pad_id`` + :class:`DPOConfig` fields -> DPO run."""
    return finetune.main(DPO, config)


if __name__ == "__main__":
    # torchrun -m training.dpo <config.json>
    main(io.read_json(sys.argv[1]))
