"""Per-domain quotas for a target mixture, with an epoch cap (water-filling).

Given each domain's size S_d (bytes or documents), target weights w_d and the output total T,
the quota of a domain is w_d T renormalised over the domains not yet capped; a domain whose quota
exceeds ``max_epochs`` S_d is capped there and its shortfall is shared by the rest in proportion
to their weights. The epochs of a domain are its quota over its size (below 1: down-sampled).
"""

from __future__ import annotations


def domain_quotas(sizes: dict[str, float], weights: dict[str, float], total: float, max_epochs: float) -> dict[str, float]:
    """{domain: quota} for the domains with data; a domain without weight gets nothing."""
    free = {d for d, s in sizes.items() if s > 0 and weights.get(d, 0) > 0}
    quotas = {d: 0.0 for d in sizes}
    remaining = float(total)
    while free:
        wsum = sum(weights[d] for d in free)
        capped = {d for d in free if weights[d] / wsum * remaining > max_epochs * sizes[d]}
        if not capped:
            for d in free:
                quotas[d] = weights[d] / wsum * remaining
            break
        for d in sorted(capped):
            quotas[d] = max_epochs * sizes[d]
            remaining -= quotas[d]
        free -= capped
    return quotas


def target_shares(sizes: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
    """The weights renormalised over the domains that have data (what the output aims at)."""
    present = {d: weights.get(d, 0.0) for d, s in sizes.items() if s > 0}
    wsum = sum(present.values()) or 1.0
    return {d: w / wsum for d, w in present.items()}
