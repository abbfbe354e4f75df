"""Tables for the CLI's summaries and the scripts' printouts, drawn by rich.

``columns`` are (key, header, format spec): a spec marks a number column (right-aligned);
missing or None values show as ``-``. :func:`make_table` gives a ``rich.table.Table``;
:func:`format_table` the same table as plain text, never wrapped (the CLI, scripts, benchmarks).

    >>> print(format_table([{"meta": "lr", "f1": 0.5}], [("meta", "meta", ""), ("f1", "F1", ".3f")]))
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table

Columns = Sequence[tuple[str, str, str]]


def cell(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return "-"
    return format(value, spec) if spec else str(value)


def make_table(rows: Sequence[dict], columns: Columns, title: str | None = None) -> Table:
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
    buf = io.StringIO()
    Console(file=buf, width=1000, no_color=True, highlight=False).print(
        make_table(rows, columns, title)
    )
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()).strip("\n")
