"""Quality filtering: per-document signals (Gopher, C4, FineWeb, fastText quality model, URL
blocklist) and a separate keep/drop decision over them by named rules.

``score_table`` computes signals, ``decide_table`` applies the rules; thresholds live in
``FilterConfig``. A preset (``preset_config``) chooses the rule set: the project's bilingual
``deepseek`` rules, or ``fineweb``, ``gopher`` and ``c4``, which reproduce datatrove's filters.
"""

from curation.filter.config import DEPARTURES, PRESETS, FilterConfig, preset_config
from curation.filter.documents import base_table, combine_signals, decide_table, family_table, score_table, signals_schema
from curation.filter.rules import RULE_NAMES, first_failed_rule, rules_for
from curation.filter.signals import compute_families, compute_signals, signal_names
from curation.filter.words import split_words

__all__ = [
    "DEPARTURES", "FilterConfig", "PRESETS", "RULE_NAMES", "base_table", "combine_signals", "compute_families",
    "compute_signals", "decide_table", "family_table", "first_failed_rule", "preset_config", "rules_for",
    "score_table", "signal_names", "signals_schema", "split_words",
]
