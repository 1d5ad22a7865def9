"""Submitting a stage to a real Ray cluster with `ray job submit`, as a cluster user does."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from conftest import REPO, SAMPLE
from raycluster import RayCluster

pytestmark = pytest.mark.cluster


def test_extract_job_submitted_to_a_started_cluster(tmp_path):
    out = tmp_path / "extracted"
    with RayCluster(head_cpus=2) as cluster:
        result = cluster.submit(
            "python", "-m", "pipelines", "extract",
            "--input", str(SAMPLE / "warc" / "cc-main-2020-34-sample.warc.gz"), str(SAMPLE / "warc" / "wget-2024-english-0.warc.gz"),
            "--output", str(out), cwd=str(REPO),
        )
        assert result.returncode == 0, (result.stdout[-3000:], [l for l in result.stderr.splitlines() if "Ignoring upload" not in l][-30:])
    assert "succeeded" in (result.stdout + result.stderr).lower()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["output"] == 16 + 22 and stats["input"] == stats["output"] + sum(stats["dropped"].values())
    docs = pq.read_table(out / "data" / "cc-main-2020-34-sample.parquet").to_pylist()
    assert {d["dump"] for d in docs} == {"CC-MAIN-2020-34"} and len(docs) == 16
