"""HTML pieces every report uses: a table, value formatting, an embedded image, a page, and two
texts side by side with their differences marked."""

from __future__ import annotations

import html
from typing import Any, Sequence

from reporting.plots import b64

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:.5em 0}"
         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:90%}pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap}"
         "img{max-width:540px}.pair{display:grid;grid-template-columns:1fr 1fr;gap:.6em}.pair pre{margin:0;font-size:85%}"
         "del{background:#fcc;text-decoration:none}ins{background:#cfc;text-decoration:none}")


def fmt(v: Any) -> str:
    """A value as a table cell shows it: thousands separated, floats to 3 places below 100."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {fmt(x)}" for k, x in v.items())
    return str(v)


def table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def img(png: bytes | str, alt: str) -> str:
    """A PNG (bytes, or base64 text) embedded in the page, with its caption."""
    data = png if isinstance(png, str) else b64(png)
    return f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'><figcaption>{html.escape(alt)}</figcaption></figure>"


def page(title: str, body: Sequence[str]) -> str:
    """A self-contained page: no script, no fetched resource."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")


def marked_pair(left_title: str, right_title: str, spans: Sequence[tuple[str, str, str]]) -> str:
    """Two texts side by side from a word diff's spans ``(op, left words, right words)`` (op:
    ``equal``, ``replace``, ``delete``, ``insert``): what only the left has is struck (``del``),
    what only the right has is marked (``ins``)."""
    left, right = [], []
    for op, a, b in spans:
        a, b = html.escape(a), html.escape(b)
        if op == "equal":
            left.append(a)
            right.append(b)
            continue
        if a:
            left.append(f"<del>{a}</del>")
        if b:
            right.append(f"<ins>{b}</ins>")
    return (f"<div class='pair'><div><b>{html.escape(left_title)}</b><pre>{' '.join(left)}</pre></div>"
            f"<div><b>{html.escape(right_title)}</b><pre>{' '.join(right)}</pre></div></div>")
