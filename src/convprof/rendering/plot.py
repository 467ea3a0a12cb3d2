"""Pictures of a report: where the MACs and params go, layer by layer, and which roof each
layer sits under. The only module that imports matplotlib, and only when asked to draw, so
matplotlib stays an optional extra (``pip install 'convprof[plot]'``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from convprof.report import Layer, Report, Timing
from convprof.roofline import Machine, machine
from convprof.units import format_bytes, format_quantity

WIDTH, HEIGHT, DPI = 12, 12, 100  # inches and dots per inch: a 1200 x 1200 PNG
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


def plot(
    report: Report,
    path: str | Path,
    *,
    roofline: Machine | str | float | None = None,
    timing: Timing | None = None,
) -> Path:
    """Write a PNG of ``WIDTH * DPI`` by ``HEIGHT * DPI`` pixels of :func:`figure`."""
    plt = _pyplot()
    path = Path(path)
    drawn = figure(report, roofline=roofline, timing=timing)
    try:
        drawn.savefig(path, format="png", dpi=DPI)
    finally:
        plt.close(drawn)
    return path


def figure(
    report: Report, *, roofline: Machine | str | float | None = None, timing: Timing | None = None
) -> Any:
    """The matplotlib figure: MACs and params (log scale) per layer (its own) on one layer index in
    execution order, coloured by conv kind, the costliest layers named; below, the roofline of
    ``roofline`` (its memory and compute roofs, each layer at its intensity, sized by its MACs),
    or without a machine, intensity against MACs; with ``timing`` and a machine, beside it each
    layer's measured time against its roofline time. One legend for all, below the panels."""
    if roofline is not None and not isinstance(roofline, Machine):
        roofline = machine(str(roofline), report.dtype)
    plt = _pyplot()
    # every row with MACs or params of its own: a container's own compute (nn.MultiheadAttention's
    # attention, a block's own matmuls) is a bar too, so that the bars add up to the total
    leaves = [layer for layer in report.layers if layer.macs or layer.params]
    drawn = plt.figure(figsize=(WIDTH, HEIGHT), dpi=DPI, layout="constrained")
    compared = timing is not None and roofline is not None and roofline.absolute
    grid = drawn.add_gridspec(3, 2 if compared else 1, height_ratios=(1, 1, 1.3))
    macs = drawn.add_subplot(grid[0, :])
    params = drawn.add_subplot(grid[1, :], sharex=macs)
    roof = drawn.add_subplot(grid[2, 0])
    if compared:
        assert timing is not None and roofline is not None
        every = [layer for layer in report.layers if not layer.has_children]  # norms too
        _measured(drawn.add_subplot(grid[2, 1]), every, timing, roofline)
    _bars(macs, leaves, "macs", "MACs per layer")
    _bars(params, leaves, "params", "params per layer (log scale)", log=True)
    params.set_xlabel(
        f"layer index: the {len(leaves)} layers with MACs or params of their own, in execution order"
    )
    _roofline(roof, leaves, roofline)
    kinds = [kind for kind in COLOURS if any(layer.kind == kind for layer in leaves)]
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS[kind]) for kind in kinds]
    drawn.legend(handles, [LABELS[kind] for kind in kinds], loc="outside lower center", ncols=len(kinds) or 1)
    total = report.total
    drawn.suptitle(
        f"{report.model}: {format_quantity(total.macs)} MACs, {format_quantity(total.params)} params, "
        f"{format_bytes(total.memory_bytes)} moved ({report.dtype})"
    )
    return drawn


TOP = 5  # layers named on each panel


def _bars(axes: Any, layers: list[Layer], metric: str, title: str, *, log: bool = False) -> None:
    values = [getattr(layer, metric) for layer in layers]
    if log:
        axes.set_yscale("log")
    axes.bar(
        range(len(layers)),
        values,
        color=[COLOURS.get(layer.kind, COLOURS[None]) for layer in layers],
        width=0.9,
    )
    axes.set_title(title)
    axes.set_xlim(-1, max(len(layers), 1))
    axes.tick_params(axis="x", labelbottom=metric == "params")
    if values and max(values):  # room above the bars for the names
        if log:
            axes.set_ylim(min(v for v in values if v) / 2, max(values) * 8)
        else:
            axes.set_ylim(0, max(values) * 1.2)
    # The costliest layers by name, above their bars, level. A name that would overlap one
    # already placed, or run past the panel's edge, is left out (measured as drawn: ViT-B/16's
    # names are four times MobileNetV2's, and a fixed spacing let them overlap); names near
    # an edge run inwards.
    renderer = axes.figure.canvas.get_renderer()
    panel = axes.get_window_extent(renderer)
    placed: list[Any] = []
    for i in sorted((i for i, v in enumerate(values) if v), key=lambda i: -values[i]):
        if len(placed) == TOP:
            break
        share = (i + 1) / (len(layers) + 1)
        edge = "left" if share < 0.2 else "right" if share > 0.8 else "center"
        name = axes.annotate(
            layers[i].name or "(root)",
            (i, values[i]),
            xytext=(0, 3),
            textcoords="offset points",
            fontsize="x-small",
            ha=edge,
            va="bottom",
        )
        box = name.get_window_extent(renderer)
        if box.x0 < panel.x0 or box.x1 > panel.x1 or any(box.overlaps(other) for other in placed):
            name.remove()
            continue
        placed.append(box)


def _name_points(axes: Any, layers: list[Layer], xs: list[float], ys: list[float]) -> None:
    """Name the TOP layers with the most MACs beside their points (log-log axes), leaving out
    one whose name would overlap a name already placed (measured as drawn); names in the
    right fifth of the panel run leftwards, so that none is cut at its edge."""
    if not layers:
        return
    renderer = axes.figure.canvas.get_renderer()
    low, high = math.log10(min(xs)), math.log10(max(xs))
    placed: list[Any] = []
    for i in sorted(range(len(layers)), key=lambda i: -layers[i].macs):
        if len(placed) == TOP:
            break
        right = math.log10(xs[i]) - low > 0.8 * (high - low)
        name = axes.annotate(
            layers[i].name or "(root)",
            (xs[i], ys[i]),
            xytext=(-4 if right else 4, 3),
            textcoords="offset points",
            fontsize="x-small",
            ha="right" if right else "left",
        )
        box = name.get_window_extent(renderer)
        if any(box.overlaps(other) for other in placed):
            name.remove()
            continue
        placed.append(box)


def _roofline(axes: Any, layers: list[Layer], machine: Machine | None) -> None:
    points = [layer for layer in layers if layer.macs and layer.memory_bytes]
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("arithmetic intensity (MACs per byte)")
    if machine is None or not machine.absolute:
        for kind in COLOURS:
            chosen = [layer for layer in points if layer.kind == kind]
            if chosen:
                axes.scatter(
                    [p.intensity for p in chosen], [p.macs for p in chosen], color=COLOURS[kind], s=18
                )
        _name_points(axes, points, [p.intensity for p in points], [float(p.macs) for p in points])
        if machine is not None:
            axes.axvline(machine.balance, color="#c44e52", linestyle="--")
            axes.text(
                machine.balance,
                1,
                f" balance {machine.balance:g}",
                transform=axes.get_xaxis_transform(),
                va="top",
                fontsize="small",
                color="#c44e52",
            )
        axes.set_ylabel("MACs")
        axes.set_title(
            "intensity and MACs per layer"
            + ("" if machine is None else " (left of the balance: memory-bound)")
        )
        return
    low = min([p.intensity for p in points] + [machine.balance]) / 4
    high = max([p.intensity for p in points] + [machine.balance]) * 4
    peak, bandwidth = machine.macs_per_second, machine.bytes_per_second
    axes.plot([low, machine.balance], [low * bandwidth, peak], color="#c44e52", label="memory roof")
    axes.plot([machine.balance, high], [peak, peak], color="#8c2d04", label="compute roof")
    axes.text(
        low * 1.1,
        low * bandwidth * 1.3,
        f"{bandwidth / 1e9:.4g} GB/s",
        color="#c44e52",
        fontsize="small",
        rotation=0,
    )
    axes.text(
        high / 1.1, peak * 1.15, f"{peak / 1e12:.4g} TMAC/s", color="#8c2d04", fontsize="small", ha="right"
    )
    total = sum(p.macs for p in points) or 1
    for kind in COLOURS:
        chosen = [layer for layer in points if layer.kind == kind]
        if chosen:
            axes.scatter(
                [p.intensity for p in chosen],
                [min(peak, p.intensity * bandwidth) for p in chosen],
                s=[16 + 2000 * p.macs / total for p in chosen],
                color=COLOURS[kind],
                alpha=0.7,
                edgecolors="white",
                linewidths=0.5,
            )
    axes.set_ylim(top=peak * 2.5)  # room for the peak's label
    attained = [min(peak, p.intensity * bandwidth) for p in points]
    _name_points(axes, points, [p.intensity for p in points], attained)
    axes.set_ylabel("attainable MACs per second")
    axes.set_title(f"roofline: {machine.description}", fontsize="small", wrap=True)


def _measured(axes: Any, layers: list[Layer], timing: Timing, machine: Machine) -> None:
    """Each leaf layer's measured time against its roofline time, log-log: on the diagonal a
    layer runs at the roof; above it, that many times slower."""
    points = [
        (layer, machine.seconds(layer.macs, layer.memory_bytes), measured.median)
        for layer in layers
        if (measured := timing.of(layer.name)) is not None and measured.median and layer.memory_bytes
    ]
    for kind in COLOURS:
        chosen = [(p, m) for layer, p, m in points if layer.kind == kind]
        if chosen:
            axes.scatter([p for p, _ in chosen], [m for _, m in chosen], color=COLOURS[kind], s=18, alpha=0.8)
    if points:
        low = min(min(p, m) for _, p, m in points) / 2
        high = max(max(p, m) for _, p, m in points) * 2
        axes.plot([low, high], [low, high], color="#c44e52", linestyle="--", linewidth=1)
        axes.text(high, high, " at the roof", color="#c44e52", fontsize="small", ha="right", va="bottom")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel(f"roofline time on {machine.name} (s)")
    axes.set_ylabel(f"measured time (s), {timing.device}")
    axes.set_title("measured against predicted, per layer", fontsize="small")
