"""Checkpoints load as weights only: a crafted one cannot run code."""

from __future__ import annotations

import os

import pytest
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from training.checkpoint import _WeightsOnlyLoadPlanner


class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_crafted_checkpoint_item_is_refused(tmp_path):
    marker = str(tmp_path / "code-ran")
    dcp.save({"step": _RunsCode(marker)}, checkpoint_id=str(tmp_path / "ckpt"))
    with pytest.raises(CheckpointException) as refused:  # DCP's wrapper of the per-rank error
        dcp.load({"step": 0}, checkpoint_id=str(tmp_path / "ckpt"), planner=_WeightsOnlyLoadPlanner())
    assert "Weights only load failed" in str(refused.value) + "".join(map(str, getattr(refused.value, "failures", {}).values()))
    assert not os.path.exists(marker)
    # The same checkpoint through DCP's default planner runs the code (then fails on its result).
    try:
        dcp.load({"step": 0}, checkpoint_id=str(tmp_path / "ckpt"))
    except CheckpointException:  # what matters is that the code ran
        pass
    assert os.path.exists(marker)


def test_plain_values_still_load(tmp_path):
    dcp.save({"step": 7, "groups": [{"lr": 0.1}]}, checkpoint_id=str(tmp_path / "ckpt"))
    state = {"step": 0, "groups": [{"lr": 0.0}]}
    dcp.load(state, checkpoint_id=str(tmp_path / "ckpt"), planner=_WeightsOnlyLoadPlanner())
    assert state["step"] == 7 and state["groups"][0]["lr"] == 0.1
