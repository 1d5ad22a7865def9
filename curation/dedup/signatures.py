"""Step 1, per input shard: strip repeated lines, sign every document, route its band keys.

Writes the shard's node table into the index (id, dump, URL, exact hash, signature; no text),
its band keys as one routed file (a batch per band partition, see ``layout``), and - when the
string level is on - the texts it changed, so later steps read the stripped text instead of
stripping again.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dedup import layout
from curation.dedup import lines as ln
from curation.dedup import minhash as mh
from curation.schema import validate
from storage import io

NODE_SCHEMA = pa.schema([
    ("node", pa.int64()), ("id", pa.string()), ("dump", pa.string()), ("url", pa.string()),
    ("exact_hash", pa.uint64()), ("n_shingles", pa.int32()), ("signature", pa.binary()),
])
BAND_SCHEMA = pa.schema([("key", pa.uint64()), ("node", pa.int64()), ("dump_code", pa.uint16())])
STRIPPED_SCHEMA = pa.schema([("row", pa.int32()), ("text", pa.string())])
BATCH = 2000  # documents normalised and hashed together


def sign(texts: list[str], cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exact hash, MinHash signature n x num_perm, shingle count) of each text."""
    n, K = len(texts), cfg.minhash.num_perm
    exact = np.zeros(n, dtype=np.uint64)
    sigs = np.zeros((n, K), dtype=np.uint32)
    nsh = np.zeros(n, dtype=np.int32)
    for lo in range(0, n, BATCH):
        norm = [mh.normalize(t, cfg.shingles) for t in texts[lo : lo + BATCH]]
        exact[lo : lo + len(norm)] = [mh.exact_hash(s) for s in norm]
        h, counts = mh.shingle_hashes(norm, cfg.shingles.ngram)
        sigs[lo : lo + len(norm)] = mh.minhash_signatures(h, counts, K, cfg.minhash.seed)
        nsh[lo : lo + len(norm)] = counts
    return exact, sigs, nsh


def band_rows(nodes: np.ndarray, dump_code: np.ndarray, exact: np.ndarray, sigs: np.ndarray,
              nsh: np.ndarray, alive: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key, node, dump code) rows: ``bands`` LSH keys per document with shingles, and one exact
    key per document (a text without a token has only its exact key)."""
    B, R = cfg.minhash.bands, cfg.minhash.rows
    band = mh.lsh_band_keys(sigs, B, R)
    has = (nsh > 0) & alive
    keys = np.concatenate([band[has].ravel(), mh.exact_band_key(exact[alive])])
    knodes = np.concatenate([np.repeat(nodes[has], B), nodes[alive]])
    kdump = np.concatenate([np.repeat(dump_code[has], B), dump_code[alive]])
    return keys, knodes, kdump


def scan_unit(path: str) -> dict[str, Any] | str:
    """An input shard's dump names (no dump: "") and row count, or why it cannot be read."""
    try:
        fs, p = io.filesystem(path)
        col = pq.read_table(p, filesystem=fs, columns=["dump"]).column("dump")
        return {"dumps": sorted({d or "" for d in col.unique().to_pylist()}), "rows": len(col)}
    except Exception as e:  # noqa: BLE001 - named in failed_files, the other shards go on
        return f"{type(e).__name__}: {e}"


def load_frequent(files: list[str], group: int) -> frozenset[int]:
    """The frequent-line hashes that shards of ``group`` carry (string level), from the line
    step's files: never the whole run's set."""
    t = layout.read_routed(files, group, pa.schema([("hash", pa.uint64()), ("group", pa.int64())]))
    return frozenset(t.column("hash").to_pylist())


def signature_unit(unit: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """One input shard (``unit``: path, shard) of generation ``ctx["gen"]``."""
    cpu0 = time.process_time()
    cfg, gen, shard = ctx["cfg"], ctx["gen"], unit["shard"]
    fs, p = io.filesystem(unit["path"])
    validate(pq.read_schema(p, filesystem=fs))  # a shard the write step would refuse takes no part
    table = io.read_parquet(unit["path"], columns=["id", "text", "dump", "url"])
    n = table.num_rows
    nodes = layout.node_ids(gen, shard, n)
    dumps = pc.fill_null(table.column("dump"), "").to_pylist()
    dump_code = np.array([ctx["dump_codes"][d] for d in dumps], dtype=np.uint16)
    texts = [t or "" for t in table.column("text").to_pylist()]
    out: dict[str, Any] = {"docs": n, "lines_removed": 0, "documents_with_lines_removed": 0, "characters_removed": 0}
    frequent = (load_frequent(ctx["frequent_files"], int(layout.group_of(nodes[:1], ctx["partitions"])[0]))
                if ctx.get("frequent_files") and n else frozenset())
    if frequent:
        rows, stripped = [], []
        for i, t in enumerate(texts):
            new, k = ln.remove_repeated_lines(t, frequent, cfg.line_min_chars)
            if k:
                rows.append(i)
                stripped.append(new)
                texts[i] = new
                out["lines_removed"] += k
                out["characters_removed"] += len(t) - len(new)
        out["documents_with_lines_removed"] = len(rows)
        io.write_parquet(pa.table([pa.array(rows, pa.int32()), pa.array(stripped, pa.string())], schema=STRIPPED_SCHEMA),
                         layout.shard_file(ctx["index"], "stripped", gen, shard))
    # A document that was nothing but repeated lines is dropped at write time; it takes no part.
    alive = np.array([bool(t.strip()) for t in texts], dtype=bool)
    exact, sigs, nsh = sign(texts, cfg)
    keys, knodes, kdump = band_rows(nodes, dump_code, exact, sigs, nsh, alive, cfg)
    P = ctx["partitions"]
    layout.write_routed(pa.table([pa.array(keys), pa.array(knodes), pa.array(kdump)], schema=BAND_SCHEMA),
                        layout.partition(keys, P), P, unit["bands_out"])
    K = cfg.minhash.num_perm
    sig_col = pa.Array.from_buffers(pa.binary(4 * K), n, [None, pa.py_buffer(sigs.tobytes())]).cast(pa.binary())
    node_table = pa.table([pa.array(nodes), table.column("id"), table.column("dump"), table.column("url"),
                           pa.array(exact), pa.array(nsh), sig_col], schema=NODE_SCHEMA)
    io.write_parquet(node_table, layout.shard_file(ctx["index"], "nodes", gen, shard))
    out.update(band_rows=len(keys), boilerplate_only=int((~alive).sum()), cpu_s=time.process_time() - cpu0)
    return out


def stripped_texts(index: str, gen: int, shard: int, texts: list[str]) -> list[str]:
    """``texts`` of a shard with the rows the string level changed replaced (this step's output)."""
    path = layout.shard_file(index, "stripped", gen, shard)
    if io.exists(path):
        t = io.read_parquet(path)
        for row, text in zip(t.column("row").to_pylist(), t.column("text").to_pylist()):
            texts[row] = text
    return texts


def texts_of_rows(path: str, rows: np.ndarray) -> list[str]:
    """The ``text`` of rows ``rows`` of a Parquet shard, reading only the row groups that hold them."""
    fs, p = io.filesystem(path)
    with fs.open_input_file(p) as f:
        pf = pq.ParquetFile(f)
        sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
        starts = np.concatenate(([0], np.cumsum(sizes)))
        groups = np.unique(np.searchsorted(starts, rows, side="right") - 1)
        col = pf.read_row_groups(groups.tolist(), columns=["text"]).column("text")
    offset = np.concatenate(([0], np.cumsum(np.asarray(sizes)[groups])))  # where each read group starts
    at = offset[np.searchsorted(groups, np.searchsorted(starts, rows, side="right") - 1)] + rows - starts[
        np.searchsorted(starts, rows, side="right") - 1]
    return [t or "" for t in pc.take(col, pa.array(at, pa.int64())).to_pylist()]


def iter_shingle_sets(index: str, nodes: np.ndarray, cfg,
                      cache: dict[int, np.ndarray] | None = None) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """The shingle sets (:func:`minhash.shingle_sets`) of the documents ``nodes``, a batch at a time
    - (positions in ``nodes``, their sets) - from the text the signatures were made of (repeated
    lines stripped): the true Jaccard's input. Reads, of each input shard that holds one of them,
    the row groups that do; a task holds one shard's texts and one batch's sets at a time. With
    ``cache`` (node -> set), the sets found there are not made again, and the new ones are kept."""
    nodes = np.asarray(nodes, dtype=np.int64)
    if cache is not None:
        known = np.array([n in cache for n in nodes.tolist()], dtype=bool)
        if known.any():
            yield np.flatnonzero(known), [cache[n] for n in nodes[known].tolist()]
        for at, sets in iter_shingle_sets(index, nodes[~known], cfg):
            cache.update(zip(nodes[~known][at].tolist(), sets))
            yield np.flatnonzero(~known)[at], sets
        return
    files = layout.file_key(nodes)
    for fk in np.unique(files).tolist():
        at = np.flatnonzero(files == fk)
        gen, shard = layout.file_of(fk)
        path = io.read_json(io.join(index, layout.gen_dir(gen), "shards.json"))[shard]
        rows = layout.row_of(nodes[at])
        texts = texts_of_rows(path, rows)
        stripped = layout.shard_file(index, "stripped", gen, shard)
        if io.exists(stripped):  # the string level changed some rows: their stripped text
            t = io.read_parquet(stripped)
            new = dict(zip(t.column("row").to_pylist(), t.column("text").to_pylist()))
            texts = [new.get(r, x) for r, x in zip(rows.tolist(), texts)]
        for lo in range(0, len(at), BATCH):  # a batch of documents normalised and hashed at a time
            sets = mh.shingle_sets([mh.normalize(x, cfg.shingles) for x in texts[lo : lo + BATCH]], cfg.shingles.ngram)
            yield at[lo : lo + BATCH], [x.astype(np.uint32) for x in sets]


def shingle_sets_of(index: str, nodes: np.ndarray, cfg, cache: dict[int, np.ndarray] | None = None) -> list[np.ndarray]:
    """:func:`iter_shingle_sets` of a few documents, as one list in the order of ``nodes``."""
    out: list[np.ndarray] = [np.zeros(0, np.uint32)] * len(nodes)
    for at, sets in iter_shingle_sets(index, nodes, cfg, cache):
        for i, x in zip(at.tolist(), sets):
            out[i] = x
    return out


def signature_matrix(col: pa.ChunkedArray | pa.Array, num_perm: int) -> np.ndarray:
    """The node table's signature column back as an (n x num_perm) uint32 matrix."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if len(arr) == 0:
        return np.zeros((0, num_perm), dtype=np.uint32)
    fixed = arr.cast(pa.binary(4 * num_perm))
    return np.frombuffer(fixed.buffers()[1], dtype=np.uint32, count=len(arr) * num_perm,
                         offset=fixed.offset * 4 * num_perm).reshape(len(arr), num_perm)
