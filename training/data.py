"""Token-shard loader: packs the tokenize stage's documents into fixed-length training rows.

Input: Parquet shards with ``id`` (string) and ``input_ids`` (list<uint32>, EOS appended).

The loader defines ONE global stream of packed rows, the same whatever the number of ranks:
  - the units of the stream are the (shard, row group) pairs of all files, visited in an order
    shuffled from ``seed`` and the epoch;
  - inside a row group the documents are shuffled from ``seed``, the epoch and the unit, and
    concatenated after the tokens left over from the previous unit;
  - the token stream is cut into rows of ``seq_len + 1`` tokens with stride ``seq_len`` (inputs
    ``row[:-1]``, labels ``row[1:]``), so every token but the first is a target once; the rows
    of a unit are served in an order shuffled from the seed, so a batch mixes documents.
Rank r of W keeps global rows r, r+W, r+2W, ... (sharding by rank). A global batch of G rows is
therefore the same set of rows on 1 or on W ranks, which is what makes losses independent of
the world size. Every rank walks the stream's offsets, but only copies its own rows.

State (identical on every rank at a step boundary, saved once with each checkpoint):
epoch, unit (position in the shuffled order), row offset inside that unit's rows, the leftover
tokens carried into the unit, and the number of rows served; ``load_state_dict`` re-reads that
row group and skips to the offset, so a resumed run gets exactly the next batch.

The column is read with pyarrow and viewed as NumPy without copying (``values`` of the list
array); only the rows this rank serves are copied into the batch tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from storage import io
from storage.errors import MissingInput

IGNORE_INDEX = -100


@dataclass
class _Unit:
    path: str
    row_group: int


def list_token_shards(specs: list[str]) -> list[str]:
    """Parquet files under files/folders ``specs`` (local paths or URIs), sorted; names starting
    with ``.`` or ``_`` (temporary files, working folders) are skipped."""
    files, missing = io.expand_inputs(specs, (".parquet",), missing_ok=True)
    if missing:
        spec, why = next(iter(missing.items()))
        raise MissingInput(f"token shards not found: {spec} ({why}); write them with `python -m pipelines tokenize` or fix --data")
    if not files:
        raise MissingInput(f"no .parquet token shards under {specs}; write them with `python -m pipelines tokenize` or fix --data")
    return files


def _open_parquet(path: str) -> pq.ParquetFile:
    fs, inner = io.filesystem(path)
    if not io.is_uri(path):
        return pq.ParquetFile(inner, memory_map=True)
    return pq.ParquetFile(fs.open_input_file(inner))


class TokenShardLoader:
    """``next_batch()`` -> {"input_ids", "labels"}: (micro_batch, seq_len) int64 for this rank."""

    def __init__(self, paths: list[str], seq_len: int, micro_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True, loop: bool = True):
        self.paths = list(paths)
        self.seq_len, self.micro_batch = seq_len, micro_batch
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle, self.loop = seed, shuffle, loop
        self.units = [_Unit(p, rg) for p in self.paths for rg in range(_open_parquet(p).num_row_groups)]
        self._open: tuple[str, pq.ParquetFile] | None = None  # one open file at a time
        if not self.units:
            raise ValueError("token shards hold no row groups")
        self.load_state_dict({"epoch": 0, "unit": 0, "row_offset": 0, "leftover": [], "rows_served": 0})

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "epoch": self._epoch,
            "unit": self._unit,
            "row_offset": self._row_offset,
            "leftover": [int(t) for t in self._unit_leftover],
            "rows_served": self._rows_served,
        }

    def load_state_dict(self, state: dict) -> None:
        self._epoch, self._unit = int(state["epoch"]), int(state["unit"])
        self._row_offset, self._rows_served = int(state["row_offset"]), int(state["rows_served"])
        self._unit_leftover = np.asarray(state["leftover"], dtype=np.uint32)
        self._order = self._unit_order(self._epoch)
        self._stream: np.ndarray | None = None  # tokens of the current unit (leftover + docs)
        self._n_rows = 0

    # -- the global stream ------------------------------------------------------------------
    def _unit_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.units))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.units))

    def _load_unit(self) -> None:
        """Build the token stream of the current unit: leftover, then its documents (shuffled)."""
        unit = self.units[self._order[self._unit]]
        if self._open is None or self._open[0] != unit.path:
            self._open = (unit.path, _open_parquet(unit.path))
        col = self._open[1].read_row_group(unit.row_group, columns=["input_ids"]).column("input_ids").combine_chunks()
        offsets = col.offsets.to_numpy(zero_copy_only=False)
        values = col.values.to_numpy(zero_copy_only=True) if col.values.null_count == 0 else col.values.to_numpy(zero_copy_only=False)
        starts, ends = offsets[:-1], offsets[1:]
        if self.shuffle:
            perm = np.random.default_rng([self.seed, self._epoch, int(self._order[self._unit])]).permutation(len(starts))
            starts, ends = starts[perm], ends[perm]
            lengths = ends - starts
            # Gather the permuted documents in one vectorised index.
            idx = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
            docs = values[idx]
        else:
            docs = values[offsets[0]:offsets[-1]]
        self._stream = np.concatenate([self._unit_leftover, docs.astype(np.uint32, copy=False)])
        self._n_rows = max(0, (len(self._stream) - 1) // self.seq_len)
        # Rows of one document would otherwise sit side by side in a batch: serve the unit's
        # rows in a shuffled order (a shuffle window of one row group).
        if self.shuffle:
            self._row_order = np.random.default_rng([self.seed, self._epoch, int(self._order[self._unit]), 1]).permutation(self._n_rows)
        else:
            self._row_order = np.arange(self._n_rows)

    def _advance_unit(self) -> bool:
        """Move to the next unit, carrying the tail of this one. False at the end (no loop)."""
        self._unit_leftover = self._stream[self._n_rows * self.seq_len:].copy()
        self._stream, self._row_offset = None, 0
        self._unit += 1
        if self._unit >= len(self.units):
            if not self.loop:
                self._unit -= 1
                return False
            self._epoch += 1
            self._unit = 0
            self._order = self._unit_order(self._epoch)
        return True

    def next_rows(self, n_global: int) -> np.ndarray:
        """The next ``n_global`` rows of the global stream; returns this rank's share of them."""
        mine: list[np.ndarray] = []
        taken = 0
        while taken < n_global:
            if self._stream is None:
                self._load_unit()
            avail = self._n_rows - self._row_offset
            if avail <= 0:
                if not self._advance_unit():
                    raise StopIteration
                continue
            k = min(avail, n_global - taken)
            for j in range(k):
                g = self._rows_served + taken + j  # global row number
                if g % self.world_size == self.rank:
                    s = int(self._row_order[self._row_offset + j]) * self.seq_len
                    mine.append(self._stream[s:s + self.seq_len + 1])
            taken += k
            self._row_offset += k
        self._rows_served += n_global
        return np.stack(mine) if mine else np.empty((0, self.seq_len + 1), dtype=np.uint32)

    def next_batch(self) -> dict[str, torch.Tensor]:
        rows = torch.from_numpy(self.next_rows(self.micro_batch * self.world_size).astype(np.int64))
        return {"input_ids": rows[:, :-1].contiguous(), "labels": rows[:, 1:].contiguous()}

    def __iter__(self):
        while True:
            try:
                yield self.next_batch()
            except StopIteration:
                return


