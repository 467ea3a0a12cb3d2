"""Pictures of a report: where the MACs and params go, layer by layer, and which roof each
layer sits under. The only module that imports matplotlib, and only when asked to draw, so
matplotlib stays an optional extra (``pip install 'convprof[plot]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convprof.report import Layer, Report
from convprof.roofline import Machine, machine
from convprof.units import format_quantity

WIDTH, HEIGHT, DPI = 12, 10, 100  # inches and dots per inch: a 1200 x 1000 PNG
COLOURS: dict[str | None, str] = {
    "standard": "#4c72b0",
    "grouped": "#8172b3",
    "depthwise": "#dd8452",
    "pointwise": "#55a868",
    None: "#9a9a9a",  # linear, attention, norms: no conv kind
}
LABELS: dict[str | None, str] = {"standard": "standard conv", "grouped": "grouped conv"}
LABELS |= {"depthwise": "depthwise conv", "pointwise": "pointwise conv", None: "other"}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "plots need matplotlib, which is not installed: pip install 'convprof[plot]'"
        ) from None
    matplotlib.use("Agg", force=True)  # files only; never open a window
    import matplotlib.pyplot as plt

    return plt


def plot(report: Report, path: str | Path, *, roofline: Machine | str | float | None = None) -> Path:
    """Write a PNG of ``WIDTH * DPI`` by ``HEIGHT * DPI`` pixels: MACs and params per leaf
    layer in execution order, coloured by conv kind, and intensity against MACs on log axes
    with the machine balance of ``roofline`` as a vertical line."""
    if roofline is not None and not isinstance(roofline, Machine):
        roofline = machine(str(roofline), report.dtype)
    plt = _pyplot()
    path = Path(path)
    leaves = [layer for layer in report.layers if not layer.has_children and (layer.macs or layer.params)]
    figure = plt.figure(figsize=(WIDTH, HEIGHT), dpi=DPI)
    try:
        grid = figure.add_gridspec(2, 2, height_ratios=(1, 1.2))
        macs, params, scatter = (
            figure.add_subplot(grid[0, :]),
            figure.add_subplot(grid[1, 0]),
            figure.add_subplot(grid[1, 1]),
        )
        _bars(macs, leaves, "macs", "MACs per layer")
        _bars(params, leaves, "params", "params per layer")
        _roofline(scatter, leaves, roofline)
        total = report.total
        figure.suptitle(
            f"{report.model}: {format_quantity(total.macs)} MACs, {format_quantity(total.params)} params, "
            f"{format_quantity(total.memory_bytes)}B moved"
        )
        figure.savefig(path, format="png", dpi=DPI)
    finally:
        plt.close(figure)
    return path


def _bars(axes: Any, layers: list[Layer], metric: str, title: str) -> None:
    layers = [layer for layer in layers if getattr(layer, metric)]  # no gaps for norms in MACs
    xs = range(len(layers))
    axes.bar(
        xs,
        [getattr(layer, metric) for layer in layers],
        color=[COLOURS.get(layer.kind, COLOURS[None]) for layer in layers],
        width=0.9,
    )
    axes.set_title(title)
    axes.set_xlabel(f"layers with {metric}, in execution order")
    axes.set_xlim(-1, max(len(layers), 1))
    handles = [
        axes.bar(0, 0, color=COLOURS[kind], label=LABELS[kind])
        for kind in COLOURS
        if any(layer.kind == kind for layer in layers)
    ]
    if handles:
        axes.legend(fontsize="small")


def _roofline(axes: Any, layers: list[Layer], machine: Machine | None) -> None:
    points = [layer for layer in layers if layer.macs and layer.memory_bytes]
    for kind in COLOURS:
        chosen = [layer for layer in points if layer.kind == kind]
        if chosen:
            axes.scatter(
                [layer.intensity for layer in chosen],
                [layer.macs for layer in chosen],
                color=COLOURS[kind],
                label=LABELS[kind],
                s=18,
            )
    if points:
        axes.set_xscale("log")
        axes.set_yscale("log")
    if machine is not None:
        axes.axvline(
            machine.balance,
            color="#c44e52",
            linestyle="--",
            label=f"{machine.name} balance {machine.balance:.1f}",
        )
    axes.set_xlabel("arithmetic intensity (MACs per byte); left of the balance: memory-bound")
    axes.set_ylabel("MACs")
    axes.set_title("roofline view")
    if points or machine is not None:
        axes.legend(fontsize="small")
