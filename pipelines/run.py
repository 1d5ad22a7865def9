"""``python -m pipelines run --config configs/demo.yaml``: the whole recipe, WARC files in, an
aligned model out, as one resumable job.

Stages run in order (``pipeline_config.STAGE_ORDER``) in this process, each through its function
with its typed config from the run's (``eval`` and ``generate`` through their command lines), so
they share one Ray instance (the embedded local one, or the cluster named by ``RAY_ADDRESS``, as under
``ray job submit``). A stage whose output is complete is skipped and said so: the curation stages
and SFT/DPO when ``<output>/<stage>/stats.json`` exists (each writes it last), pre-training when
its run's ``stats.json`` exists (a run with checkpoints but no ``stats.json`` is resumed from its
last complete checkpoint). A re-run after any failure therefore resumes where it stopped. Each
finished stage leaves ``<output>/_run/<stage>.json`` (time, exit status, the Ray nodes its tasks
ran on), and the run ends with ``report.json`` and ``report.html`` (:mod:`reporting.run`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import errno
import os
import re
import sys
import time
from typing import Any, Callable

from storage.errors import UserError
from curation.stats import StageStats
from pipelines import config as config_mod
from pipelines import runtime
from storage import io
from pipelines.cli import add_config_arguments
from pipelines.import_jsonl import import_jsonl, unique_names
from pipelines import pipeline_config
from pipelines.pipeline_config import STAGE_ORDER, PipelineConfig

NAME = "run"
HELP = "run the whole pipeline (extract .. dpo, then generate) from one config; resumes after a failure"

class StageFailed(UserError):
    """A run that cannot go on as configured (no inputs, no trained model yet): one line, exit 2."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--no-report", action="store_true", help="skip report.json / report.html at the end")
    p.add_argument("--dry-run", action="store_true",
                   help="run nothing: resolve every path and option, check inputs exist and outputs are writable, print the plan "
                        "(stages, inputs, outputs, Ray resources, what is complete); non-zero with one line per problem")


def layout(out: str) -> dict[str, str]:
    """Where each stage of a run writes."""
    j = lambda *a: io.join(out, *a)  # noqa: E731
    return {
        "import": j("imported"), "extract": j("extracted"), "dedup": j("dedup"), "dedup-stats": j("dedup", "dedup-stats"),
        "filter": j("filtered"), "remix": j("remix"), "train-tokenizer": j("tokenizer"), "tokenize": j("tokens"),
        "pretrain": j("pretrain"), "sft": j("sft"), "dpo": j("dpo"), "eval": j("eval"), "generate": j("answer.json"), "runlog": j("_run"),
    }


def run(args: argparse.Namespace) -> int:
    import yaml

    try:
        cfg = pipeline_config.load(args.config, args.overrides)
    except (config_mod.ConfigError, OSError, yaml.YAMLError) as e:
        print(f"run: bad config {args.config}: {e}", file=sys.stderr)
        return 2
    stages = list(cfg.stages) or list(STAGE_ORDER)
    unknown = [s for s in stages if s not in STAGE_ORDER]
    if unknown:
        print(f"run: unknown stage(s) {unknown} in `stages`; known: {', '.join(STAGE_ORDER)}", file=sys.stderr)
        return 2
    if not cfg.import_jsonl.inputs and "import" in stages:
        stages.remove("import")
    paths = layout(cfg.output)
    if args.dry_run:
        from pipelines import plan

        return plan.dry_run(cfg, stages, paths, args.config)
    from pipelines.pretrain import resolve_launcher

    for stage in (s for s in ("pretrain", "sft", "dpo") if s in stages):  # checked before any stage runs
        try:
            train_config(stage, cfg, paths, stages)
            resolve_launcher(train_section(stage, cfg).launcher, train_section(stage, cfg).nproc)
        except config_mod.ConfigError as e:
            print(f"run: bad config {args.config}: {stage}: {e}", file=sys.stderr)
            return 2
    err = _check_writable(cfg.output)
    if err:
        print(f"run: {err}", file=sys.stderr)
        return 2
    start_dir = os.getcwd()
    runtime.init_ray(num_cpus=cfg.num_cpus)
    print(f"run: {len(stages)} stages into {cfg.output}: {', '.join(stages)}", file=sys.stderr)
    steps: dict[str, Callable[[], int]] = {
        "import": lambda: import_jsonl(cfg.import_jsonl.inputs, paths["import"]),
        "extract": lambda: _extract(cfg, paths),
        "dedup": lambda: _dedup(cfg, paths),
        "filter": lambda: _filter(cfg, paths),
        "remix": lambda: _remix(cfg, paths),
        "train-tokenizer": lambda: _train_tokenizer(cfg, paths),
        "tokenize": lambda: _tokenize(cfg, paths),
        "pretrain": lambda: _pretrain(cfg, paths),
        "sft": lambda: _finetune("sft", cfg, paths, stages),
        "dpo": lambda: _finetune("dpo", cfg, paths, stages),
        "eval": lambda: _eval(cfg, paths),
        "generate": lambda: _generate(cfg, paths),
    }
    status = 0
    with runtime.Timer() as total:
        for stage in stages:
            if stage_done(stage, paths):
                print(f"\nrun: {stage}: complete ({_marker(stage, paths)} exists), skipped", file=sys.stderr)
                continue
            print(f"\nrun: ===== {stage} =====", file=sys.stderr)
            _reenter(start_dir)
            tasks_before = _task_ids()
            t0 = time.perf_counter()
            try:
                rc = steps[stage]()
            except UserError as e:  # a setting, a missing input: one line, as a single stage says it
                print(f"run: {stage}: error: {e}", file=sys.stderr)
                return 2
            except OSError as e:
                print(f"run: {stage} failed: {_os_error(e)}", file=sys.stderr)
                return 1
            seconds = time.perf_counter() - t0
            failed = _failed_inputs(stage, paths)
            if rc != 0 and not (failed and stage_done(stage, paths)):
                print(f"run: {stage} exited with status {rc}; stopping (outputs so far stay, a re-run resumes here)", file=sys.stderr)
                return rc
            io.write_json({"stage": stage, "seconds": seconds, "rc": rc, "failed_inputs": failed, "task_nodes": _task_nodes(tasks_before),
                           "driver_peak_rss_mb": runtime.peak_rss_mb()}, io.join(paths["runlog"], f"{stage}.json"))
            if failed:
                status = 1
                print(f"run: {stage}: {len(failed)} input(s) could not be read: {', '.join(sorted(failed))}", file=sys.stderr)
                if cfg.stop_on_failed_inputs:
                    return 1
    if not args.no_report:
        from reporting.run import write_report

        try:
            where = write_report(cfg, paths, stages)
        except OSError as e:
            print(f"run: report failed: {_os_error(e)}", file=sys.stderr)
            return 1
        print(f"\n== run: summary ==\n  {'stage':<16} {'in':>9} {'out':>9} {'seconds':>9}", file=sys.stderr)
        for row in where["stages"]:
            if row.get("complete"):
                secs = f"{row['seconds']:,.1f}" if row.get("seconds") is not None else "-"
                print(f"  {row['stage']:<16} {row['documents_in'] or 0:>9,} {row['documents_out'] or 0:>9,} {secs:>9}", file=sys.stderr)
        if where.get("answer") is not None:
            print(f"  final answer: {where['answer'][:200]!r}", file=sys.stderr)
        print(f"run: report: {where['html']} ({where['json']})", file=sys.stderr)
    print(f"run: done in {total.seconds:,.1f} s" + (" (some inputs could not be read: see the report)" if status else ""), file=sys.stderr)
    return status


def _reenter(folder: str) -> None:
    """Step back into the starting folder by its path. Under `ray job submit` that folder is the
    job's working_dir package, which Ray's runtime-env agent deletes and fetches again when the
    job's workers set it up anew (Ray >= 2.41 replaces a cached working_dir), leaving this
    process in a deleted folder: relative paths (models/quality.ftz, configs, data/...) and lazy
    imports would fail from the second stage on."""
    try:
        if os.path.samefile(os.getcwd(), folder):
            return
    except OSError:  # the folder we are in was deleted (or replaced)
        pass
    if os.path.isdir(folder):
        os.chdir(folder)


# ---- completion ----

def _marker(stage: str, paths: dict[str, str]) -> str:
    if stage == "generate":
        return paths["generate"]
    return io.join(paths[stage], "stats.json")


def stage_done(stage: str, paths: dict[str, str]) -> bool:
    """Whether the run's ``stage`` has finished (its ``stats.json``; dedup's statistics too)."""
    if stage == "dedup":
        return io.exists(_marker("dedup", paths)) and io.exists(io.join(paths["dedup-stats"], "report.json"))
    return io.exists(_marker(stage, paths))


def _failed_inputs(stage: str, paths: dict[str, str]) -> dict[str, str]:
    if stage == "generate" or not io.exists(_marker(stage, paths)):
        return {}
    return dict(io.read_json(_marker(stage, paths)).get("failed_files") or {})


# ---- one stage ----

def _stage(argv: list[str]) -> int:
    """Run one stage in this process through its own command line (eval)."""
    from pipelines.cli import build_parser

    print("run: python -m pipelines " + " ".join(_quote(a) for a in argv), file=sys.stderr)
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


def _quote(a: str) -> str:
    return a if re.fullmatch(r"[\w./=:,@+-]+", a) else repr(a)


def _opt(flag: str, value: Any) -> list[str]:
    return [] if value is None else [flag, str(value)]


def _settings(stage: str, cfg: Any) -> None:
    """The stage's typed config, as the settings that differ from its defaults."""
    print(f"run: {stage}: {config_mod.settings_line(cfg)}", file=sys.stderr)


# ---- the curation stages: each stage's function with its typed config ----

def dedup_inputs(cfg: PipelineConfig, paths: dict[str, str]) -> list[str]:
    """The extracted pages (when the run extracts any), the imported documents (when it imports
    any) and the document shards given as ``dedup.inputs``."""
    extracts = bool(cfg.extract.inputs or cfg.extract.cc_dump)
    return ([paths["extract"]] if extracts else []) + ([paths["import"]] if cfg.import_jsonl.inputs else []) + list(cfg.dedup.inputs)


def stage_inputs(stage: str, paths: dict[str, str]) -> list[str]:
    """What filter, remix, train-tokenizer and tokenize read: the stage before's output."""
    return [{"filter": io.join(paths["dedup"], "documents"), "remix": paths["filter"]}.get(stage, paths["remix"])]


def extract_config(cfg: PipelineConfig) -> Any:
    """The extract stage's config: the section's, with the pre-pass's and the index selection's
    languages (and the pre-pass's minimum length) taken from the filter's own settings (one
    setting feeds both stages)."""
    from curation.extract.prefilter import PrefilterConfig
    from curation.sources.commoncrawl import CCIndexConfig

    own, default = cfg.extract.config.prefilter, PrefilterConfig()
    given = [f"prefilter.{k}" for k in ("enabled", "languages", "min_words") if getattr(own, k) != getattr(default, k)]
    if cfg.extract.config.cc_index.languages != CCIndexConfig().languages:
        given.append("cc_index.languages")
    if given:
        raise config_mod.ConfigError(
            f"extract.config gives {', '.join(given)}: in a pipeline run the pre-pass is `extract.prefilter: true`, and it and the "
            "index selection take the filter's languages and minimum length; set those once, in filter.config (language.keep, "
            "gopher_quality.min_words)")
    f = cfg.filter.config
    disabled = set(f.disabled_rules)
    # A rule the filter does not apply must not drop pages here either.
    languages = [] if "language" in disabled else list(f.language.keep)
    ecfg = dataclasses.replace(cfg.extract.config, cc_index=dataclasses.replace(cfg.extract.config.cc_index, languages=languages))
    if not cfg.extract.prefilter:
        return ecfg
    prefilter = dataclasses.replace(own, enabled=True, languages=languages,
                                    min_words=0 if "gopher_word_count" in disabled else f.gopher_quality.min_words)
    return dataclasses.replace(ecfg, prefilter=prefilter)


def _extract(cfg: PipelineConfig, paths: dict[str, str]) -> int:
    from pipelines.extract import extract, resolve_inputs

    e = cfg.extract
    if not e.inputs and not e.cc_dump and not e.cc_index:
        raise StageFailed("extract: the config gives none of extract.inputs, extract.cc_dump, extract.cc_index")
    ecfg = extract_config(cfg)
    inputs, missing, cc, selection = resolve_inputs(e.inputs, e.cc_dump, e.cc_base_url, e.cc_first, e.cc_files, e.cc_index, ecfg.cc_index)
    _settings("extract", ecfg)
    return extract(inputs, paths["extract"], ecfg, dump=e.cc_dump, cc=cc, workers=e.workers, missing=missing, selection=selection)


def _dedup(cfg: PipelineConfig, paths: dict[str, str]) -> int:
    from pipelines import dedup_stats
    from pipelines.dedup import dedup

    _settings("dedup", cfg.dedup.config)
    rc = dedup(dedup_inputs(cfg, paths), paths["dedup"], copy.deepcopy(cfg.dedup.config), index=cfg.dedup.index)
    if not io.exists(_marker("dedup", paths)):
        return rc or 1
    # The statistics the report shows (per-dump table, k-dump curve); they need dedup's output only.
    dedup_stats.report(paths["dedup"], paths["dedup-stats"])
    return rc


def _filter(cfg: PipelineConfig, paths: dict[str, str]) -> int:
    from pipelines.filter import filter_documents

    _settings("filter", cfg.filter.config)
    return filter_documents(stage_inputs("filter", paths), paths["filter"], cfg.filter.config, workers=cfg.filter.workers)


def _remix(cfg: PipelineConfig, paths: dict[str, str]) -> int:
    from pipelines.remix import remix

    _settings("remix", cfg.remix.config)
    return remix(stage_inputs("remix", paths), paths["remix"], cfg.remix.config, workers=cfg.remix.workers)


def _train_tokenizer(cfg: PipelineConfig, paths: dict[str, str]) -> int:
    from pipelines.train_tokenizer import train_tokenizer

    _settings("train-tokenizer", cfg.tokenizer.config)
    stats, _ = train_tokenizer(stage_inputs("train-tokenizer", paths), paths["train-tokenizer"], cfg.tokenizer.config)
    return 1 if stats.failed_files else 0


def _tokenize(cfg: PipelineConfig, paths: dict[str, str]) -> int:
    from pipelines.tokenize import tokenize

    _settings("tokenize", cfg.tokenizer.tokenize)
    stats, _ = tokenize(paths["train-tokenizer"], stage_inputs("tokenize", paths), paths["tokenize"], cfg.tokenizer.tokenize)
    return 1 if stats.failed_files else 0


# ---- the training stages: each stage's function with its typed config ----

# Settings of a training config that a pipeline run gives itself (its folders, its tokenizer, a
# checkpoint found), never the config file.
RUN_OWNED = {"pretrain": ("run_dir", "data", "vocab_size", "resume"), "sft": ("run_dir", "init_from", "data"),
             "dpo": ("run_dir", "init_from", "data", "reference_data")}


def train_section(stage: str, cfg: PipelineConfig) -> Any:
    return {"pretrain": cfg.pretrain, "sft": cfg.sft, "dpo": cfg.dpo}[stage]


def train_config(stage: str, cfg: PipelineConfig, paths: dict[str, str], stages: list[str]) -> Any:
    """The typed config ``run`` gives a training stage (``--dry-run`` checks and prints the same):
    the section's ``config``, with the run's own folders. DPO starts from SFT's model when SFT
    runs or is complete, else from pre-training's."""
    own = train_section(stage, cfg).config
    default = type(own)()
    given = [k for k in RUN_OWNED[stage] if getattr(own, k) != getattr(default, k)]
    if given:
        raise config_mod.ConfigError(f"config gives {', '.join(given)}: in a pipeline run the run sets it "
                                     f"(folders under `output`, the tokenizer it trains); remove it from {stage}.config")
    if stage == "pretrain":
        return dataclasses.replace(own, run_dir=paths["pretrain"], data=[paths["tokenize"]])
    start = paths["pretrain"] if stage == "sft" or not ("sft" in stages or stage_done("sft", paths)) else paths["sft"]
    return dataclasses.replace(own, run_dir=paths[stage], init_from=start)


def _pretrain(cfg: PipelineConfig, paths: dict[str, str]) -> int:
    from pipelines.pretrain import pretrain
    from training.checkpoint import latest_checkpoint

    tcfg = train_config("pretrain", cfg, paths, [])
    if latest_checkpoint(paths["pretrain"]):
        print(f"run: pretrain: {paths['pretrain']} has a checkpoint; resuming from the last complete one", file=sys.stderr)
        tcfg = dataclasses.replace(tcfg, resume=True)
    _settings("pretrain", cfg.pretrain.config)
    return pretrain(tcfg, cfg.pretrain, tokenizer=io.join(paths["train-tokenizer"], "tokenizer.json"))


def _finetune(stage: str, cfg: PipelineConfig, paths: dict[str, str], stages: list[str]) -> int:
    s = train_section(stage, cfg)
    data = _first_records(s.data, s.max_records, io.join(cfg.output, f"{stage}-input")) if s.max_records else s.data
    tcfg = train_config(stage, cfg, paths, stages)
    _settings(stage, s.config)
    if stage == "sft":
        from pipelines.sft import sft

        return sft(tcfg, data, paths["train-tokenizer"], s, s.decontamination)
    from pipelines.dpo import dpo

    return dpo(tcfg, data, paths["train-tokenizer"], s, s.decontamination, reference=s.reference)


def _first_records(specs: list[str], n: int, folder: str) -> list[str]:
    """The first ``n`` records of each JSONL(.gz)/Parquet data file, copied into ``folder``
    (written once; a re-run finds them)."""
    import gzip

    files, _ = io.expand_inputs(specs, (".jsonl", ".jsonl.gz", ".json", ".parquet"))
    out = []
    for f, name in zip(files, unique_names(files)):
        if f.endswith(".parquet"):
            dst = io.join(folder, name + ".parquet")
            if not io.exists(dst):
                io.write_parquet(io.read_parquet(f).slice(0, n), dst)
        else:
            dst = io.join(folder, name + ".jsonl")
            if not io.exists(dst):
                with io.open_input(f) as fh:
                    raw = fh.read()
                text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8", "replace")
                lines = [ln for ln in text.splitlines() if ln.strip()][:n]
                io.write_bytes(("\n".join(lines) + "\n").encode("utf-8"), dst)
        out.append(dst)
    return out


def _eval(cfg: PipelineConfig, paths: dict[str, str]) -> int:
    """GSM8K test after each finished training stage: ``<output>/eval/<stage>/``, then
    ``<output>/eval/stats.json`` with every model's score (what the report shows)."""
    e = cfg.eval
    models = [s for s in ("pretrain", "sft", "dpo") if stage_done(s, paths)]
    if not models:
        raise StageFailed("eval: no trained model in this run yet (pretrain, sft and dpo have not finished)")
    total = StageStats()
    scores: dict[str, Any] = {}
    rc = 0
    for stage in models:
        out = io.join(paths["eval"], stage)
        argv = ["eval", "--checkpoint", paths[stage], "--tokenizer", paths["train-tokenizer"], "--output", out, "--data", e.data,
                "--max-new-tokens", str(e.max_new_tokens), "--template", e.template, "--chunk", str(e.chunk), "--device", e.device,
                *_opt("--limit", e.limit), *_opt("--system", e.system)]
        rc = _stage(argv) or rc
        if io.exists(io.join(out, "stats.json")):
            s = io.read_json(io.join(out, "stats.json"))
            total.merge(StageStats.from_dict(s))
            scores[stage] = {**s["gsm8k"], "failed_inputs": s.get("failed_files", {})}
    if len(scores) < len(models):
        return rc or 1
    io.write_json({**total.to_dict(), "gsm8k": scores}, io.join(paths["eval"], "stats.json"))
    return rc


def _final_model(paths: dict[str, str]) -> str:
    for stage in ("dpo", "sft", "pretrain"):
        if stage_done(stage, paths):
            return paths[stage]
    raise StageFailed("generate: no trained model in this run yet (pretrain, sft and dpo have not finished)")


def _generate(cfg: PipelineConfig, paths: dict[str, str]) -> int:
    """One answer from the final model, streamed to the terminal and kept in answer.json."""
    from pipelines.cli import build_parser
    from pipelines.generate import load_model_and_sampling
    from training.generate import stream_answer, with_system

    g = cfg.generate
    model = _final_model(paths)
    argv = ["generate", "--checkpoint", model, "--tokenizer", paths["train-tokenizer"], "--prompt", g.prompt,
            "--max-new-tokens", str(g.max_new_tokens), "--temperature", str(g.temperature), "--seed", str(g.seed)]
    print("run: python -m pipelines " + " ".join(_quote(a) for a in argv), file=sys.stderr)
    args = build_parser().parse_args(argv)
    tok, net, eos, sampling, vocab = load_model_and_sampling(args)
    print(f"\nprompt: {g.prompt}\nanswer: ", end="", flush=True)
    t0 = time.perf_counter()
    answer = stream_answer(tok, net, eos, sampling, vocab, with_system(None, [{"role": "user", "content": g.prompt}]), out=sys.stdout)
    io.write_json({"model": model, "prompt": g.prompt, "answer": answer, "seconds": time.perf_counter() - t0,
                   "max_new_tokens": g.max_new_tokens, "temperature": g.temperature, "seed": g.seed}, paths["generate"])
    return 0


# ---- output checks and errors ----

def _check_writable(out: str) -> str | None:
    """A clear message when the run folder cannot be written, before any stage starts."""
    probe = io.join(out, "_run", ".write-probe")
    try:
        io.write_bytes(b"", probe)
        fs, p = io.filesystem(probe)
        fs.delete_file(p)
    except OSError as e:
        return f"the run folder is not writable: {_os_error(e)}"
    return None


def _os_error(e: OSError) -> str:
    what = {errno.ENOSPC: "disk full", errno.EACCES: "permission denied", errno.EROFS: "read-only file system",
            errno.EPERM: "operation not permitted", errno.EDQUOT: "disk quota exceeded"}.get(e.errno or 0, e.strerror or str(e))
    where = e.filename or _path_in(str(e)) or "?"
    return f"cannot write {where}: {what}" if e.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EPERM, errno.EDQUOT) else f"{where}: {e}"


def _path_in(message: str) -> str | None:
    m = re.search(r"(?:'|\")(/[^'\"]+)(?:'|\")|(/\S+)", message)
    return (m.group(1) or m.group(2)) if m else None


# ---- where tasks ran ----

def _task_ids() -> set[str] | None:
    tasks = _list_tasks()
    return None if tasks is None else {t["task_id"] for t in tasks}


def _list_tasks() -> list[dict] | None:
    """This job's tasks from Ray's state API (needs the dashboard: present on a started cluster,
    absent from the embedded demo instance, where every task runs on the one node anyway)."""
    if not os.environ.get("RAY_ADDRESS"):
        return None
    try:
        import ray
        from ray.util.state import list_tasks

        job = ray.get_runtime_context().get_job_id()
        with contextlib.redirect_stderr(open(os.devnull, "w")):
            rows = list_tasks(filters=[("job_id", "=", job)], limit=10_000, raise_on_missing_output=False, timeout=30)
        return [{"task_id": r.task_id, "name": r.name, "node_id": r.node_id} for r in rows]
    except Exception:  # noqa: BLE001 - no state API here: the report says "unknown"
        return None


def _task_nodes(before: set[str] | None) -> dict[str, list[str]] | None:
    if before is None:
        return None
    time.sleep(2)  # workers report task events about once a second
    tasks = _list_tasks()
    if tasks is None:
        return None
    nodes: dict[str, set[str]] = {}
    for t in tasks:
        if t["task_id"] not in before and t["node_id"]:
            nodes.setdefault(t["name"], set()).add(t["node_id"])
    return {k: sorted(v) for k, v in sorted(nodes.items())}
