"""The stage contract and its one runner (after datatrove's executor and NeMo Curator's stages).

A stage declares, per phase:

- its **units of work**: dicts with a ``name`` (unique in the phase; it names the unit's
  completion marker), the input it reads under ``path`` (named in ``failed_files`` when the unit
  fails; default: the name) and where its output goes (``out``, or keys of the stage's own);
- ``process(unit, config) -> result``, a plain function run as one Ray task per unit (the task
  carries the function's name: ``ray::extract_file``). A result is a dict, usually the unit's
  :class:`StageStats` as ``to_dict()``; a unit whose input is bad raises :class:`UnitError` with
  the message to show, any other exception is reported the same way;
- its **resources** (:class:`Resources`: CPUs, memory, retries, units in flight);
- a **key**: a digest of the settings its outputs depend on (a unit done under another key is
  done again).

:class:`Runner` owns everything else: skipping completed units (the markers
``<output>/_markers/<phase>/<name>.json``, written by the task after ``process`` returned, are
the only record of done work), naming failed inputs, merging stats (in unit order) with
``StageStats.check()``, the progress bar (:func:`pipelines.runtime.run_tasks`), the summary, the
stage's ``stats.json`` (written last: the stage is complete when it exists, :func:`complete`)
and the exit status.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from curation.stats import StageStats
from pipelines import runtime
from storage import io

MARKERS = "_markers"
STATS = "stats.json"
_FAILED = "__unit_failed__"


class UnitError(Exception):
    """A unit's input cannot be used: the message is shown as is, the stage goes on."""


@dataclass
class Resources:
    num_cpus: float = 1
    memory: int | None = None
    max_retries: int = 3
    max_in_flight: int | None = None  # None: twice the cluster's CPUs / num_cpus


def stats_path(output: str) -> str:
    return io.join(output, STATS)


def complete(output: str) -> bool:
    """A stage's output is complete when its ``stats.json`` exists (written last)."""
    return io.exists(stats_path(output))


def marker_path(output: str, phase: str, name: str) -> str:
    return io.join(output, MARKERS, phase, f"{name}.json")


def _task(process: Callable[[dict, Any], dict]) -> Callable:
    """``process`` wrapped to write its unit's marker; named like it (Ray's worker title)."""

    def run(item: tuple[dict, str | None, str | None], config: Any) -> dict:
        unit, marker, key = item
        try:
            result = process(unit, config)
        except UnitError as e:
            return {_FAILED: str(e)}
        # A unit whose stats name a failed input is not done: a re-run tries it again.
        if marker and not (isinstance(result, dict) and result.get("failed_files")):
            io.write_json({"key": key, "result": result}, marker)
        return result

    run.__name__ = run.__qualname__ = process.__name__
    run.__module__ = process.__module__
    return run


class Runner:
    """One stage's run: phases of units over Ray, then the stats, summary and exit status."""

    def __init__(self, name: str, output: str, failed: dict[str, str] | None = None, markers: bool = True):
        self.name, self.output, self.markers = name, output, markers
        self.stats = StageStats(failed_files=dict(failed or {}))
        self.skipped = 0
        self.timer = runtime.Timer().__enter__()

    def run(
        self, process: Callable[[dict, Any], dict], units: Sequence[dict], config: Any = None, *, phase: str | None = None,
        key: str | None = None, resources: Resources | None = None, merge: bool = True, required: bool = False, mark: bool = True, desc: str | None = None,
    ) -> list[Any]:
        """Run ``process`` on every unit not done yet; results in unit order.

        ``merge``: fold each result into the stage's stats. A failed unit's input is named in
        ``failed_files`` and its slot holds the :class:`runtime.TaskFailure`; with ``required``
        (a partition every later unit needs) a failure stops the stage instead. ``mark=False``:
        results that are not JSON (arrays for the driver), no markers, always run.
        """
        phase = phase or process.__name__.strip("_")
        res = resources or Resources()
        results: list[Any] = [None] * len(units)
        todo: list[int] = []
        markers = [marker_path(self.output, phase, u["name"]) if self.markers and mark else None for u in units]
        for i, m in enumerate(markers):
            done = io.read_json(m) if m and io.exists(m) else None
            if done is not None and done.get("key") == key and (not units[i].get("out") or io.exists(units[i]["out"])):
                results[i] = done["result"]
                self.skipped += 1
            else:
                todo.append(i)
        if todo:
            items = [(units[i], markers[i], key) for i in todo]
            out = runtime.run_tasks(_task(process), items, desc=desc or (f"{self.name}: {phase}" if phase != self.name else self.name),
                                    num_cpus=res.num_cpus, memory=res.memory, max_retries=res.max_retries,
                                    max_in_flight=res.max_in_flight, args=(config,))
            for i, r in zip(todo, out):
                if isinstance(r, dict) and _FAILED in r:
                    r = runtime.TaskFailure(units[i], r[_FAILED])
                results[i] = r
        failed = [(u, r) for u, r in zip(units, results) if isinstance(r, runtime.TaskFailure)]
        if required and failed:
            raise RuntimeError(f"{self.name}: {phase} failed on {failed[0][0]['name']}: {failed[0][1].error}")
        names = [u.get("path", u["name"]) for u in units]
        if merge:
            runtime.merge_results(self.stats, names, results)
        else:
            self.stats.failed_files.update({u.get("path", u["name"]): r.error for u, r in failed})
        return results

    def clear_markers(self) -> None:
        """Forget the done units (a stage whose hand-off files are gone)."""
        io.remove_tree(io.join(self.output, MARKERS))

    def finish(self, units: dict[str, float] | None = None, extra: dict[str, Any] | None = None,
               card: tuple[str, list[str]] | None = None, write_stats: bool = True) -> int:
        """Check the accounting, write ``stats.json`` (+ ``extra``) and the dataset card, print
        the summary; returns the exit status (1 when an input could not be read)."""
        self.timer.__exit__()
        self.stats.check()
        if write_stats:
            io.write_json({**self.stats.to_dict(), **(extra or {})}, stats_path(self.output))
        if card:
            io.write_dataset_card(self.output, *card)
        shown = dict(units or {})
        if self.skipped:
            shown["units skipped (done)"] = self.skipped
        runtime.print_summary(self.name, self.stats, self.timer.seconds, shown)
        return 1 if self.stats.failed_files else 0


def say(stage: str, message: str) -> None:
    print(f"{stage}: {message}", file=sys.stderr)
