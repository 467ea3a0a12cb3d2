"""The layer table's columns and rows: what each column shows, which are shown by default, and
the tree view's rows. Plain strings out; :mod:`convprof.rendering.render` lays them out.

A column is a key (what ``--columns`` takes), a header, and a function of a :class:`Row`. The
default set is the flat table's: name to share, with ``Calls`` where a row sums several calls,
bytes and intensity with ``memory``, bound and time share with a roofline.

The tree (``tree=True``, ``--tree``) shows every module, containers included, as an indented
outline in the order modules first ran, as torchinfo does; a container's figures include
everything below it, so each line answers "what does this part cost".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from convprof.report import Layer, LayerTime, Report
from convprof.roofline import Machine
from convprof.units import format_shape, format_stride


@dataclass(frozen=True, slots=True)
class Row:
    """A layer as one table line shows it: its name as displayed (full or indented) and,
    with a roofline, its time there."""

    layer: Layer
    name: str
    seconds: float = 0.0  # roofline time
    measured: LayerTime | None = None  # measured time (convprof.timing)


@dataclass(frozen=True, slots=True)
class Table:
    """What cells need beyond their own row: totals to take shares of, the machine."""

    macs: int
    seconds: float = 0.0
    machine: Machine | None = None
    unit: str = "ms"  # of the time columns: "us" when a time would show as 0.000 ms
    params: int = 0  # the total, for Params %


def _conv(layer: Layer) -> str:
    if layer.kernel_size is None:
        return ""
    return f"{format_shape(layer.kernel_size)} / {format_stride(layer.stride or ())} / {layer.groups}"


def _shape(shape: tuple[int, ...] | None, vary: bool) -> str:
    return "" if shape is None else format_shape(shape) + ("*" if vary else "")


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else ""


Cell = Callable[[Row, Table], str]


def _input(layer: Layer) -> str:
    """A module that never ran itself (a Sequential the model iterates, a layer whose parent
    uses its weights directly) says so where its input would be."""
    return _shape(layer.input_shape, layer.shapes_vary) if layer.calls else "(not called)"


COLUMNS: dict[str, tuple[str, Cell]] = {
    "name": ("Layer", lambda r, t: r.name),
    "type": ("Type", lambda r, t: r.layer.type),
    "kind": ("Kind", lambda r, t: r.layer.kind or ""),
    "input": ("Input", lambda r, t: _input(r.layer)),
    "output": ("Output", lambda r, t: _shape(r.layer.output_shape, r.layer.shapes_vary)),
    "conv": ("k / s / g", lambda r, t: _conv(r.layer)),
    "calls": ("Calls", lambda r, t: str(r.layer.calls)),
    "params": ("Params", lambda r, t: f"{r.layer.params:,}"),
    "trainable": ("Trainable", lambda r, t: f"{r.layer.trainable_params:,}"),
    "param_share": ("Params %", lambda r, t: _share(r.layer.params, t.params)),
    "macs": ("MACs", lambda r, t: f"{r.layer.macs:,}" + (" (+?)" if r.layer.unexplained else "")),
    "flops": ("FLOPs", lambda r, t: f"{r.layer.flops:,}"),
    "share": ("Share", lambda r, t: _share(r.layer.macs, t.macs)),
    "grad_input": ("Bwd dX MACs", lambda r, t: f"{r.layer.grad_input_macs:,}"),
    "grad_weight": ("Bwd dW MACs", lambda r, t: f"{r.layer.grad_weight_macs:,}"),
    "backward": ("Bwd MACs", lambda r, t: f"{r.layer.backward_macs:,}"),
    "train": ("Train MACs", lambda r, t: f"{r.layer.train_macs:,}"),
    "bytes": ("Bytes", lambda r, t: f"{r.layer.memory_bytes:,}"),
    "peak": ("Peak MiB", lambda r, t: f"{r.layer.peak_bytes / 2**20:,.2f}" if r.layer.peak_bytes else ""),
    "intensity": (
        "MACs/B",
        lambda r, t: f"{r.layer.intensity:.2f}" if r.layer.memory_bytes else "",
    ),
    "bound": (
        "Bound",
        lambda r, t: t.machine.bound(r.layer.macs, r.layer.memory_bytes) if t.machine else "",
    ),
    "time": ("Time share", lambda r, t: _share(r.seconds, t.seconds)),
    "measured": ("Measured ms", lambda r, t: _time(r.measured.median, t) if r.measured else ""),
    "spread": (
        "Spread ms",
        lambda r, t: f"{_time(r.measured.low, t)}-{_time(r.measured.high, t)}" if r.measured else "",
    ),
    "gmacs": ("GMAC/s", lambda r, t: _rate(r.layer.macs, r.measured)),
    "gbs": ("GB/s", lambda r, t: _rate(r.layer.memory_bytes, r.measured)),
    "predicted": (
        "Roofline ms",
        lambda r, t: _time(r.seconds, t) if t.machine and t.machine.absolute else "",
    ),
    "ratio": (
        "Measured / roofline",
        lambda r, t: (
            f"{r.measured.median / r.seconds:.1f}x"
            if r.measured and r.seconds and t.machine and t.machine.absolute
            else ""
        ),
    ),
}
NUMERIC = frozenset(
    {"Calls", "Params", "MACs", "FLOPs", "Share", "Bytes", "MACs/B", "Time share"}
    | {"Bwd dX MACs", "Bwd dW MACs", "Bwd MACs", "Train MACs", "Peak MiB"}
    | {"Measured ms", "Spread ms", "GMAC/s", "GB/s", "Roofline ms", "Measured / roofline"}
    | {"Measured us", "Spread us", "Roofline us", "Trainable", "Params %"}
)
_NEEDS_ROOFLINE = ("bound", "time", "predicted", "ratio")
_NEEDS_TIMING = ("measured", "spread", "gmacs", "gbs", "ratio")
_NEEDS_BACKWARD = ("grad_input", "grad_weight", "backward", "train")


def _time(seconds: float, table: Table) -> str:
    return f"{seconds * (1e6 if table.unit == 'us' else 1e3):,.3f}"


def time_unit(seconds: Sequence[float]) -> str:
    """``"ms"``, or ``"us"`` when some time would show as 0.000 ms (a small model's layers on
    a roofline: nanoseconds)."""
    return "us" if any(0 < value < 5e-7 for value in seconds) else "ms"


def _rate(count: int, measured: LayerTime | None) -> str:
    """Per second, in units of 10^9, over the measured median."""
    if measured is None or not measured.median or not count:
        return ""
    return f"{count / measured.median / 1e9:.1f}"


def parse_columns(text: str) -> tuple[str, ...]:
    """``"name,params,macs"`` -> the keys, each checked (a ValueError names the unknown one)."""
    keys = tuple(key.strip().lower() for key in text.split(",") if key.strip())
    if not keys:
        raise ValueError(f"no columns given: choose from {', '.join(COLUMNS)}")
    for key in keys:
        if key not in COLUMNS:
            raise ValueError(f"unknown column {key!r}: choose from {', '.join(COLUMNS)}")
    return keys


def default_columns(
    rows: Sequence[Row], *, memory: bool, roofline: bool, backward: bool = False, peak: bool = False
) -> tuple[str, ...]:
    keys = ["name", "type", "kind", "input", "output", "conv"]
    if any(row.layer.calls > 1 for row in rows):  # reused modules: a row sums several calls
        keys.append("calls")
    keys += ["params", "macs", "share"]
    if backward:
        keys += ["grad_input", "grad_weight"]
    if memory or roofline:
        keys += ["bytes", "intensity"]
    if peak:
        keys.append("peak")
    if roofline:
        keys += ["bound", "time"]
    if any(row.measured is not None for row in rows):
        keys += ["measured", "spread", "gmacs", "gbs"] + (["predicted", "ratio"] if roofline else [])
    return tuple(keys)


def check_columns(
    keys: Sequence[str],
    *,
    roofline: bool,
    timing: bool = False,
    backward: bool | None = None,
    peak: bool | None = None,
) -> None:
    """A ValueError for a column that cannot be filled (bound and time need a roofline, the
    measured columns a measurement, the backward ones a backward pass; ``backward=None``:
    not known yet, as when the command line checks before profiling)."""
    for key in keys:
        if key not in COLUMNS:
            raise ValueError(f"unknown column {key!r}: choose from {', '.join(COLUMNS)}")
        if key in _NEEDS_ROOFLINE and not roofline:
            raise ValueError(f"column {key!r} needs a roofline machine (--roofline)")
        if key in _NEEDS_TIMING and not timing:
            raise ValueError(f"column {key!r} needs a measurement (--time)")
        if key in _NEEDS_BACKWARD and backward is False:
            raise ValueError(f"column {key!r} needs a backward pass (--backward)")
        if key == "peak" and peak is False:
            raise ValueError("column 'peak' needs peak memory (--peak-memory)")


def cells(rows: Sequence[Row], keys: Sequence[str], table: Table) -> tuple[list[str], list[list[str]]]:
    """Headers and the cells of every row, for the columns ``keys``."""
    headers = [COLUMNS[key][0].replace(" ms", f" {table.unit}") for key in keys]
    return headers, [[COLUMNS[key][1](row, table) for key in keys] for row in rows]


def tree(report: Report, depth: int | None = None) -> list[Row]:
    """Every module to ``depth`` name components, as an outline: each under the nearest
    ancestor that has a row (a ModuleList that never runs itself has none), with figures that
    include everything below it."""
    inclusive = report.inclusive()
    trainable: dict[str, int] = {}  # with everything below, as inclusive() has the rest
    for layer in report.layers:
        parts = layer.name.split(".") if layer.name else []
        for end in range(len(parts) + 1):
            key = ".".join(parts[:end])
            trainable[key] = trainable.get(key, 0) + layer.trainable_params
    layers = [layer for layer in report.layers if depth is None or layer.depth <= depth]
    names = {layer.name for layer in layers}

    def parent(name: str) -> str | None:
        while name:
            name = name.rpartition(".")[0]
            if name in names:
                return name
        return None

    parents = {layer.name: parent(layer.name) if layer.name else None for layer in layers}
    last_child: dict[str | None, str] = {}
    for layer in layers:
        last_child[parents[layer.name]] = layer.name
    rows = []
    for layer in layers:
        chain, node = [], layer.name
        while parents.get(node) is not None:
            chain.append(node)
            node = parents[node]  # type: ignore[assignment]
        rises = chain[::-1]
        prefix = "".join("   " if last_child[parents[n]] == n else "│  " for n in rises[:-1])
        if rises:
            own = rises[-1]
            branch = "└─ " if last_child[parents[own]] == own else "├─ "
            above = parents[own] or ""
            label = own[len(above) + 1 :] if above else own
            name = prefix + branch + label
        else:
            name = layer.name or report.model
        total = inclusive.get(layer.name)
        if layer.has_children and total is not None:
            layer = replace(
                layer,
                params=total.params,
                macs=total.macs,
                memory_bytes=total.memory_bytes,
                grad_input_macs=total.grad_input_macs,
                grad_weight_macs=total.grad_weight_macs,
                trainable_params=trainable.get(layer.name, 0),
            )
        rows.append(Row(layer, name))  # a container's peak already covers its children
    return rows
