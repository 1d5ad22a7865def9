"""The README's headline table, made from the figures the benchmarks wrote (benchmarks/results/*.json).

One row per headline row of a results file (``headline``: a row or a list of rows, see
``benchmarks/results.py``): the stage, this project's figure, the peer it is measured against
with the peer's figure, the ratio, and the command that printed it. The ratio says how many
times better this project's figure is than the peer's: ours over theirs for a rate or a score,
theirs over ours for a cost (a unit that says "lower is better"). A row without a peer shows a
dash there.

    python benchmarks/readme_table.py                 # print the table (Markdown)
    python benchmarks/readme_table.py --write README.md   # replace what is between the markers

The markers, each on a line of its own: ``<!-- benchmarks:start -->`` and ``<!-- benchmarks:end -->``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
# Pipeline order: a results file's name (or its prefix before the first '-') decides its place.
ORDER = ("extract", "commoncrawl", "dedup", "filter", "decontam", "tokenize", "train", "checkpoint", "align", "gpu")


def _place(name: str) -> tuple[int, str]:
    for i, key in enumerate(ORDER):
        if name == key or name.startswith(key + "-"):
            return i, name
    return len(ORDER), name


def number(x) -> str:
    """A figure as the table shows it: thousands separated, three significant digits below 100."""
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int) or abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def rows(folder: Path = RESULTS) -> list[dict]:
    """Every headline row of every results file, in pipeline order, each with its file's command,
    machine and file name."""
    out = []
    for path in sorted(folder.glob("*.json"), key=lambda p: _place(p.stem)):
        doc = json.loads(path.read_text())
        head = doc.get("headline")
        for row in [head] if isinstance(head, dict) else (head or []):
            out.append({**row, "command": doc.get("command", ""), "machine": doc.get("machine", {}), "file": path.name})
    return out


def markdown(table_rows: list[dict]) -> str:
    lines = ["| stage | unit | this project | peer | ratio | command |", "|---|---|---|---|---|---|"]
    machines = {}
    for r in table_rows:
        peer = r.get("peer")
        if isinstance(peer, dict):
            peer_cell = f"{peer.get('name', '')}: {number(peer.get('figure'))}"
        else:
            peer_cell = peer if peer else "-"
        ratio = r.get("ratio")
        ratio_cell = f"{ratio:.2f}x" if isinstance(ratio, (int, float)) else "-"
        lines.append(f"| {r['stage']} | {r.get('unit', '')} | {number(r.get('figure'))} | {peer_cell} | {ratio_cell} | `{r['command']}` |")
        m = r["machine"]
        where = m.get("gpu") or f"{m.get('cpu_model') or 'CPU'}, {m.get('cores')} cores, {number(m.get('memory_gib'))} GiB"
        machines.setdefault(where, []).append(r["file"])
    lines.append("")
    lines.append("Ratio: how many times better this project's figure is than the peer's, measured side by side in one run. "
                 "Measured on " + "; ".join(f"{where} ({', '.join(sorted(set(files)))})" for where, files in machines.items())
                 + ": each file in `benchmarks/results/` holds the machine, the date and every figure of its run.")
    return "\n".join(lines) + "\n"


def rewrite(path: Path, table: str) -> bool:
    """Replace what is between the markers; False where the file has no such pair."""
    text = path.read_text()
    if START not in text or END not in text or text.index(START) > text.index(END):
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{table}{END}{tail}")
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", metavar="MARKDOWN", help="replace the table between the markers in this file")
    ap.add_argument("--results", default=str(RESULTS), help="the folder of results files")
    args = ap.parse_args()
    found = rows(Path(args.results))
    if not found:
        print(f"no headline rows in {args.results}/*.json: run the benchmarks first (make bench-...)", file=sys.stderr)
        return 2
    table = markdown(found)
    if args.write:
        path = Path(args.write)
        if not path.is_file():
            print(f"{path}: no such file", file=sys.stderr)
            return 2
        if not rewrite(path, table):
            print(f"{path}: no '{START}' ... '{END}' markers to write the table between; add them where the table goes", file=sys.stderr)
            return 2
        print(f"{len(found)} rows written to {path}", file=sys.stderr)
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
