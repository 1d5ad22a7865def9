"""A DeepSeek-LLM-style decoder in one file: the model knows nothing of parallelism.

LLaMA-style pre-norm decoder as in the DeepSeek LLM report (arXiv 2401.02954, section 2.2):
RMSNorm (eps 1e-6), rotary embeddings (theta 10000), SwiGLU feed-forward, grouped-query
attention through ``F.scaled_dot_product_attention``, untied input and output embeddings,
weights drawn from N(0, 0.006^2) (section 2.3), the vocabulary padded to a multiple
(100,015 -> 102,400).

Rotary embeddings use the "rotate half" layout of Hugging Face's Llama, so ``training.export``
writes our weights to ``LlamaForCausalLM`` without permuting the query/key projections.

``python -m training.model 7b`` builds a config on the meta device (no memory) and prints its
parameter count and FLOPs per token.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    # 100,000 BPE tokens + 15 specials (report section 2.1 / DESIGN.md "Tokenizer").
    vocab_size: int = 100_015
    # Pad the embedding to a multiple of this: 100,015 -> 102,400 as in the report.
    vocab_multiple: int = 4096
    dim: int = 4096
    n_layers: int = 30
    n_heads: int = 32
    # Key/value heads: equal to n_heads is multi-head attention; 67B uses 8 (GQA).
    n_kv_heads: int = 32
    ffn_dim: int = 11008
    # Context length of the report's models.
    max_seq_len: int = 4096
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    # Report section 2.3: "initialized with a standard deviation of 0.006".
    init_std: float = 0.006

    @property
    def padded_vocab_size(self) -> int:
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError("rotary embeddings need an even head dimension")


# Named configs. 7b and 67b are the report's Table 2; 125m and 1b are small members of the same
# family (SwiGLU width ~8/3 d rounded up to a multiple of 128 as in the report's 11008 / 22016);
# tiny is for CPU tests.
CONFIGS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(vocab_size=100_015, vocab_multiple=64, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=176, max_seq_len=256),
    "125m": ModelConfig(dim=768, n_layers=12, n_heads=12, n_kv_heads=12, ffn_dim=2048, max_seq_len=2048),
    "1b": ModelConfig(dim=2048, n_layers=16, n_heads=16, n_kv_heads=16, ffn_dim=5504, max_seq_len=4096),
    "7b": ModelConfig(dim=4096, n_layers=30, n_heads=32, n_kv_heads=32, ffn_dim=11008, max_seq_len=4096),
    "67b": ModelConfig(dim=8192, n_layers=95, n_heads=64, n_kv_heads=8, ffn_dim=22016, max_seq_len=4096),
}


def model_config(name: str, **overrides) -> ModelConfig:
    """A named config, with fields replaced (e.g. ``vocab_size`` from the tokenizer)."""
    if name not in CONFIGS:
        raise KeyError(f"unknown model config {name!r}; known: {', '.join(CONFIGS)}")
    return replace(CONFIGS[name], **overrides)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 whatever the compute dtype, as Llama does.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (B, T, head_dim) for integer positions (B, T), rotate-half layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim))
    freqs = position_ids.float()[..., None] * inv_freq  # (B, T, head_dim/2)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, T, D); cos/sin: (B, T, D)
    cos, sin = cos[:, None], sin[:, None]
    return x * cos + _rotate_half(x) * sin


class KVCache:
    """Keys and values of every layer for the tokens fed so far (incremental decoding).

    A model call with ``cache=`` attends to what the cache holds, appends its own keys and
    values and advances ``length``: each new token then costs O(T) instead of re-running the
    prefix. Its logits equal those of the whole sequence at once (``tests/test_generate.py``).
    """

    def __init__(self, n_layers: int):
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``layer``'s keys and values (B, H, T, D) after this call's ``k``, ``v`` are added."""
        if self.k[layer] is not None:
            k, v = torch.cat([self.k[layer], k], dim=2), torch.cat([self.v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: tuple[KVCache, int] | None = None) -> torch.Tensor:
        """``cache``: (the cache, this layer's index): attend to its keys too, then add ours."""
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache[0].append(cache[1], k, v)
        gqa = self.n_kv_heads != self.n_heads
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: tuple[KVCache, int] | None = None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, mask, cache)
        return x + self.feed_forward(self.ffn_norm(x))


def attention_mask(
    batch: int,
    seq_len: int,
    device: torch.device,
    segment_ids: torch.Tensor | None = None,
    padding_mask: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Boolean (B, 1, T, T) mask, True = may attend; None means plain causal attention.

    ``segment_ids`` (B, T): tokens attend only within their own packed document.
    ``padding_mask`` (B, T): 1 for real tokens, 0 for padding (Hugging Face convention).
    Every position may attend to itself, so no row is empty (an empty row gives NaN).
    """
    if segment_ids is None and padding_mask is None:
        return None
    idx = torch.arange(seq_len, device=device)
    mask = (idx[None, :] <= idx[:, None]).expand(batch, seq_len, seq_len)
    if segment_ids is not None:
        mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])
    if padding_mask is not None:
        mask = mask & padding_mask.bool()[:, None, :]
    mask = mask | torch.eye(seq_len, dtype=torch.bool, device=device)
    return mask[:, None]


class Transformer(nn.Module):
    """``forward(input_ids) -> logits`` over the padded vocabulary."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.padded_vocab_size, cfg.dim)
        # A ModuleDict keyed "0".."n-1", so parallelize.py can wrap and checkpoint each block.
        self.layers = nn.ModuleDict({str(i): Block(cfg) for i in range(cfg.n_layers)})
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.padded_vocab_size, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Every weight matrix from N(0, init_std^2), norms to 1 (report section 2.3)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=self.cfg.init_std)
            elif isinstance(m, RMSNorm):
                m.reset_parameters()

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, padded_vocab) for ``input_ids`` (B, T).

        Pre-training packs documents into a row and attends causally across them (as the
        report and Llama do): pass nothing else. For packed sequences that must not see each
        other, pass ``segment_ids`` (document index per token) and ``position_ids`` restarting
        at 0 in each document; for padded batches, ``padding_mask``. Decoding passes a
        :class:`KVCache`: ``input_ids`` continue the sequence it holds (causal attention only).
        """
        B, T = input_ids.shape
        start = cache.length if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(start, start + T, device=input_ids.device).expand(B, T)
        h = self.tok_embeddings(input_ids)
        cos, sin = rope_cos_sin(position_ids, self.cfg.head_dim, self.cfg.rope_theta, h.dtype)
        if cache is None:
            mask = attention_mask(B, T, input_ids.device, segment_ids, padding_mask)
        elif segment_ids is not None or padding_mask is not None:
            raise ValueError("a KV cache decodes one causal sequence: no segment_ids or padding_mask")
        else:  # query i (absolute position start + i) sees keys 0 .. start + i
            mask = torch.ones(T, start + T, dtype=torch.bool, device=input_ids.device).tril(start)
        for i, layer in enumerate(self.layers.values()):
            h = layer(h, cos, sin, mask, None if cache is None else (cache, i))
        if cache is not None:
            cache.length += T
        return self.output(self.norm(h))


def num_params(model: nn.Module, exclude_embeddings: bool = False) -> int:
    n = sum(p.numel() for p in model.parameters())
    if exclude_embeddings and isinstance(model, Transformer):
        n -= model.tok_embeddings.weight.numel() + model.output.weight.numel()
    return n


def report_flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """The report's non-embedding FLOPs per token, M = 72 n_layer d^2 + 12 n_layer d l_seq.

    (Section 3.1, equation 2.) 72 d^2 is 6 x 12 d^2, the per-layer weights of a model with
    FFN width 8/3 d and full multi-head attention.
    """
    l_seq = seq_len or cfg.max_seq_len
    return 72 * cfg.n_layers * cfg.dim**2 + 12 * cfg.n_layers * cfg.dim * l_seq


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """Training FLOPs per token for MFU: the report's formula with this config's exact layer
    widths (GQA, FFN width), plus the output projection (6 d V), which is real matmul work.

    = 6 (per-layer weights x n_layer + d V) + 12 n_layer d l_seq.  The attention term is the
    report's (it does not halve for the causal mask).
    """
    l_seq = seq_len or cfg.max_seq_len
    d, kv = cfg.dim, cfg.n_kv_heads * cfg.head_dim
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * cfg.ffn_dim
    return 6 * (per_layer * cfg.n_layers + d * cfg.padded_vocab_size) + 12 * cfg.n_layers * d * l_seq


def build_on_meta(cfg: ModelConfig) -> Transformer:
    """The model's structure without memory (parameter counts, sharding plans)."""
    with torch.device("meta"):
        return Transformer(cfg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Print parameters and FLOPs per token of named model configs (built on the meta device).")
    ap.add_argument("configs", nargs="*", default=list(CONFIGS))
    args = ap.parse_args(argv)
    print(f"{'config':<6} {'params':>10} {'non-emb':>10} {'vocab':>8} {'FLOPs/token (report M)':>24} {'FLOPs/token (MFU)':>19}")
    for name in args.configs:
        cfg = model_config(name)
        model = build_on_meta(cfg)
        total, non_emb = num_params(model), num_params(model, exclude_embeddings=True)
        print(
            f"{name:<6} {total / 1e9:>9.3f}B {non_emb / 1e9:>9.3f}B {cfg.padded_vocab_size:>8,} "
            f"{report_flops_per_token(cfg):>24.3e} {flops_per_token(cfg):>19.3e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
