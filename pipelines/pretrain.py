"""``python -m pipelines pretrain``: the training loop of ``training.trainer`` behind two launchers.

- With ``RAY_ADDRESS`` (``ray job submit`` sets it), or ``--launcher ray``: Ray Train's
  ``TorchTrainer`` runs ``training.trainer.main`` in ``--nproc`` workers (GPUs when the cluster
  has them); Ray sets up the process group. A worker that dies (a node lost, a process killed)
  makes Ray Train restart the worker group (``FailureConfig``, ``--max-failures`` times), and
  the restarted workers resume from the run's last complete checkpoint.
- Locally: ``torchrun`` (``torch.distributed.run``) with ``--nproc`` processes (gloo on CPU,
  NCCL on GPU), or in this process when ``--nproc 1``.

Every launcher runs the same per-worker entry, writes into the same run folder
(``config.json``, ``log.jsonl``, ``checkpoints/``, ``summary.json``; a local path or an
object-store URI) and ends with ``stats.json`` and a summary. A run whose schedule is complete is skipped on re-run;
``--resume`` continues from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from storage import io
from pipelines import config as config_mod
from pipelines.cli import add_config_arguments
from pipelines.runtime import Timer, print_summary

NAME = "pretrain"
HELP = "pre-train a DeepSeek-style decoder on token shards with FSDP (torchrun locally, Ray Train on a cluster)"

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _auto_or(kind):
    def parse(s: str):
        return "auto" if s == "auto" else kind(float(s)) if kind is int else kind(s)
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", help="token shards (files or folders) from the tokenize stage")
    p.add_argument("--val-data", nargs="+", help="held-out token shards (default: the last data shard)")
    p.add_argument("--output", help="run folder (config, log.jsonl, checkpoints, stats.json)")
    p.add_argument("--model", help="named model config: tiny, 125m, 1b, 7b, 67b")
    p.add_argument("--tokenizer", help="the tokenizer folder (or its tokenizer.json): its vocabulary size sets the model's")
    p.add_argument("--vocab-size", type=int, help="vocabulary size before padding (default 100,015)")
    p.add_argument("--seq-len", type=int)
    p.add_argument("--micro-batch", type=int, help="rows per micro-batch per process")
    p.add_argument("--batch", type=_auto_or(int), help="global batch in tokens, or 'auto' (scaling law)")
    p.add_argument("--lr", type=_auto_or(float), help="peak learning rate, or 'auto' (scaling law)")
    p.add_argument("--train-tokens", type=_auto_or(int), help="tokens the schedule spans (sets the compute budget)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (schedule unchanged)")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--schedule", choices=["multi_step", "cosine", "constant"])
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--init-from", help="checkpoint folder whose weights start the run")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile each block")
    p.add_argument("--activation-checkpointing", action="store_true", default=None)
    p.add_argument("--async-checkpoint", action=argparse.BooleanOptionalAction, default=None,
                   help="write intermediate checkpoints in a background thread (default on)")
    p.add_argument("--resume", action="store_true", default=None, help="continue from the run's latest checkpoint")
    add_launcher_arguments(p)
    add_config_arguments(p)


LAUNCHERS = ("auto", "inline", "torchrun", "ray")


@dataclasses.dataclass
class Launch:
    """How training processes start (pretrain, sft and dpo share it; ``pipelines run``'s
    training sections are ones). auto = Ray Train when the run joins a cluster (RAY_ADDRESS), else
    torchrun for nproc > 1, else in this process."""

    nproc: int = 1  # data-parallel processes (ranks)
    launcher: str = "auto"
    # Ray Train: restarts of the worker group after a worker dies; each restart resumes from the
    # run's last complete checkpoint.
    max_failures: int = 3


def resolve_launcher(launcher: str, nproc: int) -> str:
    """The launcher ``auto`` stands for here; a ConfigError naming an unknown one."""
    if launcher not in LAUNCHERS:
        raise config_mod.ConfigError(f"bad option launcher={launcher!r}; choose one of {', '.join(LAUNCHERS)}")
    if launcher == "auto":
        return "ray" if os.environ.get("RAY_ADDRESS") else ("torchrun" if nproc > 1 else "inline")
    return launcher


def add_launcher_arguments(p: argparse.ArgumentParser) -> None:
    """How training processes start (:class:`Launch`; pretrain, sft and dpo share them)."""
    p.add_argument("--nproc", type=int, default=1, help="processes (data-parallel ranks)")
    p.add_argument("--launcher", choices=LAUNCHERS, default="auto",
                   help="auto: Ray Train with RAY_ADDRESS, else torchrun for --nproc > 1, else this process")
    p.add_argument("--max-failures", type=int, default=3,
                   help="Ray Train: restarts of the worker group after a worker dies (each resumes from the last complete checkpoint)")


_FLAGS = {"data": "data", "val_data": "val_data", "output": "run_dir", "model": "model", "vocab_size": "vocab_size",
          "seq_len": "seq_len", "micro_batch": "micro_batch", "max_steps": "max_steps", "warmup_steps": "warmup_steps",
          "schedule": "schedule", "checkpoint_every": "checkpoint_every", "eval_every": "eval_every",
          "init_from": "init_from", "compile": "compile", "activation_checkpointing": "activation_checkpointing", "resume": "resume",
          "async_checkpoint": "async_checkpoint"}


def build_config(args: argparse.Namespace):
    from training.config import TrainConfig

    over: dict[str, Any] = {}
    for flag, key in _FLAGS.items():
        v = getattr(args, flag, None)
        if v is not None:
            over[key] = v
    if args.lr is not None:
        over.update({"lr_auto": True} if args.lr == "auto" else {"lr": args.lr, "lr_auto": False})
    if args.batch is not None:
        over.update({"batch_auto": True} if args.batch == "auto" else {"batch_tokens": args.batch, "batch_auto": False})
    if args.train_tokens is not None:
        over["train_tokens"] = args.train_tokens
    over.update(config_mod.parse_overrides(args.overrides))
    return config_mod.load(TrainConfig, args.config, over)


# Config keys that hold paths (pre-training's, SFT's and DPO's): made absolute once, in launch().
PATH_KEYS = ("run_dir", "init_from")
PATH_LIST_KEYS = ("data", "val_data", "reference_data")


def absolute_paths(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """The config with every path absolute (URIs as they are): the workers of torchrun and Ray
    Train run in other folders, on other machines."""
    out = dict(cfg_dict)
    for key in PATH_KEYS:
        if out.get(key):
            out[key] = io.absolute(out[key])
    for key in PATH_LIST_KEYS:
        if out.get(key):
            out[key] = [io.absolute(p) for p in out[key]]
    return out


def launch(cfg_dict: dict[str, Any], nproc: int, launcher: str, entry_module: str = "training.trainer", max_failures: int = 3) -> int:
    """Run ``entry_module``'s ``main(config)`` on ``nproc`` ranks; returns an exit status.

    ``entry_module`` must expose ``main(config: dict)`` and run ``main(json.load(argv[1]))`` as
    ``__main__`` (``training.trainer`` does); SFT/DPO reuse this launcher with theirs. Paths in
    the config (local or URIs) are made absolute here, once, for every launcher.
    """
    cfg_dict = absolute_paths(cfg_dict)
    launcher = resolve_launcher(launcher, nproc)
    if launcher == "inline":
        import importlib

        importlib.import_module(entry_module).main(cfg_dict)
        return 0
    if launcher == "torchrun":
        # The config travels in a local file (the run folder may be an object store).
        fd, path = tempfile.mkstemp(prefix="launch-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(cfg_dict, f)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", entry_module, path]
        try:
            return subprocess.call(cmd, env=env)
        finally:
            os.unlink(path)
    if launcher == "ray":
        return _launch_ray(cfg_dict, nproc, entry_module, max_failures)
    raise ValueError(f"unknown launcher {launcher!r}")


def ray_worker_resources(use_gpu: bool) -> dict[str, float]:
    """What each Ray Train worker asks Ray for (``--dry-run`` prints the same)."""
    return {"CPU": 1, "GPU": 1} if use_gpu else {"CPU": 1}


def _launch_ray(cfg: dict[str, Any], nproc: int, entry_module: str, max_failures: int) -> int:
    import importlib

    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipelines.runtime import init_ray

    init_ray()
    use_gpu = ray.cluster_resources().get("GPU", 0) >= nproc
    entry = importlib.import_module(entry_module).main
    cfg = dict(cfg)
    # A restarted worker group (FailureConfig) continues from the last complete checkpoint; on
    # the first attempt there is none (run() refuses a run folder with checkpoints unless
    # --resume), so this starts fresh. (SFT and DPO always resume.)
    if "resume" in cfg:
        cfg["resume"] = True
    if not use_gpu and not cfg.get("cpu_threads"):
        cfg["cpu_threads"] = max(1, int(ray.cluster_resources().get("CPU", 1)) // nproc)
    trainer = TorchTrainer(
        entry,
        train_loop_config=cfg,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=nproc, use_gpu=use_gpu, resources_per_worker=ray_worker_resources(use_gpu)),
        # Ray Train's own state beside the run (on every node's reach when the run is on an object store).
        run_config=RunConfig(name=io.basename(cfg["run_dir"]) or "pretrain", storage_path=io.join(cfg["run_dir"], "ray"),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
    trainer.fit()
    return 0


def run(args: argparse.Namespace) -> int:
    return pretrain(build_config(args), Launch(args.nproc, args.launcher, args.max_failures), tokenizer=args.tokenizer)


def pretrain(cfg, how: Launch, tokenizer: str | None = None) -> int:
    """Pre-train with ``cfg`` (a ``training.config.TrainConfig``) on ``how.nproc`` ranks; the
    model's vocabulary is ``tokenizer``'s when one is given. Skips a complete run; refuses a run
    folder with checkpoints unless ``cfg.resume``. Writes stats.json, prints the summary."""
    if tokenizer:
        from tokenizer import load

        cfg = dataclasses.replace(cfg, vocab_size=load(tokenizer).get_vocab_size())
    if not cfg.data:
        print("pretrain: --data (token shards) is required", file=sys.stderr)
        return 2
    summary_path = io.join(cfg.run_dir, "summary.json")
    if io.exists(summary_path) and io.read_json(summary_path).get("complete") and not cfg.resume:
        from training.trainer import write_stats

        if not io.exists(io.join(cfg.run_dir, "stats.json")):
            # Killed after the last step but before stats.json: the schedule is complete, write it now.
            write_stats(cfg.run_dir, float("nan"))
        print(f"pretrain: {cfg.run_dir} is complete (summary.json); nothing to do", file=sys.stderr)
        return 0
    from training.checkpoint import CheckpointError, is_complete, latest_checkpoint
    from training.data import list_token_shards
    from training.trainer import plan_batches, write_stats

    # A user's mistake ends here in one line (pipelines.cli), not in every worker's traceback.
    resolve_launcher(how.launcher, how.nproc)
    list_token_shards(cfg.data)
    plan_batches(cfg, how.nproc)
    if cfg.init_from and not is_complete(cfg.init_from):
        raise CheckpointError(f"--init-from {cfg.init_from} is not a complete checkpoint (no manifest.json); "
                              "give a checkpoint folder, <run>/checkpoints/step-XXXXXXXX")
    if latest_checkpoint(cfg.run_dir) and not cfg.resume:
        print(f"pretrain: {cfg.run_dir} has checkpoints; pass --resume to continue it or choose another --output", file=sys.stderr)
        return 2
    from pipelines.config import to_dict

    with Timer() as t:
        rc = launch(to_dict(cfg), how.nproc, how.launcher, max_failures=how.max_failures)
    if rc != 0:
        print(f"pretrain: training exited with status {rc}", file=sys.stderr)
        return rc
    stats = write_stats(cfg.run_dir, t.seconds)
    summary = io.read_json(summary_path)
    print_summary(NAME, stats, t.seconds, {"steps": summary["steps"], "tokens": summary["tokens"], "tokens/s": summary["tokens"] / max(t.seconds, 1e-9)})
    print(f"  last loss {summary.get('last_loss')}, val loss {summary.get('val_loss')}, checkpoint {summary.get('checkpoint')}", file=sys.stderr)
    return 0
