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


def _category(trace: MemoryTrace, index: int, forward_end: int, training: bool) -> str:
    role = trace.roles[index]
    if role:
        return role
    made, freed = trace.made[index], trace.freed[index]
    if made < forward_end and (freed < 0 or freed >= forward_end):
        return "activation" if training else "kept"
    return "temporary"


def call_peaks(trace: MemoryTrace, level: list[int]) -> list[int]:
    """The highest level while each module call ran (from the level it started at), its
    gradient in a backward pass included: the level after each allocation the call's autograd
    nodes made (a peak is always reached at an allocation, and a node runs alone)."""
    peaks = [max(level[opened : closed + 1]) for opened, closed in trace.calls]
    backward = dict(trace.marks).get("forward", trace.ticks)
    for owner, made in zip(trace.owners, trace.made, strict=True):
        if owner >= 0 and made >= backward:
            peaks[owner] = max(peaks[owner], level[made + 1])
    return peaks


def summarize(trace: MemoryTrace, level: list[int], names: list[str]) -> Memory:
    """The peak of the pass and what it holds; ``names`` are the calls' module names."""
    marks = dict(trace.marks)
    held = marks.get("held", 0)
    forward_end = marks.get("forward", trace.ticks)
    peak = max(level)
    tick = level.index(peak) - 1  # the tick whose allocation reached it
    alive = [
        i
        for i, (made, freed) in enumerate(zip(trace.made, trace.freed, strict=True))
        if made <= tick and (freed < 0 or freed > tick)
    ]
    split = dict.fromkeys(CATEGORIES, 0)
    training = "backward" in marks
    for i in alive:
        split[_category(trace, i, forward_end, training)] += _rounded(trace.sizes[i], trace.block)
    phase = "forward"
    if tick >= marks.get("backward", trace.ticks):
        phase = "step"
    elif tick >= forward_end:
        phase = "backward"
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
    )
