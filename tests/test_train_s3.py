"""Training with every path on an S3-compatible server (moto on loopback, reached through the AWS
variables only): token shards, run folder, async DCP checkpoints, resume, the tokenizer, and the
Hugging Face export of an object-store checkpoint."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch

from conftest import SAMPLE
from storage import io
from training import checkpoint as ckpt
from training.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory):
    from training.sample_data import write_token_shards

    out = tmp_path_factory.mktemp("tokens")
    write_token_shards(str(out), vocab_size=2048, n_shards=3, row_group_size=64, text_dir=str(SAMPLE / "text"))
    return str(out)


def _cfg(data: str, run_dir: str, **kw) -> TrainConfig:
    base = dict(run_dir=run_dir, data=[data], model="tiny", vocab_size=2048, seq_len=64, micro_batch=2, batch_tokens=64 * 4,
                train_tokens=64 * 4 * 40, lr=3e-3, warmup_steps=2, checkpoint_every=0, eval_every=0, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _upload(local_dir: str, prefix: str) -> None:
    for name in sorted(os.listdir(local_dir)):
        with open(os.path.join(local_dir, name), "rb") as f:
            io.write_bytes(f.read(), io.join(prefix, name))


def test_pretrain_on_object_storage_resumes_from_the_last_complete_checkpoint(local_shards, bucket, s3, tmp_path):
    name = bucket.removeprefix("s3://")
    _upload(local_shards, f"{bucket}/tokens")
    straight = train(_cfg(local_shards, str(tmp_path / "local"), max_steps=6))
    run = f"{bucket}/runs/pre"
    first = train(_cfg(f"{bucket}/tokens", run, max_steps=4, checkpoint_every=2, async_checkpoint=True))
    keys = s3.keys(name, "runs/pre/")
    assert "runs/pre/config.json" in keys and "runs/pre/log.jsonl" in keys and "runs/pre/summary.json" in keys
    step2 = "runs/pre/checkpoints/step-00000002/"
    assert {step2 + f for f in ("manifest.json", ".metadata", "__0_0.distcp", "rng-rank0.pt")} <= set(keys)
    # Straight to final names: no temporary object, nothing renamed into place.
    assert not [k for k in keys if "tmp" in k.rsplit("/", 1)[-1]], keys
    manifest = io.read_json(f"{bucket}/{step2}manifest.json")
    assert manifest["step"] == 2 and manifest["trainer"]["loader"]["rows_served"] == 2 * 4
    assert manifest["files"] == {k: v for k, v in io.file_sizes(f"{bucket}/{step2}").items() if k != "manifest.json"}
    # A checkpoint cut short (every file but its manifest, as a crash mid-save leaves it) is not one.
    src = f"{bucket}/runs/pre/checkpoints/step-00000004"
    for rel in manifest["files"]:
        with io.open_input(io.join(src, rel)) as f:
            io.write_bytes(f.read(), f"{run}/checkpoints/step-00000006/{rel}")
    assert ckpt.latest_checkpoint(run).endswith("step-00000004")
    with pytest.raises(ckpt.CheckpointError, match="not a complete checkpoint"):
        ckpt.read_trainer_state(f"{run}/checkpoints/step-00000006")
    second = train(_cfg(f"{bucket}/tokens", run, max_steps=6, checkpoint_every=2, resume=True))
    assert second["steps"] == 6 and second["checkpoint"].endswith("step-00000006")
    assert first["losses"] + second["losses"] == pytest.approx(straight["losses"], rel=1e-6, abs=1e-6)
    # The half-written step 6 was replaced by a complete one; keep_checkpoints=2 pruned the rest.
    assert [c.rsplit("/", 1)[-1] for c in ckpt.list_checkpoints(run)] == ["step-00000004", "step-00000006"]
    with io.open_input(f"{run}/log.jsonl") as f:
        steps = [json.loads(line)["step"] for line in f.read().decode().splitlines()]
    assert sorted(set(steps)) == [1, 2, 3, 4, 5, 6]


def test_export_from_an_object_store_checkpoint_with_the_chat_template(bucket, tmp_path):
    """The project tokenizer on the bucket (tokenizer.load of a URI), a tiny model trained there, then
    the export: ids from the tokenizer, chat template, 0644 weights, logits equal."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from tokenizer import BOS, EOS, TokenizerConfig, encode_chat, load, save
    from tokenizer import train as train_tokenizer
    from training.chat import conversations_from_record, iter_jsonl_records, tokenize_conversation
    from training.export import load_trained, main as export_main
    from training.sft import ChatLoader

    with open(SAMPLE / "sft" / "gsm8k-chat-train.jsonl", "rb") as f:
        convs = [c for r in iter_jsonl_records(f) for c in conversations_from_record(r)[0]][:80]
    tok = train_tokenizer([m["content"] for c in convs for m in c], TokenizerConfig(vocab_size=600))
    save(tok, f"{bucket}/tokenizer")
    tok = load(f"{bucket}/tokenizer")
    eos = tok.token_to_id(EOS)
    exs = [e for e in (tokenize_conversation(tok, c) for c in convs) if len(e.input_ids) <= 256]
    run = f"{bucket}/runs/chat"
    train(TrainConfig(run_dir=run, model="tiny", vocab_size=tok.get_vocab_size(), seq_len=256, micro_batch=2, batch_tokens=512,
                      train_tokens=512 * 3, lr=3e-3, warmup_steps=1, checkpoint_every=0, eval_every=0, progress=False),
          loader=ChatLoader(exs, 256, 2, eos))
    out = tmp_path / "hf"
    assert export_main([run, str(out), "--tokenizer", f"{bucket}/tokenizer"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (tok.token_to_id(BOS), eos, eos)
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o644
    hf_tok = AutoTokenizer.from_pretrained(str(out))
    messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]
    ids, _ = encode_chat(tok, messages)
    assert hf_tok.apply_chat_template(messages, tokenize=True, return_dict=False) == ids
    assert hf_tok.model_max_length == 256
    hf = LlamaForCausalLM.from_pretrained(str(out)).eval()
    x = torch.as_tensor(np.asarray(ids)[None])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, load_trained(run)(x), rtol=1e-4, atol=1e-4)
    assert export_main([f"{bucket}/runs/none", str(tmp_path / "no")]) == 2
