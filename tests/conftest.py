"""Shared test fixtures: paths to the real data, and one Ray instance for the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
# The project's shared real data, beside the checkout (and beside CI's clone).
SHARED = REPO.parent / "shared" / "data"


def shared(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test where that folder is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present")
    return p


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for every test that needs one (ray.init costs ~10 s here)."""
    import ray

    from pipelines.runtime import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op torch thread per test process: the suite shares two cores, and more threads
    made tiny-model steps 5-12x slower here (oversubscription)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def s3_server():
    """One S3-compatible server (moto's, tests/s3server.py) on a free loopback port for the session,
    stopped at the end. Use the ``s3`` fixture in a test: it points the AWS variables at it."""
    from s3server import S3Server

    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The session's S3 server, reachable for this test through the standard AWS environment
    variables only (AWS_ENDPOINT_URL[_S3], AWS_ACCESS_KEY_ID, ...), as on a cluster."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def bucket(s3) -> str:
    """A new empty bucket for this test: ``s3://test-<random>``."""
    import uuid

    return s3.create_bucket(f"test-{uuid.uuid4().hex[:12]}")
