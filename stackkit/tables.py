"""Results as tables: rich text for the CLI and the scripts, pandas and HTML for notebooks.

A result that is a table (a fit, a leaderboard, a comparison, a pseudo-label set) derives from
:class:`AsTable`: ``to_frame()`` gives a pandas DataFrame, and Jupyter shows it as HTML. For
text, ``columns`` are (key, header, format spec): a spec marks a number column (right-aligned);
missing or None values show as ``-``. :func:`make_table` gives a ``rich.table.Table``;
:func:`format_table` the same table as plain text, never wrapped (the CLI, scripts, benchmarks).

    >>> print(format_table([{"meta": "lr", "f1": 0.5}], [("meta", "meta", ""), ("f1", "F1", ".3f")]))
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from rich.table import Table

Columns = Sequence[tuple[str, str, str]]


class AsTable:
    """Mixin for results that are tables: ``to_frame()``, and ``_repr_html_`` (Jupyter's rich
    display) drawn from it, under the result's one-line ``headline()`` when it has one."""

    def to_frame(self) -> pd.DataFrame:
        raise NotImplementedError

    def headline(self) -> str | None:
        return None

    def _repr_html_(self) -> str:
        table = self.to_frame().to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")
        line = self.headline()
        return table if not line else f"<p>{html.escape(line)}</p>\n{table}"


def cell(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return "-"
    return format(value, spec) if spec else str(value)


def make_table(rows: Sequence[dict], columns: Columns, title: str | None = None) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    for _, header, spec in columns:
        table.add_column(header, justify="right" if spec else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(cell(row.get(key), spec) for key, _, spec in columns))
    return table


def format_table(rows: Sequence[dict], columns: Columns, title: str | None = None) -> str:
    """The table as plain text, trailing spaces stripped."""
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=1000, no_color=True, highlight=False).print(
        make_table(rows, columns, title)
    )
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()).strip("\n")
