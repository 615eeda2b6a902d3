"""HTML and text building blocks: sizes, times, tables, cards, charts (no IPython needed).

The views of registry records are in :mod:`mlops_magics.registry.cards`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

_TABLE_STYLE = "border-collapse:collapse;font-size:12px"
_CELL = "padding:2px 8px;text-align:left;border-bottom:1px solid #ddd"


def human_size(size: int) -> str:
    """Return ``size`` bytes as '1.2 KiB', '3.4 MiB'..."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def when(moment: datetime) -> str:
    """Return a timestamp as 'YYYY-MM-DD HH:MM:SS' in local time."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def clock(moment: datetime) -> str:
    """A recent moment as local 'HH:MM:SS', with the date in front when it is not today."""
    local = moment.astimezone()
    same_day = local.date() == datetime.now().astimezone().date()
    return local.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S")


def table(rows: Sequence[dict[str, Any]]) -> str:
    """An HTML table with a column per key of the first row (a note when there is no row)."""
    if not rows:
        return "<p><em>No model versions.</em></p>"
    head = "".join(f'<th style="{_CELL}">{escape(k)}</th>' for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{escape(str(val))}</td>' for val in row.values()) + "</tr>"
        for row in rows
    )
    return f'<table style="{_TABLE_STYLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def card(title: str, fields: Sequence[tuple[str, str]]) -> str:
    """An HTML card: a title over a two-column table of (name, HTML value) rows.

    Args:
        title: HTML shown above the table (escape what it quotes).
        fields: each row's name (plain text) and value (HTML).
    """
    body = "".join(
        f'<tr><th style="{_CELL}">{escape(name)}</th><td style="{_CELL}">{value}</td></tr>' for name, value in fields
    )
    return f'<div>{title}<table style="{_TABLE_STYLE}">{body}</table></div>'


def bar_chart_png(title: str, groups: Sequence[str], series: dict[str, Sequence[float]], unit: str,
                  log: bool = False) -> str | None:
    """A small grouped bar chart as a base64 PNG (None when matplotlib is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(5.5, 2.6), dpi=90)
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        axes.bar([g + i * width for g in range(len(groups))], values, width, label=name)
    axes.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups)
    axes.set_ylabel(unit)
    axes.set_title(title, fontsize=10)
    if log:
        axes.set_yscale("log")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure_png(figure)


def figure_png(figure: Any) -> str:
    """A matplotlib figure as a base64 PNG; the figure is closed."""
    import base64
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


_SHOWN: Any = None


def new_figure(**options: Any) -> Any:
    """A matplotlib Figure that shows itself as a PNG in a notebook, ``%matplotlib inline`` or not (a bare
    ``Figure`` shows as its repr there)."""
    global _SHOWN
    if _SHOWN is None:
        import io

        from matplotlib.figure import Figure

        class ShownFigure(Figure):
            def _repr_png_(self) -> bytes:
                buffer = io.BytesIO()
                self.savefig(buffer, format="png")
                return buffer.getvalue()

        _SHOWN = ShownFigure
    return _SHOWN(**options)
