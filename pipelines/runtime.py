"""Ray for every stage: connect or start, fan tasks out with a progress bar, print a summary.

Default: an embedded local Ray instance sized to the machine, listening on loopback only. With
``RAY_ADDRESS`` set (as ``ray job submit`` does for the job it runs) the same code joins that
cluster instead. Token authentication, on by default since Ray 2.52, is left on.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import ray
from tqdm.auto import tqdm

from curation.stats import StageStats


def init_ray(num_cpus: int | None = None) -> None:
    """Join ``RAY_ADDRESS`` if set, else start a local instance listening on loopback only
    (idempotent)."""
    if ray.is_initialized():
        return
    quiet = dict(log_to_driver=True, logging_level="WARNING", configure_logging=True)
    address = os.environ.get("RAY_ADDRESS")
    # Every Ray server (GCS, raylet and its object manager, workers, dashboard agent and its
    # metrics export, runtime-env agent, autoscaler and dashboard metrics) binds loopback exactly
    # when the node IP is a loopback address, and all interfaces (or the host's IP) otherwise.
    # Ray (checked against 2.60.0) has no public way to keep a loopback node IP on Linux:
    # ray.init(_node_ip_address="127.0.0.1"), `ray start --node-ip-address 127.0.0.1` and a
    # `127.0.0.1:port` address all go through services.resolve_ip_for_localhost, which swaps
    # loopback for the host's routable IP (ray-project/ray#26293; #59110 is still open, its fix
    # #59206 closed unmerged). The one switch is ray_constants.ENABLE_RAY_CLUSTER, off where Ray
    # does not support clusters (macOS, Windows), where it keeps loopback. Its environment form,
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, is read once when ray is imported and is inherited by
    # every child process, `ray start` included, so it cannot be scoped to one ray.init().
    # Hence the constant is set here around the call and restored at once: while the embedded
    # instance's head starts (no other node ever joins it), and while a second driver joins a
    # local instance at a loopback GCS address (`127.0.0.1:port`, as
    # ray.get_runtime_context().gcs_address gives it). A cluster's address is left alone.
    # tests/test_loopback.py lists the sockets of a stage's Ray processes and fails if this
    # stops working (a Ray upgrade that renames the constant).
    host = (address or "").rpartition(":")[0].strip("[]")
    keep_loopback = not address or ("://" not in address and host in ("localhost", "127.0.0.1", "::1"))
    from ray._private import ray_constants

    cluster = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = cluster and not keep_loopback
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, dashboard_host="127.0.0.1", **quiet)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster


def proc_status(key: str) -> int | None:
    """A size from ``/proc/self/status`` in bytes (``VmRSS``, ``VmHWM``: Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak RSS of this process in MB (VmHWM; elsewhere ru_maxrss). A reused Ray worker's peak
    covers every task it ran since it started (or since :func:`reset_peak_rss`)."""
    peak = proc_status("VmHWM")
    if peak is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1024 if sys.platform != "darwin" else 1)
    return round(peak / 2**20, 1)


def reset_peak_rss() -> None:
    """Start this process's VmHWM again from its current RSS (Linux >= 4.0; elsewhere nothing)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


@dataclass
class TaskFailure:
    """A task that raised after its retries; the stage names it and goes on with the rest."""

    item: Any
    error: str


def run_tasks(
    fn: Callable[..., Any],
    items: Sequence[Any],
    *,
    desc: str,
    num_cpus: float = 1,
    memory: int | None = None,
    max_retries: int = 3,
    max_in_flight: int | None = None,
    args: tuple = (),
) -> list[Any]:
    """Run ``fn(item, *args)`` as one Ray task per item; results come back in item order.

    A progress bar advances as tasks finish. A task whose worker dies is retried by Ray
    (``max_retries``); one that raises is reported as a :class:`TaskFailure` in its slot.
    """
    init_ray()
    options: dict[str, Any] = {"num_cpus": num_cpus, "max_retries": max_retries, "retry_exceptions": False}
    if memory:
        options["memory"] = memory
    remote = ray.remote(fn).options(**options)
    limit = max_in_flight or max(1, int(ray.cluster_resources().get("CPU", 1) / max(num_cpus, 1e-3)) * 2)
    shared = [ray.put(a) for a in args]
    results: list[Any] = [None] * len(items)
    pending: dict[Any, int] = {}
    next_item = 0
    with tqdm(total=len(items), desc=desc, unit="task", file=sys.stderr, dynamic_ncols=True) as bar:
        while next_item < len(items) or pending:
            while next_item < len(items) and len(pending) < limit:
                pending[remote.remote(items[next_item], *shared)] = next_item
                next_item += 1
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - reported per item, the stage goes on
                    results[i] = TaskFailure(items[i], _short_error(e))
                bar.update(1)
    return results


def merge_results(stats: StageStats, names: Sequence[str], results: Sequence[Any]) -> StageStats:
    """Fold each task's stats (a dict or StageStats) into ``stats``; a failed task is named in
    ``failed_files`` under its entry of ``names``. Returns ``stats``."""
    for name, res in zip(names, results):
        if isinstance(res, TaskFailure):
            stats.failed_files[name] = res.error
        else:
            stats.merge(res if isinstance(res, StageStats) else StageStats.from_dict(res))
    return stats


def _short_error(e: Exception) -> str:
    cause = getattr(e, "cause", None) or e
    return f"{type(cause).__name__}: {cause}".splitlines()[0][:500]


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def print_summary(stage: str, stats: StageStats, seconds: float, units: dict[str, float] | None = None) -> None:
    """The closing lines of a stage: counts, drops by reason, time and throughput."""
    out = sys.stderr
    print(f"\n== {stage}: summary ==", file=out)
    for name, value in (units or {}).items():
        print(f"  {name:<24} {value:,.0f}", file=out)
    print(f"  {'documents in':<24} {stats.input:,}", file=out)
    print(f"  {'documents out':<24} {stats.output:,}", file=out)
    for reason, n in sorted(stats.dropped.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {'dropped: ' + reason:<24} {n:,}", file=out)
    rate = stats.input / seconds if seconds > 0 else 0.0
    print(f"  {'wall time':<24} {seconds:,.1f} s", file=out)
    print(f"  {'throughput':<24} {rate:,.1f} documents/s", file=out)
    if stats.failed_files:
        print(f"  FAILED inputs ({len(stats.failed_files)}):", file=out)
        for name, err in sorted(stats.failed_files.items()):
            print(f"    {name}: {err}", file=out)
