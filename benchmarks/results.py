"""Benchmark figures as data: every `make bench-*` records what it measured here.

    from benchmarks.results import record          # (or `import results` from benchmarks/)
    record("dedup-accuracy", {"stage": {...}, "datatrove": {...}}, headline={...})

writes ``benchmarks/results/<name>.json``:

    {"name", "command", "date", "machine": {"cores", "memory_gib", "cpu_model", "platform", "python", "load_average"},
     "figures": {...}, "headline": {...}}

``figures`` is everything the run printed, as numbers; ``headline`` (optional) is the row the
README's table shows for it, ``{"stage", "figure", "peer", "ratio", "unit"}`` (``peer``: the peer's
name and its figure, ``None`` with ``ratio`` ``None`` for a stage measured against no peer), or a
list of such rows. ``benchmarks/readme_table.py`` builds the README's table from these files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """Cores, memory and CPU model of this machine (Linux /proc; elsewhere what platform knows)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem = 0.0
    try:
        load = round(os.getloadavg()[0], 1)  # a shared machine: the load the figures were taken under
    except OSError:
        load = None
    return {"cores": os.cpu_count(), "memory_gib": round(mem, 1), "cpu_model": model,
            "platform": platform.platform(), "python": platform.python_version(), "load_average": load}


def accelerator() -> dict[str, Any]:
    """The GPU torch sees (name, memory, torch and CUDA versions, and ``slug``, a short name for
    file names: ``h200``), or ``{}`` without one."""
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    name = torch.cuda.get_device_name()
    slug = name.split()[-1].lower() if name.startswith("NVIDIA") else name.replace(" ", "-").lower()
    return {"gpu": name, "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
            "torch": torch.__version__, "cuda": torch.version.cuda, "slug": slug}


def command() -> str:
    """The command line that ran this benchmark, relative to the repository."""
    repo = RESULTS.parent.parent
    argv = [os.path.relpath(a, repo) if a.startswith(str(repo)) else a for a in sys.argv]
    return "python " + " ".join(shlex.quote(a) for a in argv)


def record(name: str, figures: dict[str, Any], headline: dict[str, Any] | list[dict[str, Any]] | None = None,
           folder: Path | None = None, device: dict[str, Any] | None = None) -> Path:
    """Write ``<folder or benchmarks/results>/<name>.json`` (replacing an earlier run's) and
    return its path. ``device``: what else the figures ran on (an accelerator's name, memory,
    driver), added to ``machine``."""
    out = Path(folder or RESULTS) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"name": name, "command": command(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": {**machine(), **(device or {})}, "figures": figures}
    if headline:
        doc["headline"] = headline
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False, default=_plain) + "\n")
    tmp.replace(out)
    print(f"figures written to {os.path.relpath(out)}", file=sys.stderr)
    return out


def load(name: str, folder: Path | None = None) -> dict[str, Any] | None:
    path = Path(folder or RESULTS) / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _plain(x: Any) -> Any:
    """NumPy scalars and arrays as plain JSON values."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON")
