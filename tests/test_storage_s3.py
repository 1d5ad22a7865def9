"""storage.io against a real S3-compatible server on loopback: outputs go straight to their final
object (no temporary name, no copy pretending to be a rename) and are complete or absent."""

from __future__ import annotations

import pyarrow as pa
import pytest

from storage import io


def test_writes_go_straight_to_their_names_and_read_back(bucket, s3, tmp_path):
    name = bucket.removeprefix("s3://")
    table = pa.table({"id": ["a", "b"], "n": [1, 2]})
    io.write_parquet(table, f"{bucket}/x/part-0.parquet")
    io.write_json({"k": 1}, f"{bucket}/x/stats.json")
    with io.ShardWriter(f"{bucket}/x/part-1.parquet", table.schema, row_group_size=1) as w:
        for row in table.to_pylist():
            w.add(row)
    assert s3.keys(name) == ["x/part-0.parquet", "x/part-1.parquet", "x/stats.json"]  # nothing else, ever
    assert io.read_parquet(f"{bucket}/x/part-1.parquet").equals(table)
    assert io.read_json(f"{bucket}/x/stats.json") == {"k": 1}
    assert io.listdir(f"{bucket}/x") == ["part-0.parquet", "part-1.parquet", "stats.json"]
    assert io.file_sizes(f"{bucket}/x")["stats.json"] == len(b'{\n  "k": 1\n}\n')
    # The same table written locally and to the bucket: byte-identical files.
    io.write_parquet(table, str(tmp_path / "part-0.parquet"))
    with io.open_input(f"{bucket}/x/part-0.parquet") as f:
        assert f.read() == (tmp_path / "part-0.parquet").read_bytes()
    assert io.list_shards(f"{bucket}/x") == [f"{bucket}/x/part-0.parquet", f"{bucket}/x/part-1.parquet"]
    io.remove_tree(f"{bucket}/x")
    assert s3.keys(name) == []


def test_a_failed_shard_leaves_no_object(bucket, s3):
    name = bucket.removeprefix("s3://")
    schema = pa.schema([("n", pa.int64())])
    with pytest.raises(RuntimeError):
        with io.ShardWriter(f"{bucket}/part.parquet", schema, row_group_size=2) as w:
            for i in range(5):
                w.add({"n": i})  # two row groups already uploaded into the open upload
            raise RuntimeError("the task dies mid-shard")
    assert s3.keys(name) == []
    assert not io.exists(f"{bucket}/part.parquet")


def test_append_log_on_an_object_store_keeps_every_line(bucket):
    path = f"{bucket}/run/log.jsonl"
    log = io.AppendLog(path, min_interval_s=3600)
    log.write('{"step": 1}')
    log.write('{"step": 2}')
    log.flush()
    log.close()
    again = io.AppendLog(path)  # a resumed run keeps the earlier lines
    again.write('{"step": 3}')
    again.close()
    with io.open_input(path) as f:
        assert f.read().decode().splitlines() == ['{"step": 1}', '{"step": 2}', '{"step": 3}']


def test_dedup_hand_off_files_round_trip_through_a_bucket(bucket, s3):
    """Dedup's routed hand-off files are pyarrow Buffers written with write_bytes: they reach the
    bucket as one object and each destination reads back its own rows."""
    import numpy as np

    from curation.dedup import layout

    table = pa.table({"k": np.arange(10, dtype=np.int64), "v": np.arange(10, 20, dtype=np.int64)})
    dest = np.array([2, 0, 1, 2, 0, 0, 1, 2, 2, 0])
    layout.write_routed(table, dest, 3, f"{bucket}/work/adj-00000.arrow")
    assert s3.keys(bucket.removeprefix("s3://")) == ["work/adj-00000.arrow"]
    for d in range(3):
        got = layout.read_routed([f"{bucket}/work/adj-00000.arrow"], d, table.schema)
        assert got.column("k").to_pylist() == [int(i) for i in np.flatnonzero(dest == d)]
