"""Where dedup's files live, how rows are spread over partitions, and how tasks hand rows on.

Node ids. A document is the int64 ``gen << 48 | shard << 28 | row``: its generation of the index,
its input shard in that run, its row. Stable across re-runs and unique across generations.

Partitions. Every partitioned table is split by *range* over a 64-bit hash: row with hash ``h``
goes to ``((h >> 32) * P) >> 32`` (Lemire's multiply-shift). Band keys are hashes already; node
ids are mixed first. Ranges let two generations written with different partition counts be read
together: partition ``p`` of ``P`` overlaps a known, short run of the partitions of ``Q``
(:func:`overlapping`), so a task reads only the files that can hold its keys.

Hand-offs. A task that shuffles rows writes one Arrow IPC file with one record batch per
destination partition (:func:`write_routed`); the task of partition ``i`` reads batch ``i`` of
each file (:func:`read_routed`). Files, not memory: any task can be retried or run elsewhere.

The index (``--index``), one folder per table, one sub-folder per generation:

    config.json                        settings the band keys depend on (a later run must match)
    generations.json                   per generation: dumps, documents, partitions, output
    gen=G/shards.json                  input shards of generation G (verify and restore read them)
    nodes/gen=G/part-S.parquet         per input shard: id, dump, URL, exact hash, signature
    bands/gen=G/p=P.parquet            band keys, sorted by (key, node), by key range
    labels/gen=G/p=P.parquet           node -> component, for the components G touched, by node
    components/gen=G/p=P.parquet       component -> members with their state, by component
    stripped/gen=G/part-S.parquet      texts whose repeated lines were removed (string level)

``labels`` and ``components`` hold only what generation G changed: the current row of a key
is the one of the newest generation that holds it (:func:`read_latest`).

What a dedup output publishes, for later stages and ``dedup-stats`` (everything else under it is
the stage's work, gone when it ends):

    stats.json                         StageStats + ``dedup`` (config, per-dump table, dumps by date, ...)
    documents/part-S.parquet           the kept documents (curation.schema.DOCUMENT_SCHEMA + metadata)
    duplicates.parquet                 one row per removed document (removals.DUPLICATES_SCHEMA)
    graph/edges-p=P.parquet            this run's candidate edges with both ends' dump ranks (GRAPH_EDGE_SCHEMA)
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage import io
from storage.errors import SettingError

# The published candidate graph (graph/edges-p=P.parquet): an edge u-v between node ids and the
# dump rank of each end (0 = the oldest dump of the run's order).
GRAPH_EDGE_SCHEMA = pa.schema([("u", pa.int64()), ("v", pa.int64()), ("u_rank", pa.int32()), ("v_rank", pa.int32())])
DUPLICATES_FILE = "duplicates.parquet"


def graph_edge_path(output: str, p: int) -> str:
    return io.join(output, "graph", f"edges-p={p:04d}.parquet")


def read_graph_edges(output: str) -> pa.Table | None:
    """Every published candidate edge of a dedup output, in partition order (None: no graph)."""
    folder = io.join(output, "graph")
    files = sorted(f for f in (io.list_shards(folder) if io.exists(folder) else []) if "edges-p=" in f)
    tables = [io.read_parquet(f, columns=GRAPH_EDGE_SCHEMA.names).cast(GRAPH_EDGE_SCHEMA) for f in files]
    return pa.concat_tables(tables) if tables else None

GEN_SHIFT, SHARD_SHIFT = 48, 28
SHARD_MASK = (1 << (GEN_SHIFT - SHARD_SHIFT)) - 1
ROW_MASK = (1 << SHARD_SHIFT) - 1
MAX_SHARDS = 1 << (GEN_SHIFT - SHARD_SHIFT)

# Rows of band keys per partition when the count follows the data: about 60 MB of (key, node,
# dump) in a task, several times that while sorting, so a 2 GB worker has room to spare.
BAND_ROWS_PER_PARTITION = 3_000_000
MAX_PARTITIONS = 4096


def node_ids(gen: int, shard: int, n: int) -> np.ndarray:
    return ((gen << GEN_SHIFT) | (shard << SHARD_SHIFT)) + np.arange(n, dtype=np.int64)


def gen_of(nodes: np.ndarray) -> np.ndarray:
    return nodes >> GEN_SHIFT


def shard_of(nodes: np.ndarray) -> np.ndarray:
    return (nodes >> SHARD_SHIFT) & SHARD_MASK


def row_of(nodes: np.ndarray) -> np.ndarray:
    return nodes & ROW_MASK


def file_key(nodes: np.ndarray) -> np.ndarray:
    """(generation, shard) of each node as one integer: the node-table file that holds it."""
    return nodes >> SHARD_SHIFT


def partitions_for(band_rows: int, override: int | None = None) -> int:
    """Partition count: ``override``, else one per ``BAND_ROWS_PER_PARTITION`` band rows of the
    run and the index together (at least 1)."""
    if override:
        if not 1 <= override <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be between 1 and {MAX_PARTITIONS}, not {override}")
        return int(override)
    return int(min(MAX_PARTITIONS, max(1, math.ceil(band_rows / BAND_ROWS_PER_PARTITION))))


def mix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: node ids (dense, ordered) to uniform hashes."""
    x = np.asarray(x).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(33))
        x = x * np.uint64(0xFF51AFD7ED558CCD)
        x = x ^ (x >> np.uint64(33))
        x = x * np.uint64(0xC4CEB9FE1A85EC53)
        return x ^ (x >> np.uint64(33))


_MIX_INV = (pow(0xC4CEB9FE1A85EC53, -1, 1 << 64), pow(0xFF51AFD7ED558CCD, -1, 1 << 64))


def unmix64(x: np.ndarray) -> np.ndarray:
    """The inverse of :func:`mix64` (each step of the finaliser is a bijection)."""
    x = np.asarray(x).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(33))
        x = x * np.uint64(_MIX_INV[0])
        x = x ^ (x >> np.uint64(33))
        x = x * np.uint64(_MIX_INV[1])
        return x ^ (x >> np.uint64(33))


def partition(hashes: np.ndarray, P: int) -> np.ndarray:
    """Range partition of uniform 64-bit hashes: ``((h >> 32) * P) >> 32``."""
    top = np.asarray(hashes).astype(np.uint64) >> np.uint64(32)
    return ((top * np.uint64(P)) >> np.uint64(32)).astype(np.int64)


def node_partition(nodes: np.ndarray, P: int) -> np.ndarray:
    return partition(mix64(nodes), P)


def group_of(nodes: np.ndarray, P: int) -> np.ndarray:
    """The group of node files (0 .. P-1) each node's file belongs to: the tasks that decide
    members hold whole groups, so a document's decision never leaves its file's group."""
    return node_partition(file_key(np.asarray(nodes, dtype=np.int64)), P)


def key_partition(label: np.ndarray, key: np.ndarray, P: int) -> np.ndarray:
    """Partition of a (component, band key) pair: a bucket inside one component."""
    return partition(mix64(label) ^ np.asarray(key).astype(np.uint64), P)


def overlapping(p: int, P: int, Q: int) -> range:
    """The partitions of ``Q`` whose hash range meets partition ``p`` of ``P``."""
    lo = -(-(p << 32) // P)  # first top-32-bit value in p: ceil(p * 2^32 / P)
    hi = -(-((p + 1) << 32) // P) - 1
    return range((lo * Q) >> 32, ((hi * Q) >> 32) + 1)


# ---- hand-offs between tasks ---------------------------------------------------------------


def write_routed(table: pa.Table, dest: np.ndarray, n_dest: int, path: str, compression: str | None = "lz4") -> None:
    """Write ``table`` as an IPC file of ``n_dest`` record batches: batch i holds the rows with
    ``dest == i``, in their order (stable). Atomic (temporary name, then rename). ``compression``
    None for columns that do not compress (the graph's random node ids: lz4 only costs CPU)."""
    dest = np.asarray(dest)
    # A stable sort of small integers is a radix sort in numpy (uint16), O(n).
    order = np.argsort(dest.astype(np.uint16) if n_dest <= 1 << 16 else dest, kind="stable")
    bounds = np.searchsorted(dest[order], np.arange(n_dest + 1))
    t = table.take(pa.array(order)) if len(order) else table
    sink = pa.BufferOutputStream()
    # lz4: these files live for one step; it reads 6x faster than zstd for 20% more bytes.
    with pa.ipc.new_file(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as w:
        for i in range(n_dest):
            w.write_batch(t.slice(bounds[i], bounds[i + 1] - bounds[i]).combine_chunks().to_batches()[0]
                          if bounds[i + 1] > bounds[i] else pa.RecordBatch.from_pylist([], schema=table.schema))
    io.write_bytes(sink.getvalue(), path)  # a pyarrow Buffer: no copy into Python bytes


def read_routed(paths: Iterable[str], dest: int, schema: pa.Schema, source: str | None = None) -> pa.Table:
    """Batch ``dest`` of every routed file in ``paths`` (missing files are an error); with
    ``source``, a column of that name (int32) holds each row's file's position in ``paths``."""
    batches = []
    for i, path in enumerate(paths):
        fs, p = io.filesystem(path)
        with fs.open_input_file(p) as f:
            reader = pa.ipc.open_file(f)
            b = reader.get_batch(dest)
            if b.num_rows:
                b = b.select(schema.names)
                if source:
                    b = pa.RecordBatch.from_arrays([*b.columns, pa.array(np.full(b.num_rows, i, np.int32))],
                                                   names=[*schema.names, source])
                batches.append(b)
    out = schema.append(pa.field(source, pa.int32())) if source else schema
    return pa.Table.from_batches(batches, schema=out) if batches else out.empty_table()


# ---- the index -----------------------------------------------------------------------------


def gen_dir(gen: int) -> str:
    return f"gen={gen:03d}"


def index_file(index: str, table: str, gen: int, part: int) -> str:
    """``<index>/<table>/gen=G/p=PPPP.parquet`` (bands, labels, components)."""
    return io.join(index, table, gen_dir(gen), f"p={part:04d}.parquet")


def shard_file(index: str, table: str, gen: int, shard: int) -> str:
    """``<index>/<table>/gen=G/part-SSSSS.parquet`` (nodes, stripped)."""
    return io.join(index, table, gen_dir(gen), f"part-{shard:05d}.parquet")


def read_partition(index: str, table: str, gens: Sequence[dict], p: int, P: int, key: str,
                   hashed: bool, columns: list[str] | None = None) -> list[tuple[int, pa.Table]]:
    """Rows of partition ``p`` of ``P`` from every generation in ``gens`` (each ``{"gen",
    "partitions"}``), read from the files whose range overlaps it: ``[(gen, table)]``."""
    out = []
    for g in gens:
        parts = []
        for q in overlapping(p, P, g["partitions"]):
            path = index_file(index, table, g["gen"], q)
            if io.exists(path):
                parts.append(io.read_parquet(path, columns=columns))
        if not parts:
            continue
        t = pa.concat_tables(parts)
        if len(parts) > 1 or g["partitions"] != P:
            k = t.column(key).to_numpy()
            t = t.filter(pa.array((node_partition(k, P) if hashed else partition(k, P)) == p))
        out.append((g["gen"], t))
    return out


def read_latest(index: str, table: str, gens: Sequence[dict], p: int, P: int, key: str,
                wanted: np.ndarray, columns: list[str] | None = None) -> pa.Table:
    """The current rows of the keys in ``wanted`` (sorted int64 node or component ids): for each
    key, the rows of the newest generation in ``gens`` that holds it."""
    if len(wanted) == 0:  # a partition no new edge reaches is not read at all
        return None
    found, seen = [], np.zeros(0, np.int64)
    for _, t in sorted(read_partition(index, table, gens, p, P, key, True, columns), key=lambda gt: -gt[0]):
        k = t.column(key).to_numpy()
        take = _isin_sorted(k, wanted) & ~_isin_sorted(k, seen)
        if take.any():
            t = t.filter(pa.array(take))
            found.append(t)
            seen = np.union1d(seen, t.column(key).to_numpy())
    if not found:
        return None
    return pa.concat_tables(found)


def _isin_sorted(x: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    if len(sorted_values) == 0:
        return np.zeros(len(x), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_values, x), len(sorted_values) - 1)
    return sorted_values[at] == x


isin_sorted = _isin_sorted


def basename(path: str) -> str:
    return os.path.basename(path.rstrip("/"))


def take_strings(col: pa.ChunkedArray | pa.Array, idx: np.ndarray) -> pa.Array:
    return pc.take(col, pa.array(idx, type=pa.int64()))


def open_index(index: str, settings: dict, output: str) -> list[dict]:
    """The index's generations so far (each {gen, dumps, docs, partitions, output}); refuses an
    index built with other settings. A generation this ``output`` wrote whose run did not finish
    is left out, so the re-run redoes it as the same generation."""
    path = io.join(index, "config.json")
    if io.exists(path) and io.read_json(path) != settings:
        raise SettingError(f"index {index} was built with {io.read_json(path)}, this run uses {settings}")
    io.write_json(settings, path)
    gens = io.read_json(io.join(index, "generations.json")) if io.exists(io.join(index, "generations.json")) else []
    return gens[:-1] if gens and gens[-1]["output"] == output else gens


def add_generation(index: str, gens: list[dict], entry: dict) -> None:
    io.write_json([*gens, entry], io.join(index, "generations.json"))


def file_of(fk: int) -> tuple[int, int]:
    """(generation, shard) of a :func:`file_key`."""
    return fk >> (GEN_SHIFT - SHARD_SHIFT), fk & SHARD_MASK
