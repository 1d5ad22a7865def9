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
import os
import sys
from typing import Any

from curation import decontam
from curation.decontam import ContaminationIndex
from curation.filter import FilterConfig
from curation.filter import cut as qcut
from curation.filter import shards as fs
from curation.filter.config import PRESETS
from curation.filter.rules import check_rule_names
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
    model = fs.model_path(cfg)
    blocklist_text = fs.read_blocklist(cfg.blocklist.path)
    files, missing = io.expand_inputs(inputs, (".parquet",))
    names = fs.shard_names(files)
    folders = fs.signal_folders(output, cfg, model)
    contamination = decontam.contamination_index(cfg.decontamination)
    runner = Runner(NAME, output, failed=missing)
    total = runner.stats
    # 1. score (each family cached by its signal settings)
    score_tasks = [
        {"name": n, "path": f, "signals": {fam: io.join(folder, n + ".arrow") for fam, folder in folders.items()},
         "cfg": cfg, "model": model}
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
    extra = {"preset": cfg.preset, "quality_cut": cut, "drops_by_language": fs.drops_by_language(total),
             "decontamination": decontam.summary(total, contamination)}
    rc = runner.finish({"shards": len(files), "MB kept": total.counters["bytes_out"] / 1e6}, extra=extra,
                       card=("Quality-filtered documents", [f"{total.output:,} of {total.input:,} documents kept; drops by rule in `stats.json`."]))
    print(f"  {'preset':<24} {cfg.preset}", file=sys.stderr)
    return rc


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


# ---- tasks: the library's steps, named for Ray's worker titles -------------------------------

def _score_shard(task: dict[str, Any], _config: None = None) -> dict:
    try:
        return fs.score_unit(task)
    except fs.BadShard as e:
        raise UnitError(str(e)) from None


def _candidate_scores(task: dict[str, Any], contamination: ContaminationIndex | None = None) -> dict:
    return fs.candidate_unit(task, contamination)


def _cut_round(task: dict[str, Any], _config: None = None) -> dict:
    return fs.cut_round_unit(task)


def _decide_shard(task: dict[str, Any], contamination: ContaminationIndex | None = None) -> dict:
    return fs.decide_unit(task, contamination)
