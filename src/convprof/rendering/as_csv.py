"""The layer table as CSV: every row with its figures as plain numbers (``--format csv``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence

from convprof.report import Layer, LayerTime
from convprof.roofline import Machine
from convprof.units import format_shape

# The fields of each table column (``--columns`` keys), as plain numbers
FIELDS: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "type": ("type",),
    "kind": ("kind",),
    "input": ("input_shape",),
    "output": ("output_shape",),
    "conv": ("kernel_size", "stride", "padding", "dilation", "groups"),
    "calls": ("calls",),
    "params": ("params",),
    "trainable": ("trainable_params",),
    "param_share": ("param_share",),
    "macs": ("macs",),
    "flops": ("flops",),
    "share": ("share",),
    "grad_input": ("grad_input_macs",),
    "grad_weight": ("grad_weight_macs",),
    "backward": ("backward_macs",),
    "train": ("train_macs",),
    "bytes": ("memory_bytes",),
    "peak": ("peak_bytes",),
    "intensity": ("intensity",),
    "bound": ("bound",),
    "time": ("roofline_share",),
    "measured": ("measured_seconds",),
    "spread": ("measured_low_seconds", "measured_high_seconds"),
    "gmacs": ("gmacs_per_second",),
    "gbs": ("gb_per_second",),
    "predicted": ("roofline_seconds",),
    "ratio": ("measured_over_roofline",),
    "shapes_vary": ("shapes_vary",),  # CSV only: the first call's shapes, later ones differed
}
_DEFAULT = ["name", "type", "kind", "input", "output", "conv", "calls", "params", "macs", "flops", "bytes"]


def layers_csv(
    layers: Sequence[Layer],
    backward: bool = False,
    peak: bool = False,
    *,
    columns: Sequence[str] | None = None,
    measured: Mapping[str, LayerTime] | None = None,
    roofline: Machine | None = None,
) -> str:
    """Every row's figures as plain numbers: the table's ``columns`` when given, else the
    layer's own fields, with the gradients', the peak's, the measured times' (``measured``:
    by row name) and the roofline's (``roofline``) when the report or the command has them."""
    keys = list(columns) if columns else _default(backward, peak, measured is not None, roofline)
    total_macs = sum(layer.macs for layer in layers)
    total_params = sum(layer.params for layer in layers)
    times = {row.name: roofline.seconds(row.macs, row.memory_bytes) for row in layers} if roofline else {}
    total_time = sum(times.values())
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([field for key in keys for field in FIELDS[key]])
    for layer in layers:
        values = _values(layer, (measured or {}).get(layer.name), times.get(layer.name, 0.0), roofline)
        values["share"] = layer.macs / total_macs if total_macs else ""
        values["param_share"] = layer.params / total_params if total_params else ""
        values["roofline_share"] = times[layer.name] / total_time if times and total_time else ""
        writer.writerow([values[field] for key in keys for field in FIELDS[key]])
    return out.getvalue()


def _default(backward: bool, peak: bool, timed: bool, roofline: Machine | None) -> list[str]:
    keys = [*_DEFAULT, "shapes_vary"]
    keys += ["grad_input", "grad_weight"] if backward else []
    keys += ["peak"] if peak else []
    keys += ["measured", "spread", "gmacs", "gbs"] if timed else []
    keys += ["intensity", "bound", "predicted"] + (["ratio"] if timed else []) if roofline else []
    return keys


def _shape(shape: object) -> str:
    return format_shape(shape) if isinstance(shape, tuple) and shape else ""


def _values(
    layer: Layer, time: LayerTime | None, seconds: float, roofline: Machine | None
) -> dict[str, object]:
    padding = layer.padding
    absolute = roofline is not None and roofline.absolute
    return {
        "name": layer.name or "(root)",
        "type": layer.type,
        "kind": layer.kind or "",
        "input_shape": _shape(layer.input_shape),
        "output_shape": _shape(layer.output_shape),
        "kernel_size": _shape(layer.kernel_size),
        "stride": _shape(layer.stride),
        "padding": padding if isinstance(padding, str) else _shape(padding),
        "dilation": _shape(layer.dilation),
        "groups": "" if layer.groups is None else layer.groups,
        "calls": layer.calls,
        "params": layer.params,
        "trainable_params": layer.trainable_params,
        "macs": layer.macs,
        "flops": layer.flops,
        "memory_bytes": layer.memory_bytes,
        "shapes_vary": int(layer.shapes_vary),
        "grad_input_macs": layer.grad_input_macs,
        "grad_weight_macs": layer.grad_weight_macs,
        "backward_macs": layer.backward_macs,
        "train_macs": layer.train_macs,
        "peak_bytes": layer.peak_bytes,
        "intensity": layer.intensity if layer.memory_bytes else "",
        "bound": roofline.bound(layer.macs, layer.memory_bytes) if roofline else "",
        "measured_seconds": time.median if time else "",
        "measured_low_seconds": time.low if time else "",
        "measured_high_seconds": time.high if time else "",
        "gmacs_per_second": layer.macs / time.median / 1e9 if time and time.median else "",
        "gb_per_second": layer.memory_bytes / time.median / 1e9 if time and time.median else "",
        "roofline_seconds": seconds if absolute else "",
        "measured_over_roofline": time.median / seconds if time and seconds and absolute else "",
    }
