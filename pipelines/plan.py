"""``pipelines run --config <file> --dry-run``: check a run before it starts, run nothing.

For every stage, in order: its command line (``run.stage_argv``) parsed by the stage's own parser
and its own config built from it (so a misspelt ``--set`` key or a bad value is found now, not
hours into the run), every path it reads (the config's inputs must exist; a stage's output is
another's input when that stage runs first or is complete), every path it writes (writable: a
local folder that is, or can be, created there; on an object store a listing of the prefix, which
fails for a missing bucket or a denied key), the resources it asks Ray for, and whether it is
already complete. The plan goes to stdout; each problem is one line on stderr, and the exit status
is 2 when there is any. Nothing is written, no Ray instance is started.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from pipelines import config as config_mod
from storage import io

# Where each stage's own config comes from (module attribute, or a builder of the parsed args).
_CONFIGS = {
    "extract": ("pipelines.extract", "ExtractConfig"),
    "filter": ("pipelines.filter", "FilterConfig"),
    "remix": ("pipelines.remix", "RemixConfig"),
    "train-tokenizer": ("pipelines.train_tokenizer", "TokenizerConfig"),
    "tokenize": ("pipelines.tokenize", "TokenizeConfig"),
}
CHAT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
# Stages whose command line (run.stage_argv) and files this module checks.
_CHECKED = ("extract", "dedup", "filter", "remix", "train-tokenizer", "tokenize", "pretrain", "sft", "dpo")


@dataclass
class Step:
    stage: str
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    ray: str = ""
    state: str = "to run"
    command: list[str] = field(default_factory=list)
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
        except (config_mod.ConfigError, ValueError, OSError, SystemExit) as e:
            problems.append(f"{stage}: {e}" if not isinstance(e, SystemExit) else f"{stage}: its command line is refused (above)")
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
        step.reads = _inputs(cfg.import_jsonl.inputs, run_mod.TEXT_SUFFIXES, "import_jsonl.inputs", problems)
        step.writes, step.ray = [paths["import"]], cpus.format("JSONL file")
        return
    if stage == "generate":
        model = next((paths[s] for s in ("dpo", "sft", "pretrain") if s in stages or run_mod._done(s, paths)), None)
        if model is None:
            problems.append("generate: no trained model: pretrain, sft and dpo are neither complete nor in `stages`")
        step.reads = [p for p in (model, paths["train-tokenizer"]) if p]
        step.writes, step.ray = [paths["generate"]], "this process (no Ray resources)"
        step.notes.append(f"prompt {cfg.generate.prompt[:60]!r}..., {cfg.generate.max_new_tokens} new tokens")
        return
    if stage not in _CHECKED:  # a stage added to run.py without a plan here yet: shown, not checked
        step.writes = [paths[stage]] if stage in paths else []
        step.ray, step.notes = "(not described)", ["--dry-run has no checks for this stage yet"]
        return
    argv = run_mod.stage_argv(stage, cfg, paths, stages)
    step.command = argv
    args = _parse(argv)
    _stage_config(stage, args, problems)
    if stage == "extract":
        e = cfg.extract
        if e.inputs:
            step.reads += _inputs(e.inputs, (".warc", ".warc.gz", ".arc", ".arc.gz", ".wet", ".wet.gz"), "extract.inputs", problems)
        if e.cc_dump:
            from pipelines import commoncrawl

            base = e.cc_base_url or commoncrawl.DEFAULT_BASE_URL
            listing = commoncrawl._join(base, f"crawl-data/{e.cc_dump}/warc.paths.gz")
            step.reads.append(listing)
            if not _exists(listing, problems, "extract.cc_dump"):
                problems.append(f"extract: {listing} not found or not reachable (extract.cc_dump / extract.cc_base_url)")
            count = "the rest" if e.cc_files is None else f"{e.cc_files}"
            step.notes.append(f"{count} WARC files of {e.cc_dump} from #{e.cc_first} of that listing")
        step.writes, step.ray = [paths["extract"]], cpus.format("WARC file") + (f", at most {e.workers} at once" if e.workers else "")
    elif stage == "dedup":
        step.reads = [paths["extract"]] + ([paths["import"]] if cfg.import_jsonl.inputs else [])
        step.writes = [paths["dedup"], paths["dedup-stats"]] + ([cfg.dedup.index] if cfg.dedup.index else [])
        step.ray = cpus.format("shard or band-key partition") + "; clustering in the driver"
        if cfg.dedup.index and io.exists(cfg.dedup.index):
            step.notes.append(f"index {cfg.dedup.index} exists: deduplicates against the dumps it holds")
    elif stage in ("filter", "remix", "tokenize"):
        src = {"filter": io.join(paths["dedup"], "documents"), "remix": paths["filter"], "tokenize": paths["remix"]}[stage]
        step.reads = [src] + ([paths["train-tokenizer"]] if stage == "tokenize" else [])
        step.writes, step.ray = [paths[stage]], cpus.format("shard")
    elif stage == "train-tokenizer":
        step.reads, step.writes = [paths["remix"]], [paths["train-tokenizer"]]
        step.ray = f"1 task with every CPU of the largest node (vocab_size {cfg.tokenizer.vocab_size:,})"
    elif stage == "pretrain":
        from pipelines.pretrain import build_config

        args.tokenizer = None  # it does not exist yet: the vocabulary comes from it at run time
        tcfg = build_config(args)
        _check_config_paths(stage, tcfg, problems)
        step.reads = [paths["tokenize"], paths["train-tokenizer"]] + ([tcfg.init_from] if tcfg.init_from else [])
        step.writes, step.ray = [paths["pretrain"]], _train_resources(cfg.pretrain)
        step.notes.append(f"model {tcfg.model}, seq_len {tcfg.seq_len or 'the model context'}, lr {'auto' if tcfg.lr_auto else tcfg.lr}, "
                          f"batch {'auto' if tcfg.batch_auto else f'{tcfg.batch_tokens:,} tokens'}, {tcfg.train_tokens:,} tokens, "
                          f"checkpoint every {tcfg.checkpoint_every} steps ({'async' if tcfg.async_checkpoint else 'sync'})")
    elif stage in ("sft", "dpo"):
        section = cfg.sft if stage == "sft" else cfg.dpo
        mod = __import__(f"pipelines.{stage}", fromlist=["build_config"])
        tcfg = mod.build_config(args)
        step.reads = [args.checkpoint, paths["train-tokenizer"], *_inputs(section.data, CHAT_SUFFIXES, f"{stage}.data", problems)]
        step.writes = [paths[stage]] + ([io.join(cfg.output, f"{stage}-input")] if section.max_records else [])
        step.ray = cpus.format("data file") + ("; DPO reference log-probs: one task per pair file" if stage == "dpo" else "") \
            + "; then " + _train_resources(section)
        step.notes.append(f"{tcfg.epochs} epoch(s), lr {tcfg.lr}" + (f", first {section.max_records} records of each file" if section.max_records else ""))


def _parse(argv: list[str]) -> argparse.Namespace:
    from pipelines.cli import build_parser

    parser = build_parser()
    parser.exit_on_error = False
    for action in parser._subparsers._group_actions:  # the stage's own parser reports too
        for sub in action.choices.values():
            sub.exit_on_error = False
    try:
        return parser.parse_args(argv)
    except argparse.ArgumentError as e:
        raise ValueError(f"bad option in `pipelines {' '.join(argv[:1])} ...`: {e}") from None


def _stage_config(stage: str, args: argparse.Namespace, problems: list[str]) -> None:
    """Build the stage's own config from its options, as the stage will, and check the paths it names."""
    if stage == "dedup":
        from pipelines.dedup import config_from_args

        _check_config_paths(stage, config_from_args(args), problems)
    elif stage in _CONFIGS:
        module, name = _CONFIGS[stage]
        cls = getattr(__import__(module, fromlist=[name]), name)
        _check_config_paths(stage, config_mod.load(cls, getattr(args, "config", None), getattr(args, "overrides", [])), problems)


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
        files, missing = io.expand_inputs(specs, suffixes)
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
    from pipelines.pretrain import ray_worker_resources

    if section.launcher == "ray" or (section.launcher == "auto" and os.environ.get("RAY_ADDRESS")):
        return (f"Ray Train: {section.nproc} worker(s) x {ray_worker_resources(False)}, "
                f"x {ray_worker_resources(True)} when the cluster has >= {section.nproc} GPUs; up to {section.max_failures} restarts")
    if section.launcher == "torchrun" or (section.launcher == "auto" and section.nproc > 1):
        return f"torchrun: {section.nproc} local processes (no Ray resources)"
    return "this process (no Ray resources)"


def _stage_outputs(paths: dict[str, str]) -> set[str]:
    return {v for k, v in paths.items() if k not in ("runlog",)}


def _producer(path: str, paths: dict[str, str]) -> str:
    return next(k for k, v in paths.items() if v == path)


def _state(stage: str, paths: dict[str, str], run_mod) -> str:
    try:
        if run_mod._done(stage, paths):
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
        if s.command:
            from pipelines.run import _quote

            print(f"    command  python -m pipelines {' '.join(_quote(a) for a in s.command)}")
