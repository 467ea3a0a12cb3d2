"""Peak memory: a MemoryTrace in, the peak, what it holds and each call's peak out.

Plain arithmetic over storage lifetimes (:mod:`convprof.memory.lifetimes`). Each storage is rounded
up to the allocator's block (CUDA's caching allocator hands out multiples of 512 bytes; the CPU
allocator the bytes asked for). The level after every tick is the sum of the storages alive;
the peak is its highest value, first reached at an allocation, which names the module call
that made it. What the peak holds is split by category: a storage's role when the recorder
knew it (parameters, buffers, inputs, outputs, optimizer state, gradients), else by its
lifetime: made in the forward and alive when the forward returned, an *activation* in a
training step (saved for backward) and *kept* in inference (a key/value cache, a module's own
cache: what the model holds on to outside its output); everything else a *temporary*.
"""

from __future__ import annotations

from itertools import accumulate

from convprof.records import MemoryTrace
from convprof.report import CATEGORIES, Memory


def _rounded(size: int, block: int) -> int:
    return -(-size // block) * block


def levels(trace: MemoryTrace) -> list[int]:
    """Bytes alive after each tick: ``levels[t + 1]`` after tick ``t``, ``levels[0] = 0``."""
    delta = [0] * trace.ticks
    for size, made, freed in zip(trace.sizes, trace.made, trace.freed, strict=True):
        size = _rounded(size, trace.block)
        delta[made] += size
        if freed >= 0:
            delta[freed] -= size
    return [0, *accumulate(delta)]


def phases(trace: MemoryTrace) -> list[tuple[str, int, int]]:
    """The pass's phases in order, each ``(name, first tick, tick it ended at)``, from the
    marks after ``held`` (a step of several micro-steps has several forwards and backwards)."""
    found, start = [], dict(trace.marks).get("held", 0)
    for name, end in trace.marks:
        if name != "held":
            found.append((name, start, end))
            start = end
    return found


def _phase_at(spans: list[tuple[str, int, int]], tick: int) -> tuple[str, int, int] | None:
    return next((span for span in spans if span[1] <= tick < span[2]), None)


def _category(trace: MemoryTrace, index: int, spans: list[tuple[str, int, int]], training: bool) -> str:
    role = trace.roles[index]
    if role:
        return role
    made, freed = trace.made[index], trace.freed[index]
    span = _phase_at(spans, made)
    if span is not None and span[0] == "forward" and (freed < 0 or freed >= span[2]):
        return "activation" if training else "kept"
    return "temporary"


def call_peaks(trace: MemoryTrace, level: list[int]) -> list[int]:
    """The highest level while each module call ran (from the level it started at), its
    gradient in a backward pass included: the level after each allocation the call's autograd
    nodes made (a peak is always reached at an allocation, and a node runs alone)."""
    peaks = [max(level[opened : closed + 1]) for opened, closed in trace.calls]
    backward = [(start, end) for name, start, end in phases(trace) if name == "backward"]
    for owner, made in zip(trace.owners, trace.made, strict=True):
        if owner >= 0 and any(start <= made < end for start, end in backward):
            peaks[owner] = max(peaks[owner], level[made + 1])
    return peaks


def summarize(trace: MemoryTrace, level: list[int], names: list[str]) -> Memory:
    """The peak of the pass and what it holds; ``names`` are the calls' module names."""
    spans = phases(trace)
    held = dict(trace.marks).get("held", 0)
    peak = max(level)
    tick = level.index(peak) - 1  # the tick whose allocation reached it
    alive = [
        i
        for i, (made, freed) in enumerate(zip(trace.made, trace.freed, strict=True))
        if made <= tick and (freed < 0 or freed > tick)
    ]
    split = dict.fromkeys(CATEGORIES, 0)
    training = any(name == "backward" for name, _, _ in spans)
    for i in alive:
        split[_category(trace, i, spans, training)] += _rounded(trace.sizes[i], trace.block)
    span = _phase_at(spans, tick)
    phase = span[0] if span is not None else spans[-1][0] if spans and tick >= spans[-1][2] else "forward"
    made_by = next((trace.owners[i] for i in alive if trace.made[i] == tick), -1) if tick >= held else -1
    return Memory(
        peak_bytes=peak,
        phase=phase,
        layer=names[made_by] if made_by >= 0 else None,
        at_peak=tuple((name, split[name]) for name in CATEGORIES if split[name]),
        held_bytes=level[held],
        training=training,
        optimizer=trace.optimizer,
        device=trace.device,
        block=trace.block,
        unmodelled=tuple(dict.fromkeys(names[call] for call in trace.unmodelled)),
    )
