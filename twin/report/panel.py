"""One section of the report (:class:`Panel`) and the helpers every panel uses to draw it: a figure saved as PNG and
an HTML table. Kinds' panels (:meth:`twin.core.kinds.TwinKind.report_panels`) use them too."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@dataclass
class Panel:
    """One section of the report: ``image`` (a PNG) or the ``note`` saying why it is absent; ``table`` is HTML.
    An ``optional`` panel without image or table is left out of the report (e.g. tumour panels of other models)."""

    title: str
    image: Path | None = None
    note: str = ""
    table: str = ""
    optional: bool = False


def save_figure(fig, path: Path, layout: bool = True) -> Path:
    """Lay out (``layout``: not for colour bars shared by a row of axes, which do not go with ``tight_layout``),
    save at 90 dpi and close ``fig``; returns ``path``. Written atomically (:func:`twin.io.atomic.atomic_output`): a
    report interrupted or out of space leaves the previous figure or none, never a truncated PNG."""
    from twin.io.atomic import atomic_output

    try:
        if layout:
            fig.tight_layout()
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=90, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def html_table(header: list[str], rows: list[list]) -> str:
    """An HTML table (cells escaped; floats to 4 significant digits, a NaN as "n/a": a value there is none of)."""
    def cell(v):
        if isinstance(v, float):
            return "n/a" if v != v else f"{v:.4g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
