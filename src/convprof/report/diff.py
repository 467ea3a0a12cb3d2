"""What changed between two reports of the same models: totals and layers. Pure arithmetic.

Layers are matched by name. A layer is *changed* when its type, params or MACs differ;
*added* or *removed* when only one side has it. A tolerance applies to increases of the
totals only: a model that got cheaper never fails a diff.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from convprof.report.results import Report
from convprof.report.rows import Totals


@dataclass(frozen=True, slots=True)
class LayerChange:
    name: str
    type: str
    status: str  # "added", "removed" or "changed"
    old_params: int
    new_params: int
    old_macs: int
    new_macs: int


@dataclass(frozen=True, slots=True)
class ModelDiff:
    model: str
    old: Totals | None
    new: Totals | None
    layers: tuple[LayerChange, ...] = ()
    backward: bool = False  # both sides counted a backward pass: their train_macs compare
    peak: tuple[int, int] | None = None  # (old, new) predicted peak bytes, when both predicted one

    @property
    def metrics(self) -> tuple[str, ...]:
        """What the diff compares: params, MACs and FLOPs, the training step when both
        reports counted one (without a backward pass it would only repeat the MACs), and the
        peak memory when both predicted it."""
        return (
            "params",
            "macs",
            "flops",
            *(("train_macs",) if self.backward else ()),
            *(("peak_bytes",) if self.peak is not None else ()),
        )

    def metric(self, metric: str) -> tuple[int, int]:
        """(old, new) of one of :attr:`metrics`; 0 for a side that is missing."""
        if metric == "peak_bytes" and self.peak is not None:
            return self.peak

        def value(totals: Totals | None) -> int:
            return 0 if totals is None else getattr(totals, metric)

        return value(self.old), value(self.new)

    def exceeded(self, tolerance: float) -> tuple[str, ...]:
        """Metrics that grew by more than ``tolerance`` (a fraction) over the old report."""
        if self.old is None or self.new is None:
            return ()
        grown = []
        for metric in self.metrics:
            old, new = self.metric(metric)
            if new > old * (1 + tolerance) and new > old:
                grown.append(metric)
        return tuple(grown)


def _layer_changes(old: Report, new: Report) -> tuple[LayerChange, ...]:
    before = {layer.name: layer for layer in old.layers}
    after = {layer.name: layer for layer in new.layers}
    changes = []
    for name, layer in after.items():
        prior = before.get(name)
        if prior is None:
            changes.append(LayerChange(name, layer.type, "added", 0, layer.params, 0, layer.macs))
        elif (prior.type, prior.params, prior.macs) != (layer.type, layer.params, layer.macs):
            changes.append(
                LayerChange(name, layer.type, "changed", prior.params, layer.params, prior.macs, layer.macs)
            )
    changes.extend(
        LayerChange(name, layer.type, "removed", layer.params, 0, layer.macs, 0)
        for name, layer in before.items()
        if name not in after
    )
    return tuple(changes)


def compare(old: Mapping[str, Report], new: Mapping[str, Report]) -> tuple[ModelDiff, ...]:
    """One ModelDiff per model name found on either side, in the new side's order."""
    names = list(new) + [name for name in old if name not in new]
    diffs = []
    for name in names:
        before, after = old.get(name), new.get(name)
        layers = _layer_changes(before, after) if before and after else ()
        both = bool(before and after and before.backward and after.backward)
        peak = (
            (before.memory.peak_bytes, after.memory.peak_bytes)
            if before and after and before.memory is not None and after.memory is not None
            else None
        )
        diffs.append(
            ModelDiff(
                name, before.total if before else None, after.total if after else None, layers, both, peak
            )
        )
    return tuple(diffs)
