"""``python -m pipelines dedup``: exact + MinHash-LSH near-duplicate removal across dumps.

Ray wiring, paths and stats only. Each phase is one Ray task per unit - a shard, a partition or
a group of node files - running a step of ``curation/dedup`` from files to files (see the
package's docstring), on the stage runner (:mod:`pipelines.stage`): a re-run after a failure
skips the units done, whose markers are removed with the hand-off files when the stage ends.
The component and decision rounds are driven by ``components.label_components`` and
``decide.decide_rounds``, which run their phases through :func:`_phase`. The driver holds per-unit
summaries only: never documents, edges or the index (``curation/dedup/layout.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Callable

from curation.dedup import DedupConfig, resolve
from curation.dedup import candidates as cand
from curation.dedup import components as comp
from curation.dedup import decide as dc
from curation.dedup import edges as ed
from curation.dedup import keep as kp
from curation.dedup import layout
from curation.dedup import lines as ln
from curation.dedup import removals as rm
from curation.dedup import signatures as sig
from pipelines import config as config_mod
from pipelines import runtime
from pipelines.cli import add_config_arguments
from pipelines.runtime import TaskFailure
from pipelines.stage import Runner, UnitError, complete, stats_path
from storage import io
from storage.errors import SettingError

# The settings an index's keys and decisions depend on: a later run against it must use the same.
COMPAT = ("shingles", "minhash", "keep", "min_similarity", "uncertain_band", "verify", "max_rounds")
NAME = "dedup"
HELP = "exact + MinHash-LSH near-duplicate removal across dumps (incremental against an index)"
FLAGS = [("threshold", "threshold"), ("ngram", "shingles.ngram"), ("bands", "minhash.bands"), ("rows", "minhash.rows"),
         ("keep", "keep"), ("min_similarity", "min_similarity"), ("partitions", "partitions"), ("verify", "verify"),
         ("line_repeat_min", "line_repeat_min"), ("max_rounds", "max_rounds")]


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
    p.add_argument("--max-rounds", type=int, help="rounds of the chain check; members still open after them are kept (default 128)")
    add_config_arguments(p)


def config_from_args(args: argparse.Namespace) -> DedupConfig:
    overrides = list(getattr(args, "overrides", []) or [])
    overrides += [f"{key}={getattr(args, flag)}" for flag, key in FLAGS if getattr(args, flag, None) is not None]
    return resolve(config_mod.load(DedupConfig, getattr(args, "config", None), overrides))


def _release_memory() -> None:
    """Hand back to the system what earlier tasks of this (reused) worker freed but its allocators
    kept - Arrow's pool and glibc's heap - so a task's peak is its own."""
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def _measured(fn: Callable) -> Callable:
    """``fn`` reporting its own task's peak RSS (the worker's peak restarted at the task's start)."""
    def task(unit: dict, ctx: dict) -> dict:
        _release_memory()
        runtime.reset_peak_rss()
        return dict(fn(unit, ctx), rss_mb=runtime.peak_rss_mb())
    task.__name__ = task.__qualname__ = fn.__name__.removesuffix("_unit")
    return task


def _scan_dumps(unit: dict, ctx: Any) -> dict:
    found = sig.scan_unit(unit["path"])
    if isinstance(found, str):
        raise UnitError(found)
    return found


def _phase(runner: Runner, ctx: dict, fn: Callable, units: list[dict], desc: str, per_shard: bool = False,
           merge: bool = False, **extra: Any) -> list:
    """Run one phase on the runner (a failed partition stops the stage, a failed shard is named
    and left out) and note its CPU, wall time and largest task's peak RSS."""
    name = fn.__name__.removesuffix("_unit")
    t0 = time.perf_counter()
    res = runner.run(_measured(fn), units, {**ctx, **extra}, phase=name.replace("_", "-"), desc=f"dedup: {desc}", merge=merge,
                     required=not per_shard)
    c = runner.stats.counters
    c[f"seconds_{name}"] += round(time.perf_counter() - t0, 3)
    for r in res:
        if isinstance(r, dict):
            c["peak_worker_rss_mb"] = max(c["peak_worker_rss_mb"], r.get("rss_mb", 0.0))
            c[f"peak_rss_mb_{name}"] = max(c[f"peak_rss_mb_{name}"], r.get("rss_mb", 0.0))
            c[f"cpu_seconds_{name}"] += round(r.get("cpu_s", 0.0), 3)
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
    gens = layout.open_index(index, {"layout": 3, **{k: dataclasses.asdict(cfg)[k] for k in COMPAT}}, output)
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
    ctx: dict[str, Any] = {"cfg": cfg, "gen": gen, "index": index, "work": work, "output": output, "partitions": P, "ranks": ranks,
                           "old_gens": [{"gen": g["gen"], "partitions": g["partitions"]} for g in gens], "check": dc.check_for(cfg),
                           "string_level": cfg.line_repeat_min > 0}
    parts = lambda **fmt: [dict(name=f"p{p:04d}", p=p, q=p, g=p, **{k: w(*v.format(p=p).split("/")) for k, v in fmt.items()})  # noqa: E731
                           for p in range(P)]

    def phase(fn: Callable, units: list[dict], desc: str, per_shard: bool = False, merge: bool = False, **extra: Any) -> list:
        return _phase(runner, ctx, fn, units, desc, per_shard, merge, **extra)

    def total(res: list, key: str) -> int:
        stats.add(key, sum(r[key] for r in res if isinstance(r, dict)))
        return stats.counters[key]

    if cfg.line_repeat_min > 0:  # string level: lines repeated in at least line_repeat_min documents
        units = [{"name": f"part-{i:05d}", "path": shards[i], "out": w("lines", f"part-{i:05d}.arrow")} for i in good]
        good = [i for i, r in zip(good, phase(ln.count_unit, units, "line counts", True)) if not isinstance(r, TaskFailure)]
        fu = parts(out="lines/frequent-{p:04d}.arrow")
        total(phase(ln.frequent_unit, fu, "frequent lines", count_files=[w("lines", f"part-{i:05d}.arrow") for i in good],
                    count_groups=[int(layout.group_of(layout.node_ids(gen, i, 1), P)[0]) for i in good]), "frequent_lines")
        ctx["frequent_files"] = [u["out"] for u in fu]

    units = [{"name": f"part-{i:05d}", "path": shards[i], "shard": i, "bands_out": w("bands", f"part-{i:05d}.arrow")} for i in good]
    res = phase(sig.signature_unit, units, "signatures", True, dump_codes={d: c for c, d in enumerate(run_dumps)})
    ok = [u for u, r in zip(units, res) if not isinstance(r, TaskFailure)]
    for key in ("lines_removed", "documents_with_lines_removed", "characters_removed") if cfg.line_repeat_min > 0 else ():
        total(res, key)

    rank_of_code = {str(g["gen"]): [ranks[d] for d in g["dumps"]] or [0] for g in [*gens, {"gen": gen, "dumps": run_dumps}]}
    cu = parts(candidates_out="candidates/pairs-{p:04d}.arrow", requests_out="candidates/heads-{p:04d}.arrow")
    phase(cand.candidate_unit, cu, "candidates", band_files=[u["bands_out"] for u in ok], rank_of_code=rank_of_code)
    hu = parts(out="edges/heads-{p:04d}.arrow")
    phase(ed.head_signatures_unit, hu, "signatures of star heads", request_files=[u["requests_out"] for u in cu])
    eu = parts(adjacency_out="cc/start-{p:04d}.arrow", old_edges_out="contract/p={p:04d}.arrow")
    res = phase(ed.check_unit, eu, "edges checked", candidate_files=[u["candidates_out"] for u in cu], head_files=[u["out"] for u in hu])
    rows = sum(r["adjacency_rows"] for r in res)
    for key in ("candidate_pairs", "edges", "edges_rejected"):
        total(res, key)
    ctx["adjacency"] = [u["adjacency_out"] for u in eu]
    if gens:  # edges to earlier documents become edges to their components
        lu = parts(out="contract/look-{p:04d}.arrow")
        res = phase(comp.contract_index_unit, lu, "contract index", old_edge_files=[u["old_edges_out"] for u in eu])
        total(res, "index_nodes_touched")
        rows += sum(r["adjacency_rows"] for r in res)
        ctx["adjacency"] += [u["out"] for u in lu]
    fu = parts(new_out="finish/new-{p:04d}.arrow", old_out="finish/old-{p:04d}.arrow")
    ctx["finish"] = fu
    cc = comp.label_components(lambda fn, units, desc: phase(fn, units, desc), ctx, rows) if rows else {}
    for key, value in cc.items():
        stats.add(key, value)
    xu = parts(out="expand/p={p:04d}.arrow") if gens and cc else []
    phase(comp.expand_unit, xu, "expand index components", old_label_files=[u["old_out"] for u in fu])
    gu = [dict(u, out=dc.members_file(ctx, u["g"])) for u in parts()]
    members = total(phase(dc.gather_unit, gu, "members", new_label_files=[u["new_out"] for u in fu] if cc else [],
                          expanded_files=[u["out"] for u in xu]), "members")
    ctx["members"] = members
    rounds = dc.decide_rounds(lambda fn, units, desc: phase(fn, units, f"chain check {desc}"), ctx) if members else {}
    trail, ctx["rest_from"] = rounds.pop("open_after_round", []), rounds.pop("rest_from", None)
    for key, value in rounds.items():
        stats.add(key, value)
    stats.add("decision_rounds_in_one_task_from", ctx["rest_from"] or 0)
    ctx["rounds"] = rounds.get("decision_rounds", 0)
    phase(rm.settle_unit, parts(out="settle/size-{p:04d}.arrow"), "clusters")
    clusters = phase(rm.clusters_unit, parts(out="settle/sizes-{p:04d}.arrow"), "cluster sizes")
    total(clusters, "clusters")
    du = parts(restored_out="settle/restored-{p:04d}.parquet", duplicates_out="settle/duplicates-{p:04d}.parquet")
    finals = phase(rm.finalize_unit, [dict(u, out=u["duplicates_out"]) for u in du], "removals")
    for key in ("chain_split", "retracted_from_index", "removals_true_jaccard", "components"):
        total(finals, key)
    phase(rm.index_unit, parts(), "index")

    wu = [{"name": f"part-{u['shard']:05d}", "path": u["path"], "shard": u["shard"],
           "out": io.join(output, "documents", f"part-{u['shard']:05d}.parquet")} for u in ok]
    phase(rm.write_unit, wu, "write", True, merge=True)
    ru = [{"name": f"g{g:03d}-part-{s:05d}", "gen": g, "shard": s, "out": io.join(output, "documents", f"restored-g{g:03d}-part-{s:05d}.parquet")}
          for g, s in map(layout.file_of, sorted(set().union(*[r["restored_files"] for r in finals])))]
    stats.add("restored_from_index", 0)
    phase(rm.restore_unit, ru, "restore", merge=True, restored_files=[u["restored_out"] for u in du])
    phase(rm.duplicates_unit, [{"name": "all", "out": io.join(output, layout.DUPLICATES_FILE)}], "duplicates",
          dup_files=[u["duplicates_out"] for u in du])
    stats.check()
    per_dump = rm.per_dump_table(stats.counters, ranks)
    layout.add_generation(index, gens, {"gen": gen, "dumps": run_dumps, "docs": run_docs, "partitions": P, "output": output})
    stats.add("seconds", round(time.perf_counter() - runner.timer.start, 3))
    stats.add("cpu_seconds_driver", round(time.process_time() - driver_cpu0, 3))
    stats.add("driver_peak_rss_mb", runtime.peak_rss_mb())
    summary = {"config": dataclasses.asdict(cfg), "index": index, "generation": gen, "partitions": P,
               "dumps": sorted(ranks, key=ranks.__getitem__), "per_dump": per_dump, "open_after_round": trail,
               **rm.decision_summary(finals, clusters, cfg)}
    rc = runner.finish({"candidate pairs": stats.counters["candidate_pairs"], "edges rejected": stats.counters["edges_rejected"],
                        "clusters": stats.counters["clusters"], "chains split": stats.counters["chain_split"],
                        "left open": stats.counters["left_open"], "partitions": P}, extra={"dedup": summary})
    io.remove_tree(work)  # hand-off files; the index and graph/ stay
    runner.clear_markers()  # they stand for the hand-off files just removed
    return rc
