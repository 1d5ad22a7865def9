"""``python -m pipelines filter``: document shards in, the documents that pass every rule out.

Two phases of Ray tasks, one task per input shard in each, handing off through files:

1. ``score``: the signals of each document, by family, each family in its own cached file
   ``<output>/signals/<family>-<key>/<shard>.arrow`` where ``<key>`` hashes the settings that
   change that family's signals (not the thresholds): ``base`` (language, lid.176 only where
   missing, and the fastText ``quality_score``) and the heuristic families the preset decides
   from (``curation.filter.config.PRESETS``). A re-run with other thresholds scores nothing; one
   with another preset scores only the families it adds.
2. ``decide``: the preset's named rules (``curation.filter.rules``) over the signals; kept
   documents go to ``<output>/data/<shard>.parquet`` with the signals in ``metadata.filter`` and the
   preset in ``metadata.filter_preset``; with ``--write-rejects`` the dropped ones go to
   ``<output>-rejects/`` (or the folder given) with the first rule they failed in
   ``metadata.filter_reason``. Per-shard stats in ``<output>/_stats/``, merged in input order into
   ``<output>/stats.json`` (input == output + drops per rule).
3. ``decontamination`` (inside each decide task, on the documents the rules kept): a document
   sharing a 13-gram with an evaluation set (``curation.decontam``; the index is built once by the
   driver from ``decontamination.eval_sets``) is dropped as ``contamination``; ``stats.json`` names
   the set and shows an example match under ``decontamination``.

``--set preset=fineweb`` (or ``gopher``, ``c4``) applies that preset's settings under the config
file and the other ``--set`` values (``load_config``). ``quality.top_fraction`` needs one
corpus-wide number between the phases (``quality_cut``): one task per shard finds the model
scores of the documents that pass every other rule and keeps them beside the output
(``_quality_cut/``, removed afterwards); rounds of tasks then count them by their leading bits
until the cut is found exactly (``curation.filter.cut``): the driver holds 256 counts per shard,
never the scores.
Each phase runs on the stage runner (:mod:`pipelines.stage`): a re-run skips the shards done
under the same settings, and decides every shard again when the decision settings changed
(recorded in ``<output>/decision.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
import time
from typing import Any

import numpy as np
import pyarrow as pa

from curation import decontam
from curation.decontam import ContaminationIndex
from curation.filter import FilterConfig, decide_table
from curation.filter import cut as qcut
from curation.filter.blocklist import parse_blocklist
from curation.filter.config import PRESETS, families, family_settings
from curation.filter.documents import base_table, combine_signals, decontaminate, family_table
from curation.filter.rules import check_rule_names
from curation.schema import validate
from curation.stats import StageStats
from pipelines import config, runtime
from storage import io
from pipelines.cli import add_config_arguments
from pipelines.stage import Resources, Runner, UnitError

NAME = "filter"
HELP = "Quality filtering: language, Gopher, C4, FineWeb rules (presets: deepseek, fineweb, gopher, c4), URL blocklist, fastText quality score."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="document shards: files, globs or folders (searched recursively)")
    p.add_argument("--output", required=True, help="folder for the kept documents, signals and stats.json")
    p.add_argument("--write-rejects", nargs="?", const="auto", default=None, metavar="FOLDER",
                   help="also write the dropped documents with their reason (default folder: <output>-rejects)")
    p.add_argument("--workers", type=int, default=None, help="shards processed at once (default: one per CPU)")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    rejects = None
    if args.write_rejects:
        rejects = args.output.rstrip("/") + "-rejects" if args.write_rejects == "auto" else args.write_rejects
    return filter_documents(args.input, args.output, cfg, rejects=rejects, workers=args.workers)


def load_config(path: str | None, overrides: list[str] | None) -> FilterConfig:
    """The stage's settings: the chosen preset's settings first, then the config file and --set."""
    chosen = config.load(FilterConfig, path, overrides).preset
    _check_preset(chosen)
    return config.load(FilterConfig, path, overrides, defaults=PRESETS[chosen]["settings"])


def _check_preset(name: str) -> None:
    if name not in PRESETS:
        raise config.ConfigError(f"preset: {name!r} is not a preset; choose one of {', '.join(PRESETS)}")


def filter_documents(inputs: list[str], output: str, cfg: FilterConfig, rejects: str | None = None, workers: int | None = None) -> int:
    """Run the stage; returns the exit status (non-zero when an input could not be read)."""
    _check_preset(cfg.preset)
    try:
        check_rule_names(cfg.disabled_rules, cfg)
    except ValueError as e:
        raise config.ConfigError(f"disabled_rules: {e}") from None
    model = _model_path(cfg)
    blocklist_text = _read_blocklist(cfg.blocklist.path)
    files, missing = io.expand_inputs(inputs, (".parquet",))
    names = _shard_names(files)
    folders = signal_folders(output, cfg, model)
    contamination = decontam.contamination_index(cfg.decontamination)
    runner = Runner(NAME, output, failed=missing)
    total = runner.stats
    # 1. score (each family cached by its signal settings)
    score_tasks = [
        {"name": n, "path": f, "signals": {fam: io.join(folder, n + ".arrow") for fam, folder in folders.items()},
         "cfg": dataclasses.asdict(cfg), "model": model}
        for f, n in zip(files, names)
    ]
    workers = Resources(max_in_flight=workers)
    runner.run(_score_shard, score_tasks, phase="score", key=io.json_digest(folders), resources=workers, merge=False)
    ok = [i for i, t in enumerate(score_tasks) if t["path"] not in total.failed_files]

    # between the phases: the corpus-wide quality cut
    cut, ok = quality_cut(cfg, model, score_tasks, ok, blocklist_text, workers, runner, contamination, io.join(output, "_quality_cut"))

    # 2. decide (again for every shard when the decision settings changed)
    decision = {"config": dataclasses.asdict(cfg), "blocklist": io.json_digest(blocklist_text), "quality_cut": cut,
                "rejects": rejects, "signals": {f: os.path.basename(d) for f, d in folders.items()},
                "contamination_index": contamination.digest if contamination else None}
    decide_tasks = [
        score_tasks[i] | {
            "out": io.join(io.data_folder(output), names[i] + ".parquet"),
            "rejects": io.join(rejects, names[i] + ".parquet") if rejects else None,
            "stats": io.shard_stats_path(io.join(io.data_folder(output), names[i] + ".parquet")),
            "blocklist": blocklist_text, "cut": cut,
        }
        for i in ok
    ]
    runner.run(_decide_shard, decide_tasks, contamination, phase="decide", key=io.json_digest(decision), resources=workers)
    io.write_json(decision, io.join(output, "decision.json"))
    extra = {"preset": cfg.preset, "quality_cut": cut, "drops_by_language": _drops_by_language(total),
             "decontamination": decontam.summary(total, contamination)}
    rc = runner.finish({"shards": len(files), "MB kept": total.counters["bytes_out"] / 1e6}, extra=extra,
                       card=("Quality-filtered documents", [f"{total.output:,} of {total.input:,} documents kept; drops by rule in `stats.json`."]))
    print(f"  {'preset':<24} {cfg.preset}", file=sys.stderr)
    return rc


def signal_folders(output: str, cfg: FilterConfig, model: str | None) -> dict[str, str]:
    """{family: folder of its cached signals}: ``base`` and the preset's families, each folder
    named by the family and a hash of the settings that change its signals."""
    folders = {"base": io.join(output, "signals", "base-" + io.json_digest({"model": _file_digest(model) if model else None}))}
    for fam in families(cfg):
        folders[fam] = io.join(output, "signals", f"{fam}-" + io.json_digest(family_settings(cfg, fam)))
    return folders


def quality_cut(
    cfg: FilterConfig, model: str | None, score_tasks: list[dict[str, Any]], ok: list[int], blocklist_text: str,
    workers: Resources, runner: Runner, contamination: ContaminationIndex | None = None, scratch: str | None = None,
) -> tuple[float | None, list[int]]:
    """(the model-score cut in force, the shards of ``ok`` still to decide). ``quality.top_fraction``
    runs one task per shard (at most ``workers`` at once) finding the scores of the documents that
    pass every other rule, decontamination included (``contamination``), then the rounds of
    :class:`curation.filter.cut.TopFractionCut`; a shard whose first task fails is named in
    ``failed_files``, counted (``failed_tasks.quality_cut``) and left out."""
    cut = cfg.quality.threshold
    if cfg.quality.top_fraction is None:
        if cut is not None and not model:
            raise config.ConfigError("quality.threshold needs a quality model (quality.model)")
        return cut, ok
    if not model:
        raise config.ConfigError("quality.top_fraction needs a quality model (quality.model)")
    select = qcut.TopFractionCut(cfg.quality.top_fraction)
    items = [score_tasks[i] | {"blocklist": blocklist_text, "keys": io.join(scratch, score_tasks[i]["name"] + ".arrow"),
                               "query": select.query() or {"bits": 0, "prefix": 0}} for i in ok]
    results = runner.run(_candidate_scores, items, contamination, phase="quality cut", resources=workers, merge=False, mark=False)
    kept, answers = [], []
    for i, item, res in zip(ok, items, results):
        if isinstance(res, runtime.TaskFailure):
            runner.stats.failed_files[score_tasks[i]["path"]] = f"quality cut: {res.error}"
            runner.stats.add("failed_tasks.quality_cut")
        else:
            kept.append((i, item))
            answers.append(res)
    if not select.done:
        select.add(answers)
    while select.query() is not None:
        query = select.query()
        answers = runner.run(_cut_round, [item | {"query": query} for _, item in kept], phase="quality cut", resources=workers,
                             merge=False, mark=False, required=True, desc=f"{NAME}: quality cut, round {select.bits // qcut.DIGIT_BITS + 1}")
        select.add(answers)
    io.remove_tree(scratch)
    return select.cut, [i for i, _ in kept]


# ---- tasks ------------------------------------------------------------------------------------

def _cfg(d: dict[str, Any]) -> FilterConfig:
    return config.build(FilterConfig, _int_keys(d))


def _int_keys(d: Any) -> Any:
    # asdict/JSON may turn the n-gram sizes into strings; the config wants ints back.
    if isinstance(d, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): _int_keys(v) for k, v in d.items()}
    return d


def _score_shard(task: dict[str, Any], _config: None = None) -> dict:
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
        raise UnitError(f"not a readable document shard: {str(e).splitlines()[0][:300]}") from None
    cfg = _cfg(task["cfg"])
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


def _read_signals(task: dict[str, Any]) -> tuple[pa.Table, float]:
    """The shard's signals, every family side by side, and the CPU seconds they cost to compute."""
    tables = {fam: io.read_arrow(p) for fam, p in task["signals"].items()}
    cpu = sum(float((t.schema.metadata or {}).get(b"cpu_seconds", b"0")) for t in tables.values())
    base = tables.pop("base")
    return combine_signals(base, list(tables.values())), cpu


def _candidate_scores(task: dict[str, Any], contamination: ContaminationIndex | None = None) -> dict:
    """The shard's candidate scores (``curation.filter.cut.candidate_scores``), kept as sorted
    order keys for the later rounds, and its answer to the first round."""
    signals, _ = _read_signals(task)
    docs = io.read_parquet(task["path"], columns=["url"] if contamination is None else ["url", "text"])
    scores = qcut.candidate_scores(signals, docs, _cfg(task["cfg"]), task["blocklist"], contamination)
    keys = np.sort(qcut.order_keys(scores))
    io.write_arrow(pa.table({"key": pa.array(keys, pa.uint64())}), task["keys"])
    return qcut.answer(keys, task["query"])


def _cut_round(task: dict[str, Any], _config: None = None) -> dict:
    """A later round of the select over the shard's kept keys."""
    return qcut.answer(io.read_arrow(task["keys"]).column("key").to_numpy(), task["query"])


def _decide_shard(task: dict[str, Any], contamination: ContaminationIndex | None = None) -> dict:
    cpu = time.process_time()
    cfg = _cfg(task["cfg"])
    docs = io.read_parquet(task["path"])
    signals, score_cpu = _read_signals(task)
    kept, dropped, stats = decide_table(docs, signals, cfg, parse_blocklist(task["blocklist"]), task["cut"])
    kept, dropped = decontaminate(kept, dropped, stats, contamination, cfg)
    stats.add("cpu_seconds_score", score_cpu)
    stats.check()
    stats.add("cpu_seconds_decide", time.process_time() - cpu)
    io.write_json(stats.to_dict(), task["stats"])  # before the shard: a shard implies its stats
    if task["rejects"]:
        io.write_parquet(dropped, task["rejects"])
    io.write_parquet(kept, task["out"])
    return stats.to_dict()


# ---- helpers ----------------------------------------------------------------------------------

def _model_path(cfg: FilterConfig) -> str | None:
    path = cfg.quality.model
    if not path:
        return None
    if not os.path.exists(path):
        if cfg.quality.threshold is not None or cfg.quality.top_fraction is not None:
            raise config.ConfigError(f"quality model {path} not found (train it: python -m pipelines train-quality)")
        print(f"filter: quality model {path} not found; quality_score left empty", file=sys.stderr)
        return None
    return os.path.abspath(path)


def _read_blocklist(path: str) -> str:
    if not path:
        return ""
    with io.open_input(path) as f:
        return f.read().decode("utf-8")


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(), digest_size=8).hexdigest()


def _shard_names(files: list[str]) -> list[str]:
    """Output names: the input's path below the inputs' common folder, without .parquet."""
    if not files:
        return []
    root = os.path.dirname(files[0]) if len(files) == 1 else os.path.commonpath([os.path.dirname(f) for f in files])
    return [os.path.relpath(f, root)[: -len(".parquet")].replace(os.sep, "__") for f in files]


def _drops_by_language(stats: StageStats) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for key, n in stats.counters.items():
        if key.startswith("dropped."):
            _, lang, rule = key.split(".", 2)
            table.setdefault(lang, {})[rule] = int(n)
        elif key.startswith("documents."):
            table.setdefault(key.split(".", 1)[1], {})["documents"] = int(n)
    return {k: dict(sorted(v.items())) for k, v in sorted(table.items())}
