"""Quality filtering: per-document signals (Gopher, C4, FineWeb, fastText quality model, URL
blocklist) and a separate keep/drop decision over them by named rules.

``score_table`` computes signals, ``decide_table`` applies the rules; thresholds live in
``FilterConfig``.
"""

from curation.filter.config import FilterConfig
from curation.filter.documents import decide_table, score_table, signals_schema
from curation.filter.rules import RULE_NAMES, first_failed_rule
from curation.filter.signals import compute_signals, signal_names
from curation.filter.words import split_words

__all__ = [
    "FilterConfig", "RULE_NAMES", "compute_signals", "decide_table", "first_failed_rule",
    "score_table", "signal_names", "signals_schema", "split_words",
]
