"""The trainer on real token shards: loader, schedule, scaling laws, FSDP ranks, resume, launchers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REPO, SAMPLE
from training import checkpoint as ckpt
from training.data import TokenShardLoader, list_token_shards
from training.model import model_config, report_flops_per_token
from training.optim import lr_at
from training.scaling import choose_hyperparameters, optimal_batch_tokens, optimal_lr
from training.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Real token shards: the bundled Common Crawl sample through a small BPE (4 shards, row groups of 64 docs)."""
    from training.sample_data import write_token_shards

    out = tmp_path_factory.mktemp("tokens")
    facts = write_token_shards(str(out), vocab_size=2048, n_shards=4, row_group_size=64, text_dir=str(SAMPLE / "text"))
    assert facts["documents"] > 600 and facts["tokens"] > 500_000
    return str(out)



def _cfg(shards: str, run_dir: str, **kw) -> TrainConfig:
    base = dict(run_dir=run_dir, data=[shards], model="tiny", vocab_size=2048, seq_len=64, micro_batch=2,
                batch_tokens=64 * 8, train_tokens=64 * 8 * 40, lr=3e-3, warmup_steps=3, checkpoint_every=0,
                eval_every=0, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _losses(run_dir: str) -> dict[int, float]:
    out = {}
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "loss" in rec:
                out[rec["step"]] = rec["loss"]
    return out


# -- loader ------------------------------------------------------------------------------------

def test_loader_packs_every_token_and_shards_by_rank(shards):
    import pyarrow.parquet as pq

    files = list_token_shards([shards])
    total = sum(len(pq.read_table(f).column("input_ids").combine_chunks().values) for f in files)
    one = TokenShardLoader(files, seq_len=64, micro_batch=4, seed=7, loop=False)
    rows = []
    while True:
        try:
            rows.append(one.next_rows(4))
        except StopIteration:
            break
    rows = np.concatenate(rows)
    assert total - 65 * 4 < len(rows) * 64 + 1 <= total  # all but the last partial rows
    # Without shuffling, stride 64 with a 65-token window: consecutive rows overlap by one token
    # and the rows are the documents' tokens in order.
    plain = TokenShardLoader(files, seq_len=64, micro_batch=4, seed=7, shuffle=False, loop=False).next_rows(50)
    assert np.array_equal(plain[1:, 0], plain[:-1, -1])
    # The packed stream holds the documents' tokens, shuffled: no token more often than in the data.
    stream = rows[:, 1:].ravel()
    every = np.concatenate([pq.read_table(f).column("input_ids").combine_chunks().values.to_numpy() for f in files])
    assert np.array_equal(np.concatenate([plain[0], plain[1:, 1:].ravel()]), every[: 50 * 64 + 1])
    assert np.array_equal(np.bincount(stream, minlength=2048)[:2048] <= np.bincount(every, minlength=2048)[:2048], np.ones(2048, bool))
    assert not np.array_equal(stream[:1000], every[:1000])  # shuffled

    # World of 2: rank r gets global rows r, r+2, ...; together they are the 1-rank stream.
    r0 = TokenShardLoader(files, 64, 2, rank=0, world_size=2, seed=7)
    r1 = TokenShardLoader(files, 64, 2, rank=1, world_size=2, seed=7)
    solo = TokenShardLoader(files, 64, 4, seed=7)
    for _ in range(5):
        a, b, s = r0.next_batch()["input_ids"], r1.next_batch()["input_ids"], solo.next_batch()["input_ids"]
        assert torch.equal(torch.stack([a, b], dim=1).reshape(4, 64), s)
    # A different seed gives a different order.
    assert not torch.equal(TokenShardLoader(files, 64, 4, seed=8).next_batch()["input_ids"], TokenShardLoader(files, 64, 4, seed=7).next_batch()["input_ids"])


def test_loader_state_resumes_with_the_next_batch_across_epochs(shards):
    files = list_token_shards([shards])
    a = TokenShardLoader(files, seq_len=64, micro_batch=16, seed=3)
    for _ in range(1500):  # past the end of the data (~21k rows): the second epoch
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # JSON-able, as in a checkpoint manifest
    assert state["epoch"] >= 1 and 0 <= state["unit"] and state["leftover"] is not None
    b = TokenShardLoader(files, seq_len=64, micro_batch=16, seed=3)
    b.load_state_dict(state)
    for _ in range(30):
        x, y = a.next_batch(), b.next_batch()
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
        assert torch.equal(x["input_ids"][:, 1:], x["labels"][:, :-1])


# -- schedule and scaling laws -----------------------------------------------------------------

def test_multi_step_and_cosine_schedules_at_their_boundaries():
    peak, total, warm = 4.2e-4, 10_000, 2000
    f = lambda s, kind="multi_step": lr_at(s, peak, total, warm, kind)  # noqa: E731
    assert f(0) == pytest.approx(peak / warm)
    assert f(999) == pytest.approx(peak / 2)
    assert f(1999) == pytest.approx(peak) and f(2000) == pytest.approx(peak)
    assert f(7999) == pytest.approx(peak)            # until 80% of the tokens
    assert f(8000) == pytest.approx(0.316 * peak)   # 31.6% from 80%
    assert f(8999) == pytest.approx(0.316 * peak)
    assert f(9000) == pytest.approx(0.1 * peak)     # 10% from 90%
    assert f(9999) == pytest.approx(0.1 * peak)
    assert f(2000, "cosine") == pytest.approx(peak)
    assert f(6000, "cosine") == pytest.approx(peak * (0.1 + 0.9 * 0.5))
    assert f(9999, "cosine") == pytest.approx(0.1 * peak, rel=1e-3)


def test_scaling_laws_reproduce_the_reports_7b_and_67b_choices():
    # The report's runs: 2T tokens; 7B at batch 2304 x 4096 and LR 4.2e-4, 67B at 4608 and 3.2e-4.
    for name, batch_seqs, lr in (("7b", 2304, 4.2e-4), ("67b", 4608, 3.2e-4)):
        m = report_flops_per_token(model_config(name))
        c = m * 2e12
        assert optimal_lr(c) == pytest.approx(lr, rel=0.05)
        assert optimal_batch_tokens(c) / 4096 == pytest.approx(batch_seqs, rel=0.12)
        choice = choose_hyperparameters(m, 2_000_000_000_000, 4096, rows_multiple=1)
        assert choice.batch_tokens == choice.batch_sequences * 4096
        assert "C = M x D" in choice.why
    # The fitted laws are what they say: ~2,250 and ~5,040 sequences for 7B and 67B.
    assert round(optimal_batch_tokens(report_flops_per_token(model_config("7b")) * 2e12) / 4096, -2) == 2300


# -- the training loop -------------------------------------------------------------------------

def test_two_gloo_processes_give_the_losses_of_one(shards, tmp_path):
    """FSDP over 2 ranks (torchrun, gloo, accumulation 2) vs 1 rank (accumulation 4) on the same global batches."""
    one = _cfg(shards, str(tmp_path / "n1"), max_steps=5)
    train(one)
    two = _cfg(shards, str(tmp_path / "n2"), max_steps=5)
    path = tmp_path / "cfg2.json"
    path.write_text(json.dumps(two.__dict__))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "training.trainer", str(path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {}
    for nproc, cfg in ((1, one), (2, two)):
        results[nproc] = _losses(cfg.run_dir)
        resolved = json.load(open(os.path.join(cfg.run_dir, "config.json")))["resolved"]
        assert resolved["world_size"] == nproc and resolved["accum"] == 4 // nproc
    assert sorted(results[1]) == [1, 2, 3, 4, 5]
    for step in results[1]:
        assert results[2][step] == pytest.approx(results[1][step], rel=1e-5, abs=1e-5)
    assert results[1][5] < results[1][1]  # and it is learning
    # Both saved the same model at the end: the sharded checkpoint of 2 ranks loads into 1.
    from training.export import load_trained

    a, b = load_trained(ckpt.latest_checkpoint(one.run_dir)), load_trained(ckpt.latest_checkpoint(two.run_dir))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        # Adam divides by sqrt(v): rare-token rows amplify fp32 rounding, still << the updates (~1e-2).
        torch.testing.assert_close(p, q, rtol=1e-3, atol=3e-5, msg=name)


def test_every_fresh_process_computes_the_same_floats_with_two_threads():
    """torch's first parallel region in a process computes cos/exp/log/sqrt differently in the
    last bits in about one process in three (2 threads): there the first ``cos`` of 4,096 floats
    differs from the second. After ``start_cpu_threads`` (the trainer's first act) the first
    equals the second, and every fresh process computes the same."""
    code = ("import hashlib, torch; torch.set_num_threads(2); from training.parallelize import start_cpu_threads; "
            "start_cpu_threads(); x = torch.linspace(0.1, 60, 4096); a = x.cos(); b = x.cos(); "
            "print(int((a != b).sum()), hashlib.sha256(a.numpy().tobytes()).hexdigest())")
    seen = {subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip() for _ in range(8)}
    assert len(seen) == 1 and next(iter(seen)).startswith("0 "), seen


def test_interrupted_and_resumed_equals_straight_through(shards, tmp_path):
    straight = train(_cfg(shards, str(tmp_path / "straight"), max_steps=8))
    run = str(tmp_path / "resumed")
    # The interrupted run writes its intermediate checkpoints in the background.
    first = train(_cfg(shards, run, max_steps=4, checkpoint_every=2, async_checkpoint=True))
    assert first["steps"] == 4 and ckpt.latest_checkpoint(run).endswith("step-00000004")
    async_written = ckpt.list_checkpoints(run)[0]
    assert async_written.endswith("step-00000002") and ckpt.read_trainer_state(async_written)["loader"]["rows_served"] == 2 * 8
    from training.export import load_trained

    assert load_trained(async_written).state_dict()["norm.weight"].ne(1).any()  # trained weights, readable
    # A crash in the middle of a later save leaves only a temporary folder: ignored.
    os.makedirs(os.path.join(run, "checkpoints", ".tmp-step-00000006"))
    assert ckpt.latest_checkpoint(run).endswith("step-00000004")
    second = train(_cfg(shards, run, max_steps=8, resume=True))
    assert second["steps"] == 8
    resumed = first["losses"] + second["losses"]
    assert len(resumed) == 8
    for a, b in zip(straight["losses"], resumed):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6)
    state = ckpt.read_trainer_state(second["checkpoint"])
    assert state["step"] == 8 and state["schedule"]["step_count"] == 8 and state["loader"]["rows_served"] == 8 * 8
    assert len(ckpt.list_checkpoints(run)) <= 2  # keep_checkpoints


def test_loss_falls_on_real_data(shards, tmp_path):
    cfg = _cfg(shards, str(tmp_path / "falls"), train_tokens=64 * 8 * 30, eval_every=10, eval_batches=8, lr=5e-3)
    out = train(cfg)
    losses = out["losses"]
    assert len(losses) == 30
    assert losses[0] == pytest.approx(math.log(2048), abs=0.1)  # uniform over the padded vocabulary at init 0.006
    assert np.mean(losses[-5:]) < losses[0] - 1.0
    vals = [json.loads(l)["val_loss"] for l in open(os.path.join(cfg.run_dir, "log.jsonl")) if "val_loss" in l]
    assert len(vals) == 3 and vals[-1] < math.log(2048) - 0.8  # held-out shard, not trained on
    recs = [json.loads(l) for l in open(os.path.join(cfg.run_dir, "log.jsonl")) if '"loss"' in l]
    assert all(r["grad_norm"] > 0 and r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 for r in recs)


def test_pretrain_stage_cli_stats_skip_and_plot(shards, tmp_path):
    from pipelines.cli import main

    out = tmp_path / "run"
    args = ["pretrain", "--data", shards, "--output", str(out), "--model", "tiny", "--tokenizer", os.path.join(shards, "tokenizer.json"),
            "--seq-len", "64", "--micro-batch", "2", "--batch", "auto", "--lr", "auto", "--train-tokens", str(64 * 8 * 4),
            "--warmup-steps", "1", "--set", "eval_every=2", "--set", "eval_batches=2", "--set", "progress=false"]
    assert main(args) == 0
    stats = json.load(open(out / "stats.json"))
    assert stats["input"] == stats["output"] + sum(stats["dropped"].values())
    assert stats["counters"]["tokens"] == stats["summary"]["tokens"] > 0
    resolved = json.load(open(out / "config.json"))["resolved"]
    assert resolved["lr"] == pytest.approx(optimal_lr(report_flops_per_token(model_config("tiny", vocab_size=2048), 64) * 64 * 8 * 4))
    assert main(args) == 0  # complete: skipped
    assert len(_losses(str(out))) == stats["counters"]["steps"]
    assert main(["plot-run", str(out)]) == 0
    for png in ("loss.png", "lr.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The trained checkpoint exported by the command line and read back by transformers.
    from transformers import LlamaForCausalLM

    from training.export import load_trained, main as export_main

    ckpt_dir = stats["summary"]["checkpoint"]
    assert export_main([ckpt_dir, str(tmp_path / "hf"), "--tokenizer", os.path.join(shards, "tokenizer.json"), "--eos-id", "0"]) == 0
    hf = LlamaForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    x = torch.randint(0, 2048, (1, 32))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, load_trained(ckpt_dir)(x), rtol=1e-4, atol=1e-4)


def test_ray_train_launcher_runs_the_same_loop(shards, tmp_path, ray_session):
    """Ray Train's TorchTrainer, 2 workers over gloo (accumulation 1): the losses of one process
    (accumulation 2) on the same global batches, and a checkpoint the trainer can resume."""
    from pipelines.config import to_dict
    from pipelines.pretrain import launch

    losses = {}
    for launcher, nproc in (("ray", 2), ("inline", 1)):
        cfg = _cfg(shards, str(tmp_path / launcher), micro_batch=2, batch_tokens=64 * 4, max_steps=3, cpu_threads=1)
        assert launch(to_dict(cfg), nproc, launcher) == 0
        losses[launcher] = _losses(cfg.run_dir)
    assert sorted(losses["ray"]) == [1, 2, 3]
    for step, loss in losses["inline"].items():
        assert losses["ray"][step] == pytest.approx(loss, rel=1e-5, abs=1e-5)
    resolved = json.load(open(tmp_path / "ray" / "config.json"))["resolved"]
    assert resolved["world_size"] == 2 and resolved["accum"] == 1
    assert ckpt.read_trainer_state(ckpt.latest_checkpoint(str(tmp_path / "ray")))["step"] == 3


def test_activation_checkpointing_and_meta_init(shards, tmp_path):
    """Activation checkpointing recomputes, it does not change the maths; the GPU path's
    meta-device build + init after sharding starts from the 0.006 init (loss ~ ln V)."""
    plain = train(_cfg(shards, str(tmp_path / "plain"), max_steps=3))
    ac = train(_cfg(shards, str(tmp_path / "ac"), max_steps=3, activation_checkpointing=True))
    assert ac["losses"] == pytest.approx(plain["losses"], rel=1e-6, abs=1e-6)
    meta = train(_cfg(shards, str(tmp_path / "meta"), max_steps=3, meta_init=True))
    assert meta["losses"][0] == pytest.approx(math.log(2048), abs=0.05)
    assert meta["losses"][-1] < meta["losses"][0]


@pytest.mark.slow
def test_bench_gpu_script_runs_on_cpu_with_compile(tmp_path):
    """The GPU benchmark's path (torch.compile per block, FSDP2) on a tiny config on CPU."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--model", "tiny", "--seq-len", "64", "--micro-batch", "2",
           "--accum", "1", "--steps", "2", "--warmup", "1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.load(open(tmp_path / "bench_gpu.json"))
    assert result["compile"] and result["tokens_per_s"] > 0 and result["timed_steps"] == 2


def test_training_killed_between_checkpoints_resumes_from_the_last_complete_one(shards, tmp_path):
    """A real training process SIGKILLed mid-run, with a half-written checkpoint folder left
    behind, resumes from the last complete checkpoint and ends with the straight run's losses."""
    import signal
    import subprocess
    import sys
    import time
    from dataclasses import asdict

    steps = 30
    straight = train(_cfg(shards, str(tmp_path / "straight"), max_steps=steps, checkpoint_every=4))
    run = str(tmp_path / "killed")
    cfg_path = tmp_path / "killed.json"
    cfg_path.write_text(json.dumps(asdict(_cfg(shards, run, max_steps=steps, checkpoint_every=4, cpu_threads=1))))
    proc = subprocess.Popen([sys.executable, "-m", "training.trainer", str(cfg_path)], cwd=str(SAMPLE.parents[1]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            latest = ckpt.latest_checkpoint(run)
            if latest and ckpt.read_trainer_state(latest)["step"] >= 8:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = ckpt.read_trainer_state(ckpt.latest_checkpoint(run))["step"]
    assert 8 <= killed_at < steps
    # What a crash in the middle of a save leaves: a temporary folder with part of the files.
    half = os.path.join(run, "checkpoints", f".tmp-step-{killed_at + 4:08d}")
    os.makedirs(half, exist_ok=True)
    with open(os.path.join(half, "__0_0.distcp"), "wb") as f:
        f.write(b"half a shard")
    assert ckpt.latest_checkpoint(run).endswith(f"step-{killed_at:08d}")
    resumed = train(_cfg(shards, run, max_steps=steps, checkpoint_every=4, resume=True))
    assert resumed["steps"] == steps
    after = _losses(run)  # the resumed run's records replace the killed run's for the same steps
    assert sorted(after) == list(range(1, steps + 1))
    for step, loss in enumerate(straight["losses"], 1):
        assert after[step] == pytest.approx(loss, rel=1e-6, abs=1e-6), step
