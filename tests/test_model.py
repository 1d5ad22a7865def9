"""The decoder: the report's configs, packing masks, and the Hugging Face Llama export."""

from __future__ import annotations

import pytest
import torch

from training.model import (
    CONFIGS,
    Transformer,
    build_on_meta,
    flops_per_token,
    model_config,
    num_params,
    report_flops_per_token,
)



def test_report_configs_on_meta():
    for name, layers, dim, heads, kv, ffn in (("7b", 30, 4096, 32, 32, 11008), ("67b", 95, 8192, 64, 8, 22016)):
        cfg = model_config(name)
        assert (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim) == (layers, dim, heads, kv, ffn)
        assert cfg.padded_vocab_size == 102_400  # 100,015 padded as in the report
        model = build_on_meta(cfg)
        assert all(p.is_meta for p in model.parameters())
        kv_dim = kv * dim // heads
        per_layer = 2 * dim * dim + 2 * dim * kv_dim + 3 * dim * ffn + 2 * dim
        assert num_params(model, exclude_embeddings=True) == layers * per_layer + dim
        assert num_params(model) == num_params(model, exclude_embeddings=True) + 2 * 102_400 * dim
    # The report's Table 2 sizes: 7B is 6.9B parameters, 67B is 67.4B.
    assert round(num_params(build_on_meta(model_config("7b"))) / 1e9, 1) == 6.9
    assert round(num_params(build_on_meta(model_config("67b"))) / 1e9, 1) == 67.4
    # M = 72 n d^2 + 12 n d l: the report's 7B and 67B values at l = 4096.
    assert report_flops_per_token(model_config("7b")) == 72 * 30 * 4096**2 + 12 * 30 * 4096 * 4096
    assert flops_per_token(model_config("1b")) > report_flops_per_token(model_config("1b"))  # + the output head
    assert set(CONFIGS) >= {"tiny", "125m", "1b", "7b", "67b"}


def test_init_std_and_untied_embeddings():
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", vocab_size=2000))
    assert model.tok_embeddings.weight.shape == (2048, 64)  # padded to a multiple of 64
    assert model.output.weight.data_ptr() != model.tok_embeddings.weight.data_ptr()
    for w in (model.tok_embeddings.weight, model.output.weight, model.layers["0"].feed_forward.w1.weight):
        assert abs(w.std().item() - 0.006) < 0.0005
    assert torch.all(model.norm.weight == 1)


def _spiky(model: Transformer) -> Transformer:
    """Larger weights than the 0.006 init, so logits differ clearly between positions."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3) if p.ndim > 1 else p.uniform_(0.5, 1.5)
    return model.eval()


def test_packed_segments_equal_separate_documents():
    model = _spiky(Transformer(model_config("tiny", vocab_size=500)))
    a, b = torch.randint(0, 500, (1, 11)), torch.randint(0, 500, (1, 7))
    packed = torch.cat([a, b], dim=1)
    seg = torch.tensor([[0] * 11 + [1] * 7])
    pos = torch.tensor([list(range(11)) + list(range(7))])
    with torch.no_grad():
        out = model(packed, position_ids=pos, segment_ids=seg)
        alone_a, alone_b = model(a), model(b)
        crossed = model(packed)  # plain causal: the second document sees the first
    torch.testing.assert_close(out[:, :11], alone_a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[:, 11:], alone_b, rtol=1e-4, atol=1e-4)
    assert (crossed[:, 11:] - alone_b).abs().max() > 1e-2


def test_padding_mask_keeps_real_tokens_exact():
    model = _spiky(Transformer(model_config("tiny", vocab_size=500)))
    x = torch.randint(0, 500, (1, 9))
    padded = torch.cat([x, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 9 + [0] * 5])
    with torch.no_grad():
        full = model(padded, padding_mask=mask)
        alone = model(x)
    torch.testing.assert_close(full[:, :9], alone, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(full).all()


def test_hf_llama_export_gives_equal_logits(tmp_path):
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from tests.conftest import SAMPLE
    from training.export import export_hf
    from training.sample_data import sample_documents, train_small_bpe

    docs = sample_documents(str(SAMPLE / "text"))[:200]
    tok = train_small_bpe([d["text"] for d in docs], 600)
    tok_path = tmp_path / "tokenizer.json"
    tok.save(str(tok_path))
    model = _spiky(Transformer(model_config("tiny", vocab_size=tok.get_vocab_size())))  # GQA: 4 heads, 2 kv heads
    out = tmp_path / "hf"
    export_hf(model, str(out), str(tok_path), eos_id=0)
    hf = LlamaForCausalLM.from_pretrained(str(out)).eval()
    assert hf.config.vocab_size == model.cfg.padded_vocab_size and not hf.config.tie_word_embeddings
    hf_tok = PreTrainedTokenizerFast.from_pretrained(str(out))
    text = docs[0]["text"][:400]
    ids = Tokenizer.from_file(str(tok_path)).encode(text).ids
    assert hf_tok(text)["input_ids"] == ids
    x = torch.tensor([ids[:64], ids[64:128]])
    with torch.no_grad():
        ours, theirs = model(x), hf(x).logits
    assert ours.abs().max() > 1.0  # not a near-constant output
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
