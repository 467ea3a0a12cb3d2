"""Rendering: a Report in, a string out. The only module that imports tabulate.

Every cell is pre-formatted here (tabulate would otherwise reinterpret names like ``0`` as
numbers), options are arguments, never globals, and nothing is printed: the same report gives
the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from tabulate import tabulate

from convprof.diff import ModelDiff
from convprof.report import Layer, Report
from convprof.units import format_quantity, format_shape

FORMATS = ("table", "json", "csv", "markdown")
HEADERS = ("Layer", "Type", "Kind", "Input", "Output", "k / s / g", "Params", "MACs", "Share")


def render(report: Report, *, depth: int | None = None, format: str = "table") -> str:
    """The layer table and totals as text.

    ``depth`` rolls rows up by name prefix (``depth=1`` gives one row per top-level child);
    ``format`` is one of ``table``, ``json``, ``csv``, ``markdown``. Containers with no cost of
    their own are left out of the table (their children carry it); JSON and CSV keep them.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "json":
        return json.dumps(report.to_dict(), indent=2) + "\n"
    layers = report.rollup(depth) if depth is not None else report.layers
    if format == "csv":
        return _csv(layers)
    shown = [layer for layer in layers if not layer.has_children or layer.params or layer.macs]
    cells = [_cells(layer, report.total.macs) for layer in shown]
    table = tabulate(
        cells,
        headers=HEADERS,
        tablefmt="github" if format == "markdown" else "simple",
        disable_numparse=True,
        colalign=("left",) * 6 + ("right",) * 3,
    )
    return table + "\n\n" + footer(report, markdown=format == "markdown")


def _conv_cell(layer: Layer) -> str:
    if layer.kernel_size is None:
        return ""
    stride = layer.stride or ()
    s = str(stride[0]) if len(set(stride)) == 1 else "x".join(map(str, stride))
    return f"{format_shape(layer.kernel_size)} / {s} / {layer.groups}"


def _cells(layer: Layer, total_macs: int) -> list[str]:
    share = f"{100 * layer.macs / total_macs:.1f}%" if total_macs else ""
    unexplained = " (+?)" if layer.unexplained else ""
    return [
        layer.name or "(root)",
        layer.type,
        layer.kind or "",
        format_shape(layer.input_shape) if layer.input_shape is not None else "",
        format_shape(layer.output_shape) if layer.output_shape is not None else "",
        _conv_cell(layer),
        f"{layer.params:,}",
        f"{layer.macs:,}{unexplained}",
        share,
    ]


def footer(report: Report, *, markdown: bool = False) -> str:
    """Totals in exact integers and human units, the convention, and what was not counted."""
    total = report.total
    lines = [
        f"Total params: {total.params:,} ({format_quantity(total.params)})",
        f"Total MACs:   {total.macs:,} ({format_quantity(total.macs)})",
        f"Total FLOPs:  {total.flops:,} ({format_quantity(total.flops)})",
        f"Convention:   {report.convention}.",
    ]
    if report.unexplained:
        lines.append("Not counted:  operators with no formula ran; their compute is missing above:")
        for u in report.unexplained:
            where = ", ".join(name or "(root)" for name in u.layers)
            lines.append(f"  {u.op}: {u.calls} call{'s' if u.calls != 1 else ''} in {where}")
    else:
        lines.append("Coverage:     complete (every operator that ran was counted or is free).")
    return "\n".join(f"{line}  " if markdown else line for line in lines) + "\n"


def _csv(layers: Sequence[Layer]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "name",
            "type",
            "kind",
            "input_shape",
            "output_shape",
            "kernel_size",
            "stride",
            "padding",
            "dilation",
            "groups",
            "calls",
            "params",
            "macs",
            "flops",
            "memory_bytes",
        ]
    )
    for layer in layers:
        writer.writerow(
            [
                layer.name,
                layer.type,
                layer.kind or "",
                format_shape(layer.input_shape) if layer.input_shape is not None else "",
                format_shape(layer.output_shape) if layer.output_shape is not None else "",
                format_shape(layer.kernel_size) if layer.kernel_size else "",
                format_shape(layer.stride) if layer.stride else "",
                layer.padding if isinstance(layer.padding, str) else format_shape(layer.padding or ()),
                format_shape(layer.dilation) if layer.dilation else "",
                "" if layer.groups is None else layer.groups,
                layer.calls,
                layer.params,
                layer.macs,
                layer.flops,
                layer.memory_bytes,
            ]
        )
    return out.getvalue()


_RIGHT = frozenset({"Actual", "Limit", "Headroom", "Old", "New", "Change", "%"})


def rows(
    headers: Sequence[str],
    cells: Sequence[Sequence[str]],
    *,
    format: str = "table",
    right: frozenset[str] = _RIGHT,
) -> str:
    """A plain table of pre-formatted cells (``convprof check``'s summary, diffs, the
    calculator); columns named in ``right`` are right-aligned."""
    if format not in ("table", "markdown"):
        raise ValueError(f"unknown format {format!r}; choose table or markdown")
    return (
        tabulate(
            [list(c) for c in cells],
            headers=list(headers),
            tablefmt="github" if format == "markdown" else "simple",
            disable_numparse=True,
            colalign=tuple("right" if h in right else "left" for h in headers),
        )
        + "\n"
    )


def _delta(old: int, new: int) -> tuple[str, str]:
    change = f"{new - old:+,}"
    percent = f"{100 * (new - old) / old:+.2f}%" if old else ("" if new == old else "new")
    return change, percent


def render_diff(diffs: Sequence[ModelDiff], *, format: str = "table") -> str:
    """Totals and changed layers of each model; Markdown is ready to post on a pull request.

    Layers without params or MACs on either side (activations, containers) are counted in one
    line rather than listed: a review wants to see where the cost moved.
    """
    totals = []
    for d in diffs:
        for metric in ("params", "macs", "flops"):
            old, new = d.metric(metric)
            change, percent = _delta(old, new)
            old_cell = "" if d.old is None else f"{old:,}"
            new_cell = "" if d.new is None else f"{new:,}"
            totals.append([d.model, metric, old_cell, new_cell, change, percent])
    parts = ["### convprof diff\n\n" if format == "markdown" else ""]
    parts.append(rows(("Model", "Metric", "Old", "New", "Change", "%"), totals, format=format))
    changes = [(d.model, c) for d in diffs for c in d.layers]
    costly = [(m, c) for m, c in changes if c.old_params or c.new_params or c.old_macs or c.new_macs]
    layers = [
        [
            model,
            c.name or "(root)",
            c.type,
            c.status,
            f"{c.old_params:,} -> {c.new_params:,}",
            f"{c.old_macs:,} -> {c.new_macs:,}",
        ]
        for model, c in costly
    ]
    if layers:
        parts.append(
            "\n" + rows(("Model", "Layer", "Type", "Status", "Params", "MACs"), layers, format=format)
        )
    else:
        parts.append("\nNo layer with params or MACs changed.\n")
    if len(changes) > len(costly):
        parts.append(f"\n{len(changes) - len(costly)} layers without params or MACs were added or removed.\n")
    return "".join(parts)
