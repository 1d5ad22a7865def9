"""Remixing: domains by URL patterns and keyword rules, quotas for a target mixture with an epoch
cap, deterministic up/down-sampling and a global shuffle into training text shards."""

from curation.remix.config import DomainRule, RemixConfig
from curation.remix.domains import OTHER, DomainAssigner
from curation.remix.mixture import domain_quotas, target_shares
from curation.remix.sampling import BINS, copies, cut_bins, shuffle_keys, size_histogram, unit_bins

__all__ = [
    "BINS", "OTHER", "DomainAssigner", "DomainRule", "RemixConfig", "copies", "cut_bins", "domain_quotas",
    "shuffle_keys", "size_histogram", "target_shares", "unit_bins",
]
