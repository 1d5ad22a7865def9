"""``python -m pipelines remix``: filtered documents in, shuffled training text shards out.

Phases (Ray tasks; everything between them goes through files or small summaries):

1. ``scan`` (one task per input shard): each document's domain (``curation.remix.domains``), its
   size, and its sampling bin from (seed, id); returns per-domain sizes and a sparse histogram.
2. driver: per-domain quotas for the target mixture under the epoch cap, the epochs and the
   sampling cut of each domain, and the number of output shards.
3. ``sample`` (one task per input shard): every document written floor(epochs) times plus once
   more below the cut; each copy gets a 64-bit shuffle key from (seed, id, copy) and goes to the
   part of the key range it falls in: ``<output>/_shuffle/b=NNNNN/<shard>.arrow``.
4. ``shuffle`` (one task per output shard): the pieces of one key range, sorted by key, written as
   ``<output>/data/shard-NNNNN.parquet`` (id, text, domain, dump, url, language, epoch).

With ``rehydrate=true`` (FineWeb-2's rehydration, off by default) a document counts as the copies
``rehydrate_weights`` gives its duplicate cluster's size (dedup's ``metadata.dedup_cluster_size``)
before the mixture is applied: the domain quotas stay what they are (shares of the output, the
epoch cap on the domain's unique text), and within a domain the copies go to documents in
proportion to their weights (``curation.remix.sampling.copy_bins``).

``manifest.json`` records per domain documents and bytes before and after, target and achieved
shares and the epochs used, and under ``rehydration`` the documents and copies written by
cluster size; ``stats.json`` counts every input document as written at least once or
dropped by down-sampling. Every choice depends only on the seed and the ids, so the shards are
byte-identical for any number of workers or input shards.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.remix import (
    BINS, DomainAssigner, RemixConfig, copies, copy_bins, cut_bins, domain_quotas, rehydration_weights, shuffle_keys, target_shares,
    weight_keys,
)
from curation.schema import TEXT_SHARD_SCHEMA
from curation.stats import StageStats
from pipelines import config, runtime
from storage import io
from pipelines.cli import add_config_arguments
from pipelines.stage import Resources, Runner, UnitError

NAME = "remix"
HELP = "Rebalance domains to target weights (up/down-sampling with an epoch cap), shuffle globally, write training text shards."

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="document shards (the filter stage's output)")
    p.add_argument("--output", required=True, help="folder for the text shards, manifest.json and stats.json")
    p.add_argument("--workers", type=int, default=None, help="tasks at once (default: one per CPU)")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(RemixConfig, args.config, args.overrides)
    return remix(args.input, args.output, cfg, workers=args.workers)


def remix(inputs: list[str], output: str, cfg: RemixConfig, workers: int | None = None) -> int:
    if cfg.unit not in ("bytes", "documents"):
        raise config.ConfigError(f"unit: {cfg.unit!r} is not 'bytes' or 'documents'")
    manifest_path = io.join(output, "manifest.json")
    files, missing = io.expand_inputs(inputs, (".parquet",))
    run_key = io.json_digest({"cfg": dataclasses.asdict(cfg), "inputs": [(f, _size(f)) for f in files]})
    if io.exists(manifest_path) and io.read_json(manifest_path).get("run_key") == run_key:
        print(f"remix: {output} is complete (manifest.json matches); nothing to do", file=sys.stderr)
        return 0
    cfg_dict = dataclasses.asdict(cfg)
    runner = Runner(NAME, output, failed=missing)
    stats = runner.stats
    workers = Resources(max_in_flight=workers)
    # 1. scan
    scans = runner.run(_scan_shard, [{"name": f"{i:05d}", "path": f, "cfg": cfg_dict} for i, f in enumerate(files)],
                       phase="scan", key=run_key, resources=workers, merge=False)
    good = [i for i, res in enumerate(scans) if not isinstance(res, runtime.TaskFailure)]
    names = DomainAssigner(cfg).names
    sizes = {d: 0.0 for d in names}
    docs_before = {d: 0 for d in names}
    bytes_before = {d: 0 for d in names}
    # The same over virtual copies (rehydration; equal to the above without it).
    r_sizes = {d: 0.0 for d in names}
    r_docs = {d: 0 for d in names}
    r_bytes = {d: 0 for d in names}
    hist = {d: np.zeros(BINS) for d in names}
    for i in good:
        for d, s in scans[i].items():
            sizes[d] += s["size"]
            docs_before[d] += s["docs"]
            bytes_before[d] += s["bytes"]
            r_sizes[d] += s["copies_size"]
            r_docs[d] += s["copies"]
            r_bytes[d] += s["copies_bytes"]
            np.add.at(hist[d], np.asarray(s["bins"], dtype=np.int64), np.asarray(s["sizes"], dtype=np.float64))

    # 2. plan: quotas over the unique text; epochs (and the cut) over the virtual copies
    total = cfg.scale * sum(sizes.values())
    quotas = domain_quotas(sizes, cfg.weights, total, cfg.max_epochs)
    plan = {}
    for d in names:
        epochs = quotas[d] / r_sizes[d] if r_sizes[d] else 0.0
        frac_wanted = (epochs - math.floor(epochs + 1e-12)) * r_sizes[d]
        plan[d] = {"epochs": epochs, "cut": cut_bins(hist[d], frac_wanted)}
    expected_bytes = sum(r_bytes[d] * plan[d]["epochs"] for d in names)
    expected_docs = sum(r_docs[d] * plan[d]["epochs"] for d in names)
    if cfg.shard_target_docs:
        n_out = math.ceil(expected_docs / cfg.shard_target_docs)
    else:
        n_out = math.ceil(expected_bytes / cfg.shard_target_bytes)
    n_out = max(1, min(n_out, int(expected_docs) or 1))

    # 3. sample (pieces of an earlier, different run are removed first)
    shuffle_dir = io.join(output, "_shuffle")
    key_path = io.join(shuffle_dir, "run_key.json")
    if io.exists(shuffle_dir) and (not io.exists(key_path) or io.read_json(key_path) != run_key):
        io.remove_tree(shuffle_dir)
    io.write_json(run_key, key_path)
    data = io.data_folder(output)
    for old in io.list_shards(output) if io.exists(output) else []:
        base = os.path.basename(old)
        fs, p = io.filesystem(old)
        # Shards of an earlier run with more of them, or in the older layout (outside data/).
        if base.startswith("shard-") and (int(base[6:11]) >= n_out or p != io.filesystem(io.join(data, base))[1]):
            fs.delete_file(p)
    sample_tasks = [
        {"name": f"{i:05d}", "path": files[i], "index": i, "cfg": cfg_dict, "plan": plan, "n_out": n_out, "dir": shuffle_dir}
        for i in good
    ]
    runner.run(_sample_shard, sample_tasks, phase="sample", key=run_key, resources=workers)
    done = [t["index"] for t in sample_tasks if t["path"] not in stats.failed_files]

    # 4. shuffle
    shuffle_tasks = [
        {"name": f"shard-{b:05d}", "bucket": b, "dir": shuffle_dir, "shards": done, "out": io.join(data, f"shard-{b:05d}.parquet")}
        for b in range(n_out)
    ]
    shards = runner.run(_shuffle_bucket, shuffle_tasks, phase="shuffle", key=io.json_digest([run_key, done]), resources=workers,
                        merge=False, required=True)

    after_docs, after_bytes = Counter(), Counter()
    for s in shards:
        after_docs.update(s["domain_docs"])
        after_bytes.update(s["domain_bytes"])
    unit_after = after_bytes if cfg.unit == "bytes" else after_docs
    out_total = sum(unit_after.values()) or 1
    targets = target_shares(sizes, cfg.weights)
    domains = {
        d: {
            "target_share": round(targets.get(d, 0.0), 6),
            # The share after the epoch cap moved the capped domains' shortfall to the others.
            "planned_share": round(quotas[d] / total, 6) if total else 0.0,
            "achieved_share": round(unit_after[d] / out_total, 6),
            "documents_before": docs_before[d],
            "bytes_before": bytes_before[d],
            "documents_after": int(after_docs[d]),
            "bytes_after": int(after_bytes[d]),
            # Repeats of the domain's unique text (the capped figure), with or without rehydration.
            "epochs": round(quotas[d] / sizes[d], 6) if sizes[d] else 0.0,
            "capped_at_max_epochs": bool(sizes[d] and quotas[d] / sizes[d] >= cfg.max_epochs - 1e-9),
            **({"rehydrated_documents_before": r_docs[d], "rehydrated_bytes_before": r_bytes[d]} if cfg.rehydrate else {}),
        }
        for d in names
        if docs_before[d]
    }
    manifest = {
        "run_key": run_key,
        "seed": cfg.seed,
        "unit": cfg.unit,
        "inputs": files,
        "documents_before": stats.input,
        "documents_after": int(sum(after_docs.values())),
        "bytes_after": int(sum(after_bytes.values())),
        "domains": domains,
        "rehydration": _rehydration_summary(cfg, stats),
        "shards": [{"path": f"{io.DATA_FOLDER}/{os.path.basename(t['out'])}", "documents": s["documents"], "bytes": s["bytes"]}
                   for t, s in zip(shuffle_tasks, shards)],
        "config": cfg_dict,
    }
    io.write_json(manifest, manifest_path)
    io.remove_tree(shuffle_dir)
    runner.clear_markers()  # they stand for the hand-off files just removed
    rc = runner.finish({"shards written": n_out, "documents written": manifest["documents_after"], "MB written": manifest["bytes_after"] / 1e6},
                       card=("Remixed training text", [f"{manifest['documents_after']:,} document copies (`id`, `epoch` unique) in {n_out} "
                                                       "shuffled shards; domain shares in `manifest.json`."]))
    for d, m in domains.items():
        print(f"  {d:<14} target {m['target_share']:6.1%}  after cap {m['planned_share']:6.1%}  achieved {m['achieved_share']:6.1%}  epochs {m['epochs']:.2f}"
              f"  docs {m['documents_before']:,} -> {m['documents_after']:,}", file=sys.stderr)
    if cfg.rehydrate:
        for label, r in manifest["rehydration"]["by_cluster_size"].items():
            print(f"  rehydrate: cluster size {label:<9} weight {r['weight']}  docs {r['documents']:,}  copies {r['copies_written']:,}", file=sys.stderr)
    return rc


def _rehydration_summary(cfg: RemixConfig, stats: StageStats) -> dict:
    """Documents and copies written by duplicate-cluster size, in the buckets of the weight table
    (with rehydration off too: how the plain remix treated them)."""
    keys = sorted(cfg.rehydrate_weights)
    rows = {}
    for i, k in enumerate(keys):
        hi = keys[i + 1] - 1 if i + 1 < len(keys) else None
        label = str(k) if hi == k else (f"{k}-{hi}" if hi is not None else f"{k}+")
        docs = int(stats.counters.get(f"cluster_size.{k}.documents", 0))
        written = int(stats.counters.get(f"cluster_size.{k}.copies", 0))
        rows[label] = {"weight": cfg.rehydrate_weights[k] if cfg.rehydrate else 1, "documents": docs, "copies_written": written,
                       "copies_per_document": round(written / docs, 4) if docs else None}
    return {"enabled": cfg.rehydrate, "weights": {str(k): cfg.rehydrate_weights[k] for k in keys}, "by_cluster_size": rows}


# ---- tasks ------------------------------------------------------------------------------------

def _cfg(d: dict) -> RemixConfig:
    return config.build(RemixConfig, d)


def _read_docs(path: str, cfg: RemixConfig) -> tuple[pa.Table, list[str], np.ndarray, list[int | None]]:
    """The documents of a shard, their domains, text bytes and duplicate-cluster sizes."""
    table = io.read_parquet(path)
    for col in ("id", "text"):
        if col not in table.column_names:
            raise ValueError(f"{path}: no {col!r} column")
    assign = DomainAssigner(cfg)
    urls = table.column("url").to_pylist() if "url" in table.column_names else [None] * table.num_rows
    titles = [None] * table.num_rows
    cluster_sizes: list[int | None] = [None] * table.num_rows
    if "metadata" in table.column_names and pa.types.is_struct(table.schema.field("metadata").type):
        meta = table.column("metadata").combine_chunks()
        if meta.type.get_field_index("title") >= 0:
            titles = meta.field("title").to_pylist()
        if meta.type.get_field_index("dedup_cluster_size") >= 0:
            cluster_sizes = meta.field("dedup_cluster_size").to_pylist()
    texts = table.column("text").to_pylist()
    domains = [assign(u, t, ti) for u, t, ti in zip(urls, texts, titles)]
    nbytes = pc.binary_length(pc.cast(table.column("text"), pa.binary())).to_numpy(zero_copy_only=False).astype(np.int64)
    return table, domains, nbytes, cluster_sizes


def _weights(cfg: RemixConfig, cluster_sizes: list[int | None]) -> np.ndarray:
    """Virtual copies per document: rehydration's weights, or 1 each."""
    if cfg.rehydrate:
        return rehydration_weights(cluster_sizes, cfg.rehydrate_weights)
    return np.ones(len(cluster_sizes), dtype=np.int64)


def _scan_shard(task: dict, _config: None = None) -> dict:
    cfg = _cfg(task["cfg"])
    try:
        table, domains, nbytes, cluster_sizes = _read_docs(task["path"], cfg)
    except (OSError, ValueError, pa.ArrowInvalid) as e:
        raise UnitError(f"not a readable document shard: {str(e).splitlines()[0][:300]}") from None
    rows, bins = copy_bins(cfg.seed, table.column("id").to_pylist(), _weights(cfg, cluster_sizes))
    sizes = nbytes if cfg.unit == "bytes" else np.ones(len(nbytes), dtype=np.int64)
    dom = np.array(domains, dtype=object)
    out = {}
    for d in sorted(set(domains)):
        sel = dom == d
        vsel = sel[rows]  # this domain's virtual copies (one per document without rehydration)
        vsizes = sizes[rows][vsel]
        ub, inv = np.unique(bins[vsel], return_inverse=True)
        out[d] = {
            "docs": int(sel.sum()), "bytes": int(nbytes[sel].sum()), "size": float(sizes[sel].sum()),
            "copies": int(vsel.sum()), "copies_bytes": int(nbytes[rows][vsel].sum()), "copies_size": float(vsizes.sum()),
            "bins": ub.tolist(), "sizes": np.bincount(inv, weights=vsizes.astype(np.float64)).tolist(),
        }
    return out


def _sample_shard(task: dict, _config: None = None) -> dict:
    """Write this shard's copies into the key-range folders; returns its StageStats."""
    cfg = _cfg(task["cfg"])
    table, domains, nbytes, cluster_sizes = _read_docs(task["path"], cfg)
    ids = table.column("id").to_pylist()
    vrows, vbins = copy_bins(cfg.seed, ids, _weights(cfg, cluster_sizes))
    plan = task["plan"]
    n = np.zeros(len(ids), dtype=np.int64)
    dom = np.array(domains, dtype=object)[vrows]
    for d in set(domains):
        sel = np.flatnonzero(dom == d)
        np.add.at(n, vrows[sel], copies(plan[d]["epochs"], vbins[sel], plan[d]["cut"]))
    stats = StageStats()
    for k, c in zip(weight_keys(cluster_sizes, cfg.rehydrate_weights).tolist(), n.tolist()):
        stats.add(f"cluster_size.{k}.documents")
        stats.add(f"cluster_size.{k}.copies", c)
    stats.seen(len(ids))
    stats.kept(int((n > 0).sum()))
    for d, k in zip(domains, n):
        if k == 0:
            stats.drop("remix_zero_weight" if cfg.weights.get(d, 0) <= 0 else "remix_downsampled")
    rows = np.repeat(np.arange(len(ids)), n)
    epoch = (np.arange(len(rows)) - np.repeat(np.cumsum(n) - n, n)).astype(np.int32)
    row_ids = [ids[r] for r in rows.tolist()]
    keys = shuffle_keys(cfg.seed, row_ids, epoch)
    stats.add("copies_written", len(rows))
    stats.add("bytes_written", int(nbytes[rows].sum()))
    cols = {c: table.column(c) if c in table.column_names else pa.nulls(table.num_rows, pa.string()) for c in ("dump", "url", "language")}
    take = pa.array(rows, pa.int64())
    out = pa.table(
        {
            "id": pa.array(row_ids, pa.string()),
            "text": table.column("text").take(take),
            "domain": pa.array([domains[r] for r in rows.tolist()], pa.string()),
            "dump": cols["dump"].take(take).cast(pa.string()),
            "url": cols["url"].take(take).cast(pa.string()),
            "language": cols["language"].take(take).cast(pa.string()),
            "epoch": pa.array(epoch, pa.int32()),
            "key": pa.array(keys, pa.uint64()),
        }
    )
    bucket = ((keys >> np.uint64(32)) * np.uint64(task["n_out"])) >> np.uint64(32)
    for b in np.unique(bucket).tolist():
        piece = out.filter(pa.array(bucket == b))
        io.write_arrow(piece, io.join(task["dir"], f"b={b:05d}", f"{task['index']:05d}.arrow"))
    return stats.to_dict()


def _shuffle_bucket(task: dict, _config: None = None) -> dict:
    folder = io.join(task["dir"], f"b={task['bucket']:05d}")
    pieces = [io.join(folder, f"{i:05d}.arrow") for i in task["shards"]]
    tables = [io.read_arrow(p) for p in pieces if io.exists(p)]
    if tables:
        t = pa.concat_tables(tables)
        order = pc.sort_indices(t, sort_keys=[("key", "ascending"), ("id", "ascending"), ("epoch", "ascending")])
        # One chunk: the file then does not depend on how the pieces were split across inputs.
        t = t.take(order).drop_columns(["key"]).select(TEXT_SHARD_SCHEMA.names).cast(TEXT_SHARD_SCHEMA).combine_chunks()
    else:
        t = TEXT_SHARD_SCHEMA.empty_table()
    io.write_parquet(t, task["out"])
    nbytes = pc.binary_length(pc.cast(t.column("text"), pa.binary())).to_numpy(zero_copy_only=False) if t.num_rows else np.zeros(0, np.int64)
    doms = t.column("domain").to_pylist()
    dd, db = Counter(doms), Counter()
    for d, b in zip(doms, nbytes.tolist()):
        db[d] += b
    return {"documents": t.num_rows, "bytes": int(nbytes.sum()), "domain_docs": dict(dd), "domain_bytes": dict(db)}


# ---- helpers ----------------------------------------------------------------------------------

def _size(path: str) -> int:
    fs, p = io.filesystem(path)
    return int(fs.get_file_info(p).size or 0)

