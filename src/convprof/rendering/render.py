"""Rendering: a Report in, a string out, in any of :data:`FORMATS`.

Every cell is pre-formatted (tabulate, called only in :mod:`~convprof.rendering.tables`, would
otherwise reinterpret names like ``0`` as numbers), options are arguments, never globals, and
nothing is printed: the same report gives the same bytes. The layer table's columns are
:mod:`~convprof.rendering.columns`'s, the lines under it :mod:`~convprof.rendering.footer`'s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, replace

from convprof.rendering import columns as columns_
from convprof.rendering.as_csv import layers_csv
from convprof.rendering.blocks import blocks_csv, blocks_table
from convprof.rendering.footer import (
    footer,
    measured_time,
    rolled_times,
    roofline_lines,
    timing_lines,
    token_lines,
    within,
)
from convprof.rendering.ranks import rank_lines
from convprof.rendering.tables import joined, rows
from convprof.report import Layer, Report, Timing, rendered_by
from convprof.report.tokens import TokenCost
from convprof.roofline import Machine, machine

FORMATS = ("table", "json", "csv", "markdown", "html")


def render(
    report: Report,
    *,
    depth: int | None = None,
    format: str = "table",
    memory: bool = False,
    roofline: Machine | str | float | None = None,
    blocks: bool = False,
    tokens: TokenCost | None = None,
    tree: bool = False,
    columns: Sequence[str] | None = None,
    timing: Timing | None = None,
) -> str:
    """The layer table and totals as text.

    ``depth`` rolls rows up by name prefix (``depth=1`` gives one row per top-level child);
    ``format`` is one of ``table``, ``json``, ``csv``, ``markdown``, ``html`` (a ``<table>``
    with escaped cells and the lines below it in a ``<pre>``, as Jupyter shows a report).
    Containers with no cost of their own are left out of the table (their children carry it);
    JSON and CSV keep them.
    ``memory`` adds each row's bytes moved and MACs per byte; ``roofline`` (which implies
    ``memory``) adds which roof bounds the row and its share of the roofline time: a
    :class:`Machine`, a preset name (``"t4"``, at the precision of the report's dtype; or
    ``"t4:int8"``) or a balance in MACs per byte, as in the CLI;
    ``blocks`` lists the separable blocks and inverted residuals instead of layers;
    ``tokens`` adds a language model's per-token figures (:mod:`convprof.tokens`) below the
    totals, and a ``tokens`` object to JSON. ``tree`` shows every module as an indented outline,
    containers with everything below them (``depth`` then limits the outline's depth);
    ``columns`` picks the columns by key (:data:`convprof.columns.COLUMNS`: ``name``, ``type``,
    ``kind``, ``input``, ``output``, ``conv``, ``calls``, ``params``, ``macs``, ``flops``,
    ``share``, ``bytes``, ``intensity``, ``bound``, ``time``, and with ``timing`` from
    :func:`convprof.timing.measure`: ``measured``, ``spread``, ``gmacs``, ``gbs``, and with a
    roofline ``predicted`` and ``ratio``), which adds each leaf row's measured time and the
    end-to-end forward below the totals.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if roofline is not None and not isinstance(roofline, Machine):
        roofline = machine(str(roofline), report.dtype)
    if format == "json":
        return _json(report, depth, tokens, timing)
    if blocks:
        return (
            blocks_csv(report.blocks)
            if format == "csv"
            else blocks_table(report, format, memory or roofline is not None)
        )
    layers = report.rollup(depth) if depth is not None and not tree else report.layers
    if format == "csv":
        return _csv(report, layers, None if tree else depth, roofline, columns, timing)
    return _layer_table(report, layers, depth, format, memory, roofline, tokens, tree, columns, timing)


def _csv(
    report: Report,
    layers: Sequence[Layer],
    depth: int | None,
    roofline: Machine | None,
    columns: Sequence[str] | None,
    timing: Timing | None,
) -> str:
    """The rows as CSV, with the table's columns when given, and measured and roofline times
    (a rolled-up row's measured time its leaves')."""
    peak = report.memory is not None
    if columns:
        columns_.check_columns(
            columns,
            roofline=roofline is not None,
            timing=timing is not None,
            backward=report.backward,
            peak=peak,
        )
    measured = None
    if timing is not None:
        measured = rolled_times(timing, depth) if depth is not None else {t.name: t for t in timing.layers}
    return layers_csv(layers, report.backward, peak, columns=columns, measured=measured, roofline=roofline)


def _json(report: Report, depth: int | None, tokens: TokenCost | None, timing: Timing | None) -> str:
    data = report.to_dict()
    if depth is not None:  # rolled up as the other formats are, and marked so (convprof diff)
        data["depth"] = depth
        data["layers"] = [
            layer.to_dict(report.backward, report.memory is not None) for layer in report.rollup(depth)
        ]
    if tokens is not None:
        data["tokens"] = tokens.to_dict()
    if timing is not None:
        data["timing"] = asdict(timing)
    return json.dumps(data, indent=2) + "\n"


def _with_times(
    shown: list[columns_.Row], timing: Timing, depth: int | None, tree: bool
) -> list[columns_.Row]:
    """The rows with their measured times: a rolled-up row's is its members' added up, as the
    tree's containers' are."""
    rolled = rolled_times(timing, depth) if depth is not None and not tree else None
    return [
        replace(
            row,
            measured=rolled.get(row.layer.name)
            if rolled is not None
            else measured_time(timing, row.layer.name, tree),
        )
        for row in shown
    ]


def _layer_table(
    report: Report,
    layers: Sequence[Layer],
    depth: int | None,
    format: str,
    memory: bool,
    roofline: Machine | None,
    tokens: TokenCost | None,
    tree: bool,
    columns: Sequence[str] | None,
    timing: Timing | None,
) -> str:
    """The table of layers (a flat one, or the tree) and the lines under it."""
    # a container is a row where it has params or MACs of its own, or a measured time of its own
    # (a layer PyTorch fuses in inference does the work its children were counted for)
    timed = {t.name for t in timing.layers} if timing is not None else set()
    flat = [
        layer
        for layer in layers
        if not layer.has_children or layer.params or layer.macs or layer.name in timed
    ]
    seconds = {}
    if roofline is not None:
        seconds = {layer.name: roofline.seconds(layer.macs, layer.memory_bytes) for layer in flat}
    if tree:  # a container's roofline time is its rows' (the roofline does not add up otherwise)
        shown = [
            replace(row, seconds=sum(t for n, t in seconds.items() if within(n, row.layer.name)))
            for row in columns_.tree(report, depth)
        ]
    else:
        shown = [columns_.Row(layer, layer.name or "(root)", seconds.get(layer.name, 0.0)) for layer in flat]
    if timing is not None:
        shown = _with_times(shown, timing, depth, tree)
    measured = memory or roofline is not None
    keys = tuple(
        columns
        or columns_.default_columns(
            shown,
            memory=measured,
            roofline=bool(roofline),
            backward=report.backward,
            peak=report.memory is not None,
        )
    )
    columns_.check_columns(
        keys,
        roofline=roofline is not None,
        timing=timing is not None,
        backward=report.backward,
        peak=report.memory is not None,
    )
    times = [row.seconds for row in shown] if roofline is not None and roofline.absolute else []
    times += [t for row in shown if row.measured for t in (row.measured.median, row.measured.low)]
    table = columns_.Table(
        report.total.macs, sum(seconds.values()), roofline, columns_.time_unit(times), report.total.params
    )
    headers, cells = columns_.cells(shown, keys, table)
    markdown = format == "markdown"
    text = footer(report, markdown=markdown, memory=measured)
    if tree:
        note = (
            "Tree:         a container's figures include everything below it, so a column adds "
            "its children twice."
        )
        text = f"{note}  \n" + text if markdown else f"{note}\n" + text
    if any(row.layer.shapes_vary for row in shown) and {"input", "output"} & set(keys):
        note = "Shapes:       * the first call's; later calls of the module had other shapes."
        text = f"{note}  \n" + text if markdown else f"{note}\n" + text
    if tokens is not None:
        text += token_lines(tokens, markdown=markdown)
    if timing is not None:
        # the kinds' shares over the leaf layers themselves, whatever the rows were rolled up to
        leaves = [layer for layer in report.layers if not layer.has_children]
        text += timing_lines(timing, leaves, markdown=markdown)
    if roofline is not None:
        text += roofline_lines(flat, [seconds[layer.name] for layer in flat], roofline, markdown=markdown)
    if report.ranks:  # tables of their own, in the lines under the layer table (HTML: plain text)
        text += rank_lines(report, roofline, format="markdown" if markdown else "table")
    return joined(rows(headers, cells, format=format, right=columns_.NUMERIC), text, format)


rendered_by(lambda report, format: render(report, format=format))
