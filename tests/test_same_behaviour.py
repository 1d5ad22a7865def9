"""Same behaviour, proved: figures recorded before a refactor, held to after it.

``tests/golden/training.json`` holds, per section, what a fixed run produced when it was
recorded. A section is one test's observations; other tests may add sections of their own to
the same file (``golden(section, observed)`` reads and writes only its own).

- ``training``: pre-training -> SFT -> DPO through the command line (``pipelines.cli.main``) on
  the bundled data (``data/sample``): every logged loss, learning rate, gradient norm and DPO
  metric of every step, the validation losses, the held-out figures before and after, the
  counts of each stage's stats, a digest of the prepared SFT/DPO shards and the reference
  log-probs. Floats are compared with a relative tolerance of 1e-4 (another CPU may round
  differently); integers, strings and digests exactly.

Regenerate a section only when a change is meant to alter what it records:

    GOLDEN_REGENERATE=1 .venv/bin/python -m pytest -q tests/test_same_behaviour.py

(then commit the new ``tests/golden/*.json`` with the reason in the message).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from conftest import REPO, SAMPLE

GOLDEN = REPO / "tests" / "golden"
RTOL = 1e-4
# DPO's rewards and margins are beta * (policy - reference) log-probs, each near -600, computed in
# differently shaped batches (the trainer's and the reference tasks'): their float32 rounding,
# about 1e-5, differs from CPU to CPU (the kernels follow the instruction set), a relative
# difference of 5e-4 on a margin of 0.0175. They are compared to within this absolute error.
REWARD_ATOL = 1e-4
# Fields of a log record that are timings, not behaviour.
TIMINGS = {"tokens_per_s", "mfu", "step_time_s", "seconds", "reference_seconds"}


def golden(section: str, observed: Any, file: str = "training.json") -> None:
    """Compare ``observed`` with the recorded section (or record it with GOLDEN_REGENERATE=1)."""
    path = GOLDEN / file
    recorded = json.loads(path.read_text()) if path.exists() else {}
    if os.environ.get("GOLDEN_REGENERATE"):
        recorded[section] = observed
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        return
    assert section in recorded, f"{path} has no section {section!r}: record it with GOLDEN_REGENERATE=1"
    worst = _compare(recorded[section], json.loads(json.dumps(observed)), section)
    print(f"golden {section}: largest relative difference of a float {worst:.3g}")


def _compare(want: Any, got: Any, where: str) -> float:
    """Raise at the first difference (naming where it is); return the largest float rel. diff."""
    if isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, (int, float)) and isinstance(want, (int, float)), f"{where}: {got!r} != {want!r}"
        if math.isnan(want) or math.isnan(got):
            assert math.isnan(want) and math.isnan(got), f"{where}: {got!r} != {want!r}"
            return 0.0
        diff = abs(got - want) / max(abs(want), 1e-12)
        atol = REWARD_ATOL if "reward" in where.rsplit(".", 1)[-1] else 1e-9
        assert diff <= RTOL or abs(got - want) < atol, f"{where}: {got!r} != {want!r} (relative difference {diff:.3g})"
        return diff
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        return max([_compare(want[k], got[k], f"{where}.{k}") for k in want], default=0.0)
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {len(got) if isinstance(got, list) else got!r} items, not {len(want)}"
        return max([_compare(a, b, f"{where}[{i}]") for i, (a, b) in enumerate(zip(want, got))], default=0.0)
    assert got == want, f"{where}: {got!r} != {want!r}"
    return 0.0


def _log(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS} for line in (run / "log.jsonl").read_text().splitlines()]


def _dpo_log(run: Path) -> list[dict]:
    """DPO's log without the first step's rewards: there policy and reference are one model, so
    each pair's reward is float32 rounding of two log-probs near -600 (0 or about 1e-6 by the CPU),
    and the reward accuracy, the sign of such noise, is 0.0 on one machine and 0.25 on another."""
    return [{k: v for k, v in r.items() if not (r.get("step") == 1 and "reward" in k)} for r in _log(run)]


def _stats(run: Path, section: str, keep: tuple[str, ...]) -> dict:
    s = json.loads((run / "stats.json").read_text())
    counters = {k: v for k, v in s["counters"].items() if k not in TIMINGS}
    return {"input": s["input"], "output": s["output"], "dropped": s["dropped"], "counters": counters,
            section: {k: s[section][k] for k in keep}}


def _digest(folder: Path) -> dict[str, str]:
    """A digest of each shard's rows (not its bytes: the Parquet encoder may change)."""
    return {p.name: hashlib.sha256(json.dumps(pq.read_table(p).to_pylist(), sort_keys=True).encode()).hexdigest()[:16]
            for p in sorted(folder.glob("*.parquet"))}


def _head(src: Path, dst: Path, n: int) -> str:
    raw = src.read_bytes()
    text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    dst.write_text("".join(line + "\n" for line in text.splitlines()[:n]))
    return str(dst)


def _inputs(tmp: Path) -> tuple[str, str]:
    """A project tokenizer (1,000 ordinary tokens) trained on the bundled web text and chats, and
    the first web documents as token shards (2 files of 3 row groups), as the tokenize stage writes them."""
    import pyarrow as pa

    from tokenizer import TokenizerConfig, encode_document, save, train
    from curation.schema import TOKEN_SHARD_SCHEMA
    from training.sample_data import sample_documents

    docs = sample_documents(str(SAMPLE / "text"))[:240]
    chats = [json.loads(line) for line in (SAMPLE / "sft" / "self-instruct-seed-tasks.jsonl").read_text().splitlines()[:100]]
    texts = [d["text"] for d in docs] + [r["instruction"] + "\n" + i["output"] for r in chats for i in r["instances"]]
    tok = train(texts, TokenizerConfig(vocab_size=1000))
    save(tok, str(tmp / "tok"))
    (tmp / "tokens").mkdir()
    for s in range(2):
        part = docs[s * 120:(s + 1) * 120]
        table = pa.table({"id": [d["id"] for d in part], "epoch": [0] * len(part), "input_ids": pa.array([encode_document(tok, d["text"]) for d in part], pa.list_(pa.uint32()))},
                         schema=TOKEN_SHARD_SCHEMA)
        pq.write_table(table, tmp / "tokens" / f"shard-{s:05d}.parquet", row_group_size=40)
    return str(tmp / "tok"), str(tmp / "tokens")


def test_training_losses_unchanged(tmp_path, ray_session):
    from pipelines.cli import main

    tok, tokens = _inputs(tmp_path)
    common = ["--tokenizer", tok, "--launcher", "inline", "--set", "progress=false", "--set", "cpu_threads=1"]
    pre, sft, dpo = tmp_path / "pre", tmp_path / "sft", tmp_path / "dpo"
    # 8 steps of 2 micro-batches of 2 rows of 128 tokens; async checkpoint and validation every 4.
    assert main(["pretrain", "--data", tokens, "--output", str(pre), "--model", "tiny", "--seq-len", "128", "--micro-batch", "2",
                 "--batch", "512", "--lr", "3e-3", "--train-tokens", str(512 * 8), "--warmup-steps", "2", "--checkpoint-every", "4",
                 "--eval-every", "4", "--set", "eval_batches=2", *common]) == 0
    # SFT: self-instruct and GSM8K chats (some GSM8K test questions: decontamination drops them), 1 epoch.
    chat = [_head(SAMPLE / "sft" / "self-instruct-seed-tasks.jsonl", tmp_path / "seed.jsonl", 50),
            _head(SAMPLE / "sft" / "gsm8k-chat-train.jsonl", tmp_path / "gsm8k-chat.jsonl", 20),
            _head(SAMPLE / "sft" / "gsm8k-test.jsonl", tmp_path / "gsm8k-test.jsonl", 5)]
    assert main(["sft", "--checkpoint", str(pre), "--data", *chat, "--output", str(sft), "--epochs", "1", "--lr", "2e-3",
                 "--seq-len", "256", "--micro-batch", "2", "--batch-rows", "4", "--set", "held_out_fraction=0.2", "--set", "eval_every=3",
                 "--set", "eval_batches=2", "--set", "checkpoint_every=0", *common]) == 0
    # DPO: hh-rlhf and orca pairs, reference log-probs precomputed by Ray tasks.
    pairs = [_head(SAMPLE / "preference" / "hh-rlhf-harmless-base-test.jsonl.gz", tmp_path / "hh.jsonl", 30),
             _head(SAMPLE / "preference" / "orca-dpo-pairs.jsonl", tmp_path / "orca.jsonl", 10)]
    assert main(["dpo", "--checkpoint", str(sft), "--data", *pairs, "--output", str(dpo), "--lr", "2e-3", "--micro-batch", "2",
                 "--batch-pairs", "4", "--set", "eval_every=3", "--set", "eval_batches=2", "--set", "checkpoint_every=0", *common]) == 0
    ref = [pq.read_table(p).to_pydict() for p in sorted((dpo / "reference").glob("*.parquet"))]
    golden("training", {
        "pretrain": {"log": _log(pre), "summary": {k: json.loads((pre / "summary.json").read_text())[k] for k in ("steps", "tokens", "val_loss", "last_loss", "lr", "batch_tokens")}},
        "sft": {"log": _log(sft), "stats": _stats(sft, "sft", ("steps", "rows", "answer_tokens", "train_conversations", "held_out_conversations",
                                                             "held_out_answer_loss_before", "held_out_answer_loss_after", "val_loss")),
                "prepared": _digest(sft / "data")},
        "dpo": {"log": _dpo_log(dpo), "stats": _stats(dpo, "dpo", ("steps", "train_pairs", "held_out_pairs", "reference", "beta", "held_out_before", "held_out_after")),
                "prepared": _digest(dpo / "pairs"), "reference": [{k: r[k] for k in ("ref_chosen", "ref_rejected")} for r in ref]},
    })
