"""Rendering: a Report in, a string out. The only module that imports tabulate.

Every cell is pre-formatted here (tabulate would otherwise reinterpret names like ``0`` as
numbers), options are arguments, never globals, and nothing is printed: the same report gives
the same bytes.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, replace

from tabulate import tabulate

from convprof.rendering import columns as columns_
from convprof.report.diff import ModelDiff
from convprof.report.results import Block, Layer, LayerTime, Memory, Report, Timing
from convprof.report.tokens import TokenCost
from convprof.roofline import Machine, machine
from convprof.units import format_binary_bytes, format_bytes, format_quantity, format_shape, format_stride

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
    ``tokens`` adds a language model's per-token figures (:mod:`convprof.report.tokens`) below the
    totals, and a ``tokens`` object to JSON. ``tree`` shows every module as an indented outline,
    containers with everything below them (``depth`` then limits the outline's depth);
    ``columns`` picks the columns by key (:data:`convprof.rendering.columns.COLUMNS`: ``name``, ``type``,
    ``kind``, ``input``, ``output``, ``conv``, ``calls``, ``params``, ``macs``, ``flops``,
    ``share``, ``bytes``, ``intensity``, ``bound``, ``time``, and with ``timing`` from
    :func:`convprof.record.timing.measure`: ``measured``, ``spread``, ``gmacs``, ``gbs``, and with a
    roofline ``predicted`` and ``ratio``), which adds each leaf row's measured time and the
    end-to-end forward below the totals.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if roofline is not None and not isinstance(roofline, Machine):
        roofline = machine(str(roofline), report.dtype)
    if format == "json":
        data = report.to_dict()
        if depth is not None:  # rolled up as the other formats are
            data["layers"] = [
                layer.to_dict(report.backward, report.memory is not None) for layer in report.rollup(depth)
            ]
        if tokens is not None:
            data["tokens"] = tokens.to_dict()
        if timing is not None:
            data["timing"] = asdict(timing)
        return json.dumps(data, indent=2) + "\n"
    if blocks:
        return (
            _csv_blocks(report.blocks)
            if format == "csv"
            else _blocks(report, format, memory or roofline is not None)
        )
    layers = report.rollup(depth) if depth is not None and not tree else report.layers
    if format == "csv":
        return _csv(layers, report.backward, report.memory is not None)
    flat = [layer for layer in layers if not layer.has_children or layer.params or layer.macs]
    seconds = {}
    if roofline is not None:
        seconds = {layer.name: roofline.seconds(layer.macs, layer.memory_bytes) for layer in flat}
    if tree:  # a container's roofline time is its rows' (the roofline does not add up otherwise)
        shown = [
            replace(row, seconds=sum(t for n, t in seconds.items() if _within(n, row.layer.name)))
            for row in columns_.tree(report, depth)
        ]
    else:
        shown = [columns_.Row(layer, layer.name or "(root)", seconds.get(layer.name, 0.0)) for layer in flat]
    if timing is not None:
        shown = [replace(row, measured=_measured(timing, row.layer.name, tree)) for row in shown]
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
        text += _timing_lines(timing, [layer for layer in flat if not layer.has_children], markdown=markdown)
    if roofline is not None:
        text += _roofline_footer(flat, [seconds[layer.name] for layer in flat], roofline, markdown=markdown)
    return _join(rows(headers, cells, format=format, right=_NUMERIC), text, format)


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


def _join(table: str, text: str, format: str) -> str:
    """The table and the lines below it; in HTML the lines are one escaped ``<pre>`` block,
    wrapped, under a style that applies to this report only."""
    if format == "html":
        return f'<div class="convprof">\n{_STYLE}{table}<pre>{html.escape(text)}</pre>\n</div>\n'
    return table + "\n" + text


def _measured(timing: Timing, name: str, tree: bool) -> LayerTime | None:
    """A leaf row's measurement; in the tree, a container's is its leaves' added up."""
    own = timing.of(name)
    if own is not None or not tree:
        return own
    inside = [layer for layer in timing.layers if _within(layer.name, name)]
    if not inside:
        return None
    return LayerTime(name, *(sum(getattr(layer, f) for layer in inside) for f in ("median", "low", "high")))


def _timing_lines(timing: Timing, leaves: Sequence[Layer], *, markdown: bool) -> str:
    """The end-to-end forward next to what the leaf layers account for, and each conv kind's
    share of the MACs next to its share of the measured layer time: where they part ways."""
    share = 100 * timing.attributed / timing.forward if timing.forward else 0.0
    rest = timing.forward - timing.attributed
    lines = [
        f"Measured:     forward {_seconds(timing.forward)} end to end (median of {timing.repeats}, "
        f"{_seconds(timing.forward_low)} to {_seconds(timing.forward_high)}; {timing.device}); leaf layers "
        f"{_seconds(timing.attributed)} ({share:.0f}%), "
        + (f"{_seconds(rest)} in no leaf layer." if rest >= 0 else "the hooks' cost exceeds the rest."),
    ]
    macs = sum(layer.macs for layer in leaves)
    kinds = [
        kind
        for kind in ("standard", "grouped", "depthwise", "pointwise")
        if any(x.kind == kind for x in leaves)
    ]
    if kinds and macs and timing.attributed:
        parts = []
        for kind in kinds:
            rows = [x for x in leaves if x.kind == kind]
            spent = sum(m.median for x in rows if (m := timing.of(x.name)) is not None)
            share = 100 * sum(x.macs for x in rows) / macs
            parts.append(
                f"{kind} {share:.1f}% of the MACs, {100 * spent / timing.attributed:.1f}% of the time"
            )
        lines.append("By kind:      " + "; ".join(parts) + ".")
    return "\n".join(f"{line}  " if markdown else line for line in lines) + "\n"


def _within(name: str, container: str) -> bool:
    return not container or name == container or name.startswith(f"{container}.")


_NUMERIC = columns_.NUMERIC | {"Std MACs", "Cost vs std", "DW / PW params", "DW / PW MACs"}


def _roofline_footer(
    layers: Sequence[Layer], times: Sequence[float], machine: Machine, *, markdown: bool
) -> str:
    """How many rows sit under the memory roof, and the share of MACs and of roofline time
    that the memory-bound rows and the depthwise rows hold: where MACs and time part ways.
    ``times`` are the rows' roofline times, as the table computed them."""
    total_time, total_macs = sum(times), sum(layer.macs for layer in layers)

    def shares(chosen: list[tuple[Layer, float]]) -> str:
        macs = 100 * sum(layer.macs for layer, _ in chosen) / total_macs if total_macs else 0.0
        seconds = 100 * sum(t for _, t in chosen) / total_time if total_time else 0.0
        return f"{macs:.1f}% of the MACs, {seconds:.1f}% of the roofline time"

    rows = list(zip(layers, times, strict=True))
    memory_bound = [
        (layer, t) for layer, t in rows if machine.bound(layer.macs, layer.memory_bytes) == "memory"
    ]
    depthwise = [(layer, t) for layer, t in rows if layer.kind == "depthwise"]
    head = (
        f"{machine.name} ({machine.description}); balance {machine.balance:.1f} MACs/B; "
        f"lower bound {_seconds(total_time)} (no fusion)."
        if machine.absolute
        else f"machine balance {machine.balance:g} MACs/B (times relative)."
    )
    lines = [
        f"Roofline:     {head}",
        f"              {len(memory_bound)} of {len(layers)} rows memory-bound: {shares(memory_bound)}.",
    ]
    if depthwise:
        plural = "s" if len(depthwise) != 1 else ""
        lines.append(f"              {len(depthwise)} depthwise row{plural}: {shares(depthwise)}.")
    return "\n".join(f"{line}  " if markdown else line for line in lines) + "\n"


def token_lines(cost: TokenCost, *, markdown: bool = False) -> str:
    """A language model's pass per token: tokens and context, MACs per token, parameters
    without embeddings, the rule of thumb next to the count, and the prefill before a cache."""
    batch = f"batch {cost.batch:,} x {cost.new:,} new"
    cached = f", after {cost.past:,} cached" if cost.past else ""
    lines = [
        f"Tokens:       {cost.tokens:,} ({batch}{cached}; context {cost.context:,})",
        f"Per token:    {format_quantity(round(cost.macs_per_token))} MACs, "
        f"{format_quantity(round(2 * cost.macs_per_token))} FLOPs (totals / tokens)",
        f"Params:       {cost.non_embedding_params:,} without embeddings "
        f"({format_quantity(cost.non_embedding_params)}); embeddings {cost.embedding_params:,}",
    ]
    rule = cost.rule_macs_per_token
    if rule is not None and cost.counted_vs_rule is not None:
        lines.append(
            f"Rule:         2N + 2 n_layer n_ctx d_attn = {format_quantity(2 * rule)} FLOPs per token "
            f"(N = params without embeddings; Kaplan et al. 2020); counted {cost.counted_vs_rule:.3f}x"
        )
    train = cost.train_macs_per_token
    if train is not None:
        versus = cost.train_counted_vs_rule
        lines.append(
            f"Training:     {format_quantity(round(2 * train))} FLOPs per token (train step / tokens)"
            + (
                f"; rule 6N + 6 n_layer n_ctx d_attn = {format_quantity(6 * rule)}, counted {versus:.3f}x"
                if rule is not None and versus is not None
                else ""
            )
        )
    if cost.prefill_macs is not None:
        per = cost.prefill_macs / (cost.batch * cost.past)
        lines.append(
            f"Prefill:      {cost.past:,} cached tokens cost {cost.prefill_macs:,} MACs "
            f"({format_quantity(round(per))} per token), not in the table"
        )
    return "\n".join(f"{line}  " if markdown else line for line in lines) + "\n"


def _seconds(value: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def _blocks(report: Report, format: str, memory: bool) -> str:
    """One row per separable block or inverted residual, with the depthwise and pointwise
    shares of its MACs and params and its cost next to one standard conv."""
    rows_by_name = {layer.name: layer for layer in report.layers}
    headers = ["Block", "Kind", "Channels", "k / s", "Params", "DW / PW params", "MACs", "DW / PW MACs"]
    headers += ["Std MACs", "Cost vs std"]
    if memory:
        headers += ["Bytes", "MACs/B"]
    cells = []
    for block in report.blocks:
        hidden = rows_by_name[block.layers[-2]].groups
        channels = (
            [block.in_channels, hidden, block.out_channels]
            if len(block.layers) == 3
            else [block.in_channels, block.out_channels]
        )
        row = [
            block.name,
            block.kind.replace("_", " "),
            " > ".join(str(c) for c in channels),
            f"{format_shape(block.kernel_size)} / {format_stride(block.stride)}",
            f"{block.params:,}",
            _shares(block.depthwise_params, block.params),
            f"{block.macs:,}",
            _shares(block.depthwise_macs, block.macs),
            f"{block.standard_macs:,}",
            f"{block.cost_vs_standard:.2f}x",
        ]
        if memory:
            row += [f"{block.memory_bytes:,}", f"{block.intensity:.2f}"]
        cells.append(row)
    markdown = format == "markdown"
    if not cells:
        text = "No depthwise-separable blocks or inverted residuals found.\n\n"
        text += footer(report, markdown=markdown)
        return f"<pre>{html.escape(text)}</pre>\n" if format == "html" else text
    table = rows(headers, cells, format=format, right=_NUMERIC)
    kinds = [b.kind for b in report.blocks]
    macs = sum(b.macs for b in report.blocks)
    share = f" ({100 * macs / report.total.macs:.1f}%)" if report.total.macs else ""
    lines = [
        f"Blocks:       {len(kinds)} ({kinds.count('separable')} separable, "
        f"{kinds.count('inverted_residual')} inverted residual) hold {format_quantity(macs)} of "
        f"{format_quantity(report.total.macs)} MACs{share}.",
        "Cost vs std:  block MACs / MACs of one standard conv with the block's input and output "
        "channels, depthwise kernel and stride, and output size (below 1x: the block is cheaper).",
    ]
    text = "\n".join(f"{line}  " if markdown else line for line in lines) + "\n"
    return _join(table, text + footer(report, markdown=markdown, memory=memory), format)


def _shares(depthwise: int, total: int) -> str:
    if not total:
        return ""
    part = round(100 * depthwise / total)
    return f"{part}% / {100 - part}%"


def _backward_lines(report: Report) -> list[str]:
    """With a backward pass: its MACs by gradient, and the training step's MACs and FLOPs."""
    if not report.backward:
        return []
    total = report.total
    ratio = f", {total.train_macs / total.macs:.2f}x the forward" if total.macs else ""
    return [
        f"Backward:     {total.backward_macs:,} MACs ({format_quantity(total.backward_macs)}): gradients "
        f"w.r.t. inputs (dX) {total.grad_input_macs:,}, w.r.t. weights (dW) {total.grad_weight_macs:,}",
        f"Train step:   {total.train_macs:,} MACs ({format_quantity(total.train_macs)}) = "
        f"{2 * total.train_macs:,} FLOPs ({format_quantity(2 * total.train_macs)}), forward + backward"
        f"{ratio}; the optimizer step and the loss are not counted",
    ]


_PHASES = {
    "forward": "in the forward pass",
    "backward": "in the backward pass",
    "step": "in the optimizer's update",
}


def _peak_lines(memory: Memory | None) -> list[str]:
    """With peak memory: the peak, when and where it is reached, what it holds, and how."""
    if memory is None:
        return []
    what = (
        (f"training step ({memory.optimizer} update)" if memory.optimizer else "training step (no optimizer)")
        if memory.training
        else "inference (no_grad)"
    )
    if memory.autocast:
        what += f" under autocast ({memory.autocast})"
    where = f", at {memory.layer or '(root)'}" if memory.layer is not None else ""
    held = ", ".join(f"{name} {format_binary_bytes(size)}" for name, size in memory.at_peak)
    return [
        f"Peak memory:  {format_binary_bytes(memory.peak_bytes)} ({memory.peak_bytes:,} bytes), {what} on "
        f"{memory.device}, {_PHASES.get(memory.phase, memory.phase)}{where}",
        f"At the peak:  {held}",
        f"Memory:       {memory.convention}.",
    ]


def footer(report: Report, *, markdown: bool = False, memory: bool = False) -> str:
    """Totals in exact integers and human units, the convention, and what was not counted."""
    total = report.total
    sizes = report.sizes
    lines = [
        f"Total params: {total.params:,} ({format_quantity(total.params)}); trainable "
        f"{sizes.trainable_params:,}, non-trainable {total.params - sizes.trainable_params:,}",
        f"Total MACs:   {total.macs:,} ({format_quantity(total.macs)})",
        f"Total FLOPs:  {total.flops:,} ({format_quantity(total.flops)})",
        *_backward_lines(report),
        f"Sizes:        params {format_bytes(sizes.param_bytes)}, "
        f"buffers {format_bytes(sizes.buffer_bytes)}; activations {format_bytes(sizes.activation_bytes)} "
        "(every leaf module's outputs, which a "
        "training step would keep for backward)",
        f"Total size:   {format_bytes(sizes.total_bytes)} = inputs {format_bytes(sizes.input_bytes)} "
        f"+ params {format_bytes(sizes.param_bytes)} + activations {format_bytes(sizes.activation_bytes)} "
        "(torchinfo's Estimated Total Size, with the activations above); a sum of sizes, not a peak: "
        "see --peak-memory",
    ]
    if memory:
        lines.append(
            f"Total bytes:  {total.memory_bytes:,} ({format_bytes(total.memory_bytes)}), "
            f"{total.intensity:.2f} MACs per byte; bytes = inputs read + weights read + outputs "
            "written by each leaf module (memory access cost)."
        )
    lines += _peak_lines(report.memory)
    lines.append(f"Convention:   {report.convention}.")
    if report.unexplained:
        lines.append("Not counted:  operators with no formula ran; their compute is missing above:")
        for u in report.unexplained:
            where = ", ".join(name or "(root)" for name in u.layers)
            lines.append(f"  {u.op}: {u.calls} call{'s' if u.calls != 1 else ''} in {where}")
    else:
        lines.append("Coverage:     complete (every operator that ran was counted or is free).")
    return "\n".join(f"{line}  " if markdown else line for line in lines) + "\n"


def _csv(layers: Sequence[Layer], backward: bool = False, peak: bool = False) -> str:
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
            "shapes_vary",
            *(["grad_input_macs", "grad_weight_macs"] if backward else []),
            *(["peak_bytes"] if peak else []),
        ]
    )
    for layer in layers:
        writer.writerow(
            [
                layer.name or "(root)",
                layer.type,
                layer.kind or "",
                format_shape(layer.input_shape) if layer.input_shape is not None else "",
                format_shape(layer.output_shape) if layer.output_shape is not None else "",
                format_shape(layer.kernel_size) if layer.kernel_size else "",
                format_shape(layer.stride) if layer.stride else "",
                ""
                if layer.padding is None
                else layer.padding
                if isinstance(layer.padding, str)
                else format_shape(layer.padding),
                format_shape(layer.dilation) if layer.dilation else "",
                "" if layer.groups is None else layer.groups,
                layer.calls,
                layer.params,
                layer.macs,
                layer.flops,
                layer.memory_bytes,
                int(layer.shapes_vary),
                *([layer.grad_input_macs, layer.grad_weight_macs] if backward else []),
                *([layer.peak_bytes] if peak else []),
            ]
        )
    return out.getvalue()


def _csv_blocks(blocks: Sequence[Block]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = ["name", "kind", "layers", "in_channels", "out_channels", "kernel_size", "stride"]
    numbers = ["params", "macs", "memory_bytes", "depthwise_params", "depthwise_macs"]
    numbers += ["pointwise_params", "pointwise_macs", "standard_macs", "cost_vs_standard"]
    writer.writerow(columns + numbers)
    for block in blocks:
        data = block.to_dict()
        writer.writerow(
            [block.name, block.kind, ";".join(block.layers), block.in_channels, block.out_channels]
            + [format_shape(block.kernel_size), format_shape(block.stride)]
            + [data[key] for key in numbers]
        )
    return out.getvalue()


_RIGHT = frozenset({"Actual", "Limit", "Headroom", "Old", "New", "Change", "%"})


def _markdown_cell(text: str) -> str:
    """A cell that stays one cell of one row, as text: module and model names come from user
    code and end up in pull-request comments, so ``|``, line breaks and HTML are escaped."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(text.splitlines())


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
        for metric in d.metrics:
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
