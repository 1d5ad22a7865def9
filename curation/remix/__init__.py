"""Remixing: domains by URL patterns and keyword rules, quotas for a target mixture with an epoch
cap, deterministic up/down-sampling and a global shuffle into training text shards
(``curation.remix.plan``: the plan from the shards' scans; ``curation.remix.shards``: scan,
sample and shuffle on files)."""

from curation.remix.config import DomainRule, RemixConfig
from curation.remix.domains import OTHER, DomainAssigner
from curation.remix.mixture import domain_quotas, target_shares
from curation.remix.sampling import BINS, copies, copy_bins, cut_bins, rehydration_weights, shuffle_keys, size_histogram, unit_bins, weight_keys

__all__ = [
    "BINS", "OTHER", "DomainAssigner", "DomainRule", "RemixConfig", "copies", "copy_bins", "cut_bins", "domain_quotas",
    "rehydration_weights", "shuffle_keys", "size_histogram", "target_shares", "unit_bins", "weight_keys",
]
