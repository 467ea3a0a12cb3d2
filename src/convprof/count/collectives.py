"""Collectives counted: the calls a rank made, added up per kind, phase and group, with the
bytes each sends over its links.

Ring algorithms, as nccl-tests' bus bandwidth counts them: an all-reduce over ``n`` ranks is a
reduce-scatter then an all-gather, and each rank sends ``2 (n - 1) / n`` of the buffer; an
all-gather sends ``(n - 1) / n`` of the gathered output (each rank forwards the ``n - 1``
shards it does not own), a reduce-scatter ``(n - 1) / n`` of its input, an all-to-all the
``(n - 1) / n`` of its send buffer bound for other ranks; a send, a broadcast or a reduce
sends its whole buffer, a receive nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from convprof.records import CollectiveCall
from convprof.report.ranks import Collective

_SPREAD = ("all_gather", "reduce_scatter", "all_to_all", "gather", "scatter")


def sent_bytes(kind: str, payload: int, ranks: int) -> int:
    """Bytes one rank sends for a collective of ``payload`` bytes over ``ranks`` ranks."""
    if ranks <= 1 or kind == "recv":
        return 0
    if kind == "all_reduce":
        return 2 * payload * (ranks - 1) // ranks
    if kind in _SPREAD:
        return payload * (ranks - 1) // ranks
    return payload  # send, broadcast, reduce


def summarize(calls: Sequence[CollectiveCall]) -> tuple[Collective, ...]:
    """The calls grouped by kind, phase, group and group size, in the order first seen."""
    groups: dict[tuple[str, str, str, int], list[CollectiveCall]] = {}
    for call in calls:
        groups.setdefault((call.kind, call.phase, call.group, call.group_size), []).append(call)
    return tuple(
        Collective(
            kind=kind,
            phase=phase,
            group=group,
            group_size=size,
            count=len(members),
            bytes=sum(c.bytes for c in members),
            sent_bytes=sum(sent_bytes(kind, c.bytes, size) for c in members),
        )
        for (kind, phase, group, size), members in groups.items()
    )
