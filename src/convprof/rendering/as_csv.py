"""The layer table as CSV: every row with its figures as plain numbers (``--format csv``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from convprof.report import Layer
from convprof.units import format_shape


def layers_csv(layers: Sequence[Layer], backward: bool = False, peak: bool = False) -> str:
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
