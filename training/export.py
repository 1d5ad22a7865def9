"""Export to the Hugging Face Llama format: ``config.json`` + ``model.safetensors`` (+ tokenizer).

Our modules map one to one onto ``LlamaForCausalLM`` (same rotate-half rotary layout, RMSNorm in
fp32, SwiGLU as gate/up/down, untied ``lm_head``), so the export is a renaming. The vocabulary
stays padded (``vocab_size`` = the padded size), which keeps the logits identical.

``python -m training.export <checkpoint-dir> <out-dir> [--tokenizer tokenizer.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import torch
from torch import nn

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


def export_hf(model: Transformer, out_dir: str, tokenizer_path: str | None = None, bos_id: int | None = None, eos_id: int | None = None) -> str:
    """Write ``model`` (a plain, unsharded Transformer) as a Hugging Face Llama folder."""
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    sd = hf_state_dict(model)
    dtype = str(next(iter(sd.values())).dtype).removeprefix("torch.")
    tmp = os.path.join(out_dir, ".model.safetensors.tmp")
    save_file(sd, tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(model.cfg, bos_id, eos_id, dtype), f, indent=2)
    if tokenizer_path:
        shutil.copyfile(tokenizer_path, os.path.join(out_dir, "tokenizer.json"))
        tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.cfg.max_seq_len}
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(tokenizer_path)
        for key, tid in (("bos_token", bos_id), ("eos_token", eos_id), ("pad_token", eos_id)):
            if tid is not None and tok.id_to_token(tid) is not None:
                tok_cfg[key] = tok.id_to_token(tid)
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
            json.dump(tok_cfg, f, indent=2)
    return out_dir


def load_trained(checkpoint: str, run_config: str | None = None) -> Transformer:
    """A plain Transformer with the weights of a trainer checkpoint (``<run>/checkpoints/step-*``)."""
    from training.checkpoint import load_model_weights

    run_config = run_config or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(checkpoint))), "config.json")
    with open(run_config) as f:
        resolved = json.load(f)["resolved"]["model"]
    model = Transformer(ModelConfig(**resolved))
    load_model_weights(model, checkpoint)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Export a trainer checkpoint to the Hugging Face Llama format.")
    ap.add_argument("checkpoint")
    ap.add_argument("out_dir")
    ap.add_argument("--tokenizer")
    ap.add_argument("--bos-id", type=int)
    ap.add_argument("--eos-id", type=int)
    args = ap.parse_args(argv)
    model = load_trained(args.checkpoint)
    export_hf(model, args.out_dir, args.tokenizer, args.bos_id, args.eos_id)
    print(f"exported {args.checkpoint} -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
