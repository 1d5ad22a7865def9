"""`python -m pipelines run`: the whole pipeline as a real process, undisturbed, killed part-way and
resumed, with the outputs compared byte for byte.

The config is a small one (2 real WARC files and 20 real CCNet documents, a 600-token vocabulary,
a few training steps); the full demo runs behind ``-m slow``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, SAMPLE

# Curation outputs compared byte for byte between runs (stats and timings differ by design).
COMPARED = ("imported", "extracted", "dedup/documents", "dedup/duplicates.parquet", "filtered", "remix", "tokenizer/tokenizer.json", "tokens")
CURATION_STAGES = ["import", "extract", "dedup", "filter", "remix", "train-tokenizer", "tokenize"]
STAGE_DIRS = {"import": "imported", "extract": "extracted", "dedup": "dedup", "filter": "filtered", "remix": "remix",
              "train-tokenizer": "tokenizer", "tokenize": "tokens"}


def small_config(out: Path, stages: list[str] | None = None) -> dict:
    return {
        "output": str(out),
        "stages": stages or [],
        "num_cpus": 2,
        "import_jsonl": {"inputs": [str(SAMPLE / "text" / "cc_en_head-0091.jsonl.gz"), str(SAMPLE / "text" / "cc_en_head-0174.jsonl.gz")]},
        "extract": {"inputs": [str(SAMPLE / "warc" / "cc-main-2020-34-sample.warc.gz"), str(SAMPLE / "warc" / "wget-2024-english-0.warc.gz")]},
        "filter": {"config": {"blocklist": {"path": "data/blocklist.example.txt"}}},
        "remix": {"config": {"shard_target_docs": 8}},
        "tokenizer": {"config": {"vocab_size": 600}},
        "pretrain": {"launcher": "inline", "config": {"model": "tiny", "seq_len": 64, "micro_batch": 4, "batch_tokens": 512, "lr": 3e-3,
                                                      "train_tokens": 5120, "warmup_steps": 2, "eval_every": 5, "checkpoint_every": 5}},
        "sft": {"launcher": "inline", "data": [str(SAMPLE / "sft" / "self-instruct-seed-tasks.jsonl")], "max_records": 60,
                "config": {"epochs": 1, "lr": 1e-3, "seq_len": 256, "batch_rows": 8}},
        "dpo": {"launcher": "inline", "data": [str(SAMPLE / "preference" / "hh-rlhf-harmless-base-test.jsonl.gz")], "max_records": 40,
                "config": {"epochs": 1, "lr": 1e-4, "batch_pairs": 8}},
        "eval": {"limit": 4, "max_new_tokens": 16},
        "generate": {"max_new_tokens": 8},
    }


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def pipeline_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines", "run", "--config", str(config)]


def env() -> dict:
    e = dict(os.environ, PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    e.pop("RAY_ADDRESS", None)
    return e


def start(config: Path, log: Path) -> subprocess.Popen:
    """The pipeline in its own process group (its embedded Ray instance is in it too)."""
    return subprocess.Popen(pipeline_cmd(config), cwd=REPO, env=env(), stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def run_to_end(config: Path, log: Path, timeout: float = 400) -> str:
    p = start(config, log)
    try:
        p.wait(timeout)
    finally:
        kill_group(p)
    text = log.read_text(errors="replace")
    assert p.returncode == 0, text[-4000:]
    return text


def kill_group(p: subprocess.Popen) -> None:
    """SIGKILL the pipeline's process group and anything else in its session (Ray daemons)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid, (_, sid, _) in proc_table().items():
        if sid == p.pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        pass


def digests(run: Path) -> dict[str, str]:
    """sha256 of every compared output file, by path relative to the run folder."""
    out = {}
    for part in COMPARED:
        p = run / part
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".parquet", ".json") and not f.name.startswith("."))
        for f in files:
            if f.suffix == ".json" and f.name != "tokenizer.json":
                continue
            out[str(f.relative_to(run))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def mtimes(run: Path, parts: list[str]) -> dict[str, int]:
    return {str(f.relative_to(run)): f.stat().st_mtime_ns for part in parts for f in sorted((run / part).rglob("*")) if f.is_file()}


def wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll ``predicate`` every ``interval`` s until it holds; fails when ``proc`` (the pipeline or
    a submitted job) ends first, or after ``timeout``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the process ended ({proc.returncode}) before {what}")
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def slot(tmp_path_factory):
    """The one run folder every run of this module writes into (then moved aside): the tokenize
    stage records its input's absolute path inside each token shard, so outputs of runs are
    comparable byte for byte only when they ran at the same path."""
    return tmp_path_factory.mktemp("slot") / "run"


@contextlib.contextmanager
def in_slot(slot: Path, final: Path):
    shutil.rmtree(slot, ignore_errors=True)
    try:
        yield slot
    finally:
        if slot.exists():
            shutil.move(str(slot), str(final))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, slot):
    """One undisturbed run of the small config, curation and training to the final answer."""
    base = tmp_path_factory.mktemp("reference")
    with in_slot(slot, base / "run") as out:
        log = run_to_end(write_config(base / "small.yaml", small_config(out)), base / "log.txt")
    return base / "run", log


def test_undisturbed_run_ends_with_an_answer_and_a_report(reference):
    out, log = reference
    for stage in CURATION_STAGES:
        stats = json.loads((out / STAGE_DIRS[stage] / "stats.json").read_text())
        assert stats["input"] == stats["output"] + sum(stats["dropped"].values()), stage
    assert json.loads((out / "extracted" / "stats.json").read_text())["output"] == 16 + 22
    assert json.loads((out / "imported" / "stats.json").read_text())["input"] == 20
    answer = json.loads((out / "answer.json").read_text())
    assert answer["model"].endswith("dpo") and isinstance(answer["answer"], str)
    assert "answer:" in log
    rep = json.loads((out / "report.json").read_text())
    by_stage = {r["stage"]: r for r in rep["stages"]}
    assert all(by_stage[s]["complete"] for s in [*CURATION_STAGES, "pretrain", "sft", "dpo"])
    assert by_stage["extract"]["documents_out"] == 38 and by_stage["extract"]["seconds"] > 0
    assert by_stage["dedup"]["documents_in"] == 38 + 20
    # the report's sections come from the stages' own files
    filt = json.loads((out / "filtered" / "stats.json").read_text())
    assert rep["filter"]["dropped"] == filt["dropped"]
    assert rep["mixture"]["documents_after"] == json.loads((out / "remix" / "manifest.json").read_text())["documents_after"]
    assert rep["dedup"] == json.loads((out / "dedup" / "dedup-stats" / "report.json").read_text())
    assert 1.5 < rep["tokenizer"]["bytes_per_token"] < 8
    for run in ("pretrain", "sft", "dpo"):
        assert rep["training"][run]["loss"], run
    # GSM8K after each training stage; a model this small scores about zero, and the report says so
    gsm8k = rep["benchmark"]["gsm8k"]
    assert list(gsm8k) == ["pretrain", "sft", "dpo"] and all(g["scored"] == 4 and g["accuracy"] is not None for g in gsm8k.values())
    assert gsm8k["dpo"] == {**json.loads((out / "eval" / "dpo" / "stats.json").read_text())["gsm8k"], "failed_inputs": {}}
    assert by_stage["eval"]["documents_in"] == 3 * 1319 and by_stage["eval"]["documents_out"] == 12
    # decontamination ran in the filter and in SFT/DPO preparation, against GSM8K test
    assert rep["decontamination"]["filter"]["eval_sets"]["gsm8k-test"]["records"] == 1319
    assert set(rep["decontamination"]) == {"filter", "sft", "dpo"} and all(d["enabled"] for d in rep["decontamination"].values())
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html and "http://" not in html.split("<h2>Artifacts")[0].split("<h2>Deduplication")[0]
    assert set(rep["plots"]) >= {"loss", "documents"}
    assert "Benchmark: GSM8K test" in html and ("about zero" in html) == all(g["accuracy"] < 0.02 for g in gsm8k.values())
    assert "Decontamination" in html and "Rehydration by duplicate-cluster size" in html


def test_every_stage_output_loads_with_datasets_duckdb_and_polars(reference, tmp_path, monkeypatch):
    """Each stage's data folder holds nothing but its shards (stats, signals, manifests beside
    it): HF datasets (the folder, the stage folder through its card, and data_files), duckdb and
    polars read every one, empty shards included; (id, epoch) is a unique key of the training text
    and of the token shards."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets
    import duckdb
    import polars as pl

    def sql(query: str) -> tuple:
        return duckdb.sql(query).fetchall()[0]

    out, _ = reference
    data = {"imported": "imported/data", "extracted": "extracted/data", "dedup": "dedup/documents", "filtered": "filtered/data",
            "remix": "remix/data", "tokens": "tokens/data", "sft": "sft/data", "dpo": "dpo/pairs", "eval": "eval/dpo/data"}
    for stage, rel in data.items():
        folder = out / rel
        files = sorted(folder.rglob("*"))
        assert files and all(f.suffix == ".parquet" for f in files if f.is_file()), (stage, [f.name for f in files])
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files if f.is_file())
        kw = {"cache_dir": str(tmp_path / "hf")}
        # (all splits: HF names a split after a file name, e.g. DPO's "hh-rlhf-harmless-base-test" pairs are "test")
        assert sum(datasets.load_dataset(str(folder), **kw).num_rows.values()) == rows, stage
        assert datasets.load_dataset("parquet", data_files=str(folder / "*.parquet"), split="train", **kw).num_rows == rows, stage
        if (out / stage / "README.md").exists():  # the stage folder itself, through its dataset card
            assert datasets.load_dataset(str(out / stage), split="train", **kw).num_rows == rows, stage
        assert sql(f"select count(*) from read_parquet('{folder}/*.parquet')")[0] == rows, stage
        assert pl.read_parquet(str(folder)).height == rows, stage
    for stage in ("imported", "extracted", "filtered", "remix", "tokens"):
        assert (out / stage / "README.md").exists(), stage
    assert json.loads((out / "filtered" / "stats.json").read_text())["output"] == sql(f"select count(*) from '{out}/filtered/data/*.parquet'")[0]
    for rel in ("remix/data", "tokens/data"):
        n, keys = sql(f"select count(*), count(distinct (id, epoch)) from read_parquet('{out / rel}/*.parquet')")
        assert n == keys > 0, rel
    # remix repeats documents (epoch > 0), and the token shards keep those epochs
    assert sql(f"select max(epoch) from read_parquet('{out}/tokens/data/*.parquet')")[0] >= 1
    # A shard without rows has no row group: HF datasets reads it (it used to fail with "BatchSize must be greater than 0").
    from storage import io

    docs = pq.read_table(next((out / "filtered" / "data").glob("*.parquet")))
    io.write_parquet(docs.slice(0, 0), str(tmp_path / "some" / "a.parquet"))
    io.write_parquet(docs.slice(0, 1), str(tmp_path / "some" / "b.parquet"))
    assert pq.ParquetFile(tmp_path / "some" / "a.parquet").metadata.num_row_groups == 0
    assert datasets.load_dataset(str(tmp_path / "some"), split="train", cache_dir=str(tmp_path / "hf")).num_rows == 1


def test_dry_run_of_a_finished_run_says_what_is_complete(reference, tmp_path, capsys):
    """`--dry-run` on the finished reference run: every stage complete, nothing to run, nothing touched."""
    from pipelines.cli import main

    out, _ = reference
    before = mtimes(out, COMPARED[:3] + ("pretrain",))
    cfg = write_config(tmp_path / "again.yaml", small_config(out))
    assert main(["run", "--config", str(cfg), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    from pipelines.pipeline_config import STAGE_ORDER

    assert plan.count("complete (skipped)") == len(STAGE_ORDER) and "would run 0 stage(s)" in plan
    assert mtimes(out, COMPARED[:3] + ("pretrain",)) == before


@pytest.mark.slow
def test_a_second_run_redoes_nothing(reference, tmp_path):
    out, _ = reference
    before = mtimes(out, COMPARED[:3] + ("pretrain", "sft", "dpo"))
    cfg = write_config(tmp_path / "again.yaml", small_config(out))
    log = run_to_end(cfg, tmp_path / "log.txt")
    for stage in [*CURATION_STAGES, "pretrain", "sft", "dpo", "generate"]:
        assert f"run: {stage}: complete" in log, stage
    assert mtimes(out, COMPARED[:3] + ("pretrain", "sft", "dpo")) == before


def test_config_errors_name_the_key(tmp_path):
    from pipelines.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("output: x\nextract: {inputz: [a]}\n")
    assert main(["run", "--config", str(bad)]) == 2
    code = tmp_path / "code.yaml"
    code.write_text("output: !!python/object/apply:os.system ['touch " + str(tmp_path / "pwned") + "']\n")
    assert main(["run", "--config", str(code)]) == 2
    assert not (tmp_path / "pwned").exists()
    stages = tmp_path / "stages.yaml"
    stages.write_text(yaml.safe_dump({"output": str(tmp_path / "o"), "stages": ["extract", "train"]}))
    assert main(["run", "--config", str(stages)]) == 2


def test_sample_configs_load():
    from pipelines import config
    from pipelines.pipeline_config import PipelineConfig

    for name in ("demo", "laptop", "cluster"):
        cfg = config.load(PipelineConfig, str(REPO / "configs" / f"{name}.yaml"))
        assert cfg.output and (cfg.extract.inputs or cfg.extract.cc_dump)
    assert config.load(PipelineConfig, str(REPO / "configs" / "cluster.yaml")).output.startswith("s3://")


def test_loading_a_run_config_does_not_import_torch():
    """The training sections' dataclasses live in training.config: a run's config (and its
    one-line errors) load in a fraction of a second, without torch."""
    code = ("import sys; from pipelines import config; from pipelines.pipeline_config import PipelineConfig; "
            f"cfg = config.load(PipelineConfig, {str(REPO / 'configs' / 'cluster.yaml')!r}); "
            "assert cfg.pretrain.config.lr > 0 and cfg.dpo.config.beta > 0; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_demo_config_end_to_end(tmp_path):
    """`make demo` (configs/demo.yaml) on the bundled data, into a temporary folder."""
    out = tmp_path / "demo"
    p = subprocess.run([*pipeline_cmd(REPO / "configs" / "demo.yaml"), "--set", f"output={out}"], cwd=REPO, env=env(),
                       capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stderr[-4000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["answer"]["answer"] is not None
    assert all(r["complete"] for r in rep["stages"])


# ---- a Ray worker killed in the middle of a task ----

def proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, process title) from /proc."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace").strip()
        except OSError:
            continue
        table[int(d)] = (int(fields[1]), int(fields[3]), title)
    return table


def workers_running(root: int, names: tuple[str, ...]) -> list[tuple[int, str]]:
    """(pid, title) of Ray workers of *this* pipeline process (its descendants or its session)
    executing one of the named tasks right now (Ray sets a worker's title to ``ray::<task>``
    while it runs the task, ``ray::IDLE`` otherwise)."""
    table = proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    mine, stack = set(), [root]
    while stack:
        pid = stack.pop()
        for c in kids.get(pid, []):
            if c not in mine:
                mine.add(c)
                stack.append(c)
    mine |= {pid for pid, (_, sid, _) in table.items() if sid == root}
    wanted = {f"ray::{n}" for n in names}
    return sorted((pid, table[pid][2]) for pid in mine if pid in table and table[pid][2].split(" ")[0] in wanted)


def kill_worker_during(proc: subprocess.Popen, names: tuple[str, ...], timeout: float) -> tuple[int, str]:
    """SIGKILL the first worker seen running one of the named tasks; returns its pid and title."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the pipeline exited before a {names} task was seen")
        found = workers_running(proc.pid, names)
        if found:
            pid, title = found[0]
            os.kill(pid, signal.SIGKILL)
            return pid, title
        time.sleep(0.01)
    raise AssertionError(f"no {names} task seen within {timeout} s")


def test_faults_worker_kills_then_pipeline_kill_then_resume(reference, slot, tmp_path):
    """Real processes, real signals, one run of the curation stages:
    1. SIGKILL the Ray worker executing an extraction task, then one executing a dedup task: Ray
       retries the task and both stages complete (exit status 0);
    2. SIGKILL the whole pipeline (driver and its Ray instance) in the middle of filtering;
    3. the re-run skips the finished stages, leaves their files untouched (mtimes), and every
       curation output is byte-identical to the undisturbed reference run."""
    ref, _ = reference
    with in_slot(slot, tmp_path / "run") as out:
        _kill_and_resume(out, tmp_path)
    assert_same_outputs(tmp_path / "run", ref)


def assert_same_outputs(out: Path, ref: Path) -> None:
    """Every curation output byte-identical to the reference's."""
    mine, theirs = digests(out), digests(ref)
    assert any(k.startswith("dedup/documents") for k in mine) and any(k.startswith("tokens/") for k in mine)
    assert sorted(mine) == sorted(theirs)
    assert sorted(k for k in mine if mine[k] != theirs[k]) == []


def _kill_and_resume(out: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "small.yaml", small_config(out, stages=CURATION_STAGES))
    p = start(cfg, tmp_path / "killed.txt")
    try:
        pid1, t1 = kill_worker_during(p, ("extract_file",), 180)
        pid2, t2 = kill_worker_during(p, ("_scan_dumps", "_signatures", "_candidates", "_write"), 180)
        wait_for(lambda: (out / "_run" / "dedup.json").exists(), p, 300, "dedup finished")
        wait_for(lambda: any((out / "filtered").glob("signals/*/*")) or (out / "_run" / "filter.json").exists(), p, 120, "filter started")
    finally:
        kill_group(p)
    log = (tmp_path / "killed.txt").read_text(errors="replace")
    assert p.returncode == -signal.SIGKILL, log[-3000:]
    assert t1.startswith("ray::extract_file") and t2.startswith("ray::_") and pid1 != pid2, (t1, t2)
    assert not _alive(pid1) and not _alive(pid2)
    # Ray saw a death mid-task and retried the task. Only one is required: a short dedup task can
    # finish between reading the worker's title and the kill, and then the worker dies idle.
    assert log.count("A worker died or was killed while executing a task") >= 1, log[-3000:]
    for stage in ("extract", "dedup"):
        assert json.loads((out / "_run" / f"{stage}.json").read_text())["rc"] == 0, stage
    assert json.loads((out / "extracted" / "stats.json").read_text())["output"] == 38
    assert not (out / "report.json").exists() and not (out / "tokens" / "stats.json").exists()

    # Stages run in order, so the complete ones are a prefix; on a quick machine the kill can land
    # after filter, in remix or the tokenizer, which changes only where the re-run starts.
    complete = [s for s in CURATION_STAGES if (out / STAGE_DIRS[s] / "stats.json").exists()]
    assert complete == CURATION_STAGES[: len(complete)] and complete[:3] == ["import", "extract", "dedup"], complete
    done = [STAGE_DIRS[s] for s in complete]
    before = mtimes(out, done)
    log = run_to_end(cfg, tmp_path / "resumed.txt")
    for stage in complete:
        assert f"run: {stage}: complete" in log
    assert f"run: ===== {CURATION_STAGES[len(complete)]} =====" in log
    assert mtimes(out, done) == before


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---- a real two-node Ray cluster, the pipeline submitted with `ray job submit` ----

@pytest.mark.cluster
def test_two_node_cluster_job_on_s3_equals_single_node(reference, s3, bucket, tmp_path):
    """The cluster config's shape at demo size. A head (`ray start --head`) and a second node
    (`ray start --address`), one CPU each and a resource of their own, both started with only the
    standard AWS variables pointing at an S3 server on loopback; the whole small pipeline submitted
    with `ray job submit`, `output: s3://...`, pre-training, SFT and DPO in Ray Train (2 CPU
    workers, gloo) and the final answer. In the middle of pre-training one Ray Train worker is
    SIGKILLed: Ray Train (FailureConfig) restarts the worker group, which resumes from the last
    complete checkpoint in the bucket.

    Checked: every stage's artifacts are in the bucket; tasks ran on both nodes; the curation
    outputs equal the single-node local reference byte for byte (token shards: the same ids; their
    metadata names the input's path); the pre-training losses and the final answer are the
    reference's."""
    from raycluster import RayCluster

    ref, _ = reference
    name = bucket.removeprefix("s3://")
    cfg = small_config(f"{bucket}/run")  # type: ignore[arg-type]
    for stage in ("pretrain", "sft", "dpo"):
        cfg[stage].update(launcher="ray", nproc=2)
    cfg["pretrain"]["config"]["checkpoint_every"] = 3  # losses do not depend on it; a checkpoint to resume from early on
    config = write_config(tmp_path / "s3.yaml", cfg)
    with _started(lambda: RayCluster(head_cpus=1, resources='{"head_node": 1}')) as cluster:
        cluster.add_node(cpus=1, resources='{"second_node": 1}')
        _wait_nodes(cluster, 2)
        job = cluster.start_job("python", "-m", "pipelines", "run", "--config", str(config), cwd=str(REPO), log=tmp_path / "job.log")
        try:
            ckpt = "run/pretrain/checkpoints/step-00000003/manifest.json"
            wait_for(lambda: ckpt in s3.keys(name, "run/pretrain/checkpoints/"), job, 400, "the first pre-training checkpoint", interval=0.05)
            killed = _kill_train_worker(cluster, job, 30)
            assert "run/pretrain/summary.json" not in s3.keys(name, "run/pretrain/"), "pre-training ended before the kill"
            job.wait(600)
        finally:
            if job.poll() is None:
                job.kill()
        log = (tmp_path / "job.log").read_text(errors="replace")
        assert job.returncode == 0, (log[-4000:], cluster.log())
    assert "resumed from s3://" in log and "step-0000000" in log, (killed, log[-3000:])
    keys = s3.keys(name, "run/")
    for stage in [*CURATION_STAGES, "pretrain", "sft", "dpo"]:
        assert f"run/{STAGE_DIRS.get(stage, stage)}/stats.json" in keys, stage
    for part in ("tokenizer/tokenizer.json", "answer.json", "report.json", "report.html", "dpo/reference/hh-rlhf-harmless-base-test.parquet"):
        assert f"run/{part}" in keys, part
    for stage in ("pretrain", "sft", "dpo"):
        assert any(k.startswith(f"run/{stage}/checkpoints/") and k.endswith("/manifest.json") for k in keys), stage
        assert f"run/{stage}/log.jsonl" in keys and f"run/{stage}/config.json" in keys, stage
        assert io_json(bucket, f"run/{stage}/config.json")["resolved"]["world_size"] == 2, stage
    assert not [k for k in keys if ".tmp" in k], "an object store has no rename: nothing is written under a temporary name"
    nodes = set()
    for stage in ("extract", "dedup", "filter", "tokenize"):
        task_nodes = io_json(bucket, f"run/_run/{stage}.json")["task_nodes"]
        assert task_nodes, (stage, "no task placement recorded")
        nodes |= {n for ns in task_nodes.values() for n in ns}
    assert len(nodes) == 2, nodes
    assert len(io_json(bucket, "run/report.json")["ray_nodes_used"]) == 2
    assert_same_curation_on_s3(s3, name, ref)
    # Pre-training with a worker killed and the group restarted: the undisturbed run's losses.
    mine, theirs = _log_losses(s3_text(bucket, "run/pretrain/log.jsonl")), _log_losses((ref / "pretrain" / "log.jsonl").read_text())
    assert sorted(mine) == sorted(theirs) == list(range(1, 11))
    for step in theirs:
        assert mine[step] == pytest.approx(theirs[step], rel=1e-5, abs=1e-5), step
    assert io_json(bucket, "run/answer.json")["answer"] == json.loads((ref / "answer.json").read_text())["answer"]


def io_json(bucket: str, key: str):
    from storage import io

    return io.read_json(f"{bucket}/{key}")


def s3_text(bucket: str, key: str) -> str:
    from storage import io

    with io.open_input(f"{bucket}/{key}") as f:
        return f.read().decode("utf-8")


def _log_losses(text: str) -> dict[int, float]:
    """step -> loss from a log.jsonl; a step logged again after a restart: the later record."""
    out = {}
    for line in text.splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["step"]] = rec["loss"]
    return out


def assert_same_curation_on_s3(s3, name: str, ref: Path) -> None:
    """The bucket's curation outputs equal the local reference's byte for byte; token shards hold
    the same ids (their Parquet metadata records the input's path, which differs)."""
    from storage import io

    theirs = digests(ref)
    mine = {}
    for key in s3.keys(name, "run/"):
        rel = key[len("run/"):]
        if key.endswith("/"):  # a "folder" marker object (pyarrow's create_dir), not an output
            continue
        base = rel.rsplit("/", 1)[-1]
        if rel in theirs or any(rel.startswith(part + "/") for part in COMPARED):
            # digests()' selection: Parquet files and the tokenizer (stats and timings differ by design)
            if not (base.endswith(".parquet") or base == "tokenizer.json") or base.startswith("."):
                continue
            with io.open_input(f"s3://{name}/{key}") as f:
                mine[rel] = hashlib.sha256(f.read()).hexdigest()
    assert sorted(mine) == sorted(theirs)
    tokens = [k for k in theirs if k.startswith("tokens/")]
    assert tokens
    assert sorted(k for k in mine if mine[k] != theirs[k] and k not in tokens) == []
    for k in tokens:
        assert io.read_parquet(f"s3://{name}/run/{k}").equals(pq.read_table(ref / k)), k


def _kill_train_worker(cluster, job: subprocess.Popen, timeout: float) -> tuple[int, str]:
    """SIGKILL one Ray Train worker of this cluster (a process titled ``ray::RayTrainWorker...``
    under one of its nodes); returns its pid and title."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = []
        for node in cluster.procs:
            found += [(pid, t) for pid, t in _descendants_titled(node.pid, "ray::RayTrainWorker")]
        if found:
            pid, title = sorted(found)[-1]
            os.kill(pid, signal.SIGKILL)
            return pid, title
        if job.poll() is not None:
            raise AssertionError("the job ended before a Ray Train worker was seen")
        time.sleep(0.02)
    raise AssertionError(f"no Ray Train worker seen within {timeout} s")


def _descendants_titled(root: int, prefix: str) -> list[tuple[int, str]]:
    table = proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    mine, stack = set(), [root]
    while stack:
        for c in kids.get(stack.pop(), []):
            if c not in mine:
                mine.add(c)
                stack.append(c)
    mine |= {pid for pid, (_, sid, _) in table.items() if sid == root}
    return [(pid, table[pid][2]) for pid in mine if pid in table and table[pid][2].startswith(prefix)]


def _started(make, tries: int = 3):
    """RayCluster, tried again when `ray start` picked a port another of its components took
    (tests/raycluster.py draws free ports one by one, so the GCS port can fall in the worker range)."""
    for attempt in range(tries):
        try:
            return make()
        except RuntimeError as e:
            if "port" not in str(e) or attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def _wait_nodes(cluster, n: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run([str(Path(sys.executable).parent / "ray"), "status", "--address", cluster.address],
                           env=cluster.env, capture_output=True, text=True)
        if r.stdout.count("node_") >= n:
            return
        time.sleep(1)
    raise AssertionError(f"only some nodes joined: {r.stdout} {cluster.log()}")
