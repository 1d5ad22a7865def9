"""Accounting shared by every stage: documents in = documents out + drops by named reason.

Each task counts into a :class:`StageStats`; the stage merges the per-shard stats in a fixed
order and writes them as ``stats.json``. ``check()`` is the identity every stage must keep.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageStats:
    input: int = 0
    output: int = 0
    dropped: Counter = field(default_factory=Counter)
    # Free-form extra figures (bytes read, tokens, seconds); summed on merge.
    counters: Counter = field(default_factory=Counter)
    # Inputs that could not be read at all: {name: error message}.
    failed_files: dict[str, str] = field(default_factory=dict)
    # One example per named reason or counter (e.g. the n-gram a contaminated document shared
    # with an evaluation set): JSON values; on merge the earlier one stays.
    examples: dict[str, Any] = field(default_factory=dict)

    def seen(self, n: int = 1) -> None:
        self.input += n

    def kept(self, n: int = 1) -> None:
        self.output += n

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def add(self, name: str, value: float = 1) -> None:
        self.counters[name] += value

    def example(self, name: str, value: Any) -> None:
        """Keep ``value`` as the example of ``name`` unless one is kept already."""
        self.examples.setdefault(name, value)

    def merge(self, other: "StageStats") -> "StageStats":
        self.input += other.input
        self.output += other.output
        self.dropped.update(other.dropped)
        self.counters.update(other.counters)
        self.failed_files.update(other.failed_files)
        for k, v in other.examples.items():
            self.examples.setdefault(k, v)
        return self

    def check(self) -> None:
        """Raise if a document went missing without a reason."""
        total = self.output + sum(self.dropped.values())
        if self.input != total:
            raise AssertionError(
                f"accounting broken: input {self.input} != output {self.output} + dropped "
                f"{sum(self.dropped.values())} {dict(self.dropped)}"
            )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "input": self.input,
            "output": self.output,
            "dropped": dict(sorted(self.dropped.items())),
            "counters": {k: _plain(v) for k, v in sorted(self.counters.items())},
            "failed_files": dict(sorted(self.failed_files.items())),
        }
        if self.examples:
            out["examples"] = dict(sorted(self.examples.items()))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageStats":
        return cls(
            input=int(d.get("input", 0)),
            output=int(d.get("output", 0)),
            dropped=Counter(d.get("dropped", {})),
            counters=Counter(d.get("counters", {})),
            failed_files=dict(d.get("failed_files", {})),
            examples=dict(d.get("examples", {})),
        )


def _plain(v: float) -> float | int:
    return int(v) if float(v).is_integer() else round(float(v), 6)
