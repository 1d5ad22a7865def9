"""``python -m pipelines dedup``: exact + MinHash-LSH near-duplicate removal across dumps.

Phases (each a set of Ray tasks; everything between them goes through files):

1. ``dumps``: read the ``dump`` column of every shard, so every dump has an age rank.
   (``--line-repeat-min``: count every line once per document per shard, sum the counts per
   hash partition, and take the lines repeated in enough documents - removed from every text.)
2. ``signatures`` (one task per shard): normalise, hash, MinHash, band keys. Writes the shard's
   node table (id, dump, URL, exact hash, signature; no text) and one band file per partition,
   each sorted by (key, node) - this run's generation of the index.
3. ``candidates`` (one task per partition): merge that partition's band files of every
   generation (each checked sorted), emit star edges per group of equal keys; ``--verify``
   checks every edge's true Jaccard in tasks that read only the shards holding its documents.
4. driver: connected components over the int64 edges (plus the index's removed->kept edges),
   the keep rule on per-member integer keys; ``duplicates`` tasks (one per shard of removed
   documents) build the rows of ``duplicates.parquet`` from the node tables.
5. ``write`` (one task per shard): the kept documents, with cluster fields added to metadata.

A document's node id is ``gen << 48 | shard << 28 | row``: stable across re-runs, and unique
across the generations of an incremental index. See ``curation/dedup`` for the algorithms.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup import DedupConfig
from curation.dedup import clusters as cl
from curation.dedup import lines as ln
from curation.dedup import minhash as mh
from curation.schema import validate
from curation.stats import StageStats
from pipelines import config as config_mod
from storage import io
from pipelines.cli import add_config_arguments
from pipelines.runtime import TaskFailure, Timer, merge_results, print_summary, run_tasks

NAME = "dedup"
HELP = "exact + MinHash-LSH near-duplicate removal across dumps (incremental against an index)"

GEN_SHIFT, SHARD_SHIFT = 48, 28
_SHARD_MASK = (1 << (GEN_SHIFT - SHARD_SHIFT)) - 1
_ROW_MASK = (1 << SHARD_SHIFT) - 1
_VERIFY_EDGES = 20_000  # edges per verification task
_BATCH = 2000  # documents per signature batch inside a task
REASONS = {1: "exact_duplicate", 2: "near_duplicate"}

NODE_SCHEMA = pa.schema(
    [
        ("node", pa.int64()),
        ("id", pa.string()),
        # The id's first 16 bytes as two big-endian integers: the id order as numbers, so the
        # driver breaks keep-rule ties without holding strings.
        ("id_hi", pa.uint64()),
        ("id_lo", pa.uint64()),
        ("dump", pa.string()),
        ("url", pa.string()),
        ("exact_hash", pa.uint64()),
        ("n_shingles", pa.int32()),
        ("signature", pa.binary()),
    ]
)
BAND_SCHEMA = pa.schema([("key", pa.uint64()), ("node", pa.int64()), ("dump_code", pa.uint16())])
DUPLICATES_SCHEMA = pa.schema(
    [
        ("removed_id", pa.string()),
        ("kept_id", pa.string()),
        ("cluster_id", pa.string()),
        ("removed_dump", pa.string()),
        ("kept_dump", pa.string()),
        ("removed_url", pa.string()),
        ("kept_url", pa.string()),
        ("reason", pa.string()),
        ("similarity", pa.float32()),
        ("cluster_size", pa.int32()),
        # True for a document of an earlier run (the index) that this run's newer copy replaces.
        ("retracted", pa.bool_()),
    ]
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", required=True, help="folders (or files/globs) of extracted-document shards")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--index", help="persistent band-key index to dedup against and extend (default <output>/index)")
    p.add_argument("--threshold", type=float, help="target Jaccard; picks bands x rows with datasketch's optimiser")
    p.add_argument("--ngram", type=int, help="shingle size in words (default 5)")
    p.add_argument("--bands", type=int, help="LSH bands (default 14)")
    p.add_argument("--rows", type=int, help="rows per band (default 8)")
    p.add_argument("--keep", choices=["newest", "oldest"], help="which copy of a cluster is kept (default newest)")
    p.add_argument("--partitions", type=int, help="band-key partitions (default 16)")
    p.add_argument("--verify", action="store_true", default=None, help="verify candidate pairs by true Jaccard")
    p.add_argument("--line-repeat-min", type=int, help="remove lines repeated in at least this many documents (0 = off)")
    add_config_arguments(p)


def config_from_args(args: argparse.Namespace) -> DedupConfig:
    overrides: dict[str, Any] = {}
    for flag, key in [("threshold", "threshold"), ("ngram", "shingles.ngram"), ("bands", "minhash.bands"),
                      ("rows", "minhash.rows"), ("keep", "keep"), ("partitions", "partitions"),
                      ("verify", "verify"), ("line_repeat_min", "line_repeat_min")]:
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    cfg = config_mod.load(DedupConfig, getattr(args, "config", None), list(getattr(args, "overrides", []) or []))
    for key, value in overrides.items():
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            node = getattr(node, part)
        setattr(node, parts[-1], value)
    return resolve(cfg)


def resolve(cfg: DedupConfig) -> DedupConfig:
    """Apply ``threshold``: choose bands x rows for it with the same number of permutations."""
    if cfg.threshold is not None:
        b, r = mh.bands_rows_for_threshold(cfg.threshold, cfg.minhash.num_perm)
        cfg.minhash.bands, cfg.minhash.rows = b, r
    if cfg.keep not in ("newest", "oldest"):
        raise config_mod.ConfigError(f"keep: {cfg.keep!r} is not 'newest' or 'oldest'")
    return cfg


def _id_keys(ids: list[str]) -> np.ndarray:
    """(n x 2) uint64: the first 16 bytes of each id, big-endian, zero padded (order-preserving)."""
    raw = b"".join(i.encode("utf-8")[:16].ljust(16, b"\0") for i in ids)
    return np.frombuffer(raw, dtype=">u8").reshape(len(ids), 2).astype(np.uint64)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (a Ray worker is reused, so: over its tasks so far)."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024 if sys.platform != "darwin" else kb / 2**20, 1)


# ---------------------------------------------------------------------------------------------
# Phase 1: dumps


def _scan_dumps(path: str) -> list[str] | str:
    try:
        t = io.read_parquet(path, columns=["dump"])
        return sorted({d for d in pc.unique(t.column("dump")).to_pylist() if d is not None} | ({""} if t.column("dump").null_count else set()))
    except Exception as e:  # noqa: BLE001 - named in failed_files, the other shards go on
        return f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------------------------------------
# Phase 1b (optional): string level - count lines across documents, find the frequent ones


def _line_counts(task: dict[str, Any]) -> int:
    """Per shard: each distinct line hash with the number of documents carrying it, partitioned."""
    cfg: DedupConfig = task["cfg"]
    folder, P = task["folder"], cfg.partitions
    last = io.join(folder, f"p={P - 1:04d}", task["name"])
    if io.exists(last):
        return 0
    texts = io.read_parquet(task["path"], columns=["text"]).column("text").to_pylist()
    per_doc = [ln.line_hashes(t or "", cfg.line_min_chars) for t in texts]
    allh = np.concatenate(per_doc) if per_doc else np.zeros(0, np.uint64)
    h, c = np.unique(allh, return_counts=True)
    part = (h % np.uint64(P)).astype(np.int64)
    for p in range(P):  # in order: the last partition's file marks the shard complete
        sel = part == p
        io.write_parquet(pa.table({"hash": h[sel], "docs": c[sel].astype(np.int64)}), io.join(folder, f"p={p:04d}", task["name"]))
    return len(h)


def _line_frequent(task: dict[str, Any]) -> np.ndarray:
    hs, cs = [], []
    for f in task["files"]:
        t = io.read_parquet(f)
        hs.append(t.column("hash").to_numpy())
        cs.append(t.column("docs").to_numpy())
    if not hs:
        return np.zeros(0, np.uint64)
    h, inv = np.unique(np.concatenate(hs), return_inverse=True)
    total = np.bincount(inv, weights=np.concatenate(cs))
    return h[total >= task["min_docs"]]


def _strip(texts: list, frequent: np.ndarray, cfg: DedupConfig) -> tuple[list, int]:
    if len(frequent) == 0:
        return texts, 0
    out, removed = [], 0
    for t in texts:
        new, n = ln.remove_repeated_lines(t or "", frequent, cfg.line_min_chars)
        out.append(new)
        removed += n
    return out, removed


# ---------------------------------------------------------------------------------------------
# Phase 2: signatures and band files


def _signatures(task: dict[str, Any], frequent: np.ndarray) -> dict[str, Any]:
    cpu0 = time.process_time()
    cfg: DedupConfig = task["cfg"]
    nodes_path = task["nodes_path"]
    if io.exists(nodes_path):
        return {"skipped": True}
    table = io.read_parquet(task["path"], columns=["id", "text", "dump", "url"])
    n = table.num_rows
    base = (task["gen"] << GEN_SHIFT) | (task["shard"] << SHARD_SHIFT)
    nodes = base + np.arange(n, dtype=np.int64)
    dump_code = np.array([task["dump_codes"][d or ""] for d in table.column("dump").to_pylist()], dtype=np.uint16)
    texts, _ = _strip(table.column("text").to_pylist(), frequent, cfg)
    # A document that was nothing but repeated lines is dropped at write time; it takes no part.
    alive = np.array([bool(t and t.strip()) for t in texts], dtype=bool)
    K, B, R = cfg.minhash.num_perm, cfg.minhash.bands, cfg.minhash.rows
    exact = np.zeros(n, dtype=np.uint64)
    sigs = np.zeros((n, K), dtype=np.uint32)
    nsh = np.zeros(n, dtype=np.int32)
    for lo in range(0, n, _BATCH):
        norm = [mh.normalize(t or "", cfg.shingles) for t in texts[lo : lo + _BATCH]]
        exact[lo : lo + len(norm)] = [mh.exact_hash(s) for s in norm]
        h, counts = mh.shingle_hashes(norm, cfg.shingles.ngram)
        sigs[lo : lo + len(norm)] = mh.minhash_signatures(h, counts, K, cfg.minhash.seed)
        nsh[lo : lo + len(norm)] = counts
    band = mh.lsh_band_keys(sigs, B, R)
    has = (nsh > 0) & alive  # a text with no token has no shingle: only its exact key takes part
    keys = np.concatenate([band[has].ravel(), mh.exact_band_key(exact[alive])])
    knodes = np.concatenate([np.repeat(nodes[has], B), nodes[alive]])
    kdump = np.concatenate([np.repeat(dump_code[has], B), dump_code[alive]])
    part = (keys % np.uint64(cfg.partitions)).astype(np.int64)
    o = np.lexsort((knodes, keys, part))
    keys, knodes, kdump, part = keys[o], knodes[o], kdump[o], part[o]
    bounds = np.searchsorted(part, np.arange(cfg.partitions + 1))
    for p in range(cfg.partitions):
        sl = slice(bounds[p], bounds[p + 1])
        t = pa.table([pa.array(keys[sl]), pa.array(knodes[sl]), pa.array(kdump[sl])], schema=BAND_SCHEMA)
        io.write_parquet(t, io.join(task["bands_dir"], f"p={p:04d}", task["name"]))
    sig_bytes = sigs.view(np.uint8).reshape(n, K * 4)
    id_keys = _id_keys(table.column("id").to_pylist())
    node_table = pa.table(
        [
            pa.array(nodes), table.column("id"), pa.array(id_keys[:, 0]), pa.array(id_keys[:, 1]),
            table.column("dump"), table.column("url"), pa.array(exact),
            pa.array(nsh),
            pa.array([row.tobytes() for row in sig_bytes], type=pa.binary()),
        ],
        schema=NODE_SCHEMA,
    )
    io.write_parquet(node_table, nodes_path)  # last: its existence marks the shard complete
    return {"skipped": False, "docs": n, "rss_mb": _peak_rss_mb(), "cpu_s": time.process_time() - cpu0}


# ---------------------------------------------------------------------------------------------
# Phase 3: candidate edges per partition


def _candidates(task: dict[str, Any]) -> dict[str, Any]:
    cpu0 = time.process_time()
    out = task["edges_path"]
    if io.exists(out):
        return {"skipped": True}
    gen = task["gen"]
    keys, nodes, ranks = [], [], []
    new_keys = None
    # This run's files first; an earlier generation's rows are kept only where their key occurs
    # in this run, so sorting and grouping grow with the new dump (the index is only scanned).
    for path, rank_of_code, file_gen in sorted(task["files"], key=lambda f: f[2] != gen):
        if file_gen != gen and new_keys is None:
            new_keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.uint64)
        t = io.read_parquet(path)
        k = t.column("key").to_numpy()
        n = t.column("node").to_numpy()
        if not cl.is_sorted(k, n):
            raise ValueError(f"band file {path} is not sorted by (key, node)")
        d = t.column("dump_code").to_numpy().astype(np.int64)
        if file_gen != gen:
            at = np.minimum(np.searchsorted(new_keys, k), max(len(new_keys) - 1, 0))
            hit = new_keys[at] == k if len(new_keys) else np.zeros(len(k), dtype=bool)
            k, n, d = k[hit], n[hit], d[hit]
        keys.append(k)
        nodes.append(n)
        ranks.append(np.asarray(rank_of_code, dtype=np.int32)[d])
    k = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
    n = np.concatenate(nodes) if nodes else np.zeros(0, np.int64)
    r = np.concatenate(ranks) if ranks else np.zeros(0, np.int32)
    u, v = cl.star_edges(k, r, n)
    # Edges between two documents of earlier generations are already in the index's
    # removed->kept table; only edges that touch this generation are new.
    new = ((u >> GEN_SHIFT) == gen) | ((v >> GEN_SHIFT) == gen)
    u, v = cl.unique_edges(u[new], v[new])
    un, first = np.unique(n, return_index=True)
    ur = r[first][np.searchsorted(un, u)].astype(np.int32)
    vr = r[first][np.searchsorted(un, v)].astype(np.int32)
    io.write_parquet(pa.table({"u": u, "v": v, "u_rank": ur, "v_rank": vr}), out)
    return {"skipped": False, "edges": len(u), "band_rows": len(k), "rss_mb": _peak_rss_mb(), "cpu_s": time.process_time() - cpu0}


# ---------------------------------------------------------------------------------------------
# Phase 3b (optional): verify candidate pairs by the true Jaccard of their shingle sets


def _verify(task: dict[str, Any]) -> np.ndarray:
    """True Jaccard of each edge (u, v), reading only the shards that hold its documents."""
    cfg: DedupConfig = task["cfg"]
    u, v = np.asarray(task["u"]), np.asarray(task["v"])
    nodes = np.unique(np.concatenate([u, v]))
    shingle_sets: dict[int, np.ndarray] = {}
    for (g, sh) in sorted(set(zip((nodes >> GEN_SHIFT).tolist(), ((nodes >> SHARD_SHIFT) & _SHARD_MASK).tolist()))):
        mine = nodes[((nodes >> GEN_SHIFT) == g) & (((nodes >> SHARD_SHIFT) & _SHARD_MASK) == sh)]
        rows = mine & _ROW_MASK
        texts = io.read_parquet(task["paths"][g][sh], columns=["text"]).column("text").take(pa.array(rows)).to_pylist()
        norm = [mh.normalize(t or "", cfg.shingles) for t in texts]
        h, counts = mh.shingle_hashes(norm, cfg.shingles.ngram)
        ends = np.cumsum(counts)
        for node, n_text, lo, hi in zip(mine.tolist(), norm, (ends - counts).tolist(), ends.tolist()):
            # An empty text is its own single "shingle" so two empty texts are identical.
            shingle_sets[node] = np.unique(h[lo:hi]) if hi > lo else np.array([len(n_text)], dtype=np.uint32)
    out = np.empty(len(u), dtype=np.float32)
    for k, (a, b) in enumerate(zip(u.tolist(), v.tolist())):
        sa, sb = shingle_sets[a], shingle_sets[b]
        inter = len(np.intersect1d(sa, sb, assume_unique=True))
        out[k] = inter / (len(sa) + len(sb) - inter)
    return out


# ---------------------------------------------------------------------------------------------
# Phase 4b: the rows of duplicates.parquet, per shard of the removed documents


def _duplicates(task: dict[str, Any]) -> pa.Table:
    """Rows for removed documents of one (generation, shard): both sides' id, dump, URL, and the
    signature estimate of their similarity, read from the index's node tables (no text)."""
    removed, kept = np.asarray(task["removed"]), np.asarray(task["kept"])
    want = np.unique(np.concatenate([removed, kept]))
    t = _read_nodes(_by_file(task["index"], want), ["node", "id", "dump", "url", "signature"])
    nodes = t.column("node").to_numpy()
    order = np.argsort(nodes, kind="stable")
    pos_r = order[np.searchsorted(nodes[order], removed)]
    pos_k = order[np.searchsorted(nodes[order], kept)]
    sig = t.column("signature")
    sig_r = np.frombuffer(b"".join(sig.take(pa.array(pos_r)).to_pylist()), dtype=np.uint32).reshape(len(removed), -1)
    sig_k = np.frombuffer(b"".join(sig.take(pa.array(pos_k)).to_pylist()), dtype=np.uint32).reshape(len(kept), -1)
    take = lambda col, pos: t.column(col).take(pa.array(pos)).cast(pa.string())  # noqa: E731
    kept_id = take("id", pos_k)
    return pa.table(
        [
            take("id", pos_r), kept_id, kept_id, take("dump", pos_r), take("dump", pos_k), take("url", pos_r), take("url", pos_k),
            pa.array([REASONS[int(r)] for r in task["reasons"]], pa.string()),
            pa.array(mh.estimated_jaccard(sig_r, sig_k).astype(np.float32)),
            pa.array(np.asarray(task["sizes"], dtype=np.int32)), pa.array(np.asarray(task["retracted"], dtype=bool)),
        ],
        schema=DUPLICATES_SCHEMA,
    )


# ---------------------------------------------------------------------------------------------
# Phase 5: write kept documents


def _write(task: dict[str, Any], frequent: np.ndarray) -> StageStats:
    cpu0 = time.process_time()
    stats = StageStats()
    table = io.read_parquet(task["path"])
    validate(table.schema)
    n = table.num_rows
    stats.seen(n)
    removed_rows = np.asarray(task["removed_rows"], dtype=np.int64)
    reasons = np.asarray(task["removed_reasons"], dtype=np.int8)
    for code, name in REASONS.items():
        c = int((reasons == code).sum())
        if c:
            stats.drop(name, c)
    keep = np.ones(n, dtype=bool)
    keep[removed_rows] = False
    if len(frequent):
        old = table.column("text").to_pylist()
        texts, n_lines = _strip(old, frequent, task["cfg"])
        changed = np.array([a is not b and a != b for a, b in zip(texts, old)], dtype=bool)
        empty = np.array([not (t and t.strip()) for t in texts], dtype=bool) & keep
        stats.add("lines_removed", n_lines)
        stats.add("documents_with_lines_removed", int((changed & keep & ~empty).sum()))
        stats.add("characters_removed", sum(len(a) - len(b) for a, b, k in zip(old, texts, keep & ~empty) if k))
        if empty.any():
            stats.drop("boilerplate_only", int(empty.sum()))
        keep &= ~empty
        table = table.set_column(table.column_names.index("text"), "text", pa.array(texts, pa.string()))
    stats.kept(int(keep.sum()))
    dumps = table.column("dump").to_pylist()
    for dump, c in Counter(dumps).items():
        stats.add(f"input_docs:{dump}", c)
    for dump, c in Counter(d for d, k in zip(dumps, keep) if k).items():
        stats.add(f"kept_docs:{dump}", c)
    if io.exists(task["out"]):
        return stats
    cluster = [None] * n
    size = [None] * n
    ids = table.column("id")
    for row, csize in zip(task["cluster_rows"], task["cluster_sizes"]):
        # A kept document that has duplicates names its cluster: the cluster id is its own id.
        cluster[row], size[row] = ids[row].as_py(), csize
    meta = table.column("metadata").combine_chunks()
    fields = [meta.type.field(i) for i in range(meta.type.num_fields)]
    children = [meta.field(i) for i in range(meta.type.num_fields)]
    names = [f.name for f in fields]
    for name, values, typ in [("dedup_cluster_id", cluster, pa.string()), ("dedup_cluster_size", size, pa.int32())]:
        arr = pa.array(values, type=typ)
        if name in names:
            children[names.index(name)] = arr
        else:
            children.append(arr)
            fields.append(pa.field(name, typ))
    meta = pa.StructArray.from_arrays(children, fields=fields, mask=meta.is_null())
    table = table.set_column(table.column_names.index("metadata"), "metadata", meta).filter(pa.array(keep))
    io.write_parquet(table, task["out"])
    stats.add("cpu_seconds_write", round(time.process_time() - cpu0, 3))
    return stats


# ---------------------------------------------------------------------------------------------
# The driver


def _index_layout(index: str) -> dict[str, str]:
    return {
        "config": io.join(index, "config.json"),
        "generations": io.join(index, "generations.json"),
    }


def _compat(cfg: DedupConfig) -> dict[str, Any]:
    """The settings an index's band keys depend on: a later run must use the same ones."""
    return {
        "shingles": dataclasses.asdict(cfg.shingles),
        "minhash": dataclasses.asdict(cfg.minhash),
        "partitions": cfg.partitions,
    }


def _read_nodes(paths_rows: dict[str, np.ndarray], columns: list[str]) -> pa.Table:
    parts = []
    for path, wanted in sorted(paths_rows.items()):
        t = io.read_parquet(path, columns=columns)
        mask = np.isin(t.column("node").to_numpy(), wanted)
        parts.append(t.filter(pa.array(mask)))
    if not parts:
        return pa.table({c: pa.array([], type=NODE_SCHEMA.field(c).type) for c in columns})
    return pa.concat_tables(parts)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    return dedup(args.input, args.output, cfg, index=args.index)


def dedup(inputs: list[str], output: str, cfg: DedupConfig, index: str | None = None) -> int:
    """Run the stage; returns the exit status (non-zero when an input could not be read)."""
    inputs, output = [str(x) for x in inputs], str(output)
    index = str(index) if index else None
    cfg = resolve(cfg)
    index = index or io.join(output, "index")
    stats_path = io.join(output, "stats.json")
    if io.exists(stats_path):
        print(f"dedup: {output} is complete (stats.json exists); nothing to do", file=sys.stderr)
        return 0 if not io.read_json(stats_path).get("failed_files") else 1
    timer = Timer().__enter__()
    driver_cpu0 = time.process_time()
    stats = StageStats()

    # The index: generations so far, and the settings its keys were made with.
    lay = _index_layout(index)
    if io.exists(lay["config"]):
        have = io.read_json(lay["config"])
        if have != _compat(cfg):
            raise config_mod.ConfigError(f"index {index} was built with {have}, this run uses {_compat(cfg)}")
    else:
        io.write_json(_compat(cfg), lay["config"])
    generations = io.read_json(lay["generations"]) if io.exists(lay["generations"]) else []
    gen = len(generations)
    gen_dir = f"gen={gen:03d}"

    shards: list[str] = []
    for spec in inputs:
        found, missing = io.expand_inputs([spec], (".parquet",))
        shards.extend(f for f in found if not os.path.basename(f).startswith("."))
        stats.failed_files.update(missing)
    if len(shards) >= 1 << (GEN_SHIFT - SHARD_SHIFT):
        raise ValueError(f"{len(shards)} shards: at most {1 << (GEN_SHIFT - SHARD_SHIFT)} per run")

    # 1. dumps
    scanned = run_tasks(_scan_dumps, shards, desc="dedup: dumps")
    good: list[int] = []
    gen_dumps: set[str] = set()
    for i, res in enumerate(scanned):
        if isinstance(res, (str, TaskFailure)):
            stats.failed_files[shards[i]] = res if isinstance(res, str) else res.error
        else:
            good.append(i)
            gen_dumps.update(res)
    gen_dump_list = sorted(gen_dumps)
    all_dumps = sorted(set(gen_dump_list).union(*[g["dumps"] for g in generations]))
    age_rank = {d: i for i, d in enumerate(all_dumps)}  # CC-MAIN-YYYY-WW names sort by age

    # 1b. string level: lines repeated in at least line_repeat_min documents of this run
    frequent = np.zeros(0, np.uint64)
    if cfg.line_repeat_min > 0:
        lines_dir = io.join(output, "work", "lines")
        ltasks = [{"cfg": cfg, "path": shards[i], "name": f"part-{i:05d}.parquet", "folder": lines_dir} for i in good]
        for t, res in zip(ltasks, run_tasks(_line_counts, ltasks, desc="dedup: line counts")):
            if isinstance(res, TaskFailure):
                stats.failed_files[t["path"]] = res.error
        names = {t["name"] for t in ltasks if t["path"] not in stats.failed_files}
        ftasks = [{"files": [f for f in io.list_shards(io.join(lines_dir, f"p={p:04d}")) if os.path.basename(f) in names],
                   "min_docs": cfg.line_repeat_min} for p in range(cfg.partitions)]
        res = run_tasks(_line_frequent, ftasks, desc="dedup: frequent lines")
        if any(isinstance(r, TaskFailure) for r in res):
            raise RuntimeError("counting repeated lines failed")
        frequent = np.sort(np.concatenate(res))
        stats.add("frequent_lines", len(frequent))
        good = [i for i in good if shards[i] not in stats.failed_files]

    # 2. signatures
    tasks = [
        {
            "cfg": cfg, "path": shards[i], "shard": i, "gen": gen, "name": f"part-{i:05d}.parquet",
            "dump_codes": {d: c for c, d in enumerate(gen_dump_list)},
            "bands_dir": io.join(index, "bands", gen_dir),
            "nodes_path": io.join(index, "nodes", gen_dir, f"part-{i:05d}.parquet"),
        }
        for i in good
    ]
    rss = [0.0]
    for t, res in zip(tasks, run_tasks(_signatures, tasks, desc="dedup: signatures", args=(frequent,))):
        if isinstance(res, TaskFailure):
            stats.failed_files[t["path"]] = res.error
        else:
            rss.append(res.get("rss_mb", 0.0))
            stats.add("cpu_seconds_signatures", round(res.get("cpu_s", 0.0), 3))
    ok = [t for t in tasks if t["path"] not in stats.failed_files]

    # 3. candidates, one task per partition over every generation's band files
    gens = generations + [{"gen": gen, "dumps": gen_dump_list}]
    rank_of_code = {g["gen"]: [age_rank[d] for d in g["dumps"]] for g in gens}
    ok_names = {t["name"] for t in ok}
    part_tasks = []
    for p in range(cfg.partitions):
        files = []
        for g in gens:
            folder = io.join(index, "bands", f"gen={g['gen']:03d}", f"p={p:04d}")
            if not io.exists(folder):
                continue
            for f in io.list_shards(folder):
                if g["gen"] == gen and os.path.basename(f) not in ok_names:
                    continue
                files.append((f, rank_of_code[g["gen"]] or [0], g["gen"]))
        part_tasks.append({"files": files, "gen": gen, "edges_path": io.join(output, "graph", f"edges-p={p:04d}.parquet")})
    cand = run_tasks(_candidates, part_tasks, desc="dedup: candidates")
    failed = [r for r in cand if isinstance(r, TaskFailure)]
    if failed:
        raise RuntimeError(f"candidate partitions failed: {failed[0].error}")
    rss.extend(r.get("rss_mb", 0.0) for r in cand)
    stats.add("cpu_seconds_candidates", round(sum(r.get("cpu_s", 0.0) for r in cand), 3))

    # 4. clusters and the keep rule
    edges = [io.read_parquet(t["edges_path"]) for t in part_tasks]
    u = np.concatenate([e.column("u").to_numpy() for e in edges])
    v = np.concatenate([e.column("v").to_numpy() for e in edges])
    u, v = cl.unique_edges(u, v)
    stats.add("candidate_edges", len(u))
    verified = None
    if cfg.verify and len(u):
        paths = {g["gen"]: g["shards"] for g in generations}
        paths[gen] = shards
        # Edges sorted by u (unique_edges) so a task's documents cluster in few shards.
        chunks = [{"cfg": cfg, "u": u[i : i + _VERIFY_EDGES], "v": v[i : i + _VERIFY_EDGES], "paths": paths}
                  for i in range(0, len(u), _VERIFY_EDGES)]
        res = run_tasks(_verify, chunks, desc="dedup: verify")
        bad = [r for r in res if isinstance(r, TaskFailure)]
        if bad:
            raise RuntimeError(f"verification failed: {bad[0].error}")
        jac = np.concatenate(res)
        ok_edge = jac >= cfg.verify_threshold
        stats.add("verify_checked_edges", len(u))
        stats.add("verify_rejected_edges", int((~ok_edge).sum()))
        verified = jac[ok_edge]
        io.write_parquet(pa.table({"u": u, "v": v, "jaccard": jac, "accepted": ok_edge}), io.join(output, "graph", "verified.parquet"))
        u, v = u[ok_edge], v[ok_edge]
    prev_reps = _read_reps(index, gen - 1) if gen else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    # Earlier clusters enter only where a new edge touches one of their documents.
    old = np.unique(np.concatenate([u, v]))
    old = old[(old >> GEN_SHIFT) != gen]
    at = np.minimum(np.searchsorted(prev_reps[0], old), max(len(prev_reps[0]) - 1, 0))
    is_removed = prev_reps[0][at] == old if len(prev_reps[0]) else np.zeros(len(old), dtype=bool)
    reps = np.unique(np.where(is_removed, prev_reps[1][at] if len(prev_reps[0]) else old, old))
    pos = np.minimum(np.searchsorted(reps, prev_reps[1]), max(len(reps) - 1, 0))
    rel = reps[pos] == prev_reps[1] if len(reps) else np.zeros(len(prev_reps[1]), dtype=bool)
    cu = np.concatenate([u, prev_reps[0][rel]])
    cv = np.concatenate([v, prev_reps[1][rel]])
    members, labels = cl.connected_components(cu, cv)
    # Only clusters with a document of this run can change.
    touched = np.unique(labels[(members >> GEN_SHIFT) == gen])
    sel = np.isin(labels, touched)
    members, labels = members[sel], np.unique(labels[sel], return_inverse=True)[1]
    keys = _member_keys(index, members, age_rank)
    id_order = (keys["id_hi"], keys["id_lo"])
    kept_idx = cl.choose_kept(labels, keys["dump_rank"], id_order, cfg.keep)
    # Priority of each member under the keep rule (lower is better), for exact groups.
    rank = -keys["dump_rank"] if cfg.keep == "newest" else keys["dump_rank"]
    prio_order = np.lexsort((keys["id_lo"], keys["id_hi"], rank))
    priority = np.empty(len(members), dtype=np.int64)
    priority[prio_order] = np.arange(len(members))
    reasons = cl.removal_reasons(labels, keys["exact"], kept_idx, priority)
    kept_of = kept_idx[labels]
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, np.int64)

    is_new = (members >> GEN_SHIFT) == gen
    removed = reasons > 0
    # Listed this run: this run's removed documents, and earlier documents kept until now.
    listed = removed & (is_new | ~np.isin(members, prev_reps[0]))
    retracted = listed & ~is_new
    stats.add("clusters", len(kept_idx))
    stats.add("retracted_from_index", int(retracted.sum()))
    li = np.flatnonzero(listed)
    file_of = members[li] >> SHARD_SHIFT  # (generation, shard) of each removed document
    dtasks = []
    for f in np.unique(file_of):
        sel = li[file_of == f]
        dtasks.append({"index": index, "removed": members[sel], "kept": members[kept_of[sel]], "reasons": reasons[sel],
                       "sizes": sizes[labels[sel]], "retracted": retracted[sel]})
    parts = run_tasks(_duplicates, dtasks, desc="dedup: duplicates")
    if any(isinstance(r, TaskFailure) for r in parts):
        raise RuntimeError(f"building duplicates failed: {next(r for r in parts if isinstance(r, TaskFailure)).error}")
    dup = pa.concat_tables(parts) if parts else DUPLICATES_SCHEMA.empty_table()
    # Ordered by removed id: independent of the shard layout.
    dup = dup.take(pc.sort_indices(dup, sort_keys=[("removed_id", "ascending")]))
    # The index's removed->kept table after this run (cumulative over generations).
    keep_prev = ~np.isin(prev_reps[0], members)
    rep_nodes = np.concatenate([prev_reps[0][keep_prev], members[removed]])
    rep_kept = np.concatenate([prev_reps[1][keep_prev], members[kept_of[removed]]])
    o = np.argsort(rep_nodes, kind="stable")
    io.write_parquet(pa.table({"node": rep_nodes[o], "rep": rep_kept[o]}), io.join(index, "reps", f"{gen_dir}.parquet"))

    # 5. write the kept documents, shard by shard
    shard_of = (members >> SHARD_SHIFT) & ((1 << (GEN_SHIFT - SHARD_SHIFT)) - 1)
    row_of = members & ((1 << SHARD_SHIFT) - 1)
    kept_mask = np.zeros(len(members), dtype=bool)
    kept_mask[kept_idx] = True
    wtasks = []
    for t in ok:
        mine = is_new & (shard_of == t["shard"])
        rm = mine & removed
        kc = mine & kept_mask
        wtasks.append({
            "cfg": cfg, "path": t["path"], "out": io.join(output, "documents", t["name"]),
            "removed_rows": row_of[rm], "removed_reasons": reasons[rm],
            "cluster_rows": row_of[kc].tolist(), "cluster_sizes": sizes[labels[kc]].tolist(),
        })
    merge_results(stats, [t["path"] for t in wtasks], run_tasks(_write, wtasks, desc="dedup: write", args=(frequent,)))
    io.write_parquet(dup, io.join(output, "duplicates.parquet"))
    stats.check()
    per_dump = _per_dump(stats, members, is_new, keys["dump"], reasons)
    generations = generations + [{"gen": gen, "dumps": gen_dump_list, "output": output, "shards": shards}]
    io.write_json(generations, lay["generations"])
    timer.__exit__()
    stats.add("seconds", round(timer.seconds, 3))
    stats.add("cpu_seconds_driver", round(time.process_time() - driver_cpu0, 3))
    stats.add("peak_worker_rss_mb", max(rss))
    stats.add("driver_peak_rss_mb", _peak_rss_mb())
    summary = stats.to_dict()
    if verified is not None:
        hist, edges_ = np.histogram(verified, bins=20, range=(0.0, 1.0))
        stats_hist = {"bins": edges_.round(3).tolist(), "counts": hist.tolist()}
    else:
        stats_hist = None
    summary["dedup"] = {
        "verified_similarity_histogram": stats_hist,
        "config": dataclasses.asdict(cfg),
        "index": index,
        "generation": gen,
        "dumps": all_dumps,
        "per_dump": per_dump,
        "lsh_curve": {f"{s:.2f}": round(float(mh.candidate_probability(s, cfg.minhash.bands, cfg.minhash.rows)), 4)
                      for s in np.arange(0.5, 1.0001, 0.05)},
    }
    io.write_json(summary, stats_path)
    print_summary(NAME, stats, timer.seconds, {"candidate edges": stats.counters["candidate_edges"], "clusters": len(kept_idx)})
    return 1 if stats.failed_files else 0


def _read_reps(index: str, gen: int) -> tuple[np.ndarray, np.ndarray]:
    t = io.read_parquet(io.join(index, "reps", f"gen={gen:03d}.parquet"))
    return t.column("node").to_numpy(), t.column("rep").to_numpy()


def _by_file(index: str, nodes: np.ndarray) -> dict[str, np.ndarray]:
    """The node-table file of each (generation, shard) among ``nodes``, with its nodes."""
    out: dict[str, np.ndarray] = {}
    files = nodes >> SHARD_SHIFT
    for f in np.unique(files).tolist():
        g, sh = f >> (GEN_SHIFT - SHARD_SHIFT), f & _SHARD_MASK
        out[io.join(index, "nodes", f"gen={g:03d}", f"part-{sh:05d}.parquet")] = nodes[files == f]
    return out


def _member_keys(index: str, members: np.ndarray, age_rank: dict[str, int]) -> dict[str, np.ndarray]:
    """What the keep rule needs of each cluster member, as arrays in member order: dump (and its
    age rank), the id's order keys, the exact hash. No strings per member are kept."""
    t = _read_nodes(_by_file(index, members), ["node", "dump", "id_hi", "id_lo", "exact_hash"])
    order = np.argsort(t.column("node").to_numpy(), kind="stable")
    t = t.take(pa.array(order))
    if not np.array_equal(t.column("node").to_numpy(), members):
        raise RuntimeError("index node tables do not hold every cluster member")
    dump = pc.dictionary_encode(pc.fill_null(t.column("dump"), "")).combine_chunks()
    names = dump.dictionary.to_pylist()
    codes = dump.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    rank_of = np.array([age_rank.get(d, -1) for d in names] or [0], dtype=np.int64)
    return {
        "dump_rank": rank_of[codes] if len(codes) else np.zeros(0, np.int64),
        "dump": (np.array(names, dtype=object)[codes] if len(codes) else np.zeros(0, dtype=object)),
        "id_hi": t.column("id_hi").to_numpy(), "id_lo": t.column("id_lo").to_numpy(),
        "exact": t.column("exact_hash").to_numpy(),
    }


def _per_dump(stats: StageStats, members: np.ndarray, is_new: np.ndarray, dumps: list, reasons: np.ndarray) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name, c in stats.counters.items():
        if name.startswith("input_docs:"):
            d = name.split(":", 1)[1]
            out[d] = {"input": int(c), "exact_duplicate": 0, "near_duplicate": 0}
    for i in np.flatnonzero(is_new & (reasons > 0)):
        d = str(dumps[i])
        out.setdefault(d, {"input": 0, "exact_duplicate": 0, "near_duplicate": 0})[REASONS[int(reasons[i])]] += 1
    for name, d in out.items():
        d["kept"] = int(stats.counters.get(f"kept_docs:{name}", 0))
        other = d["input"] - d["exact_duplicate"] - d["near_duplicate"] - d["kept"]
        if other:
            d["boilerplate_only"] = other
    return dict(sorted(out.items()))
