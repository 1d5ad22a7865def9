"""``pipelines run --config <file> --dry-run``: check a run before it starts, run nothing.

For every stage, in order: its typed config (a curation stage's from its section's ``config:``,
already checked when the run's config was loaded, so a misspelt key or a bad value is found now,
not hours into the run; a training stage's with the run's folders, ``run.train_config``), the
paths its settings name, every path it reads (the config's inputs must exist; a stage's output is
another's input when that stage runs first or is complete), every path it writes (writable: a
local folder that is, or can be, created there; on an object store a listing of the prefix, which
fails for a missing bucket or a denied key), the resources it asks Ray for, and whether it is
already complete. The plan goes to stdout; each problem is one line on stderr, and the exit status
is 2 when there is any. Nothing is written, no Ray instance is started.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from pipelines import config as config_mod
from pipelines import import_jsonl
from storage import io

CHAT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
# Stages whose config and files this module checks.
_CHECKED = ("extract", "dedup", "filter", "remix", "train-tokenizer", "tokenize", "pretrain", "sft", "dpo")  # import, eval and generate are planned above


@dataclass
class Step:
    stage: str
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    ray: str = ""
    state: str = "to run"
    settings: str = ""
    notes: list[str] = field(default_factory=list)


def dry_run(cfg: Any, stages: list[str], paths: dict[str, str], config_path: str | None) -> int:
    from pipelines import run as run_mod

    problems: list[str] = []
    steps: list[Step] = []
    will_exist: set[str] = set()  # outputs of stages that run before, or are complete
    for stage in stages:
        step = Step(stage)
        try:
            _plan(step, cfg, paths, stages, run_mod, problems)
        except (config_mod.ConfigError, ValueError, OSError) as e:
            problems.append(f"{stage}: {e}")
        step.state = _state(stage, paths, run_mod)
        for path in step.reads:
            if path in _stage_outputs(paths) and path not in will_exist and not io.exists(path):
                producer = _producer(path, paths)
                problems.append(f"{stage}: needs {path} ({producer}'s output), but {producer} is neither complete nor in `stages`")
        will_exist.update([*step.writes, paths.get(stage, "")])  # even when its planning failed (said above)
        steps.append(step)
    problems += _check_writable(cfg.output, "output")
    if cfg.dedup.index and "dedup" in stages:
        problems += _check_writable(cfg.dedup.index, "dedup.index")
    _print(steps, cfg, config_path)
    for p in problems:
        print(f"run: dry-run: {p}", file=sys.stderr)
    if problems:
        print(f"run: dry-run: {len(problems)} problem(s); nothing was run", file=sys.stderr)
        return 2
    print(f"\nplan: no problems found; `pipelines run --config {config_path or '<file>'}` would run {sum(not s.state.startswith('complete') for s in steps)} stage(s)")
    return 0


def _plan(step: Step, cfg: Any, paths: dict[str, str], stages: list[str], run_mod, problems: list[str]) -> None:
    stage = step.stage
    cpus = "Ray tasks of 1 CPU each, one per {}"
    if stage == "import":
        step.reads = _inputs(cfg.import_jsonl.inputs, import_jsonl.SUFFIXES, "import_jsonl.inputs", problems)
        step.writes, step.ray = [paths["import"]], cpus.format("JSONL file")
        return
    if stage == "generate":
        model = next((paths[s] for s in ("dpo", "sft", "pretrain") if s in stages or run_mod.stage_done(s, paths)), None)
        if model is None:
            problems.append("generate: no trained model: pretrain, sft and dpo are neither complete nor in `stages`")
        step.reads = [p for p in (model, paths["train-tokenizer"]) if p]
        step.writes, step.ray = [paths["generate"]], "this process (no Ray resources)"
        step.notes.append(f"prompt {cfg.generate.prompt[:60]!r}..., {cfg.generate.max_new_tokens} new tokens")
        return
    if stage == "eval":
        e = cfg.eval
        models = [s for s in ("pretrain", "sft", "dpo") if s in stages or run_mod.stage_done(s, paths)]
        if not models:
            problems.append("eval: no trained model: pretrain, sft and dpo are neither complete nor in `stages`")
        if not _exists(e.data, problems, "eval.data"):
            problems.append(f"eval.data: {e.data}: no such file")
        step.reads = [*(paths[s] for s in models), paths["train-tokenizer"], e.data]
        step.writes = [paths["eval"]]
        step.ray = (f"Ray tasks of {e.chunk} questions, 1 CPU each" if e.device == "cpu" else f"the driver, on its {e.device}")
        step.notes.append(f"GSM8K after {', '.join(models) or 'no model'}: {e.limit or 'all'} questions, "
                          f"up to {e.max_new_tokens} new tokens, greedy")
        return
    if stage not in _CHECKED:  # a stage added to run.py without a plan here yet: shown, not checked
        step.writes = [paths[stage]] if stage in paths else []
        step.ray, step.notes = "(not described)", ["--dry-run has no checks for this stage yet"]
        return
    if stage in ("pretrain", "sft", "dpo"):
        tcfg = run_mod.train_config(stage, cfg, paths, stages)
        step.settings = config_mod.settings_line(run_mod.train_section(stage, cfg).config)
        _check_config_paths(stage, tcfg, problems)
    else:
        scfg = _stage_config(stage, cfg, run_mod)
        step.settings = config_mod.settings_line(scfg)
        _check_config_paths(stage, scfg, problems)
    if stage == "extract":
        e = cfg.extract
        if e.inputs:
            step.reads += _inputs(e.inputs, (".warc", ".warc.gz", ".arc", ".arc.gz", ".wet", ".wet.gz"), "extract.inputs", problems)
        if e.cc_dump:
            from curation.sources import commoncrawl

            listing = commoncrawl.listing_url(e.cc_dump, e.cc_base_url or commoncrawl.DEFAULT_BASE_URL)
            step.reads.append(listing)
            if not _exists(listing, problems, "extract.cc_dump"):
                problems.append(f"extract: {listing} not found or not reachable (extract.cc_dump / extract.cc_base_url)")
            count = "the rest" if e.cc_files is None else f"{e.cc_files}"
            how = "the records extract.cc_index selects in" if e.cc_index else ""
            step.notes.append(f"{how or ''}{' ' if how else ''}{count} WARC files of {e.cc_dump} from #{e.cc_first} of that listing")
        if e.cc_index:
            _plan_index(step, cfg, run_mod, problems)
        pre = run_mod.extract_config(cfg).prefilter
        if pre.enabled:
            step.notes.append(f"pre-pass: languages [{','.join(pre.languages)}], min words {pre.min_words} (the filter's settings)")
        step.writes, step.ray = [paths["extract"]], cpus.format("WARC file") + (f", at most {e.workers} at once" if e.workers else "")
    elif stage == "dedup":
        step.reads = run_mod.dedup_inputs(cfg, paths)
        step.writes = [paths["dedup"], paths["dedup-stats"]] + ([cfg.dedup.index] if cfg.dedup.index else [])
        step.ray = cpus.format("shard or band-key partition") + "; clustering as rounds of Ray tasks over node partitions"
        if cfg.dedup.index and io.exists(cfg.dedup.index):
            step.notes.append(f"index {cfg.dedup.index} exists: deduplicates against the dumps it holds")
    elif stage in ("filter", "remix", "tokenize"):
        step.reads = run_mod.stage_inputs(stage, paths) + ([paths["train-tokenizer"]] if stage == "tokenize" else [])
        step.writes, step.ray = [paths[stage]], cpus.format("shard")
    elif stage == "train-tokenizer":
        step.reads, step.writes = run_mod.stage_inputs(stage, paths), [paths["train-tokenizer"]]
        step.ray = f"1 task with every CPU of the largest node (vocab_size {cfg.tokenizer.config.vocab_size:,})"
    elif stage == "pretrain":
        from training.trainer import plan_batches

        plan_batches(tcfg, cfg.pretrain.nproc)  # a batch the ranks cannot split, found now
        step.reads = [paths["tokenize"], paths["train-tokenizer"]] + ([tcfg.init_from] if tcfg.init_from else [])
        step.writes, step.ray = [paths["pretrain"]], _train_resources(cfg.pretrain)
        step.notes.append(f"model {tcfg.model}, seq_len {tcfg.seq_len or 'the model context'}, lr {'auto' if tcfg.lr_auto else tcfg.lr}, "
                          f"batch {'auto' if tcfg.batch_auto else f'{tcfg.batch_tokens:,} tokens'}, {tcfg.train_tokens:,} tokens, "
                          f"checkpoint every {tcfg.checkpoint_every} steps ({'async' if tcfg.async_checkpoint else 'sync'})")
    elif stage in ("sft", "dpo"):
        section = run_mod.train_section(stage, cfg)
        step.reads = [tcfg.init_from, paths["train-tokenizer"], *_inputs(section.data, CHAT_SUFFIXES, f"{stage}.data", problems)]
        step.writes = [paths[stage]] + ([io.join(cfg.output, f"{stage}-input")] if section.max_records else [])
        step.ray = cpus.format("data file") + ("; DPO reference log-probs: one task per pair file" if stage == "dpo" else "") \
            + "; then " + _train_resources(section)
        step.notes.append(f"{tcfg.epochs} epoch(s), lr {tcfg.lr}" + (f", first {section.max_records} records of each file" if section.max_records else ""))


def _plan_index(step: Step, cfg: Any, run_mod, problems: list[str]) -> None:
    """The records extract.cc_index selects, and what fetching them costs against whole files."""
    from pipelines.extract import dry_run_lines, resolve_inputs
    from storage.errors import UserError

    e = cfg.extract
    step.reads.append(", ".join(e.cc_index) + " (index)")
    ecfg = run_mod.extract_config(cfg)
    try:
        _, _, cc, selection = resolve_inputs([], e.cc_dump, e.cc_base_url, e.cc_first, e.cc_files, e.cc_index, ecfg.cc_index)
    except UserError as err:
        problems.append(f"extract.cc_index: {err}")
        return
    step.notes += dry_run_lines([], selection, ecfg.cc_index, cc)


def _stage_config(stage: str, cfg: Any, run_mod) -> Any:
    """The typed config ``run`` gives a curation stage, checked as the stage will check it."""
    if stage == "extract":
        return run_mod.extract_config(cfg)
    if stage == "dedup":
        from pipelines.dedup import resolve

        return resolve(copy.deepcopy(cfg.dedup.config))
    return {"filter": cfg.filter.config, "remix": cfg.remix.config, "train-tokenizer": cfg.tokenizer.config,
            "tokenize": cfg.tokenizer.tokenize}[stage]


def _check_config_paths(stage: str, cfg: Any, problems: list[str], where: str = "") -> None:
    """Every non-empty ``*path`` field of a stage config (blocklists, models) must exist."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            _check_config_paths(stage, value, problems, f"{where}{f.name}.")
        elif f.name.endswith("path") and isinstance(value, str) and value and not io.exists(value):
            problems.append(f"{stage}: {where}{f.name} = {value}: no such file")


def _inputs(specs: list[str], suffixes: tuple[str, ...], key: str, problems: list[str]) -> list[str]:
    try:
        files, missing = io.expand_inputs(specs, suffixes, missing_ok=True)
    except OSError as e:
        problems.append(f"{key}: cannot be read: {e}")
        return list(specs)
    for spec, why in sorted(missing.items()):
        problems.append(f"{key}: {spec}: {why}")
    return [", ".join(specs) + (f" ({len(files)} files)" if files else "")]


def _exists(path: str, problems: list[str], key: str) -> bool:
    try:
        return io.exists(path)
    except OSError as e:
        problems.append(f"{key}: {path} cannot be reached: {str(e).splitlines()[0]}")
        return True  # said once, not twice


def _check_writable(path: str, key: str) -> list[str]:
    """Object store: a listing of the prefix (fails for a missing bucket or denied access);
    local: the folder, or its nearest existing parent, is a writable folder."""
    if io.is_object_store(path):
        try:
            fs, p = io.filesystem(path)
            bucket = p.split("/", 1)[0]
            if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                return [f"{key}: {path}: bucket {bucket!r} does not exist (or is not visible with these credentials)"]
            fs.get_file_info(pafs.FileSelector(p, allow_not_found=True, recursive=False))
        except OSError as e:
            return [f"{key}: {path}: cannot be listed: {str(e).splitlines()[0]}"]
        return []
    if io.is_uri(path):
        return [] if path.startswith("file://") else [f"{key}: {path}: not a writable location (http/https are read-only)"]
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return [f"{key}: {path}: {probe} is a file, not a folder"]
    if not os.access(probe, os.W_OK | os.X_OK):
        return [f"{key}: {path}: {probe} is not writable"]
    return []


def _train_resources(section: Any) -> str:
    from pipelines.pretrain import ray_worker_resources, resolve_launcher

    launcher = resolve_launcher(section.launcher, section.nproc)
    if launcher == "ray":
        return (f"Ray Train: {section.nproc} worker(s) x {ray_worker_resources(False)}, "
                f"x {ray_worker_resources(True)} when the cluster has >= {section.nproc} GPUs; up to {section.max_failures} restarts")
    if launcher == "torchrun":
        return f"torchrun: {section.nproc} local processes (no Ray resources)"
    return "this process (no Ray resources)"


def _stage_outputs(paths: dict[str, str]) -> set[str]:
    return {v for k, v in paths.items() if k not in ("runlog",)}


def _producer(path: str, paths: dict[str, str]) -> str:
    return next(k for k, v in paths.items() if v == path)


def _state(stage: str, paths: dict[str, str], run_mod) -> str:
    try:
        if run_mod.stage_done(stage, paths):
            return "complete (skipped)"
        if stage in ("pretrain", "sft", "dpo"):
            from training.checkpoint import latest_checkpoint

            latest = latest_checkpoint(paths[stage])
            if latest:
                return f"partial: resumes from {io.basename(latest)}"
    except OSError as e:
        return f"unknown ({str(e).splitlines()[0]})"
    return "to run"


def _print(steps: list[Step], cfg: Any, config_path: str | None) -> None:
    print(f"plan: {len(steps)} stage(s) of {config_path or 'the default config'} into {cfg.output}")
    for i, s in enumerate(steps, 1):
        print(f"\n{i:>2}. {s.stage:<16} {s.state}")
        if s.reads:
            print(f"    reads    {', '.join(s.reads)}")
        if s.writes:
            print(f"    writes   {', '.join(s.writes)}")
        print(f"    ray      {s.ray}")
        for note in s.notes:
            print(f"    note     {note}")
        if s.settings:
            print(f"    config   {s.settings}")
