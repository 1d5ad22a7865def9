"""The remix's plan from every shard's scan: domain quotas, each domain's epochs and sampling cut,
the number of output shards; and the manifest's figures once the shards are written.

Quotas are set over each domain's unique text (shares of the output, the epoch cap on the
domain's own size); with rehydration the epochs and the cut then apply to the virtual copies
(``curation.remix.sampling.copy_bins``), so within a domain the copies go to documents in
proportion to their weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from curation.remix.config import RemixConfig
from curation.remix.mixture import domain_quotas, target_shares
from curation.remix.sampling import BINS, cut_bins
from curation.stats import StageStats


@dataclass
class Scan:
    """Per domain, over all shards (:func:`curation.remix.shards.scan_shard`): documents, text
    bytes and size in the mixture's unit; the same over the virtual copies (rehydration; equal
    without it); the size by sampling bin."""

    names: list[str]
    docs: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, float] = field(default_factory=dict)
    copies: dict[str, int] = field(default_factory=dict)
    copies_bytes: dict[str, int] = field(default_factory=dict)
    copies_sizes: dict[str, float] = field(default_factory=dict)
    hist: dict[str, np.ndarray] = field(default_factory=dict)


def merge_scans(names: list[str], scans: Iterable[dict[str, dict[str, Any]]]) -> Scan:
    """The domains ``names``' totals over the shards' scans (in shard order)."""
    s = Scan(names, {d: 0 for d in names}, {d: 0 for d in names}, {d: 0.0 for d in names}, {d: 0 for d in names},
             {d: 0 for d in names}, {d: 0.0 for d in names}, {d: np.zeros(BINS) for d in names})
    for scan in scans:
        for d, v in scan.items():
            s.sizes[d] += v["size"]
            s.docs[d] += v["docs"]
            s.bytes[d] += v["bytes"]
            s.copies_sizes[d] += v["copies_size"]
            s.copies[d] += v["copies"]
            s.copies_bytes[d] += v["copies_bytes"]
            np.add.at(s.hist[d], np.asarray(v["bins"], dtype=np.int64), np.asarray(v["sizes"], dtype=np.float64))
    return s


@dataclass
class Plan:
    total: float  # the output's size in the mixture's unit
    quotas: dict[str, float]  # per domain, after the epoch cap
    domains: dict[str, dict[str, float]]  # per domain: epochs (over the virtual copies) and the sampling cut
    shards: int  # output shards


def make_plan(scan: Scan, cfg: RemixConfig) -> Plan:
    """Quotas over the unique text; epochs (and the cut) over the virtual copies; output shards of
    about ``shard_target_docs`` documents or ``shard_target_bytes`` bytes."""
    total = cfg.scale * sum(scan.sizes.values())
    quotas = domain_quotas(scan.sizes, cfg.weights, total, cfg.max_epochs)
    domains = {}
    for d in scan.names:
        r_size = scan.copies_sizes[d]
        epochs = quotas[d] / r_size if r_size else 0.0
        frac_wanted = (epochs - math.floor(epochs + 1e-12)) * r_size
        domains[d] = {"epochs": epochs, "cut": cut_bins(scan.hist[d], frac_wanted)}
    expected_bytes = sum(scan.copies_bytes[d] * domains[d]["epochs"] for d in scan.names)
    expected_docs = sum(scan.copies[d] * domains[d]["epochs"] for d in scan.names)
    if cfg.shard_target_docs:
        n_out = math.ceil(expected_docs / cfg.shard_target_docs)
    else:
        n_out = math.ceil(expected_bytes / cfg.shard_target_bytes)
    return Plan(total, quotas, domains, max(1, min(n_out, int(expected_docs) or 1)))


def domain_figures(scan: Scan, plan: Plan, cfg: RemixConfig, after_docs: dict[str, int], after_bytes: dict[str, int]) -> dict[str, dict[str, Any]]:
    """The manifest's per-domain figures: target, planned and achieved shares, documents and bytes
    before and after, the epochs of the domain's unique text and whether the cap held it back."""
    unit_after = after_bytes if cfg.unit == "bytes" else after_docs
    out_total = sum(unit_after.values()) or 1
    targets = target_shares(scan.sizes, cfg.weights)
    sizes, quotas, total = scan.sizes, plan.quotas, plan.total
    return {
        d: {
            "target_share": round(targets.get(d, 0.0), 6),
            # The share after the epoch cap moved the capped domains' shortfall to the others.
            "planned_share": round(quotas[d] / total, 6) if total else 0.0,
            "achieved_share": round(unit_after.get(d, 0) / out_total, 6),
            "documents_before": scan.docs[d],
            "bytes_before": scan.bytes[d],
            "documents_after": int(after_docs.get(d, 0)),
            "bytes_after": int(after_bytes.get(d, 0)),
            # Repeats of the domain's unique text (the capped figure), with or without rehydration.
            "epochs": round(quotas[d] / sizes[d], 6) if sizes[d] else 0.0,
            "capped_at_max_epochs": bool(sizes[d] and quotas[d] / sizes[d] >= cfg.max_epochs - 1e-9),
            **({"rehydrated_documents_before": scan.copies[d], "rehydrated_bytes_before": scan.copies_bytes[d]} if cfg.rehydrate else {}),
        }
        for d in scan.names
        if scan.docs[d]
    }


def rehydration_summary(cfg: RemixConfig, stats: StageStats) -> dict:
    """Documents and copies written by duplicate-cluster size, in the buckets of the weight table
    (with rehydration off too: how the plain remix treated them)."""
    keys = sorted(cfg.rehydrate_weights)
    rows = {}
    for i, k in enumerate(keys):
        hi = keys[i + 1] - 1 if i + 1 < len(keys) else None
        label = str(k) if hi == k else (f"{k}-{hi}" if hi is not None else f"{k}+")
        docs = int(stats.counters.get(f"cluster_size.{k}.documents", 0))
        written = int(stats.counters.get(f"cluster_size.{k}.copies", 0))
        rows[label] = {"weight": cfg.rehydrate_weights[k] if cfg.rehydrate else 1, "documents": docs, "copies_written": written,
                       "copies_per_document": round(written / docs, 4) if docs else None}
    return {"enabled": cfg.rehydrate, "weights": {str(k): cfg.rehydrate_weights[k] for k in keys}, "by_cluster_size": rows}
