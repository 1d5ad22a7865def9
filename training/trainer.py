"""The one training loop: pre-training here, SFT and DPO through ``loader`` and ``loss_fn``.

``train(cfg)`` runs in every process (alone, under torchrun, or in a Ray Train worker). It
builds the model, shards it with FSDP2, and steps AdamW over global batches given in tokens:
each rank runs ``accum`` micro-batches, the loss sums are divided by the token (or pair) count
of the whole global batch, so the update is that of one big batch whatever the world size.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from storage import io
from training import checkpoint as ckpt
from training.data import IGNORE_INDEX, TokenShardLoader, list_token_shards
from training.model import Transformer, flops_per_token, model_config, report_flops_per_token
from training.optim import Schedule, build_optimizer
from training.parallelize import DistEnv, close_distributed, init_distributed, parallelize
from training.scaling import choose_hyperparameters


@dataclass
class TrainConfig:
    # Every path here is a local path or an object-store URI (s3://, gs://, abfs://).
    run_dir: str = "runs/pretrain"
    # Token shards (files or folders) from the tokenize stage.
    data: list[str] = field(default_factory=list)
    # Held-out shards for validation loss; when empty, the last `holdout_shards` data shards.
    val_data: list[str] = field(default_factory=list)
    holdout_shards: int = 1
    model: str = "tiny"
    # Real vocabulary size (before padding); 100,015 for the report's tokenizer.
    vocab_size: int = 100_015
    # Tokens per row; 0: the model config's context (4096 in the report).
    seq_len: int = 0
    # Rows per micro-batch on each rank (memory knob; does not change the maths).
    micro_batch: int = 4
    # Global batch in tokens, a multiple of seq_len x micro_batch x ranks. 7B: 2304 x 4096 (report).
    batch_tokens: int = 2304 * 4096
    batch_auto: bool = False
    # Training length in tokens: sets the schedule (80% / 90% boundaries) and the compute budget.
    train_tokens: int = 2_000_000_000_000
    # Stop early after this many steps (0: run the whole schedule); the schedule is unchanged.
    max_steps: int = 0
    # Report section 2.3: peak 4.2e-4 for 7B; AdamW betas (0.9, 0.95), weight decay 0.1.
    lr: float = 4.2e-4
    lr_auto: bool = False
    warmup_steps: int = 2000
    schedule: str = "multi_step"
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    # "auto": bf16 parameters on GPU, fp32 on CPU.
    dtype: str = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    checkpoint_every: int = 1000
    # Write checkpoints in a background thread (staged to CPU memory first), as the report does
    # ("saved often and asynchronously"); the final checkpoint is always written synchronously.
    async_checkpoint: bool = True
    keep_checkpoints: int = 2
    eval_every: int = 500
    eval_batches: int = 20
    log_every: int = 1
    resume: bool = False
    # A checkpoint folder whose weights start the run (SFT/DPO from a pre-trained model).
    init_from: str = ""
    # Peak FLOP/s of one device for MFU; 0: from the device table (GPU) or measured (CPU).
    peak_flops: float = 0.0
    # Intra-op threads per process on CPU; 0 keeps torch's default. With several processes on
    # one machine, cores / processes (torchrun sets 1) avoids oversubscription.
    cpu_threads: int = 0
    # Build on the meta device and initialise after sharding (no full copy in memory). Always
    # on GPU; on CPU the full model is built from the seed so runs match across world sizes.
    meta_init: bool = False
    progress: bool = True


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


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _unpack(out: tuple) -> tuple[torch.Tensor, torch.Tensor | float, dict[str, float]]:
    loss_sum, weight = out[0], out[1]
    metrics = out[2] if len(out) > 2 else {}
    return loss_sum, weight, metrics


@torch.no_grad()
def evaluate(model: nn.Module, loader, loss_fn: LossFn, batches: int, device: torch.device) -> float:
    model.eval()
    total, weight = 0.0, 0.0
    for _ in range(batches):
        try:
            batch = loader.next_batch()
        except StopIteration:
            break
        loss_sum, w, _ = _unpack(loss_fn(model, _to_device(batch, device)))
        total += float(loss_sum)
        weight += float(w)
    model.train()
    total, weight = _all_reduce_sum([total, weight], device)
    return total / max(weight, 1.0)


def _split_data(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    files = list_token_shards(cfg.data)
    if cfg.val_data:
        return files, list_token_shards(cfg.val_data)
    if cfg.holdout_shards > 0 and len(files) > cfg.holdout_shards:
        return files[: -cfg.holdout_shards], files[-cfg.holdout_shards:]
    return files, []


def train(cfg: TrainConfig, *, loader=None, val_loader=None, loss_fn: LossFn | None = None, env: DistEnv | None = None) -> dict[str, Any]:
    """Train per ``cfg``; returns a summary (steps, tokens, losses, val loss, checkpoint).

    ``loader``: any object with ``next_batch()``, ``state_dict()``, ``load_state_dict()`` (default:
    ``TokenShardLoader`` over ``cfg.data``). ``val_loader``: a zero-argument factory giving a fresh
    loader for each evaluation (or one loader, then reused). ``loss_fn(model, batch)`` returns
    ``(loss_sum, weight[, metrics])`` (default ``causal_lm_loss``). ``env``: an existing
    ``init_distributed()`` result (then the caller closes it).
    """
    own_env = env is None
    env = env or init_distributed()
    try:
        return _train(cfg, env, loader, val_loader, loss_fn or causal_lm_loss)
    finally:
        if own_env:
            close_distributed(env)


def _say(env: DistEnv, msg: str) -> None:
    if env.is_main:
        print(msg, file=sys.stderr, flush=True)


def _train(cfg: TrainConfig, env: DistEnv, loader, val_loader, loss_fn: LossFn) -> dict[str, Any]:
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    mcfg = model_config(cfg.model, vocab_size=cfg.vocab_size)
    seq_len = cfg.seq_len or mcfg.max_seq_len
    rows_multiple = cfg.micro_batch * env.world_size
    lr, batch_tokens = cfg.lr, cfg.batch_tokens
    if cfg.lr_auto or cfg.batch_auto:
        choice = choose_hyperparameters(report_flops_per_token(mcfg, seq_len), cfg.train_tokens, seq_len, rows_multiple)
        if cfg.lr_auto:
            lr = choice.lr
        if cfg.batch_auto:
            batch_tokens = choice.batch_tokens
        _say(env, f"[pretrain] scaling laws: {choice.why}")
        _say(env, f"[pretrain] chose lr {lr:.3e}{' (auto)' if cfg.lr_auto else ''}, batch {batch_tokens:,} tokens{' (auto)' if cfg.batch_auto else ''}")
    if batch_tokens % (seq_len * rows_multiple):
        raise ValueError(f"batch_tokens {batch_tokens} is not a multiple of seq_len x micro_batch x ranks = {seq_len * rows_multiple}")
    accum = batch_tokens // (seq_len * rows_multiple)
    total_steps = max(1, cfg.train_tokens // batch_tokens)
    last_step = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps

    if env.is_main:
        io.write_json({**asdict(cfg), "resolved": {"lr": lr, "batch_tokens": batch_tokens, "seq_len": seq_len, "accum": accum, "total_steps": total_steps, "world_size": env.world_size, "model": asdict(mcfg)}},
                      io.join(cfg.run_dir, "config.json"))

    # Data: the default is the token-shard loader; SFT/DPO pass their own.
    if loader is None:
        train_files, val_files = _split_data(cfg)
        loader = TokenShardLoader(train_files, seq_len, cfg.micro_batch, env.rank, env.world_size, seed=cfg.seed)
        if val_loader is None and val_files:
            val_loader = lambda: TokenShardLoader(val_files, seq_len, cfg.micro_batch, env.rank, env.world_size, seed=cfg.seed, shuffle=False, loop=False)  # noqa: E731
    make_val = val_loader if callable(val_loader) and not hasattr(val_loader, "next_batch") else (lambda: val_loader)

    # Model: the same seed on every rank gives the same full weights before sharding, so the
    # run does not depend on the world size. Large models are built on the meta device.
    torch.manual_seed(cfg.seed)
    on_gpu = env.device.type == "cuda"
    param_dtype = {"auto": torch.bfloat16 if on_gpu else torch.float32, "bf16": torch.bfloat16, "fp32": torch.float32}[cfg.dtype]
    big = on_gpu or cfg.meta_init
    if big:
        with torch.device("meta"):
            model = Transformer(mcfg)
    else:
        model = Transformer(mcfg)
    parallelize(model, env, param_dtype=param_dtype, activation_checkpointing=cfg.activation_checkpointing, compile=cfg.compile)
    if big:
        model.to_empty(device=env.device)
        model.init_weights()
    if cfg.init_from:
        ckpt.load_model_weights(model, cfg.init_from)
        _say(env, f"[pretrain] weights from {cfg.init_from}")

    optimizer = build_optimizer(model, lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    schedule = Schedule(optimizer, lr, total_steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)

    start_step, tokens_seen = 0, 0
    if cfg.resume:
        latest = ckpt.latest_checkpoint(cfg.run_dir)
        if latest:
            state = ckpt.load_checkpoint(latest, model, optimizer)
            schedule.load_state_dict(state["schedule"])
            loader.load_state_dict(state["loader"])
            start_step, tokens_seen = int(state["step"]), int(state["tokens"])
            _say(env, f"[pretrain] resumed from {latest} at step {start_step}")
        else:
            _say(env, f"[pretrain] --resume: no checkpoint in {cfg.run_dir}, starting fresh")

    fpt = flops_per_token(mcfg, seq_len)
    peak, peak_src = (cfg.peak_flops, "given") if cfg.peak_flops else device_peak_flops(env.device)
    _say(env, f"[pretrain] model {cfg.model}: {sum(p.numel() for p in model.parameters()):,} params (sharded over {env.world_size}), "
              f"{fpt:.3e} FLOPs/token; {total_steps} steps of {batch_tokens:,} tokens (accum {accum} x micro {cfg.micro_batch} x {env.world_size} ranks), "
              f"peak {peak:.3e} FLOP/s ({peak_src})")

    log = _Log(io.join(cfg.run_dir, "log.jsonl"), env.is_main)
    bar = None
    if env.is_main and cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=last_step, initial=start_step, desc="pretrain", unit="step", file=sys.stderr, dynamic_ncols=True)

    def trainer_state(step: int) -> dict[str, Any]:
        return {"tokens": tokens_seen, "schedule": schedule.state_dict(), "loader": loader.state_dict()}

    # Async saves run their collectives on a gloo group of their own (torchtitan does the same).
    async_group = dist.new_group(backend="gloo") if cfg.async_checkpoint else None
    pending: list[ckpt.PendingSave] = []

    def save(step: int, final: bool = False) -> str:
        log.flush()
        while pending:
            pending.pop().finish()
        out = ckpt.save_checkpoint(cfg.run_dir, step, model, optimizer, trainer_state(step), keep=cfg.keep_checkpoints,
                                   async_group=None if final else async_group)
        if isinstance(out, ckpt.PendingSave):
            pending.append(out)
            return out.final
        return out

    losses: list[float] = []
    val_loss = None
    saved = None
    model.train()
    step = start_step
    try:
        while step < last_step:
            t0 = time.perf_counter()
            lr_now = schedule.apply()
            loss_total = torch.zeros((), dtype=torch.float64, device=env.device)
            weight_total = torch.zeros((), dtype=torch.float64, device=env.device)
            # Metrics stay on the device until the step's one read (a .item() per micro-batch
            # would stall a GPU at every micro-batch).
            metric_totals: dict[str, torch.Tensor] = {}
            for micro in range(accum):
                batch = _to_device(loader.next_batch(), env.device)
                # Reduce-scatter gradients only after the last micro-batch.
                model.set_requires_gradient_sync(micro == accum - 1)
                loss_sum, weight, metrics = _unpack(loss_fn(model, batch))
                loss_sum.backward()
                loss_total += loss_sum.detach().double()
                weight_total += torch.as_tensor(weight, dtype=torch.float64, device=env.device)
                for k, v in metrics.items():
                    v = torch.as_tensor(v, device=env.device).detach().double()
                    metric_totals[k] = metric_totals[k] + v if k in metric_totals else v
            # One all-reduce and one read per step: loss and weight sums, the metrics, and how
            # many ranks still write a background checkpoint (0: all done, it can be committed).
            writing = float(bool(pending) and not pending[0].done())
            sums = torch.stack([loss_total, weight_total, *metric_totals.values(),
                                torch.tensor(writing, dtype=torch.float64, device=env.device)])
            if env.world_size > 1:
                dist.all_reduce(sums)
            reduced = sums.tolist()
            global_loss, global_weight, still_writing = reduced[0], reduced[1], reduced[-1]
            # Gradients hold the rank-average of summed losses; make them the global mean.
            scale = env.world_size / max(global_weight, 1.0)
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.mul_(scale)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
            if hasattr(grad_norm, "full_tensor"):
                grad_norm = grad_norm.full_tensor()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            step += 1
            step_tokens = accum * cfg.micro_batch * env.world_size * seq_len
            tokens_seen += step_tokens
            if on_gpu:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            loss = global_loss / max(global_weight, 1.0)
            losses.append(loss)
            tps = step_tokens / dt
            record = {"step": step, "tokens": tokens_seen, "loss": loss, "lr": lr_now, "grad_norm": float(grad_norm),
                      "tokens_per_s": tps, "mfu": fpt * tps / (peak * env.world_size) if peak else None, "step_time_s": dt}
            record.update({k: v / max(global_weight, 1.0) for k, v in zip(metric_totals, reduced[2:-1])})
            if step % cfg.log_every == 0 or step == last_step:
                log.write(record)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {step}")
            vl = make_val() if (cfg.eval_every and (step % cfg.eval_every == 0 or step == last_step)) else None
            if vl is not None:
                val_loss = evaluate(model, vl, loss_fn, cfg.eval_batches, env.device)
                log.write({"step": step, "tokens": tokens_seen, "val_loss": val_loss})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr_now:.2e}", tok_s=f"{tps:,.0f}")
            if pending and still_writing == 0:  # every rank has written its part: commit it now
                pending.pop().finish()
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step != last_step:
                saved = save(step)
        if step > start_step or not ckpt.latest_checkpoint(cfg.run_dir):
            saved = save(step, final=True)
        while pending:
            pending.pop().finish()
    finally:
        if bar is not None:
            bar.close()
        log.close()
    summary = {"steps": step, "total_steps": total_steps, "tokens": tokens_seen, "losses": losses, "val_loss": val_loss,
               "checkpoint": saved or ckpt.latest_checkpoint(cfg.run_dir), "complete": step >= total_steps,
               "lr": lr, "batch_tokens": batch_tokens, "world_size": env.world_size}
    if env.is_main:
        io.write_json({k: v for k, v in summary.items() if k != "losses"} | {"last_loss": losses[-1] if losses else None},
                      io.join(cfg.run_dir, "summary.json"))
    return summary


def main(config: dict[str, Any]) -> dict[str, Any]:
    """Per-worker entry of the launchers (torchrun, Ray Train): a config dict -> ``train``."""
    known = {f for f in TrainConfig.__dataclass_fields__}
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"unknown TrainConfig keys: {sorted(unknown)}")
    return train(TrainConfig(**config))


if __name__ == "__main__":
    # torchrun -m training.trainer <config.json>
    main(io.read_json(sys.argv[1]))
