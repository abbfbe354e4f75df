"""Plain HTML pieces for ``stackkit report``: tables, embedded PNGs, headed sections, the page.

No JavaScript and nothing fetched: the page is one file that any browser shows offline.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1080px; margin: 2em auto; padding: 0 1.5em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd;
     padding-bottom: 0.2em; margin-top: 2em; }
.sub { color: #666; margin-top: 0; } .how { color: #555; font-style: italic; }
.note { background: #fff6e0; border-left: 4px solid #edae49; padding: 0.5em 0.8em; }
.key { background: #f4f7fb; border-left: 4px solid #30638e; padding: 0.6em 0.9em 0.6em 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: left; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.pick td { font-weight: 600; background: #fdf0f2; } td.best { font-weight: 700; }
img { max-width: 100%; height: auto; display: block; margin: 0.6em 0; }
nav a { margin-right: 0.9em; } summary { cursor: pointer; color: #30638e; }
footer { color: #888; font-size: 0.85em; margin-top: 3em; }
"""

Column = tuple[str, str, str]  # (key, header, format spec; "" for text)


def cell(value, spec: str) -> str:
    if value is None:
        return '<td class="num">-</td>' if spec else "<td>-</td>"
    if spec:
        return f'<td class="num">{escape(format(value, spec))}</td>'
    return f"<td>{escape(str(value))}</td>"


def table(rows: Sequence[dict], columns: Sequence[Column], pick_key: str | None = None) -> str:
    """An HTML table; a row whose ``pick_key`` is true is highlighted."""
    head = "".join(f"<th>{escape(h)}</th>" for _, h, _ in columns)
    body = []
    for row in rows:
        cls = ' class="pick"' if pick_key and row.get(pick_key) else ""
        tds = "".join(cell(row.get(k), spec) for k, _, spec in columns)
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def matrix_table(row_names, col_names, values, spec: str = ".3f", extra=None) -> str:
    """Rows x columns of numbers; the largest number of each row is bold. ``extra``: a first
    column (header, values) such as the support of each class."""
    head = "<th></th>" + (f"<th>{escape(extra[0])}</th>" if extra else "")
    head += "".join(f"<th>{escape(c)}</th>" for c in col_names)
    body = []
    for i, name in enumerate(row_names):
        best = max(values[i])
        tds = f'<td class="num">{extra[1][i]}</td>' if extra else ""
        for v in values[i]:
            cls = "num best" if v == best else "num"
            tds += f'<td class="{cls}">{format(v, spec)}</td>'
        body.append(f"<tr><td>{escape(str(name))}</td>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def section(anchor: str, title: str, how_to_read: str, *body: str) -> str:
    how = f'<p class="how">{escape(how_to_read)}</p>' if how_to_read else ""
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{how}{"".join(body)}</section>'


def para(text: str, cls: str | None = None) -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<p{attr}>{escape(text)}</p>"


def bullets(items: Sequence[str], cls: str | None = None) -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<ul{attr}>{''.join(f'<li>{escape(i)}</li>' for i in items)}</ul>"


def details(summary: str, body: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>{body}</details>"


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]], footer: str) -> str:
    """``sections``: (anchor, nav label, html); the nav links need no JavaScript."""
    nav = "".join(f'<a href="#{a}">{escape(label)}</a>' for a, label, _ in sections if label)
    parts = "\n".join(html for _, _, html in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f'<h1>{escape(title)}</h1><p class="sub">{escape(subtitle)}</p><nav>{nav}</nav>\n'
        f"{parts}\n<footer>{escape(footer)}</footer></body></html>\n"
    )
