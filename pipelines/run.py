"""``python -m pipelines run --config configs/demo.yaml``: the whole recipe, WARC files in, an
aligned model out, as one resumable job.

Stages run in order (``pipeline_config.STAGE_ORDER``) in this process, each through its own
command line (``pipelines.cli.build_parser().parse_args([...])``) and ``run(args)``, so they share
one Ray instance (the embedded local one, or the cluster named by ``RAY_ADDRESS``, as under
``ray job submit``). A stage whose output is complete is skipped and said so: the curation stages
and SFT/DPO when ``<output>/<stage>/stats.json`` exists (each writes it last), pre-training when
its run's ``stats.json`` exists (a run with checkpoints but no ``stats.json`` is resumed from its
last complete checkpoint). A re-run after any failure therefore resumes where it stopped. Each
finished stage leaves ``<output>/_run/<stage>.json`` (time, exit status, the Ray nodes its tasks
ran on), and the run ends with ``report.json`` and ``report.html`` (:mod:`pipelines.report`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import sys
import time
from typing import Any, Callable

from curation.stats import StageStats
from pipelines import config as config_mod
from pipelines import runtime
from storage import io
from pipelines.cli import add_config_arguments
from pipelines.pipeline_config import STAGE_ORDER, PipelineConfig

NAME = "run"
HELP = "run the whole pipeline (extract .. dpo, then generate) from one config; resumes after a failure"

TEXT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz")


class StageFailed(RuntimeError):
    pass


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
        cfg = config_mod.load(PipelineConfig, args.config, args.overrides)
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
    err = _check_writable(cfg.output)
    if err:
        print(f"run: {err}", file=sys.stderr)
        return 2
    start_dir = os.getcwd()
    runtime.init_ray(num_cpus=cfg.num_cpus)
    print(f"run: {len(stages)} stages into {cfg.output}: {', '.join(stages)}", file=sys.stderr)
    steps: dict[str, Callable[[], int]] = {
        "import": lambda: _import_jsonl(cfg.import_jsonl.inputs, paths["import"]),
        "extract": lambda: _stage(stage_argv("extract", cfg, paths, stages)),
        "dedup": lambda: _dedup(cfg, paths),
        "filter": lambda: _stage(stage_argv("filter", cfg, paths, stages)),
        "remix": lambda: _stage(stage_argv("remix", cfg, paths, stages)),
        "train-tokenizer": lambda: _stage(stage_argv("train-tokenizer", cfg, paths, stages)),
        "tokenize": lambda: _stage(stage_argv("tokenize", cfg, paths, stages)),
        "pretrain": lambda: _pretrain(cfg, paths),
        "sft": lambda: _finetune("sft", cfg, paths, stages),
        "dpo": lambda: _finetune("dpo", cfg, paths, stages),
        "eval": lambda: _eval(cfg, paths),
        "generate": lambda: _generate(cfg, paths),
    }
    status = 0
    with runtime.Timer() as total:
        for stage in stages:
            if _done(stage, paths):
                print(f"\nrun: {stage}: complete ({_marker(stage, paths)} exists), skipped", file=sys.stderr)
                continue
            print(f"\nrun: ===== {stage} =====", file=sys.stderr)
            _reenter(start_dir)
            tasks_before = _task_ids()
            t0 = time.perf_counter()
            try:
                rc = steps[stage]()
            except OSError as e:
                print(f"run: {stage} failed: {_os_error(e)}", file=sys.stderr)
                return 1
            except (StageFailed, config_mod.ConfigError) as e:
                print(f"run: {stage} failed: {e}", file=sys.stderr)
                return 1
            seconds = time.perf_counter() - t0
            failed = _failed_inputs(stage, paths)
            if rc != 0 and not (failed and _done(stage, paths)):
                print(f"run: {stage} exited with status {rc}; stopping (outputs so far stay, a re-run resumes here)", file=sys.stderr)
                return rc
            io.write_json({"stage": stage, "seconds": seconds, "rc": rc, "failed_inputs": failed,
                           "task_nodes": _task_nodes(tasks_before)}, io.join(paths["runlog"], f"{stage}.json"))
            if failed:
                status = 1
                print(f"run: {stage}: {len(failed)} input(s) could not be read: {', '.join(sorted(failed))}", file=sys.stderr)
                if cfg.stop_on_failed_inputs:
                    return 1
    if not args.no_report:
        from pipelines import report

        try:
            where = report.write_report(cfg, paths, stages)
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


def _done(stage: str, paths: dict[str, str]) -> bool:
    if stage == "dedup":
        return io.exists(_marker("dedup", paths)) and io.exists(io.join(paths["dedup-stats"], "report.json"))
    return io.exists(_marker(stage, paths))


def _failed_inputs(stage: str, paths: dict[str, str]) -> dict[str, str]:
    if stage == "generate" or not io.exists(_marker(stage, paths)):
        return {}
    return dict(io.read_json(_marker(stage, paths)).get("failed_files") or {})


# ---- one stage ----

def _stage(argv: list[str]) -> int:
    """Run one stage in this process through its own command line."""
    from pipelines.cli import build_parser

    print("run: python -m pipelines " + " ".join(_quote(a) for a in argv), file=sys.stderr)
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


def _quote(a: str) -> str:
    return a if re.fullmatch(r"[\w./=:,@+-]+", a) else repr(a)


def _opt(flag: str, value: Any) -> list[str]:
    return [] if value is None else [flag, str(value)]


def _sets(items: list[str]) -> list[str]:
    return [x for item in items for x in ("--set", item)]


def stage_argv(stage: str, cfg: PipelineConfig, paths: dict[str, str], stages: list[str], data: list[str] | None = None) -> list[str]:
    """The command line ``run`` gives ``stage`` (``--dry-run`` checks and prints the same).
    ``data``: SFT/DPO files in place of the config's (``max_records`` copies)."""
    if stage == "extract":
        return _extract_argv(cfg, paths)
    if stage == "dedup":
        inputs = [paths["extract"]] + ([paths["import"]] if cfg.import_jsonl.inputs else [])
        return ["dedup", "--input", *inputs, "--output", paths["dedup"], *_opt("--index", cfg.dedup.index), *_sets(cfg.dedup.set)]
    if stage == "filter":
        return ["filter", "--input", io.join(paths["dedup"], "documents"), "--output", paths["filter"],
                *_opt("--workers", cfg.filter.workers), *_sets(cfg.filter.set)]
    if stage == "remix":
        return ["remix", "--input", paths["filter"], "--output", paths["remix"], *_opt("--workers", cfg.remix.workers), *_sets(cfg.remix.set)]
    if stage == "train-tokenizer":
        return ["train-tokenizer", "--input", paths["remix"], "--output", paths["train-tokenizer"],
                *_sets([f"vocab_size={cfg.tokenizer.vocab_size}", *cfg.tokenizer.set])]
    if stage == "tokenize":
        return ["tokenize", "--tokenizer", paths["train-tokenizer"], "--input", paths["remix"], "--output", paths["tokenize"],
                *_sets(cfg.tokenizer.tokenize_set)]
    if stage == "pretrain":
        p = cfg.pretrain
        argv = ["pretrain", "--data", paths["tokenize"], "--tokenizer", io.join(paths["train-tokenizer"], "tokenizer.json"),
                "--output", paths["pretrain"], "--model", p.model, "--nproc", str(p.nproc), "--launcher", p.launcher, "--max-failures", str(p.max_failures)]
        for flag, value in (("--seq-len", p.seq_len), ("--micro-batch", p.micro_batch), ("--batch", p.batch), ("--lr", p.lr),
                            ("--train-tokens", p.train_tokens), ("--max-steps", p.max_steps), ("--warmup-steps", p.warmup_steps),
                            ("--checkpoint-every", p.checkpoint_every), ("--eval-every", p.eval_every)):
            argv += _opt(flag, value)
        return argv + _sets(p.set)
    if stage in ("sft", "dpo"):
        s = cfg.sft if stage == "sft" else cfg.dpo
        start = paths["pretrain"] if stage == "sft" or not ("sft" in stages or _done("sft", paths)) else paths["sft"]
        argv = [stage, "--checkpoint", start, "--tokenizer", paths["train-tokenizer"], "--output", paths[stage],
                "--data", *(data or s.data), "--nproc", str(s.nproc), "--launcher", s.launcher, "--max-failures", str(s.max_failures),
                *_opt("--epochs", s.epochs), *_opt("--lr", s.lr), *_opt("--micro-batch", s.micro_batch)]
        if stage == "sft":
            argv += [*_opt("--seq-len", cfg.sft.seq_len), *_opt("--batch-rows", cfg.sft.batch_rows)]
        else:
            argv += [*_opt("--batch-pairs", cfg.dpo.batch_pairs), *_opt("--beta", cfg.dpo.beta)]
        return argv + _sets(s.set)
    raise ValueError(f"{stage} has no command line of its own")


def _extract_argv(cfg: PipelineConfig, paths: dict[str, str]) -> list[str]:
    e = cfg.extract
    argv = ["extract", "--output", paths["extract"], *_opt("--workers", e.workers), *_sets(e.set)]
    if e.inputs:
        argv += ["--input", *e.inputs]
    if e.cc_dump:
        argv += ["--cc-dump", e.cc_dump, "--cc-first", str(e.cc_first), *_opt("--cc-files", e.cc_files), *_opt("--cc-base-url", e.cc_base_url)]
    if not e.inputs and not e.cc_dump:
        raise StageFailed("extract: the config gives neither extract.inputs nor extract.cc_dump")
    return argv


def _dedup(cfg: PipelineConfig, paths: dict[str, str]) -> int:
    rc = _stage(stage_argv("dedup", cfg, paths, []))
    if not io.exists(_marker("dedup", paths)):
        return rc or 1
    # The statistics the report shows (per-dump table, k-dump curve); they need dedup's output only.
    rc2 = _stage(["dedup-stats", paths["dedup"], "--report", paths["dedup-stats"]])
    return rc or rc2


def _pretrain(cfg: PipelineConfig, paths: dict[str, str]) -> int:
    from training.checkpoint import latest_checkpoint

    argv = stage_argv("pretrain", cfg, paths, [])
    if latest_checkpoint(paths["pretrain"]):
        print(f"run: pretrain: {paths['pretrain']} has a checkpoint; resuming from the last complete one", file=sys.stderr)
        argv.append("--resume")
    return _stage(argv)


def _finetune(stage: str, cfg: PipelineConfig, paths: dict[str, str], stages: list[str]) -> int:
    s = cfg.sft if stage == "sft" else cfg.dpo
    data = _first_records(s.data, s.max_records, io.join(cfg.output, f"{stage}-input")) if s.max_records else s.data
    return _stage(stage_argv(stage, cfg, paths, stages, data))


def _first_records(specs: list[str], n: int, folder: str) -> list[str]:
    """The first ``n`` records of each JSONL(.gz)/Parquet data file, copied into ``folder``
    (written once; a re-run finds them)."""
    import gzip

    files, missing = io.expand_inputs(specs, (".jsonl", ".jsonl.gz", ".json", ".parquet"))
    if missing:
        raise StageFailed(f"data not found: {missing}")
    out = []
    for f, name in zip(files, _unique_names(files)):
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
    models = [s for s in ("pretrain", "sft", "dpo") if _done(s, paths)]
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
        if _done(stage, paths):
            return paths[stage]
    raise StageFailed("generate: no trained model in this run yet (pretrain, sft and dpo have not finished)")


def _generate(cfg: PipelineConfig, paths: dict[str, str]) -> int:
    """One answer from the final model, streamed to the terminal and kept in answer.json."""
    from pipelines.cli import build_parser
    from pipelines.generate import load_model_and_sampling, stream_answer, with_system

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


# ---- the import of already-extracted JSONL documents ----

def _import_jsonl(specs: list[str], output: str) -> int:
    """Dolma/CCNet JSONL(.gz) files into document shards: one Ray task and one shard per file."""
    files, missing = io.expand_inputs(specs, TEXT_SUFFIXES)
    names = _unique_names(files)
    shards = [io.join(io.data_folder(output), n + ".parquet") for n in names]
    tasks = [(f, s, io.shard_stats_path(s)) for f, s in zip(files, shards)]
    with runtime.Timer() as t:
        results = runtime.run_tasks(_import_file, tasks, desc="import")
    stats = runtime.merge_results(StageStats(failed_files=dict(missing)), files, results)
    stats.check()
    io.write_json(stats.to_dict(), io.join(output, "stats.json"))
    io.write_dataset_card(output, "Imported documents", [f"{stats.output:,} documents from {len(files)} JSONL files."])
    runtime.print_summary("import", stats, t.seconds, {"files": len(files) + len(missing)})
    return 1 if stats.failed_files else 0


def _import_file(task: tuple[str, str, str]) -> dict:
    from curation.schema import documents_to_table
    from curation.sources import read_dolma_jsonl

    path, shard, stats_path = task
    if io.exists(shard) and io.exists(stats_path):
        return io.read_json(stats_path)
    stats = StageStats()
    with io.open_input(path) as f:
        docs = list(read_dolma_jsonl(f, os.path.basename(path), stats))
    stats.check()
    io.write_json(stats.to_dict(), stats_path)  # before the shard: a shard implies its stats
    io.write_parquet(documents_to_table(docs), shard)
    return stats.to_dict()


def _unique_names(files: list[str]) -> list[str]:
    """Shard names from input file names: only [A-Za-z0-9._-], so a name from the data never
    leaves the output folder (no '/', no '..' prefix); clashes get a numeric suffix."""
    out, seen = [], set()
    for f in files:
        base = re.sub(r"\.(jsonl|json|parquet)(\.gz)?$", "", os.path.basename(f.rstrip("/")))
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".") or "part"
        name, k = base, 1
        while name in seen:
            name, k = f"{base}-{k}", k + 1
        seen.add(name)
        out.append(name)
    return out


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
