"""The DeepSeek LLM report's scaling laws (section 3), for ``--lr auto --batch auto``.

Compute C = M D, with M the non-embedding FLOPs per token (``model.report_flops_per_token``)
and D the training tokens. Fitted on the report's small-scale sweeps (equations 1 and 4):

    eta_opt = 0.3118 C^-0.1250        B_opt = 0.2920 C^0.3271 (tokens)
    M_opt   = 0.1715 C^0.5243         D_opt = 5.8316 C^0.4757

The report's own runs: 7B at batch 2304 sequences and peak LR 4.2e-4, 67B at 4608 and 3.2e-4.
"""

from __future__ import annotations

from dataclasses import dataclass


def optimal_lr(compute: float) -> float:
    return 0.3118 * compute**-0.1250


def optimal_batch_tokens(compute: float) -> float:
    return 0.2920 * compute**0.3271


def optimal_model_data(compute: float) -> tuple[float, float]:
    """(M_opt FLOPs/token, D_opt tokens) for a compute budget."""
    return 0.1715 * compute**0.5243, 5.8316 * compute**0.4757


@dataclass(frozen=True)
class Choice:
    compute: float
    lr: float
    batch_tokens: int
    batch_sequences: int
    why: str


def choose_hyperparameters(flops_per_token: float, train_tokens: int, seq_len: int, rows_multiple: int = 1) -> Choice:
    """Peak LR and global batch for a run of ``train_tokens`` tokens of a model with
    ``flops_per_token`` (the report's M). The batch is rounded to whole sequences, and to a
    multiple of ``rows_multiple`` (micro-batch x data-parallel ranks), at least one of them."""
    c = flops_per_token * train_tokens
    lr = optimal_lr(c)
    b = optimal_batch_tokens(c)
    rows = max(rows_multiple, round(b / seq_len / rows_multiple) * rows_multiple)
    m_opt, d_opt = optimal_model_data(c)
    why = (
        f"C = M x D = {flops_per_token:.3e} FLOPs/token x {train_tokens:,} tokens = {c:.3e} FLOPs; "
        f"eta_opt = 0.3118 C^-0.125 = {lr:.3e}; B_opt = 0.2920 C^0.3271 = {b:,.0f} tokens "
        f"= {b / seq_len:,.1f} sequences of {seq_len}, rounded to {rows} (multiple of {rows_multiple}); "
        f"for reference the compute-optimal split of this C is M = {m_opt:.3e} FLOPs/token, D = {d_opt:.3e} tokens"
    )
    return Choice(compute=c, lr=lr, batch_tokens=rows * seq_len, batch_sequences=rows, why=why)
