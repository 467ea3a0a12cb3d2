"""Plain tables of pre-formatted cells: the only place that calls tabulate.

Every cell arrives as a string (tabulate would otherwise reinterpret names like ``0`` as
numbers), so the same rows give the same bytes.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from tabulate import tabulate

_RIGHT = frozenset({"Actual", "Limit", "Headroom", "Old", "New", "Change", "%"})


_MARKDOWN = str.maketrans({c: f"\\{c}" for c in "\\|*`[]"})
_CONTROL = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _markdown_cell(text: str) -> str:
    """A cell that stays one cell of one row, as text: module and model names come from user
    code and end up in pull-request comments, so ``|``, line breaks, HTML and the marks of
    emphasis, code and links (``**bold**``, ``[l](javascript:...)``) are escaped (not ``_``:
    GitHub reads no emphasis inside a word, and names are full of them)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").translate(_MARKDOWN)
    return " ".join(text.splitlines())


def _plain_cell(text: str) -> str:
    """A cell of a text table on one line: a line break in a module name (a ModuleDict key
    may hold one) would start a row of its own; shown as ``\\n``."""
    return text.translate(_CONTROL)


def rows(
    headers: Sequence[str],
    cells: Sequence[Sequence[str]],
    *,
    format: str = "table",
    right: frozenset[str] = _RIGHT,
) -> str:
    """A plain table of pre-formatted cells (``convprof check``'s summary, diffs, the
    calculator); columns named in ``right`` are right-aligned."""
    if format not in ("table", "markdown", "html"):
        raise ValueError(f"unknown format {format!r}; choose table, markdown or html")
    if format == "markdown":
        cells = [[_markdown_cell(c) for c in row] for row in cells]
    elif format == "table":
        cells = [[_plain_cell(c) for c in row] for row in cells]
    return (
        tabulate(
            [list(c) for c in cells],
            headers=list(headers),
            tablefmt={"markdown": "github", "html": "html"}.get(format, "simple"),  # html escapes cells
            disable_numparse=True,
            colalign=tuple("right" if h in right else "left" for h in headers),
        )
        + "\n"
    )


# Scoped to the report's own <div>: a notebook's other cells keep their look. Names and shapes
# in a fixed-width font (tree branches line up), numbers right-aligned (tabulate marks them),
# and the lines below wrapped to the cell instead of one long scrolling line each.
_STYLE = (
    "<style>"
    ".convprof table{border-collapse:collapse;font-size:12px}"
    ".convprof th,.convprof td{padding:2px 10px;border-bottom:1px solid #ddd;white-space:pre;"
    "font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}"
    ".convprof thead th{border-bottom:2px solid #888}"
    ".convprof tbody tr:nth-child(even){background:rgba(127,127,127,0.07)}"
    ".convprof pre{white-space:pre-wrap;font-size:12px;margin-top:8px}"
    "</style>\n"
)


def joined(table: str, text: str, format: str) -> str:
    """The table and the lines below it; in HTML the lines are one escaped ``<pre>`` block,
    wrapped, under a style that applies to this report only."""
    if format == "html":
        return f'<div class="convprof">\n{_STYLE}{table}<pre>{html.escape(text)}</pre>\n</div>\n'
    return table + "\n" + text
