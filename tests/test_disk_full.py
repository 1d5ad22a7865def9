"""A full disk while a shard is written: a clear error naming the output, nothing left that looks
complete. The disk is "full" through RLIMIT_FSIZE (writes past the limit fail with EFBIG), in a
child process so the limit touches nothing else."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, SAMPLE

_CHILD = r"""
import dataclasses, json, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG instead
from curation.extract import ExtractConfig
from pipelines.extract import extract_file
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
out = sys.argv[2]
stats = extract_file((sys.argv[1], out + "/doc.parquet", out + "/_stats/doc.json", dataclasses.asdict(ExtractConfig()), None, None))
print(json.dumps(stats))
"""


def _extract_with_limit(tmp_path, limit: int) -> dict:
    src = str(SAMPLE / "warc" / "wget-2024-english-0.warc.gz")
    done = subprocess.run([sys.executable, "-c", _CHILD, src, str(tmp_path), str(limit)], cwd=str(REPO),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_disk_full_names_the_output_and_leaves_nothing_complete(tmp_path):
    stats = _extract_with_limit(tmp_path, 16 * 1024)
    (error,) = stats["failed_files"].values()
    assert error.startswith(f"cannot write {tmp_path}/doc.parquet") and "too large" in error.lower()
    assert stats["output"] == 0
    # Nothing under the final names, no temporary file left behind.
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []


def test_same_file_with_room_to_write(tmp_path):
    stats = _extract_with_limit(tmp_path, 64 * 1024 * 1024)
    assert not stats["failed_files"] and stats["output"] == 22
    assert (tmp_path / "doc.parquet").exists() and (tmp_path / "_stats" / "doc.json").exists()
