"""Figures for notebooks: render to PNG and display, bar plots, small text tables."""
from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np


def pyplot():
    """``matplotlib.pyplot``, imported on first use (matplotlib is optional and slow to import)."""
    import matplotlib.pyplot as plt
    return plt


def figure_png(fig: Any, dpi: int = 80) -> bytes:
    """The PNG bytes of ``fig``; the figure is closed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        pyplot().close(fig)
    return buf.getvalue()


def show(fig: Any, dpi: int = 80) -> None:
    """Display ``fig`` as a PNG in a notebook (whatever the matplotlib backend, Agg included)
    and close it, so it is drawn exactly once; outside IPython it is only closed."""
    from IPython import get_ipython
    from IPython.display import Image, display
    if get_ipython() is None:
        pyplot().close(fig)
        return
    display(Image(data=figure_png(fig, dpi), format="png"))


def plot_bars(values: Mapping[str, float], ylabel: str = "", title: str = "", fmt: str = "{:.3g}",
              figsize: tuple[float, float] = (5, 3)):
    """Figure: one labelled bar per ``{name: value}`` (NaN / None drawn as "n/a")."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=figsize)
    names = list(values)
    for i, n in enumerate(names):
        v = values[n]
        if v is None or not np.isfinite(v):
            ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8)
            continue
        ax.bar(i, v, color=f"C{i % 10}")
        ax.text(i, v, fmt.format(v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def format_table(rows: Mapping[str, Mapping[str, Any]], keys: Sequence[str] | None = None, digits: int = 3) -> str:
    """A plain-text table: one row per ``{row name: {column: value}}``; ``keys`` picks and
    orders the columns (default: every column in first-seen order); missing / None as "-"."""
    if keys is None:
        keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return "nan" if not np.isfinite(v) else f"{v:.{digits}f}"
        return str(v)
    table = [["", *keys]] + [[name, *(cell(r.get(k)) for k in keys)] for name, r in rows.items()]
    widths = [max(len(t[i]) for t in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(t, widths)))
                     for t in table)
