"""Will it fit: the largest batch whose predicted peak memory fits in a given size.

Plain search over a function from batch size to predicted peak bytes (the CLI's is a
zero-compute profile, a fraction of a second per batch whatever the size). Peak memory grows
with the batch, nearly in a straight line (parameters and optimizer state are fixed, the
activations scale), so the first guess is the line through batches 1 and 2; doubling from there
finds a batch that does not fit, and interpolation between the two nearest predictions (with
bisection when a step does not halve the interval) the boundary, in a handful of predictions.
Only the predictions decide: a guess is never taken as an answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from convprof.units import format_binary_bytes

MOST = 2**20  # the largest batch tried


@dataclass(frozen=True, slots=True)
class Fit:
    """``batch``: the largest that fits (0: not even one); ``peak_bytes`` its peak (at batch 1
    when none fits); ``next_bytes`` the peak of one more (None when ``batch`` is ``MOST``)."""

    limit_bytes: int
    batch: int
    peak_bytes: int
    next_bytes: int | None
    tried: int

    def describe(self) -> str:
        sizes = [
            self.limit_bytes,
            self.peak_bytes,
            *([self.next_bytes] if self.next_bytes is not None else []),
        ]
        short = [format_binary_bytes(size) for size in sizes]
        # a next batch that "would need" what reads as the limit it "fits in": bytes, then
        true = self.next_bytes is None or short[2] != short[0]
        shown = short if true else [f"{size:,} bytes" for size in sizes]
        limit, peak = shown[0], shown[1]
        if not self.batch:
            return f"batch 1 does not fit in {limit}: its peak is {peak}"
        text = f"batch {self.batch} fits in {limit} (peak {peak})"
        if self.next_bytes is not None:
            text += f"; batch {self.batch + 1} would need {shown[2]}"
        else:
            text += f"; larger batches were not tried (at most {MOST:,})"
        return text + f" [{self.tried} batch sizes predicted]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_batch(peak_at: Callable[[int], int], limit: int, most: int = MOST) -> Fit:
    """The largest batch ``b <= most`` with ``peak_at(b) <= limit``, assuming the peak does not
    shrink as the batch grows."""
    known: dict[int, int] = {}

    def peak(batch: int) -> int:
        if batch not in known:
            known[batch] = peak_at(batch)
        return known[batch]

    if peak(1) > limit:
        return Fit(limit, 0, known[1], None, len(known))
    if most == 1:
        return Fit(limit, 1, known[1], None, len(known))
    slope = peak(2) - known[1]
    if known[2] > limit:
        return Fit(limit, 1, known[1], known[2], len(known))
    fits = 2
    guess = (limit - known[1]) // slope + 1 if slope > 0 else most
    high = min(max(guess, fits + 1), most)
    while peak(high) <= limit:  # double until one does not fit
        fits = high
        if high == most:
            return Fit(limit, most, known[most], None, len(known))
        high = min(2 * high, most)
    halve = False
    while high - fits > 1:  # fits fits, high does not: interpolate along the line between them,
        # and bisect after any step that did not halve the bracket
        width = high - fits
        if halve:
            middle = (fits + high) // 2
        else:
            rise = known[high] - known[fits]
            middle = fits + (limit - known[fits]) * width // rise if rise > 0 else (fits + high) // 2
            middle = min(max(middle, fits + 1), high - 1)
        if peak(middle) <= limit:
            fits = middle
        else:
            high = middle
        halve = 2 * (high - fits) > width
    return Fit(limit, fits, known[fits], known[high], len(known))
