"""The one training loop: pre-training here, SFT and DPO through ``loader`` and ``loss_fn``.

``train(cfg)`` runs in every process (alone, under torchrun, or in a Ray Train worker). It
builds a :class:`Trainer`: the model sharded with FSDP2, AdamW, the LR schedule, the data loader
and the counters, each ``Stateful``, so that its :class:`~training.checkpoint.Checkpointer`
saves and restores all of them in one call (torchtitan's ``Trainer`` is built the same way).
A step runs ``accum`` micro-batches on each rank; the loss sums are divided by the token (or
pair) count of the whole global batch, so the update is that of one big batch whatever the
world size.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from storage import io
from storage.errors import SettingError, UserError
from training import checkpoint as ckpt
from training.config import TrainConfig
from training.data import IGNORE_INDEX, TokenShardLoader, list_token_shards
from training.model import ModelConfig, Transformer, flops_per_token, model_config, report_flops_per_token
from training.optim import Schedule, build_optimizer
from training.parallelize import DistEnv, close_distributed, init_distributed, parallelize, start_cpu_threads
from training.scaling import choose_hyperparameters


LossFn = Callable[[nn.Module, dict[str, Any]], tuple]


def causal_lm_loss(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over labels != -100, and their count."""
    kwargs = {k: batch[k] for k in ("position_ids", "segment_ids", "padding_mask") if k in batch}
    logits = model(batch["input_ids"], **kwargs)
    labels = batch["labels"]
    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.view(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, (labels != IGNORE_INDEX).sum()


# Dense bf16 peak FLOP/s per device (vendor data sheets, without sparsity).
_GPU_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def device_peak_flops(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in _GPU_PEAK.items():
            if key in name:
                return value, f"{name} bf16 dense data sheet"
        return 0.0, f"{name}: unknown peak"
    # CPU: no data sheet figure; measure a large fp32 matmul once (an upper bound in practice).
    a = torch.randn(1024, 1024)
    torch.mm(a, a)
    t = time.perf_counter()
    reps = 8
    for _ in range(reps):
        torch.mm(a, a)
    dt = time.perf_counter() - t
    return 2 * 1024**3 * reps / dt, "CPU fp32 matmul, measured"


# --------------------------------------------------------------------------------------------
# What a config means on a world size


@dataclass(frozen=True)
class BatchPlan:
    """The batch and schedule a config resolves to on ``world_size`` ranks."""

    seq_len: int
    lr: float
    batch_tokens: int
    accum: int  # micro-batches per rank per step
    total_steps: int  # the schedule's length
    last_step: int  # where this run stops (max_steps)
    world_size: int
    why: str = ""  # the scaling-law reasoning, when lr or batch is "auto"

    def step_tokens(self, micro_batch: int) -> int:
        return self.accum * micro_batch * self.world_size * self.seq_len


def plan_batches(cfg: TrainConfig, world_size: int, mcfg: ModelConfig | None = None) -> BatchPlan:
    """Resolve ``lr``/``batch`` ("auto": the report's scaling laws), the accumulation and the
    steps; :class:`SettingError` when the batch cannot be split over the ranks."""
    try:
        mcfg = mcfg or model_config(cfg.model, vocab_size=cfg.vocab_size)
    except KeyError as e:
        raise SettingError(str(e).strip("'\"")) from None
    seq_len = cfg.seq_len or mcfg.max_seq_len
    rows_multiple = cfg.micro_batch * world_size
    if seq_len <= 0 or rows_multiple <= 0:
        raise SettingError(f"seq_len {seq_len} and micro_batch {cfg.micro_batch} must be positive")
    lr, batch_tokens, why = cfg.lr, cfg.batch_tokens, ""
    if cfg.lr_auto or cfg.batch_auto:
        choice = choose_hyperparameters(report_flops_per_token(mcfg, seq_len), cfg.train_tokens, seq_len, rows_multiple)
        lr = choice.lr if cfg.lr_auto else lr
        batch_tokens = choice.batch_tokens if cfg.batch_auto else batch_tokens
        why = choice.why
    unit = seq_len * rows_multiple
    if batch_tokens <= 0 or batch_tokens % unit:
        fit = max(unit, round(batch_tokens / unit) * unit)
        raise SettingError(f"batch of {batch_tokens:,} tokens is not a multiple of seq_len x micro_batch x ranks = "
                           f"{seq_len} x {cfg.micro_batch} x {world_size} = {unit:,}; use {fit:,} (or --batch auto)")
    total_steps = max(1, cfg.train_tokens // batch_tokens)
    last_step = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
    return BatchPlan(seq_len, lr, batch_tokens, batch_tokens // unit, total_steps, last_step, world_size, why)


# --------------------------------------------------------------------------------------------
# Evaluation and summaries (the fine-tuning recipes use them too)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _unpack(out: tuple) -> tuple[torch.Tensor, torch.Tensor | float, dict[str, float]]:
    loss_sum, weight = out[0], out[1]
    metrics = out[2] if len(out) > 2 else {}
    return loss_sum, weight, metrics


@torch.no_grad()
def loss_sums(model: nn.Module, batches: Iterable[dict[str, Any]], loss_fn: LossFn, device: torch.device) -> tuple[float, float]:
    """(summed loss, summed weight) of ``loss_fn`` over ``batches``, in eval mode (the model's mode
    is restored); their ratio is the mean loss per token (or pair)."""
    was = model.training
    model.eval()
    total, weight = 0.0, 0.0
    for batch in batches:
        loss_sum, w, _ = _unpack(loss_fn(model, _to_device(batch, device)))
        total += float(loss_sum)
        weight += float(w)
    model.train(was)
    return total, weight


def _first_batches(loader, n: int) -> Iterator[dict[str, Any]]:
    for _ in range(n):
        try:
            yield loader.next_batch()
        except StopIteration:
            return


def evaluate(model: nn.Module, loader, loss_fn: LossFn, batches: int, device: torch.device) -> float:
    """Mean loss over the first ``batches`` batches of ``loader`` on every rank together."""
    total, weight = loss_sums(model, _first_batches(loader, batches), loss_fn, device)
    t = torch.tensor([total, weight], dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    total, weight = t.tolist()
    return total / max(weight, 1.0)


def write_summary(summary: dict[str, Any], path: str) -> None:
    """A run's summary as JSON: everything but the per-step losses, and the last of them."""
    losses = summary.get("losses") or []
    io.write_json({k: v for k, v in summary.items() if k != "losses"} | {"last_loss": losses[-1] if losses else None}, path)


def write_stats(run_dir: str, seconds: float) -> Any:
    """``stats.json`` of a finished run (a ``curation.stats.StageStats``, returned): sequences
    trained (in = out: training drops none), tokens, steps and seconds, beside ``summary.json``."""
    from curation.stats import StageStats

    summary = io.read_json(io.join(run_dir, "summary.json"))
    resolved = io.read_json(io.join(run_dir, "config.json"))["resolved"]
    stats = StageStats()
    rows = summary["tokens"] // resolved["seq_len"]
    stats.seen(rows)
    stats.kept(rows)
    stats.add("tokens", summary["tokens"])
    stats.add("steps", summary["steps"])
    stats.add("seconds", seconds)
    stats.check()
    io.write_json({**stats.to_dict(), "summary": summary}, io.join(run_dir, "stats.json"))
    return stats


class _Log:
    """``log.jsonl`` on rank 0 (appended locally; on an object store put again at most every
    10 s and at every checkpoint, so what a checkpoint covers is in the log)."""

    def __init__(self, path: str, enabled: bool):
        self.log = io.AppendLog(path) if enabled else None

    def write(self, record: dict[str, Any]) -> None:
        if self.log:
            self.log.write(json.dumps(record))

    def flush(self) -> None:
        if self.log:
            self.log.flush()

    def close(self) -> None:
        if self.log:
            self.log.close()


# --------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """One training run. Its parts are ``Stateful``: ``model`` and ``optimizer`` (sharded, through
    DCP), ``schedule``, ``loader`` and the trainer itself (``step``, ``tokens``; replicated, in the
    manifest); ``checkpointer.save(step)`` / ``checkpointer.load(path)`` write and restore them all.

    ``loader``: any object with ``next_batch()``, ``state_dict()``, ``load_state_dict()`` (default:
    ``TokenShardLoader`` over ``cfg.data``). ``val_loader``: a zero-argument factory giving a fresh
    loader for each evaluation (or one loader, then reused). ``loss_fn(model, batch)`` returns
    ``(loss_sum, weight[, metrics])`` (default :func:`causal_lm_loss`).
    """

    def __init__(self, cfg: TrainConfig, env: DistEnv, loader=None, val_loader=None, loss_fn: LossFn | None = None,
                 name: str = "pretrain"):
        if cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)
        start_cpu_threads()  # the same numerics in every process
        self.cfg, self.env, self.name = cfg, env, name
        self.mcfg = model_config(cfg.model, vocab_size=cfg.vocab_size)
        self.plan = plan_batches(cfg, env.world_size, self.mcfg)
        if self.plan.why:
            self._say(f"[{self.name}] scaling laws: {self.plan.why}")
            self._say(f"[{self.name}] chose lr {self.plan.lr:.3e}{' (auto)' if cfg.lr_auto else ''}, "
                      f"batch {self.plan.batch_tokens:,} tokens{' (auto)' if cfg.batch_auto else ''}")
        if env.is_main:
            io.write_json({**asdict(cfg), "resolved": {"lr": self.plan.lr, "batch_tokens": self.plan.batch_tokens, "seq_len": self.plan.seq_len,
                                                       "accum": self.plan.accum, "total_steps": self.plan.total_steps,
                                                       "world_size": env.world_size, "model": asdict(self.mcfg)}},
                          io.join(cfg.run_dir, "config.json"))
        self.loader, self.make_val = self._data(loader, val_loader)
        self.model = self._model()
        self.optimizer = build_optimizer(self.model, self.plan.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
        self.schedule = Schedule(self.optimizer, self.plan.lr, self.plan.total_steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
        self.loss_fn = loss_fn or causal_lm_loss
        self.step, self.tokens = 0, 0
        self.losses: list[float] = []
        self.val_loss: float | None = None
        self.checkpointer = ckpt.Checkpointer(cfg.run_dir, {
            "train_state": self, "model": ckpt.ModelState(self.model), "optimizer": ckpt.OptimizerState(self.model, self.optimizer),
            "schedule": self.schedule, "loader": self.loader,
        }, keep=cfg.keep_checkpoints, async_save=cfg.async_checkpoint)

    # -- Stateful: the counters -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "tokens": self.tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.tokens = int(state["step"]), int(state["tokens"])

    # -- building ---------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        if self.env.is_main:
            print(msg, file=sys.stderr, flush=True)

    def _data(self, loader, val_loader):
        """The training loader and a factory of validation loaders (or one that gives None)."""
        cfg, env, seq_len = self.cfg, self.env, self.plan.seq_len
        if loader is None:  # the token-shard loader; SFT/DPO pass their own
            train_files, val_files = _split_data(cfg)
            loader = TokenShardLoader(train_files, seq_len, cfg.micro_batch, env.rank, env.world_size, seed=cfg.seed)
            if val_loader is None and val_files:
                val_loader = lambda: TokenShardLoader(val_files, seq_len, cfg.micro_batch, env.rank, env.world_size,  # noqa: E731
                                                      seed=cfg.seed, shuffle=False, loop=False)
        make_val = val_loader if callable(val_loader) and not hasattr(val_loader, "next_batch") else (lambda: val_loader)
        return loader, make_val

    def _model(self) -> nn.Module:
        """The model, sharded. The same seed on every rank gives the same full weights before
        sharding, so the run does not depend on the world size; large models are built on the
        meta device and initialised after sharding."""
        cfg, env = self.cfg, self.env
        torch.manual_seed(cfg.seed)
        on_gpu = env.device.type == "cuda"
        param_dtype = {"auto": torch.bfloat16 if on_gpu else torch.float32, "bf16": torch.bfloat16, "fp32": torch.float32}[cfg.dtype]
        big = on_gpu or cfg.meta_init
        with torch.device("meta") if big else contextlib.nullcontext():
            model = Transformer(self.mcfg)
        parallelize(model, env, param_dtype=param_dtype, activation_checkpointing=cfg.activation_checkpointing, compile=cfg.compile)
        if big:
            model.to_empty(device=env.device)
            model.init_weights()
        if cfg.init_from:
            ckpt.load_model_weights(model, cfg.init_from)
            self._say(f"[{self.name}] weights from {cfg.init_from}")
        return model

    # -- one step ---------------------------------------------------------------------------
    def train_step(self) -> tuple[dict[str, Any], float]:
        """One optimizer step over ``accum`` micro-batches per rank. Returns the step's log record
        and how many ranks still write a background checkpoint."""
        env, cfg, plan = self.env, self.cfg, self.plan
        t0 = time.perf_counter()
        lr = self.schedule.apply()
        loss_total, weight_total, metric_totals = self._forward_backward()
        # One all-reduce and one read per step: loss and weight sums, the metrics, and how many
        # ranks still write a background checkpoint (0: all done, it can be committed).
        sums = torch.stack([loss_total, weight_total, *metric_totals.values(),
                            torch.tensor(self.checkpointer.writing(), dtype=torch.float64, device=env.device)])
        if env.world_size > 1:
            dist.all_reduce(sums)
        reduced = sums.tolist()
        global_loss, global_weight, ranks_writing = reduced[0], reduced[1], reduced[-1]
        grad_norm = self._optimizer_step(global_weight)
        self.step += 1
        step_tokens = plan.step_tokens(cfg.micro_batch)
        self.tokens += step_tokens
        if env.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        loss = global_loss / max(global_weight, 1.0)
        self.losses.append(loss)
        tps = step_tokens / dt
        record = {"step": self.step, "tokens": self.tokens, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tps,
                  "mfu": self.flops_per_token * tps / (self.peak * env.world_size) if self.peak else None, "step_time_s": dt}
        record.update({k: v / max(global_weight, 1.0) for k, v in zip(metric_totals, reduced[2:-1])})
        return record, ranks_writing

    def _forward_backward(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Loss, weight and metric sums of this rank's micro-batches, gradients accumulated.
        They stay on the device until the step's one read (a .item() per micro-batch would stall
        a GPU at every micro-batch)."""
        device, accum = self.env.device, self.plan.accum
        loss_total = torch.zeros((), dtype=torch.float64, device=device)
        weight_total = torch.zeros((), dtype=torch.float64, device=device)
        metric_totals: dict[str, torch.Tensor] = {}
        for micro in range(accum):
            batch = _to_device(self.loader.next_batch(), device)
            # Reduce-scatter gradients only after the last micro-batch.
            self.model.set_requires_gradient_sync(micro == accum - 1)
            loss_sum, weight, metrics = _unpack(self.loss_fn(self.model, batch))
            loss_sum.backward()
            loss_total += loss_sum.detach().double()
            weight_total += torch.as_tensor(weight, dtype=torch.float64, device=device)
            for k, v in metrics.items():
                v = torch.as_tensor(v, device=device).detach().double()
                metric_totals[k] = metric_totals[k] + v if k in metric_totals else v
        return loss_total, weight_total, metric_totals

    def _optimizer_step(self, global_weight: float) -> float:
        """Gradients to the global mean, clipped; AdamW and the schedule step. Returns the norm."""
        # Gradients hold the rank-average of summed losses; make them the global mean.
        scale = self.env.world_size / max(global_weight, 1.0)
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip, foreach=True)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        return float(grad_norm)

    # -- the run ----------------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from the run's latest complete checkpoint, when there is one."""
        latest = ckpt.latest_checkpoint(self.cfg.run_dir)
        if latest:
            self.checkpointer.load(latest)
            self._say(f"[{self.name}] resumed from {latest} at step {self.step}")
        else:
            self._say(f"[{self.name}] --resume: no checkpoint in {self.cfg.run_dir}, starting fresh")

    def _announce(self) -> None:
        cfg, env, plan = self.cfg, self.env, self.plan
        self.flops_per_token = flops_per_token(self.mcfg, plan.seq_len)
        self.peak, peak_src = (cfg.peak_flops, "given") if cfg.peak_flops else device_peak_flops(env.device)
        self._say(f"[{self.name}] model {cfg.model}: {sum(p.numel() for p in self.model.parameters()):,} params (sharded over {env.world_size}), "
                  f"{self.flops_per_token:.3e} FLOPs/token; {plan.total_steps} steps of {plan.batch_tokens:,} tokens "
                  f"(accum {plan.accum} x micro {cfg.micro_batch} x {env.world_size} ranks), peak {self.peak:.3e} FLOP/s ({peak_src})")

    def _due(self, every: int) -> bool:
        return bool(every) and (self.step % every == 0 or self.step == self.plan.last_step)

    def validate(self) -> float | None:
        """Validation loss now (logged), or None when there is no validation data."""
        loader = self.make_val()
        if loader is None:
            return None
        self.val_loss = evaluate(self.model, loader, self.loss_fn, self.cfg.eval_batches, self.env.device)
        self.log.write({"step": self.step, "tokens": self.tokens, "val_loss": self.val_loss})
        return self.val_loss

    def save(self, final: bool = False) -> str:
        self.log.flush()  # what the checkpoint covers is in the log
        return self.checkpointer.save(self.step, final=final)

    def fit(self) -> dict[str, Any]:
        """Train to ``plan.last_step`` (after ``resume`` when ``cfg.resume``); returns the summary
        (steps, tokens, losses, val loss, checkpoint) and writes ``summary.json``."""
        cfg, plan = self.cfg, self.plan
        if cfg.resume:
            self.resume()
        start = self.step
        self._announce()
        self.log = _Log(io.join(cfg.run_dir, "log.jsonl"), self.env.is_main)
        bar = None
        if self.env.is_main and cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=plan.last_step, initial=start, desc=self.name, unit="step", file=sys.stderr, dynamic_ncols=True)
        saved = None
        self.model.train()
        try:
            while self.step < plan.last_step:
                record, ranks_writing = self.train_step()
                if self.step % cfg.log_every == 0 or self.step == plan.last_step:
                    self.log.write(record)
                if not math.isfinite(record["loss"]):
                    raise FloatingPointError(f"loss is {record['loss']} at step {self.step}")
                if self._due(cfg.eval_every):
                    self.validate()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}", tok_s=f"{record['tokens_per_s']:,.0f}")
                self.checkpointer.commit_if_written(ranks_writing)  # every rank has written its part: commit it now
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step != plan.last_step:
                    saved = self.save()
            if self.step > start or not ckpt.latest_checkpoint(cfg.run_dir):
                saved = self.save(final=True)
            self.checkpointer.finish()
        finally:
            if bar is not None:
                bar.close()
            self.log.close()
        summary = {"steps": self.step, "total_steps": plan.total_steps, "tokens": self.tokens, "losses": self.losses, "val_loss": self.val_loss,
                   "checkpoint": saved or ckpt.latest_checkpoint(cfg.run_dir), "complete": self.step >= plan.total_steps,
                   "lr": plan.lr, "batch_tokens": plan.batch_tokens, "world_size": self.env.world_size}
        if self.env.is_main:
            write_summary(summary, io.join(cfg.run_dir, "summary.json"))
        return summary


def _split_data(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    files = list_token_shards(cfg.data)
    if cfg.val_data:
        return files, list_token_shards(cfg.val_data)
    if cfg.holdout_shards > 0 and len(files) > cfg.holdout_shards:
        return files[: -cfg.holdout_shards], files[-cfg.holdout_shards:]
    return files, []


def train(cfg: TrainConfig, *, loader=None, val_loader=None, loss_fn: LossFn | None = None, env: DistEnv | None = None,
          name: str = "pretrain") -> dict[str, Any]:
    """Train per ``cfg`` (see :class:`Trainer` for ``loader``, ``val_loader``, ``loss_fn``); returns
    the summary. ``env``: an existing ``init_distributed()`` result (then the caller closes it).
    ``name``: the stage the progress bar and messages name (``pretrain``, ``sft``, ``dpo``)."""
    own_env = env is None
    env = env or init_distributed()
    try:
        return Trainer(cfg, env, loader, val_loader, loss_fn, name).fit()
    finally:
        if own_env:
            close_distributed(env)


def main(config: dict[str, Any]) -> dict[str, Any]:
    """Per-worker entry of the launchers (torchrun, Ray Train): a config dict -> ``train``."""
    unknown = set(config) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise SettingError(f"unknown TrainConfig keys: {sorted(unknown)}")
    return train(TrainConfig(**config))


if __name__ == "__main__":
    # torchrun -m training.trainer <config.json>
    main(io.read_json(sys.argv[1]))
