"""Measured time in a report: what :func:`convprof.record.timing.measure` found per layer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LayerTime:
    """Seconds one forward pass spends in a module's own work (all its calls; a container's
    without the timed modules inside it): median, fastest, slowest."""

    name: str
    median: float
    low: float
    high: float

    @staticmethod
    def total(name: str, parts: list[LayerTime]) -> LayerTime:
        """Rows rolled together (a container, a group of ``--depth``): their times added up."""
        return LayerTime(name, *(sum(getattr(part, f) for part in parts) for f in ("median", "low", "high")))


@dataclass(frozen=True, slots=True)
class Timing:
    """What :func:`convprof.record.timing.measure` measured: per layer and end to end."""

    device: str  # e.g. "cpu, 2 threads"
    repeats: int
    forward: float  # end-to-end forward without hooks, median seconds
    forward_low: float
    forward_high: float
    layers: tuple[LayerTime, ...]

    @property
    def attributed(self) -> float:
        """The timed layers' median times added up."""
        return sum(layer.median for layer in self.layers)

    def of(self, name: str) -> LayerTime | None:
        return next((layer for layer in self.layers if layer.name == name), None)
