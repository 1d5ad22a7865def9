"""The one PNG encoder of the reports: matplotlib on its Agg backend, bytes without a timestamp."""

from __future__ import annotations

import base64
import io as _bytes_io
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any, dpi: int = 100, tight: bool = True) -> bytes:
    """The figure as PNG bytes, then closed. No timestamp or software tag in the file, so the same
    figure gives the same bytes (a report is reproducible)."""
    plt = pyplot()
    buf = _bytes_io.BytesIO()
    if tight:
        fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def b64(data: bytes) -> str:
    """PNG bytes as the base64 text an HTML page embeds."""
    return base64.b64encode(data).decode("ascii")
