"""`make bench-align`: what SFT and DPO steps cost next to pre-training steps on the same model,
and what they do to held-out figures, measured side by side in one run.

Throughput (``--steps`` timed optimizer steps per kind after ``--warmup``, kinds interleaved
round by round so load from other processes hits all alike; the median step is reported):
  pretrain   packed rows of text, causal attention (no mask), loss on every token
  sft-packed packed conversations, block-diagonal mask + restarting positions, loss on answers
  sft-padded one conversation per row, right-padded
  dpo-pre    pairs: chosen + rejected rows in one forward/backward, reference precomputed
  dpo-fly    the same plus the frozen reference's forward on both rows in every step
All on the same model config, micro-batch rows, AdamW and loss code the trainer runs
(``causal_lm_loss``, ``training.dpo.make_loss_fn``). "tokens" are real (non-padding) tokens
through the policy's forward+backward; the ratio column is tokens/s over pre-training's.

Quality (``--quality``, default on): the tiny model briefly pre-trained on the chosen dialogues,
SFT through the trainer (held-out answer loss before/after), then DPO through the trainer from
the SFT checkpoint (held-out reward accuracy and margin before/after).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tokenizer import TokenizerConfig, train as train_tokenizer  # noqa: E402
from training.chat import TokenizedChat, conversations_from_record, iter_jsonl_records, pair_from_record, special_ids, tokenize_conversation, tokenize_pair  # noqa: E402
from training.dpo import PairLoader, make_loss_fn  # noqa: E402
from training.model import Transformer, model_config  # noqa: E402
from training.optim import build_optimizer  # noqa: E402
from training.sft import ChatLoader  # noqa: E402
from training.trainer import causal_lm_loss  # noqa: E402

SAMPLE = REPO / "data" / "sample"


def load_data(seq_len: int, vocab: int):
    convs = []
    for name in ("gsm8k-test.jsonl", "gsm8k-chat-train.jsonl", "self-instruct-user-oriented.jsonl"):
        with open(SAMPLE / "sft" / name, "rb") as f:
            convs += [c for r in iter_jsonl_records(f) for c in conversations_from_record(r)[0]]
    with gzip.open(SAMPLE / "preference" / "hh-rlhf-harmless-base-test.jsonl.gz", "rb") as f:
        pairs = [p for p, _ in map(pair_from_record, iter_jsonl_records(f)) if p is not None]
    texts = [m["content"] for c in convs for m in c] + [p.chosen for p in pairs] + [p.rejected for p in pairs]
    tok = train_tokenizer(texts, TokenizerConfig(vocab_size=vocab))
    exs = [e for e in (tokenize_conversation(tok, c) for c in convs) if len(e.input_ids) <= seq_len]
    tps = [(c, r) for c, r in (tokenize_pair(tok, p) for p in pairs) if max(len(c.input_ids), len(r.input_ids)) <= seq_len]
    return tok, exs, tps


def pretrain_batches(exs, seq_len, micro, eos, n):
    """Rows of concatenated text (documents back to back, causal across them), as pre-training."""
    stream = np.concatenate([e.input_ids for e in exs]).astype(np.int64)
    rows = stream[: (len(stream) // (seq_len + 1)) * (seq_len + 1)].reshape(-1, seq_len + 1)
    out = []
    for i in range(n):
        r = torch.as_tensor(rows[(i * micro) % (len(rows) - micro) : (i * micro) % (len(rows) - micro) + micro])
        out.append(({"input_ids": r[:, :-1].contiguous(), "labels": r[:, 1:].contiguous()}, micro * seq_len))
    return out


def sft_batches(exs, seq_len, micro, eos, n, packing):
    loader = ChatLoader(exs, seq_len, micro, eos, seed=0, packing=packing)
    out = []
    for _ in range(n):
        b = loader.next_batch()
        out.append((b, int((b["segment_ids"] > 0).sum())))
    return out


def dpo_batches(pairs, micro, eos, n, ref):
    loader = PairLoader(pairs, micro, eos, ref=ref, seed=0)
    out = []
    for _ in range(n):
        b = loader.next_batch()
        out.append((b, int((b["segment_ids"] > 0).sum())))
    return out


def step_time(model, opt, loss_fn, batch) -> float:
    if opt is None:  # the reference's precomputation: forward only, no gradients
        from training.dpo import batch_logps

        t = time.perf_counter()
        with torch.no_grad():
            batch_logps(model, batch)
        return time.perf_counter() - t
    t = time.perf_counter()
    out = loss_fn(model, batch)
    loss, w = out[0], out[1]
    (loss / float(w)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def throughput(args, tok, exs, pairs) -> dict:
    _, eos = special_ids(tok)
    vocab = tok.get_vocab_size()
    mcfg = model_config(args.model, vocab_size=vocab)
    torch.manual_seed(0)
    base = Transformer(mcfg)
    n = args.warmup + args.steps
    ref_model = Transformer(mcfg).eval()
    ref_model.load_state_dict(base.state_dict())
    for p in ref_model.parameters():
        p.requires_grad_(False)
    # Reference log-probs precomputed once (what pipelines.dpo's Ray job does) for the dpo-pre pairs.
    from training.dpo import reference_logps

    pre_pairs = pairs[: n * max(1, args.micro_batch // 2)]
    rc, rr = reference_logps(ref_model, pre_pairs, eos, args.micro_batch)
    kinds = {
        "pretrain": (causal_lm_loss, pretrain_batches(exs, args.seq_len, args.micro_batch, eos, n)),
        "sft-packed": (causal_lm_loss, sft_batches(exs, args.seq_len, args.micro_batch, eos, n, True)),
        "sft-padded": (causal_lm_loss, sft_batches(exs, args.seq_len, args.micro_batch, eos, n, False)),
        # micro_batch/2 pairs = micro_batch rows, the same row count as the others
        "dpo-pre": (make_loss_fn(0.1), dpo_batches(pre_pairs, max(1, args.micro_batch // 2), eos, n, (rc, rr))),
        "dpo-fly": (make_loss_fn(0.1, ref_model), dpo_batches(pre_pairs, max(1, args.micro_batch // 2), eos, n, None)),
        # the one-off precomputation, per batch of the same pairs: the reference's forward alone
        "ref-forward": (None, dpo_batches(pre_pairs, max(1, args.micro_batch // 2), eos, n, (rc, rr))),
    }
    models = {k: Transformer(mcfg) for k in kinds}
    opts = {}
    for k, m in models.items():
        m.load_state_dict(base.state_dict())
        m.train(k != "ref-forward")
        opts[k] = build_optimizer(m, 1e-4, 0.1, (0.9, 0.95)) if k != "ref-forward" else None
    times: dict[str, list[float]] = {k: [] for k in kinds}
    toks: dict[str, list[int]] = {k: [] for k in kinds}
    for i in range(n):
        for k, (fn, batches) in kinds.items():
            b, real = batches[i]
            dt = step_time(models[k], opts[k], fn, b)
            if i >= args.warmup:
                times[k].append(dt)
                toks[k].append(real)
    print(f"\nthroughput: model {args.model} ({sum(p.numel() for p in base.parameters()):,} params, vocab {vocab}), "
          f"{args.micro_batch} rows x {args.seq_len} tokens per step, {args.steps} timed steps each, torch threads {torch.get_num_threads()}")
    print(f"{'kind':<11} {'step s (median)':>15} {'real tokens/step':>17} {'tokens/s':>10} {'vs pretrain':>12}")
    base_tps = None
    out: dict = {"model": args.model, "seq_len": args.seq_len, "rows_per_step": args.micro_batch, "timed_steps": args.steps, "kinds": {}}
    for k in kinds:
        med = statistics.median(times[k])
        per = statistics.mean(toks[k])
        tps = per / med
        base_tps = base_tps or tps
        out["kinds"][k] = {"median_step_s": med, "real_tokens_per_step": per, "tokens_per_s": tps, "vs_pretrain": tps / base_tps}
        print(f"{k:<11} {med:>15.4f} {per:>17.0f} {tps:>10,.0f} {tps / base_tps:>11.2f}x")
    pairs_per_step = max(1, args.micro_batch // 2)
    fly, pre, fwd = (statistics.median(times[k]) for k in ("dpo-fly", "dpo-pre", "ref-forward"))
    print(f"DPO, per pair: a step with the reference on the fly costs {fly / pre:.2f}x one with it precomputed; "
          f"the precomputation is a forward-only pass costing {fwd / pre:.2f}x a precomputed step, once per pair and epoch "
          f"({pairs_per_step / fwd:,.1f} pairs/s here, one Ray task per shard)")
    out.update(dpo_on_the_fly_vs_precomputed_step=fly / pre, reference_forward_vs_precomputed_step=fwd / pre)
    return out


def quality(args, tok, exs, pairs) -> dict:
    import pyarrow.parquet as pq

    from training.dpo import DPOConfig, pairs_table, train_dpo
    from training.sft import SFTConfig, train_sft
    from training.trainer import TrainConfig, train

    _, eos = special_ids(tok)
    vocab = tok.get_vocab_size()
    work = Path(tempfile.mkdtemp(prefix="bench-align-"))
    # "pre-training": the tiny model on whole chat texts (every token a target)
    lm = [TokenizedChat(c.input_ids, np.ones_like(c.loss_mask)) for c, _ in pairs[800:1200]] + \
         [TokenizedChat(e.input_ids, np.ones_like(e.loss_mask)) for e in exs[600:900]]
    t = time.perf_counter()
    train(TrainConfig(run_dir=str(work / "pre"), model=args.model, vocab_size=vocab, seq_len=args.seq_len, micro_batch=4,
                      batch_tokens=4 * args.seq_len, train_tokens=args.pretrain_steps * 4 * args.seq_len, lr=3e-3, warmup_steps=3,
                      checkpoint_every=0, eval_every=0, progress=False), loader=ChatLoader(lm, args.seq_len, 4, eos, seed=0))
    print(f"\nquality: pre-trained {args.pretrain_steps} steps ({time.perf_counter() - t:.0f} s)")
    held, train_exs = exs[:100], exs[100:600]
    s = train_sft(SFTConfig(run_dir=str(work / "sft"), init_from=str(work / "pre"), epochs=args.sft_epochs, lr=2e-3, warmup_steps=3,
                            seq_len=args.seq_len, micro_batch=4, batch_rows=8, eval_every=0, checkpoint_every=0, progress=False),
                  train_exs, held, eos)
    print(f"SFT ({len(train_exs)} conversations, {s['steps']} steps): held-out answer loss "
          f"{s['held_out_answer_loss_before']:.4f} -> {s['held_out_answer_loss_after']:.4f} on {len(held)} conversations")
    tr, ho = pairs[:600], pairs[600:800]
    path = str(work / "pairs.parquet")
    pq.write_table(pairs_table([f"p{i}" for i in range(len(tr) + len(ho))], tr + ho, [False] * len(tr) + [True] * len(ho)), path)
    d = train_dpo(DPOConfig(run_dir=str(work / "dpo"), init_from=str(work / "sft"), lr=args.dpo_lr, batch_pairs=16, micro_batch=4,
                            warmup_steps=3, seq_len=args.seq_len, eval_every=0, checkpoint_every=0, progress=False, data=[path]), eos)
    b, a = d["held_out_before"], d["held_out_after"]
    print(f"DPO ({len(tr)} pairs, {d['steps']} steps, beta 0.1, lr {args.dpo_lr}) on {len(ho)} held-out hh-rlhf pairs:")
    for k in ("loss", "reward_accuracy", "reward_margin", "chosen_logps", "rejected_logps", "logps_accuracy"):
        print(f"  {k:<16} {b[k]:>10.4f} -> {a[k]:>10.4f}")
    out = {"sft": {k: s[k] for k in ("held_out_answer_loss_before", "held_out_answer_loss_after", "steps")},
           "dpo": {"before": b, "after": a, "steps": d["steps"]}}
    print(json.dumps(out))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=8, help="rows per step (DPO: half as many pairs)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-quality", dest="quality", action="store_false")
    ap.add_argument("--no-throughput", dest="throughput", action="store_false")
    ap.add_argument("--pretrain-steps", type=int, default=30)
    ap.add_argument("--sft-epochs", type=int, default=2)
    ap.add_argument("--dpo-lr", type=float, default=3e-4)
    ap.add_argument("--record", help="name of the figures file in benchmarks/results/ (default: align, or gpu-<device>-align on a GPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    tok, exs, pairs = load_data(args.seq_len, args.vocab)
    print(f"data: {len(exs)} conversations and {len(pairs)} hh-rlhf pairs within {args.seq_len} tokens "
          f"(tokenizer of {tok.get_vocab_size()} tokens, {time.perf_counter() - t:.0f} s)")
    from benchmarks.results import accelerator, record

    gpu = accelerator()
    figures: dict = {"device": gpu.get("gpu", "cpu")}
    if args.throughput:
        figures["throughput"] = throughput(args, tok, exs, pairs)
    if args.quality:
        figures["quality"] = quality(args, tok, exs, pairs)
    rows = []
    if args.throughput:
        k = figures["throughput"]["kinds"]
        for kind, label in (("sft-packed", "SFT step (packed conversations)"), ("dpo-pre", "DPO step (reference precomputed)")):
            rows.append({"stage": label, "figure": k[kind]["tokens_per_s"],
                         "peer": {"name": "pre-training step, same model", "figure": k["pretrain"]["tokens_per_s"]},
                         "ratio": k[kind]["vs_pretrain"], "unit": "tokens per second"})
    slug = gpu.pop("slug", None)
    record(args.record or (f"gpu-{slug}-align" if slug else "align"), figures, headline=rows or None, device=gpu or None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
