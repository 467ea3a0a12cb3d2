"""What changed between two reports or baselines, as tables (``convprof diff``)."""

from __future__ import annotations

from collections.abc import Sequence

from convprof.rendering.tables import rows
from convprof.report.diff import ModelDiff


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
