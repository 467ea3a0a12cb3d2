"""Fast Fourier transforms: the usual nominal count, 5 N log2 N real FLOPs per complex transform.

A radix-2 transform of N complex points runs (N / 2) log2 N butterflies of one complex
multiplication (6 real FLOPs) and two complex additions (4): 5 N log2 N real FLOPs, the figure
FFTW and most benchmarks quote, used here for every N (a nominal count: mixed-radix and
Bluestein transforms do more or less). In convprof's units, FLOPs = 2 x MACs, so a complex
transform is 2.5 N log2 N MACs, and a transform of real data (``rfft``, ``irfft``, an STFT,
``fft`` of a real tensor) half that, its input or output being half the numbers. A transform
over several dimensions of N = n1 x n2 x ... points costs the same as one of N points. PyTorch
runs every ``torch.fft`` function and ``torch.stft`` as one of three operators, which carry the
transformed dimensions; the count is rounded to an integer.
"""

from __future__ import annotations

import math

from convprof.count.formulas.registry import register
from convprof.records import OpCall


def _points(call: OpCall, shape: tuple[int, ...]) -> int:
    """N: the points of one transform, the product of the transformed dimensions' sizes."""
    dims = call.args[1]
    if not isinstance(dims, tuple):
        raise TypeError(f"{call.op}: expected a list of dimensions, got {dims!r}")
    points = 1
    for d in dims:
        if not isinstance(d, int):
            raise TypeError(f"{call.op}: expected a list of dimensions, got {dims!r}")
        points *= shape[d]
    return points


def _macs(numbers: int, points: int, per_number: float) -> int:
    """``per_number`` x numbers x log2 N, in MACs (numbers / N transforms of N points each)."""
    return round(per_number * numbers * math.log2(points)) if points > 1 else 0


@register("aten._fft_c2c")
def _fft_c2c(call: OpCall) -> int:
    # complex to complex: numel / N transforms of 5 N log2 N FLOPs = 2.5 numel log2 N MACs
    x = call.tensor(0)
    return _macs(x.numel, _points(call, x.shape), 2.5)


@register("aten._fft_r2c")
def _fft_r2c(call: OpCall) -> int:
    # real input (all of it read, whether the output is one-sided or not): half a complex one
    x = call.tensor(0)
    return _macs(x.numel, _points(call, x.shape), 1.25)


@register("aten._fft_c2r")
def _fft_c2r(call: OpCall) -> int:
    # real output of last_dim_size along the last transformed dimension: half a complex one
    out = call.outputs[0]
    return _macs(out.numel, _points(call, out.shape), 1.25)
