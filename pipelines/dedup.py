"""``python -m pipelines dedup``: exact + MinHash-LSH near-duplicate removal across dumps.

Ray wiring, paths and stats only. Each phase is one Ray task per unit - a shard or a partition -
running a step of ``curation/dedup`` from files to files (signatures, candidates, contract,
components rounds, finish, expand, gather, decide, labels, write, restore, duplicates; see the
package's docstring), on the stage runner (:mod:`pipelines.stage`): a re-run after a failure
skips the units done, whose markers are removed with the hand-off files when the stage ends. The driver holds these per-unit summaries only: never
documents, edges or the index (``curation/dedup/layout.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Callable


from curation.dedup import DedupConfig
from curation.dedup import candidates as cand
from curation.dedup import components as comp
from curation.dedup import keep as kp
from curation.dedup import layout
from curation.dedup import lines as ln
from curation.dedup import minhash as mh
from curation.dedup import removals as rm
from curation.dedup import signatures as sig
from pipelines import config as config_mod
from pipelines.cli import add_config_arguments
from pipelines import runtime
from pipelines.runtime import TaskFailure
from pipelines.stage import Runner, UnitError, complete, stats_path
from storage import io
from storage.errors import SettingError

# The settings an index's keys and decisions depend on: a later run against it must use the same.
COMPAT = ("shingles", "minhash", "keep", "min_similarity", "verify")
NAME = "dedup"
HELP = "exact + MinHash-LSH near-duplicate removal across dumps (incremental against an index)"
FLAGS = [("threshold", "threshold"), ("ngram", "shingles.ngram"), ("bands", "minhash.bands"), ("rows", "minhash.rows"),
         ("keep", "keep"), ("min_similarity", "min_similarity"), ("partitions", "partitions"), ("verify", "verify"),
         ("line_repeat_min", "line_repeat_min")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", required=True, help="folders (or files/globs) of extracted-document shards")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--index", help="persistent index to dedup against and extend (default <output>/index)")
    p.add_argument("--threshold", type=float, help="target Jaccard; picks bands x rows with datasketch's optimiser")
    p.add_argument("--ngram", type=int, help="shingle size in words (default 5)")
    p.add_argument("--bands", type=int, help="LSH bands (default 14)")
    p.add_argument("--rows", type=int, help="rows per band (default 8)")
    p.add_argument("--keep", choices=kp.KEEP_RULES, help="which copy of a cluster is kept (default newest)")
    p.add_argument("--min-similarity", type=float, help="remove a document only this similar to its kept one (default 0.6; 0: plain components)")
    p.add_argument("--partitions", type=int, help="partitions of keys, edges and components (default: from the data size)")
    p.add_argument("--verify", action="store_true", default=None, help="check removals by true Jaccard instead of the MinHash estimate")
    p.add_argument("--line-repeat-min", type=int, help="remove lines repeated in at least this many documents (0 = off)")
    add_config_arguments(p)


def config_from_args(args: argparse.Namespace) -> DedupConfig:
    overrides = list(getattr(args, "overrides", []) or [])
    overrides += [f"{key}={getattr(args, flag)}" for flag, key in FLAGS if getattr(args, flag, None) is not None]
    return resolve(config_mod.load(DedupConfig, getattr(args, "config", None), overrides))


def resolve(cfg: DedupConfig) -> DedupConfig:
    """Apply ``threshold`` (bands x rows for it, same permutations) and check the settings."""
    if cfg.threshold is not None:
        cfg.minhash.bands, cfg.minhash.rows = mh.bands_rows_for_threshold(cfg.threshold, cfg.minhash.num_perm)
    if cfg.keep not in kp.KEEP_RULES:
        raise config_mod.ConfigError(f"keep: {cfg.keep!r} is not 'newest' or 'oldest'")
    if not 0.0 <= cfg.min_similarity <= 1.0:
        raise config_mod.ConfigError(f"min_similarity: {cfg.min_similarity} is not between 0 and 1")
    if cfg.partitions is not None and not 1 <= cfg.partitions <= layout.MAX_PARTITIONS:
        raise config_mod.ConfigError(f"partitions: {cfg.partitions} is not between 1 and {layout.MAX_PARTITIONS}")
    return cfg


def _measured(fn: Callable, unit: dict, ctx: dict) -> dict:
    return dict(fn(unit, ctx), rss_mb=runtime.peak_rss_mb())


# One named function per phase: Ray shows it as the worker's title (ray::_signatures ...).
def _scan_dumps(u, ctx):
    found = sig.scan_unit(u["path"])
    if isinstance(found, str):
        raise UnitError(found)
    return found


def _line_counts(u, ctx): return _measured(ln.count_unit, u, ctx)  # noqa: E704
def _frequent_lines(u, ctx): return _measured(ln.frequent_unit, u, ctx)  # noqa: E704
def _signatures(u, ctx): return _measured(sig.signature_unit, u, ctx)  # noqa: E704
def _candidates(u, ctx): return _measured(cand.candidate_unit, u, ctx)  # noqa: E704
def _contract(u, ctx): return _measured(comp.contract_unit, u, ctx)  # noqa: E704
def _components(u, ctx): return _measured(comp.step_unit, u, ctx)  # noqa: E704
def _finish(u, ctx): return _measured(comp.finish_unit, u, ctx)  # noqa: E704
def _expand(u, ctx): return _measured(comp.expand_unit, u, ctx)  # noqa: E704
def _gather(u, ctx): return _measured(rm.gather_unit, u, ctx)  # noqa: E704
def _decide(u, ctx): return _measured(rm.decide_unit, u, ctx)  # noqa: E704
def _labels(u, ctx): return _measured(rm.labels_unit, u, ctx)  # noqa: E704
def _write(u, ctx): return _measured(rm.write_unit, u, ctx)  # noqa: E704
def _restore(u, ctx): return _measured(rm.restore_unit, u, ctx)  # noqa: E704
def _duplicates(u, ctx): return _measured(lambda u, c: {"rows": rm.merge_duplicates(c["dup_files"], u["out"])}, u, ctx)  # noqa: E704


def _phase(runner: Runner, fn: Callable, units: list[dict], ctx: dict, desc: str, per_shard: bool = False, merge: bool = False) -> list:
    """Run a phase on the runner; a failed partition stops the stage, a failed shard is named and left out."""
    name = fn.__name__.strip("_")
    res = runner.run(fn, units, ctx, phase=name.replace("_", "-"), desc=f"dedup: {desc}", merge=merge, required=not per_shard)
    stats = runner.stats
    for r in res:
        if not isinstance(r, TaskFailure):
            stats.counters["peak_worker_rss_mb"] = max(stats.counters["peak_worker_rss_mb"], r.get("rss_mb", 0.0))
            stats.add(f"cpu_seconds_{name}", round(r.get("cpu_s", 0.0), 3))
    return res


def run(args: argparse.Namespace) -> int:
    try:
        return dedup(args.input, args.output, config_from_args(args), index=args.index)
    except (config_mod.ConfigError, SettingError) as e:  # a user's mistake: one line naming it, no traceback
        print(f"dedup: {e}", file=sys.stderr)
        return 2


def dedup(inputs: list[str], output: str, cfg: DedupConfig, index: str | None = None) -> int:
    """Run the stage; returns the exit status (non-zero when an input could not be read)."""
    output, cfg = str(output), resolve(cfg)
    index = str(index) if index else io.join(output, "index")
    if complete(output):
        print(f"dedup: {output} is complete (stats.json exists); nothing to do", file=sys.stderr)
        return 0 if not io.read_json(stats_path(output)).get("failed_files") else 1
    runner, driver_cpu0 = Runner(NAME, output), time.process_time()
    stats = runner.stats
    gens = layout.open_index(index, {"layout": 2, **{k: dataclasses.asdict(cfg)[k] for k in COMPAT}}, output)
    gen, work = len(gens), io.join(output, "work")
    w = lambda *parts: io.join(work, *parts)  # noqa: E731
    shards: list[str] = []
    for spec in inputs:
        found, missing = io.expand_inputs([str(spec)], (".parquet",))
        shards.extend(f for f in found if not os.path.basename(f).startswith("."))
        stats.failed_files.update(missing)
    if len(shards) > layout.MAX_SHARDS:
        raise config_mod.ConfigError(f"{len(shards)} input shards: at most {layout.MAX_SHARDS} per run")
    io.write_json(shards, io.join(index, layout.gen_dir(gen), "shards.json"))

    scanned = runner.run(_scan_dumps, [{"name": f"part-{i:05d}", "path": f} for i, f in enumerate(shards)], phase="dumps",
                         desc="dedup: dumps", merge=False)
    good = [i for i, r in enumerate(scanned) if not isinstance(r, TaskFailure)]
    run_dumps = sorted(set().union(*[scanned[i]["dumps"] for i in good]))
    ranks = kp.dump_ranks(set(run_dumps).union(*[g["dumps"] for g in gens]), cfg.dump_order)
    run_docs = sum(scanned[i]["rows"] for i in good)
    P = layout.partitions_for((run_docs + sum(g["docs"] for g in gens)) * (cfg.minhash.bands + 1), cfg.partitions)
    ctx: dict[str, Any] = {"cfg": cfg, "gen": gen, "index": index, "work": work, "output": output, "partitions": P,
                           "old_gens": [{"gen": g["gen"], "partitions": g["partitions"]} for g in gens],
                           "string_level": cfg.line_repeat_min > 0, "n_shards": len(shards)}
    parts = lambda **fmt: [dict(name=f"p{p:04d}", p=p, q=p, g=p, r=p, **{k: w(*v.format(p=p).split("/")) for k, v in fmt.items()})  # noqa: E731
                           for p in range(P)]
    phase = lambda fn, units, desc, per_shard=False, merge=False, **extra: _phase(runner, fn, units, {**ctx, **extra}, desc, per_shard, merge)  # noqa: E731

    if cfg.line_repeat_min > 0:  # string level: lines repeated in at least line_repeat_min documents
        units = [{"name": f"part-{i:05d}", "path": shards[i], "out": w("lines", f"part-{i:05d}.arrow")} for i in good]
        good = [i for i, r in zip(good, phase(_line_counts, units, "line counts", True)) if not isinstance(r, TaskFailure)]
        fu = parts(out="lines/frequent-p={p:04d}.parquet")
        res = phase(_frequent_lines, fu, "frequent lines", count_files=[w("lines", f"part-{i:05d}.arrow") for i in good])
        stats.add("frequent_lines", sum(r["frequent_lines"] for r in res))
        ctx["frequent_files"] = [u["out"] for u in fu]

    units = [{"name": f"part-{i:05d}", "path": shards[i], "shard": i, "bands_out": w("bands", f"part-{i:05d}.arrow")} for i in good]
    res = phase(_signatures, units, "signatures", True, dump_codes={d: c for c, d in enumerate(run_dumps)})
    ok = [u for u, r in zip(units, res) if not isinstance(r, TaskFailure)]
    for key in ("lines_removed", "documents_with_lines_removed", "characters_removed") if cfg.line_repeat_min > 0 else ():
        stats.add(key, sum(r[key] for r in res if isinstance(r, dict)))

    rank_of_code = {str(g["gen"]): [ranks[d] for d in g["dumps"]] or [0] for g in [*gens, {"gen": gen, "dumps": run_dumps}]}
    cu = parts(adjacency_out="cc/s000/cand-{p:04d}.arrow", old_edges_out="contract/p={p:04d}.arrow")
    res = phase(_candidates, cu, "candidates", band_files=[u["bands_out"] for u in ok], rank_of_code=rank_of_code)
    stats.add("candidate_edges", sum(r["edges"] for r in res))
    adjacency = [u["adjacency_out"] for u in cu]
    if gens:  # edges to earlier documents become edges to their components
        lu = parts(out="cc/s000/look-{p:04d}.arrow")
        res = phase(_contract, lu, "contract index", old_edge_files=[u["old_edges_out"] for u in cu])
        stats.add("index_nodes_touched", sum(r["index_nodes_touched"] for r in res))
        adjacency += [u["out"] for u in lu]

    step, quiet = 0, 0  # large-star / small-star until a step of each kind in a row changes nothing
    while stats.counters["candidate_edges"] and quiet < 2:
        step += 1
        kind = "large" if step % 2 else "small"
        su = [dict(u, name=f"s{step:03d}-{u['name']}", kind=kind) for u in parts(out=f"cc/s{step:03d}/part-{{p:04d}}.arrow")]
        res = phase(_components, su, f"components step {step} ({kind}-star)", inputs=adjacency)
        quiet = quiet + 1 if sum(r["changed"] for r in res) == 0 else 0
        for f in adjacency if step > 1 else ():
            io.remove(f)
        adjacency = [u["out"] for u in su]
    stats.add("component_steps", step)
    fu = parts(new_out="finish/new-{p:04d}.arrow", old_out="finish/old-{p:04d}.arrow")
    phase(_finish, fu, "labels", inputs=adjacency)
    eu = parts(out="expand/p={p:04d}.arrow") if gens else []
    phase(_expand, eu, "expand index components", old_label_files=[u["old_out"] for u in fu])
    gu = parts(out="gather/p={p:04d}.arrow")
    phase(_gather, gu, "members", new_label_files=[u["new_out"] for u in fu], expanded_files=[u["out"] for u in eu])
    du = parts(labels_out="decide/labels-{p:04d}.arrow", decisions_out="decide/decisions-{p:04d}.arrow",
               restored_out="decide/restored-{p:04d}.parquet", duplicates_out="decide/duplicates-{p:04d}.parquet")
    dres = phase(_decide, du, "keep rule and chain check", member_files=[u["out"] for u in gu], ranks=ranks)
    for key in ("clusters", "chain_split", "retracted_from_index"):
        stats.add(key, sum(r[key] for r in dres))
    phase(_labels, parts(), "index labels", label_files=[u["labels_out"] for u in du])

    wu = [{"name": f"part-{u['shard']:05d}", "path": u["path"], "shard": u["shard"],
           "out": io.join(output, "documents", f"part-{u['shard']:05d}.parquet")} for u in ok]
    phase(_write, wu, "write", True, merge=True, decision_files=[u["decisions_out"] for u in du])
    ru = [{"name": f"g{g:03d}-part-{s:05d}", "gen": g, "shard": s, "out": io.join(output, "documents", f"restored-g{g:03d}-part-{s:05d}.parquet")}
          for g, s in map(layout.file_of, sorted(set().union(*[r["restored_files"] for r in dres])))]
    stats.add("restored_from_index", 0)
    phase(_restore, ru, "restore", merge=True, restored_files=[u["restored_out"] for u in du])
    phase(_duplicates, [{"name": "all", "out": io.join(output, layout.DUPLICATES_FILE)}], "duplicates",
          dup_files=[u["duplicates_out"] for u in du])
    stats.check()
    per_dump = rm.per_dump_table(stats.counters, ranks)
    layout.add_generation(index, gens, {"gen": gen, "dumps": run_dumps, "docs": run_docs, "partitions": P, "output": output})
    stats.add("seconds", round(time.perf_counter() - runner.timer.start, 3))
    stats.add("cpu_seconds_driver", round(time.process_time() - driver_cpu0, 3))
    stats.add("driver_peak_rss_mb", runtime.peak_rss_mb())
    summary = {"config": dataclasses.asdict(cfg), "index": index, "generation": gen, "partitions": P,
               "dumps": sorted(ranks, key=ranks.__getitem__), "per_dump": per_dump, **rm.decision_summary(dres, cfg)}
    rc = runner.finish({"candidate edges": stats.counters["candidate_edges"], "clusters": stats.counters["clusters"],
                        "chains split": stats.counters["chain_split"], "partitions": P}, extra={"dedup": summary})
    io.remove_tree(work)  # hand-off files; the index and graph/ stay
    runner.clear_markers()  # they stand for the hand-off files just removed
    return rc
