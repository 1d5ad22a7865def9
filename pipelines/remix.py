"""``python -m pipelines remix``: filtered documents in, shuffled training text shards out.

Phases (Ray tasks; everything between them goes through files or small summaries):

1. ``scan`` (one task per input shard, ``curation.remix.shards.scan_shard``): each document's
   domain (``curation.remix.domains``), its size, and its sampling bin from (seed, id).
2. driver (``curation.remix.plan.make_plan``): per-domain quotas for the target mixture under the
   epoch cap, the epochs and the sampling cut of each domain, and the number of output shards.
3. ``sample`` (one task per input shard, ``sample_shard``): every document written floor(epochs)
   times plus once more below the cut; each copy gets a 64-bit shuffle key from (seed, id, copy)
   and goes to the part of the key range it falls in: ``<output>/_shuffle/b=NNNNN/<shard>.arrow``.
4. ``shuffle`` (one task per output shard, ``shuffle_bucket``): the pieces of one key range, sorted
   by key, written as ``<output>/data/shard-NNNNN.parquet`` (id, text, domain, dump, url,
   language, epoch).

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
import os
import sys
from collections import Counter

import pyarrow as pa

from curation.remix import DomainAssigner, RemixConfig
from curation.remix.plan import domain_figures, make_plan, merge_scans, rehydration_summary
from curation.remix.shards import sample_shard, scan_shard, shuffle_bucket
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
    # 2. plan
    scan = merge_scans(DomainAssigner(cfg).names, [scans[i] for i in good])
    plan = make_plan(scan, cfg)
    n_out = plan.shards

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
        {"name": f"{i:05d}", "path": files[i], "index": i, "cfg": cfg_dict, "plan": plan.domains, "n_out": n_out, "dir": shuffle_dir}
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
    domains = domain_figures(scan, plan, cfg, after_docs, after_bytes)
    manifest = {
        "run_key": run_key,
        "seed": cfg.seed,
        "unit": cfg.unit,
        "inputs": files,
        "documents_before": stats.input,
        "documents_after": int(sum(after_docs.values())),
        "bytes_after": int(sum(after_bytes.values())),
        "domains": domains,
        "rehydration": rehydration_summary(cfg, stats),
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


# ---- tasks ------------------------------------------------------------------------------------

def _cfg(d: dict) -> RemixConfig:
    return config.build(RemixConfig, d)


def _scan_shard(task: dict, _config: None = None) -> dict:
    try:
        return scan_shard(task["path"], _cfg(task["cfg"]))
    except (OSError, ValueError, pa.ArrowInvalid) as e:
        raise UnitError(f"not a readable document shard: {str(e).splitlines()[0][:300]}") from None


def _sample_shard(task: dict, _config: None = None) -> dict:
    """Write this shard's copies into the key-range folders; returns its StageStats."""
    return sample_shard(task["path"], task["index"], _cfg(task["cfg"]), task["plan"], task["n_out"], task["dir"]).to_dict()


def _shuffle_bucket(task: dict, _config: None = None) -> dict:
    return shuffle_bucket(task["dir"], task["bucket"], task["shards"], task["out"])


def _size(path: str) -> int:
    fs, p = io.filesystem(path)
    return int(fs.get_file_info(p).size or 0)
