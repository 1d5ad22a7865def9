"""Export to the Hugging Face Llama format: ``config.json`` + ``model.safetensors`` (+ tokenizer).

Our modules map one to one onto ``LlamaForCausalLM`` (same rotate-half rotary layout, RMSNorm in
fp32, SwiGLU as gate/up/down, untied ``lm_head``), so the export is a renaming. The vocabulary
stays padded (``vocab_size`` = the padded size), which keeps the logits identical.

``python -m training.export <checkpoint or run> <out-dir> [--tokenizer <folder or tokenizer.json>]``; the
checkpoint may be on an object store (s3://...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from storage.errors import UserError
from training.model import ModelConfig, Transformer

_BLOCK = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if name == "tok_embeddings.weight":
            key = "model.embed_tokens.weight"
        elif name == "norm.weight":
            key = "model.norm.weight"
        elif name == "output.weight":
            key = "lm_head.weight"
        else:
            _, i, rest = name.split(".", 2)  # layers.<i>.<rest>
            key = f"model.layers.{i}.{_BLOCK[rest]}"
        out[key] = t.detach().contiguous().cpu()
    return out


def hf_config(cfg: ModelConfig, bos_id: int | None = None, eos_id: int | None = None, dtype: str = "float32") -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.padded_vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "hidden_act": "silu",
        "initializer_range": cfg.init_std,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": eos_id,  # the report pads with the end token
        "torch_dtype": dtype,
        "dtype": dtype,
    }


def model_config_from_hf(c: dict) -> ModelConfig:
    """The model config a Hugging Face Llama ``config.json`` (as :func:`hf_config` writes it)
    describes; its vocabulary is taken as already padded."""
    return ModelConfig(
        vocab_size=c["vocab_size"], vocab_multiple=1, dim=c["hidden_size"], n_layers=c["num_hidden_layers"],
        n_heads=c["num_attention_heads"], n_kv_heads=c.get("num_key_value_heads", c["num_attention_heads"]),
        ffn_dim=c["intermediate_size"], max_seq_len=c.get("max_position_embeddings", ModelConfig.max_seq_len),
        rope_theta=c.get("rope_theta", ModelConfig.rope_theta), norm_eps=c.get("rms_norm_eps", ModelConfig.norm_eps),
    )


def _tokenizer_files(tokenizer_path: str, max_len: int, bos_id: int | None, eos_id: int | None) -> dict[str, bytes]:
    """The tokenizer's files for the export: its own ``tokenizer.json`` bytes, and for a project
    tokenizer the project's ``tokenizer_config.json`` (special tokens, the chat template, so
    ``apply_chat_template`` works) and ``special_tokens_map.json``; another tokenizer gets a
    minimal config naming the BOS/EOS/PAD tokens."""
    from tokenizers import Tokenizer

    from storage import io
    from tokenizer import tokenizer_json
    from tokenizer.bpe import tokenizer_files

    with io.open_input(tokenizer_json(tokenizer_path)) as f:
        raw = f.read()
    tok = Tokenizer.from_str(raw.decode("utf-8"))
    try:
        files = tokenizer_files(tok)
        cfg = json.loads(files["tokenizer_config.json"])
    except KeyError:  # not a project tokenizer: no BOS/EOS of the project's
        files, cfg = {}, {"tokenizer_class": "PreTrainedTokenizerFast"}
        for key, tid in (("bos_token", bos_id), ("eos_token", eos_id), ("pad_token", eos_id)):
            if tid is not None and tok.id_to_token(tid) is not None:
                cfg[key] = tok.id_to_token(tid)
    cfg["model_max_length"] = max_len
    files["tokenizer_config.json"] = (json.dumps(cfg, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    files["tokenizer.json"] = raw
    return files


def special_ids(tokenizer_path: str) -> tuple[int | None, int | None]:
    """(BOS, EOS) ids of a tokenizer (either None where it has no such token)."""
    from tokenizer import BOS, EOS, load

    tok = load(tokenizer_path)
    return tok.token_to_id(BOS), tok.token_to_id(EOS)


def export_hf(model: Transformer, out_dir: str, tokenizer_path: str | None = None, bos_id: int | None = None, eos_id: int | None = None) -> str:
    """Write ``model`` (a plain, unsharded Transformer) as a Hugging Face Llama folder (local).

    ``tokenizer_path`` (a folder or its tokenizer.json, local or a URI) is copied in; BOS/EOS
    (and PAD = EOS, as in the report) default to the tokenizer's own ids."""
    from safetensors.torch import save_file

    from storage import io

    if tokenizer_path:
        tb, te = special_ids(tokenizer_path)
        bos_id, eos_id = (tb if bos_id is None else bos_id), (te if eos_id is None else eos_id)
    os.makedirs(out_dir, exist_ok=True)
    sd = hf_state_dict(model)
    dtype = str(next(iter(sd.values())).dtype).removeprefix("torch.")
    tmp = os.path.join(out_dir, ".model.safetensors.tmp")
    save_file(sd, tmp, metadata={"format": "pt"})
    os.chmod(tmp, 0o644)  # weights others may read, like the rest of the folder (save_file makes it 0600)
    os.replace(tmp, os.path.join(out_dir, "model.safetensors"))
    io.write_json(hf_config(model.cfg, bos_id, eos_id, dtype), os.path.join(out_dir, "config.json"))
    if tokenizer_path:
        for name, data in _tokenizer_files(tokenizer_path, model.cfg.max_seq_len, bos_id, eos_id).items():
            io.write_bytes(data, os.path.join(out_dir, name))
    return out_dir


def load_trained(checkpoint: str) -> Transformer:
    """A plain Transformer with the weights of a trainer checkpoint (``<run>/checkpoints/step-*``)
    or of a run's latest one; local or on an object store."""
    from training.checkpoint import load_model

    return load_model(checkpoint)[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Export a trainer checkpoint (or a run's latest) to the Hugging Face Llama format.")
    ap.add_argument("checkpoint", help="checkpoint folder or run folder; local or a URI (s3://, gs://, ...)")
    ap.add_argument("out_dir", help="local folder for config.json, model.safetensors and the tokenizer")
    ap.add_argument("--tokenizer", help="the tokenizer folder (or its tokenizer.json) to ship with the model")
    ap.add_argument("--bos-id", type=int, help="default: the tokenizer's BOS")
    ap.add_argument("--eos-id", type=int, help="default: the tokenizer's EOS (also the padding id)")
    args = ap.parse_args(argv)
    try:
        model = load_trained(args.checkpoint)
    except UserError as e:  # no such checkpoint, or not a complete one
        print(f"export: {e}", file=sys.stderr)
        return 2
    export_hf(model, args.out_dir, args.tokenizer, args.bos_id, args.eos_id)
    print(f"exported {args.checkpoint} -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
