"""Unwritable output: a clear error naming the path, and nothing half-written left looking complete.

The machine's tests run as root, which ignores folder permissions; the pipeline process is started
with the capabilities that let root do so (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER)
dropped from its bounding set (`setpriv`), so a 0o555 folder is read-only to it as to any user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, SAMPLE

SETPRIV = shutil.which("setpriv")
pytestmark = pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) not installed")


def _run_without_override(cfg_path, timeout=240) -> subprocess.CompletedProcess:
    cmd = [SETPRIV, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search,-fowner",
           sys.executable, "-m", "pipelines", "run", "--config", str(cfg_path)]
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _looks_complete(folder) -> list[str]:
    """Files a re-run would take for finished work: stats.json, or a final (non-temporary) shard."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and (p.name == "stats.json" or (p.suffix == ".parquet" and not p.name.startswith(".")))]


def test_read_only_run_folder_fails_before_any_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"output": str(ro / "run"), "extract": {"inputs": [str(SAMPLE / "warc")]}}))
    ro.chmod(0o555)
    try:
        r = _run_without_override(cfg)
    finally:
        ro.chmod(0o755)
    assert r.returncode == 2, r.stderr[-2000:]
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("run:")][-1]
    assert str(ro / "run") in line and "permission denied" in line and "Traceback" not in r.stderr
    assert not any(ro.rglob("*"))


def test_read_only_stage_folder_stops_the_run_naming_it(tmp_path):
    """The run folder is writable but the first stage's output folder is not: its Ray tasks fail,
    the stage cannot write its stats, the run stops with the path in one line, later stages never
    start, and no file that marks work as done appears."""
    run = tmp_path / "run"
    (run / "imported").mkdir(parents=True)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "output": str(run), "num_cpus": 1, "stages": ["import", "extract"],
        "import_jsonl": {"inputs": [str(SAMPLE / "text" / "cc_en_head-0091.jsonl.gz")]},
        "extract": {"inputs": [str(SAMPLE / "warc" / "cc-main-2020-34-sample.warc.gz")]},
    }))
    (run / "imported").chmod(0o555)
    try:
        r = _run_without_override(cfg)
    finally:
        (run / "imported").chmod(0o755)
    assert r.returncode == 1, r.stderr[-3000:]
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("run: import failed")]
    assert line and str(run / "imported") in line[0] and "permission denied" in line[0], r.stderr[-3000:]
    assert "run: ===== extract" not in r.stderr
    assert _looks_complete(run) == []
    assert not (run / "_run" / "import.json").exists()
