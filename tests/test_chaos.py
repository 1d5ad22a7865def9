"""Seeded chaos: real `python -m pipelines run` processes, real SIGKILLs, outputs compared byte for byte.

Black box: the test sees only what a user sees (the command line, its log with the stages'
progress bars, the processes of its Ray instance in /proc, the files of the run folder).

For every CPU stage (import, extract, dedup, filter, remix, train-tokenizer, tokenize, SFT and
DPO data preparation) it
1. SIGKILLs a Ray worker in the middle of a task of the stage: a worker of this run whose title
   is ``ray::<task>`` (Ray sets ``ray::IDLE`` between tasks) while the stage's progress bar for
   that phase is on screen. Ray retries the task on a new worker. Dedup gets one kill in each of
   its phases (dumps, signatures, candidates, each components step, labels, ...);
2. SIGKILLs the pipeline process itself in the middle of the stage (the stage has not written its
   ``stats.json``), reaps what is left of its Ray instance, and runs the same command again, which
   must skip the finished stages and resume this one.
The phases come from the undisturbed reference run's own progress bars; which phase, which busy
worker and how long after the phase starts come from ``random.Random(CHAOS_SEED)`` (the seed is
printed; set ``CHAOS_SEED`` to vary it). At the end every curation output (``test_pipeline.digests``)
and the SFT/DPO prepared data (token shards, pairs, reference log-probabilities) must equal the
undisturbed run's byte for byte. The counts are printed (``pytest -s``):
``chaos seed S: N kills survived (W workers, D pipeline), 0 differences``.

The config is test_pipeline's small one with one more imported file, a copy of a CCNet file
already in the run (real data crawled twice), so that dedup finds duplicates and runs its
components rounds; eval and generate are left out.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import test_pipeline as tp
from conftest import SAMPLE

STAGES = [*tp.CURATION_STAGES, "pretrain", "sft", "dpo"]
# Stages whose work is Ray tasks on CPUs (pretrain is training: tests/test_train.py kills it).
CPU_STAGES = ["import", "extract", "dedup", "filter", "remix", "train-tokenizer", "tokenize", "sft", "dpo"]
STAGE_DIRS = {**tp.STAGE_DIRS, "pretrain": "pretrain", "sft": "sft", "dpo": "dpo"}
# SFT/DPO prepared data, compared beside test_pipeline's curation outputs.
PREPARED = ("sft/data", "dpo/pairs", "dpo/reference")
# Processes of a Ray instance titled ray::<name> that are not task workers.
NOT_TASKS = {"IDLE", "DashboardAgent", "RuntimeEnvAgent"}
# A progress bar of Ray tasks (runtime.run_tasks counts "task"s); the trainer's bar counts "step"s.
BAR = re.compile(r"^(?P<desc>[^\r\n]+?): +\d+%\|.*(?:task/s|s/task)")
STAGE_LINE = re.compile(r"^run: ===== (?P<stage>[\w-]+) =====$")


def chaos_seed() -> int:
    return int(os.environ.get("CHAOS_SEED", "16"))


def chaos_config(out: Path, again: Path) -> dict:
    cfg = tp.small_config(out, stages=STAGES)
    cfg["import_jsonl"]["inputs"].append(str(again))
    # DPO's reference log-probs (compared) come from the SFT weights, which come from pretrain's,
    # so they need training bit for bit the same in every process: with several torch threads that
    # rests on training.parallelize.start_cpu_threads (its own test is in test_train); with one
    # thread (as in test_same_behaviour) on nothing.
    for stage in ("pretrain", "sft", "dpo"):
        cfg[stage].setdefault("config", {})["cpu_threads"] = 1
    return cfg


def compared(run: Path) -> dict[str, str]:
    """sha256 of every compared file: the curation outputs and the SFT/DPO prepared data."""
    out = tp.digests(run)
    for part in PREPARED:
        for f in sorted((run / part).rglob("*.parquet")):
            if not f.name.startswith("."):
                out[str(f.relative_to(run))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def differences(mine: dict[str, str], ref: dict[str, str]) -> list[str]:
    return sorted(k for k in set(mine) | set(ref) if mine.get(k) != ref.get(k))


# ---- reading the run from outside ----

def log_events(text: str, stage: str | None = None) -> list[tuple[str, str]]:
    """(stage, phase) in the order the log shows them: a stage's start line, then the
    description of each of its progress bars (the phase); a stage without bars is (stage, "").
    ``stage``: the stage a log excerpt starts in."""
    events: list[tuple[str, str]] = []
    for line in re.split(r"[\r\n]", text):
        m = STAGE_LINE.match(line)
        if m:
            stage = m["stage"]
            events.append((stage, ""))
            continue
        m = BAR.match(line)
        if m and stage and (not events or (stage, m["desc"]) != events[-1]):
            events.append((stage, m["desc"]))
    return events


def phases_of(text: str) -> dict[str, list[str]]:
    """Each stage's phases (its progress bars: ``extract``, ``dedup: signatures``, ...), in
    order, from a run's log."""
    out: dict[str, list[str]] = {}
    for stage, phase in log_events(text):
        out.setdefault(stage, [])
        # the stage's own bars of Ray tasks (not the trainer's bar: it counts steps)
        if (phase == stage or phase.startswith(stage + ":")) and phase not in out[stage]:
            out[stage].append(phase)
    return out


class Watch:
    """One running pipeline, seen from outside: its log and its Ray task workers."""

    def __init__(self, proc: subprocess.Popen, log: Path, phases: dict[str, list[str]], deadline: float):
        self.proc, self.log, self.phases, self.deadline = proc, log, phases, deadline
        self.raw, self.partial, self.read, self.events = b"", b"", 0, []
        self._workers, self._scanned, self._raylet = [], 0.0, None
        self.busy_seconds: dict[tuple[str, str], float] = {}

    def now(self) -> tuple[str | None, str | None]:
        """The stage and phase on screen now (the last ones the log shows)."""
        with open(self.log, "rb") as f:
            f.seek(self.read)
            more = f.read()
        if more:  # parse only the new text (the log of a stage grows with every bar update)
            self.read += len(more)
            self.raw += more
            data = self.partial + more
            cut = max(data.rfind(b"\r"), data.rfind(b"\n"))
            tail = data[cut + 1:].decode(errors="replace")
            # tqdm draws a bar as "\r<bar>" with no end: a bar after the last one is a line too
            self.partial = b"" if BAR.match(tail) else data[cut + 1:]
            done = data if not self.partial else data[:cut + 1]
            for ev in log_events(done.decode(errors="replace"), self.events[-1][0] if self.events else None):
                if not self.events or ev != self.events[-1]:
                    self.events.append(ev)
        return self.events[-1] if self.events else (None, None)

    def wait_for(self, stage: str, phase: str) -> bool:
        """Wait until ``phase`` of ``stage`` is on screen: True; False once the run is past it."""
        order = {s: i for i, s in enumerate(STAGES)}
        while time.time() < self.deadline:
            now_stage, now_phase = self.now()
            if (now_stage, now_phase) == (stage, phase):
                return True
            if now_stage is not None and (order[now_stage] > order[stage] or now_stage == stage and now_phase
                                          and self.phases[stage].index(now_phase) > self.phases[stage].index(phase)):
                return False
            if self.proc.poll() is not None:
                raise AssertionError(f"the pipeline exited ({self.proc.returncode}) before {stage}: {phase}\n"
                                     + self.raw.decode(errors="replace")[-3000:])
            time.sleep(0.001)
        raise AssertionError(f"timed out waiting for {stage}: {phase}")

    def busy(self) -> list[tuple[int, str]]:
        """(pid, task) of this run's Ray workers executing a task right now. Workers are children
        of the run's raylet: its /proc children list is read on every call (a killed worker's
        replacement is seen at once), the whole process table only to find the raylet."""
        found = []
        for pid in self._worker_pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read().split(b"\0")[0].decode(errors="replace").split(" ")[0]
            except OSError:
                continue
            if title.startswith("ray::") and title[5:] not in NOT_TASKS:
                found.append((pid, title[5:]))
        return found

    def _worker_pids(self) -> list[int]:
        if self._raylet:
            try:
                with open(f"/proc/{self._raylet}/task/{self._raylet}/children") as f:
                    return [int(x) for x in f.read().split()]
            except OSError:  # no such raylet any more, or a kernel without the children list
                self._raylet = None
        if time.monotonic() - self._scanned > 0.05:
            table = tp.proc_table()
            mine = {pid: title for pid, (_, sid, title) in table.items() if sid == self.proc.pid}
            raylets = [pid for pid, title in mine.items() if title.endswith("/raylet")]
            if raylets and os.path.exists(f"/proc/{raylets[0]}/task/{raylets[0]}/children"):
                self._raylet = raylets[0]
            self._workers = sorted(pid for pid, title in mine.items() if title.startswith("ray::"))
            self._scanned = time.monotonic()
        return self._workers


@dataclass
class Tally:
    seed: int
    worker_kills: list[tuple[str, str, str]] = field(default_factory=list)  # (stage, phase, task)
    driver_kills: list[tuple[str, str]] = field(default_factory=list)  # (stage, phase)
    missed: list[tuple[str, str]] = field(default_factory=list)  # worker kills planned whose phase passed first
    launches: int = 0

    def line(self, diffs: int) -> str:
        return (f"chaos seed {self.seed}: {len(self.worker_kills) + len(self.driver_kills)} kills survived "
                f"({len(self.worker_kills)} Ray workers mid-task, {len(self.driver_kills)} pipeline processes mid-stage, "
                f"{self.launches} launches), {diffs} differences; planned worker kills whose phase ended first: {len(self.missed)}")


def plan(phases: dict[str, list[str]], rng: random.Random, per_phase: int) -> list[tuple[str, str, str]]:
    """The chaos, in run order: ("worker", stage, phase) and ("driver", stage, phase) events.
    Dedup gets a worker kill in each of its phases (every stage does with ``per_phase`` kills per
    phase), another stage one in a phase the generator picks; each stage one pipeline kill at a
    phase the generator picks. Worker kills up to that phase come before it, the later ones in
    the resumed run."""
    events = []
    for stage in CPU_STAGES:
        ps = phases.get(stage) or []
        assert ps, f"the reference run shows no progress bar for {stage}: {phases}"
        if per_phase or stage == "dedup":
            kills = [p for p in ps for _ in range(max(1, per_phase))]
        else:
            kills = [rng.choice(ps)]
        driver_at = rng.randrange(len(ps))
        events += [("worker", stage, p) for p in kills if ps.index(p) <= driver_at]
        events.append(("driver", stage, ps[driver_at]))
        events += [("worker", stage, p) for p in kills if ps.index(p) > driver_at]
    return events


def chaos_run(cfg_path: Path, out: Path, logs: Path, events: list[tuple[str, str, str]], phases: dict[str, list[str]],
              busy: dict[tuple[str, str], float], rng: random.Random, tally: Tally, timeout: float = 900) -> str:
    """Run the pipeline to the end through the planned kills, re-running the same command after
    each pipeline kill; returns the last launch's log."""
    deadline = time.time() + timeout
    i = 0
    while True:
        tally.launches += 1
        log = logs / f"launch-{tally.launches}.txt"
        p = start(cfg_path, log)
        w = Watch(p, log, phases, deadline)
        w.busy_seconds = busy
        killed = False
        try:
            while i < len(events) and not killed:
                kind, stage, phase = events[i]
                i += 1
                if kind == "worker":
                    if not _kill_worker(w, stage, phase, rng, tally):
                        tally.missed.append((stage, phase))
                        print(f"  missed {phase!r}: its tasks ended before a worker was seen busy", flush=True)
                    continue
                killed = _kill_pipeline(w, stage, phase, rng)
                assert killed, f"{stage} ended before a pipeline kill at {phase!r} or later landed"
                assert not (out / STAGE_DIRS[stage] / "stats.json").exists(), f"{stage} finished before the pipeline was killed at {killed!r}"
                tally.driver_kills.append((stage, killed))
                print(f"  killed the pipeline in {killed!r} (launch {tally.launches})", flush=True)
            if not killed:
                p.wait(max(1, deadline - time.time()))
                text = log.read_text(errors="replace")
                assert p.returncode == 0, text[-4000:]
                return text
        finally:
            tp.kill_group(p)  # after a pipeline kill: what is left of its Ray instance
        assert p.returncode == -signal.SIGKILL, log.read_text(errors="replace")[-3000:]


def _kill_worker(w: "Watch", stage: str, phase: str, rng: random.Random, tally: Tally) -> bool:
    """SIGKILL one of the run's workers busy while ``phase`` of ``stage`` is on screen: the
    generator picks when (a share of how long the phase kept workers busy in the reference run,
    counted from the first busy worker seen; at the next one seen if those finish first) and
    which of the busy workers. False when the phase ended first."""
    delay = rng.uniform(0, 0.5) * w.busy_seconds.get((stage, phase), 0.0)
    if not w.wait_for(stage, phase):
        return False
    first = None
    while w.now() == (stage, phase):
        busy = w.busy()
        if busy:
            first = first or time.monotonic()
            if time.monotonic() - first >= delay:
                pid, task = busy[rng.randrange(len(busy))]
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                tally.worker_kills.append((stage, phase, task))
                print(f"  killed a Ray worker running {task} in {phase!r}", flush=True)
                return True
        elif first is not None:
            delay = 0.0  # the tasks seen have finished: the next one seen
        time.sleep(0.0005)
    return False


def start(cfg_path: Path, log: Path) -> subprocess.Popen:
    """test_pipeline's start, the pipeline (and the Ray instance it starts) at a lower CPU priority
    than this test, so that the test sees tasks of a few milliseconds on a busy machine."""
    p = tp.start(cfg_path, log)
    os.setpriority(os.PRIO_PROCESS, p.pid, 10)
    return p


def watch_to_end(p: subprocess.Popen, log: Path, timeout: float = 600) -> dict[tuple[str, str], float]:
    """Follow an undisturbed run to its end: for each (stage, phase), the seconds between the first
    and the last moment a worker was seen busy in it."""
    w = Watch(p, log, {}, time.time() + timeout)
    seen: dict[tuple[str, str], list[float]] = {}
    while p.poll() is None and time.time() < w.deadline:
        now = w.now()
        if now[0] and w.busy():
            seen.setdefault(now, [time.monotonic()] * 2)[1] = time.monotonic()
        time.sleep(0.0005)
    p.wait(max(1, w.deadline - time.time()))
    return {k: b - a for k, (a, b) in seen.items()}


def _kill_pipeline(w: "Watch", stage: str, phase: str, rng: random.Random) -> str | None:
    """SIGKILL the pipeline process while ``phase`` (or, if that passes too quickly, a later
    phase of ``stage``) is on screen with a task in flight, or as soon as the stage's last phase
    is on screen, so the stage is unfinished; returns the phase it landed in, None when the
    stage ended first."""
    delay = rng.uniform(0, 0.5) * w.busy_seconds.get((stage, phase), 0.0)
    todo = w.phases[stage][w.phases[stage].index(phase):]
    for ph in todo:
        if not w.wait_for(stage, ph):
            continue
        while w.now() == (stage, ph):
            if w.busy() or ph == todo[-1]:
                time.sleep(delay if w.busy() else 0)
                os.kill(w.proc.pid, signal.SIGKILL)
                w.proc.wait(30)
                return ph
            time.sleep(0.0005)
    return None


# ---- the tests ----

@pytest.fixture(scope="module")
def again(tmp_path_factory) -> Path:
    """A second copy of a CCNet file the run imports: dedup removes its documents."""
    folder = tmp_path_factory.mktemp("again")
    dst = folder / "cc_en_head-0091-again.jsonl.gz"
    shutil.copyfile(SAMPLE / "text" / "cc_en_head-0091.jsonl.gz", dst)
    return dst


@pytest.fixture(scope="module")
def chaos_reference(tmp_path_factory, slot, again):
    """One undisturbed run of the chaos config: its digests, each stage's phases and how long each
    phase kept workers busy."""
    base = tmp_path_factory.mktemp("chaos-reference")
    with tp.in_slot(slot, base / "run") as out:
        log = base / "log.txt"
        p = start(tp.write_config(base / "c.yaml", chaos_config(out, again)), log)
        try:
            busy = watch_to_end(p, log)
        finally:
            tp.kill_group(p)
        text = log.read_text(errors="replace")
        assert p.returncode == 0, text[-4000:]
    return compared(base / "run"), phases_of(text), busy


slot = tp.slot  # the same run folder for every run of this module (token shards record their input's path)


def run_chaos(seed: int, per_phase: int, chaos_reference, slot, again, tmp_path) -> Tally:
    ref, phases, busy = chaos_reference
    rng = random.Random(seed)
    tally = Tally(seed)
    events = plan(phases, rng, per_phase)
    print(f"\nchaos seed {seed} (CHAOS_SEED to vary): {len(events)} planned kills over phases {phases}")
    logs = tmp_path / "logs"
    logs.mkdir()
    with tp.in_slot(slot, tmp_path / "run") as out:
        cfg = tp.write_config(tmp_path / "c.yaml", chaos_config(out, again))
        last = chaos_run(cfg, out, logs, events, phases, busy, rng, tally)
    diffs = differences(compared(tmp_path / "run"), ref)
    print(tally.line(len(diffs)))
    for k in tally.worker_kills:
        print("  worker killed:", *k)
    for k in tally.driver_kills:
        print("  pipeline killed:", *k)
    for k in tally.missed:
        print("  missed:", *k)
    assert diffs == [], f"{tally.line(len(diffs))}: {diffs}"
    assert any(k.startswith("dedup/documents") for k in ref) and any(k.startswith("dpo/reference") for k in ref)
    # every CPU stage lost a worker mid-task and its pipeline process mid-stage, and came back
    assert {s for s, _, _ in tally.worker_kills} == set(CPU_STAGES), tally
    assert [s for s, _ in tally.driver_kills] == CPU_STAGES, tally
    assert tally.launches == len(CPU_STAGES) + 1
    assert "A worker died or was killed while executing a task" in "".join(
        p.read_text(errors="replace") for p in logs.glob("*.txt")), "Ray never reported a worker dying mid-task"
    for stage in STAGES[:-1]:
        assert f"run: {stage}: complete" in last, stage  # the last launch resumed DPO; the rest was complete
    return tally


def test_chaos_a_kill_in_every_cpu_stage_changes_no_output(chaos_reference, slot, again, tmp_path):
    """Default variant: one worker kill in each CPU stage (in each phase of dedup) and one pipeline
    kill in each CPU stage, one seed."""
    run_chaos(chaos_seed(), 0, chaos_reference, slot, again, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("offset", [1, 2, 3])
def test_chaos_several_seeds_two_kills_in_every_phase(chaos_reference, slot, again, tmp_path, offset):
    """Longer variant: two worker kills in every phase of every CPU stage, three more seeds."""
    run_chaos(chaos_seed() + offset, 2, chaos_reference, slot, again, tmp_path)
