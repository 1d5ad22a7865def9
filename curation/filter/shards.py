"""The filter's steps from files to files, one document shard each (``pipelines/filter.py`` runs
them as Ray tasks; they run as plain calls too).

- :func:`score_unit`: the signal families of a shard that are not cached yet, each in its own
  file ``<output>/signals/<family>-<key>/<shard>.arrow`` (:func:`signal_folders`: ``<key>``
  hashes the settings that change that family's signals, not the thresholds), with the CPU
  seconds it cost in the file's metadata;
- :func:`candidate_unit` and :func:`cut_round_unit`: the shard's part in the corpus-wide
  ``quality.top_fraction`` cut (``curation.filter.cut``);
- :func:`decide_unit`: the rules over the signals, then decontamination; kept documents to the
  shard's output, the dropped ones (with their reason) to ``rejects`` when asked, its stats.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any

import numpy as np
import pyarrow as pa

from curation.filter import cut as qcut
from curation.filter.blocklist import parse_blocklist
from curation.filter.config import FilterConfig, families, family_settings
from curation.filter.documents import base_table, combine_signals, decide_table, decontaminate, family_table
from curation.schema import validate
from curation.stats import StageStats
from storage import io
from storage.errors import SettingError


class BadShard(ValueError):
    """A shard that is not a readable document shard (the stage names it and goes on)."""


def signal_folders(output: str, cfg: FilterConfig, model: str | None) -> dict[str, str]:
    """{family: folder of its cached signals}: ``base`` and the preset's families, each folder
    named by the family and a hash of the settings that change its signals."""
    folders = {"base": io.join(output, "signals", "base-" + io.json_digest({"model": file_digest(model) if model else None}))}
    for fam in families(cfg):
        folders[fam] = io.join(output, "signals", f"{fam}-" + io.json_digest(family_settings(cfg, fam)))
    return folders


def score_unit(task: dict[str, Any]) -> dict:
    """The signal families of one shard that are not cached yet."""
    paths: dict[str, str] = task["signals"]
    missing = [fam for fam, p in paths.items() if not io.exists(p)]
    if not missing:
        return {}
    # CPU seconds spent on each family, kept beside its signals: per-core throughput that other
    # load on the machine does not distort (bench-filter reads it). Reading the shard counts
    # towards the first family computed.
    cpu = time.process_time()
    try:
        docs = io.read_parquet(task["path"])
        validate(docs.schema)
    except (OSError, ValueError, pa.ArrowInvalid) as e:
        raise BadShard(f"not a readable document shard: {str(e).splitlines()[0][:300]}") from None
    cfg = task["cfg"]
    if "base" in missing:
        base = base_table(docs, task["model"])
        _write_signals(base, paths["base"], time.process_time() - cpu)
        cpu = time.process_time()
    else:
        base = io.read_arrow(paths["base"])
    for fam in missing:
        if fam == "base":
            continue
        table = family_table(docs, base, cfg, fam)
        _write_signals(table, paths[fam], time.process_time() - cpu)
        cpu = time.process_time()
    return {}


def _write_signals(table: pa.Table, path: str, cpu_seconds: float) -> None:
    io.write_arrow(table.replace_schema_metadata({"cpu_seconds": f"{cpu_seconds:.6f}"}), path)


def read_signals(task: dict[str, Any]) -> tuple[pa.Table, float]:
    """The shard's signals, every family side by side, and the CPU seconds they cost to compute."""
    tables = {fam: io.read_arrow(p) for fam, p in task["signals"].items()}
    cpu = sum(float((t.schema.metadata or {}).get(b"cpu_seconds", b"0")) for t in tables.values())
    base = tables.pop("base")
    return combine_signals(base, list(tables.values())), cpu


def candidate_unit(task: dict[str, Any], contamination: Any = None) -> dict:
    """The shard's candidate scores (:func:`curation.filter.cut.candidate_scores`), kept as sorted
    order keys in ``task["keys"]`` for the later rounds, and its answer to the first round."""
    signals, _ = read_signals(task)
    docs = io.read_parquet(task["path"], columns=["url"] if contamination is None else ["url", "text"])
    scores = qcut.candidate_scores(signals, docs, task["cfg"], task["blocklist"], contamination)
    keys = np.sort(qcut.order_keys(scores))
    io.write_arrow(pa.table({"key": pa.array(keys, pa.uint64())}), task["keys"])
    return qcut.answer(keys, task["query"])


def cut_round_unit(task: dict[str, Any]) -> dict:
    """A later round of the select over the shard's kept keys."""
    return qcut.answer(io.read_arrow(task["keys"]).column("key").to_numpy(), task["query"])


def decide_unit(task: dict[str, Any], contamination: Any = None) -> dict:
    """The shard's decisions: kept documents to ``task["out"]``, dropped ones to
    ``task["rejects"]`` (when set), its stats to ``task["stats"]`` (first: a shard implies its stats)."""
    cpu = time.process_time()
    cfg = task["cfg"]
    docs = io.read_parquet(task["path"])
    signals, score_cpu = read_signals(task)
    kept, dropped, stats = decide_table(docs, signals, cfg, parse_blocklist(task["blocklist"]), task["cut"])
    kept, dropped = decontaminate(kept, dropped, stats, contamination, cfg)
    stats.add("cpu_seconds_score", score_cpu)
    stats.check()
    stats.add("cpu_seconds_decide", time.process_time() - cpu)
    io.write_json(stats.to_dict(), task["stats"])
    if task["rejects"]:
        io.write_parquet(dropped, task["rejects"])
    io.write_parquet(kept, task["out"])
    return stats.to_dict()


def model_path(cfg: FilterConfig) -> str | None:
    """The quality model's absolute path; None when none is set, or (said so) when it is missing
    and no rule needs it; a rule that needs a missing one is a :class:`SettingError`."""
    path = cfg.quality.model
    if not path:
        return None
    if not os.path.exists(path):
        if cfg.quality.threshold is not None or cfg.quality.top_fraction is not None:
            raise SettingError(f"quality model {path} not found (train it: python -m pipelines train-quality)")
        print(f"filter: quality model {path} not found; quality_score left empty", file=sys.stderr)
        return None
    return os.path.abspath(path)


def read_blocklist(path: str) -> str:
    if not path:
        return ""
    with io.open_input(path) as f:
        return f.read().decode("utf-8")


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(), digest_size=8).hexdigest()


def shard_names(files: list[str]) -> list[str]:
    """Output names: the input's path below the inputs' common folder, without .parquet."""
    if not files:
        return []
    root = os.path.dirname(files[0]) if len(files) == 1 else os.path.commonpath([os.path.dirname(f) for f in files])
    return [os.path.relpath(f, root)[: -len(".parquet")].replace(os.sep, "__") for f in files]


def drops_by_language(stats: StageStats) -> dict[str, dict[str, int]]:
    """{language: {rule: documents dropped, "documents": documents seen}} from the decide stats."""
    table: dict[str, dict[str, int]] = {}
    for key, n in stats.counters.items():
        if key.startswith("dropped."):
            _, lang, rule = key.split(".", 2)
            table.setdefault(lang, {})[rule] = int(n)
        elif key.startswith("documents."):
            table.setdefault(key.split(".", 1)[1], {})["documents"] = int(n)
    return {k: dict(sorted(v.items())) for k, v in sorted(table.items())}
