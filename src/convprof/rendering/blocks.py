"""The blocks table: one row per separable block or inverted residual (``--blocks``)."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence

from convprof.rendering.columns import NUMERIC
from convprof.rendering.footer import footer
from convprof.rendering.tables import joined, rows
from convprof.report import Block, Report
from convprof.units import format_quantity, format_shape, format_stride

BLOCK_NUMERIC = frozenset({"Std MACs", "Cost vs std", "DW / PW params", "DW / PW MACs"})


def blocks_table(report: Report, format: str, memory: bool) -> str:
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
    table = rows(headers, cells, format=format, right=NUMERIC | BLOCK_NUMERIC)
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
    return joined(table, text + footer(report, markdown=markdown, memory=memory), format)


def _shares(depthwise: int, total: int) -> str:
    if not total:
        return ""
    part = round(100 * depthwise / total)
    return f"{part}% / {100 - part}%"


def blocks_csv(blocks: Sequence[Block]) -> str:
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
