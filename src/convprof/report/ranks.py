"""A distributed step in a report: each class of ranks that run the same step, with its peak
memory, the MACs it computes and the collectives it runs (``Report.ranks``).

These names are a contract other tools read: ``RankClass.peak_bytes``, ``.macs`` and
``.collectives``, each collective's ``kind``, ``phase``, ``count`` and ``bytes``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from convprof.report.memory import Memory


@dataclass(frozen=True, slots=True)
class Collective:
    """The collectives of one kind, phase and group one rank runs in a step, added up.

    ``bytes`` is their payload as nccl-tests counts it (the gathered output of an
    all-gather, the input of a reduce-scatter, the buffer of an all-reduce, the send buffer
    of an all-to-all, a send or receive); ``sent_bytes`` what the rank sends over its links
    with ring algorithms: ``2 (n - 1) / n`` of the payload for an all-reduce over ``n`` ranks,
    ``(n - 1) / n`` for an all-gather, a reduce-scatter or an all-to-all, all of it for a
    send or a broadcast, nothing for a receive."""

    kind: str
    phase: str
    group: str  # the mesh dimension: dp_shard, dp_replicate, tp, ...
    group_size: int
    count: int
    bytes: int
    sent_bytes: int


@dataclass(frozen=True, slots=True)
class RankClass:
    """Ranks that run the same step (the same shard sizes), and what one of them does.

    ``ranks`` lists them (``rank``, the first, is the one predicted), ``coordinates`` its
    place on each mesh dimension. ``macs`` are the forward MACs it computes in one step
    (every micro-step, on its local shapes), ``train_macs`` forward and backward,
    ``recompute_macs`` the forwards activation checkpointing runs again, apart.
    ``params`` and ``param_bytes`` are the parameter elements and bytes it holds (its shards).
    ``peak_bytes`` is its predicted peak (``memory`` says when, where and what it holds; 0 and
    None when memory was not asked for)."""

    name: str
    ranks: tuple[int, ...]
    coordinates: tuple[tuple[str, int], ...]
    macs: int
    train_macs: int
    recompute_macs: int
    params: int
    param_bytes: int
    peak_bytes: int
    memory: Memory | None
    collectives: tuple[Collective, ...]

    @property
    def rank(self) -> int:
        return self.ranks[0]

    @property
    def sent_bytes(self) -> int:
        """What this rank sends in one step, every collective added up."""
        return sum(c.sent_bytes for c in self.collectives)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["memory"] = self.memory.to_dict() if self.memory is not None else None
        data["coordinates"] = dict(self.coordinates)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankClass:
        fields = dict(data)
        fields["ranks"] = tuple(fields["ranks"])
        fields["coordinates"] = tuple(dict(fields["coordinates"]).items())
        fields["memory"] = Memory.from_dict(fields["memory"]) if fields.get("memory") else None
        fields["collectives"] = tuple(Collective(**c) for c in fields["collectives"])
        return cls(**fields)
