"""The conv calculator: the tutorial's comparison of convolution types, for any shape.

For one feature map and one channel change it builds the real modules (a standard
convolution, a grouped one, a depthwise one, a pointwise one on the depthwise output, and the
depthwise + pointwise pair) and profiles them through the engine: no second set of formulas,
so the calculator can never disagree with a profile. With the tutorial's defaults (6 -> 10
channels, 2x2 kernel, 4x4 input) it reproduces its table: 240 / 2,160; 120 / 1,080;
24 + 60 / 216 + 540.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convprof.api import profile
from convprof.report import intensity


@dataclass(frozen=True, slots=True)
class ConvRow:
    """One way to compute the layer: its cost and its share of the standard convolution's."""

    name: str
    params: int
    macs: int
    output_shape: tuple[int, ...]
    params_ratio: float
    macs_ratio: float
    memory_bytes: int = 0  # float32 input, weights and output (the pair: both layers')

    @property
    def intensity(self) -> float:
        return intensity(self.macs, self.memory_bytes)


def compare_convs(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    size: int,
    *,
    groups: int = 2,
    stride: int = 1,
    padding: int = 0,
    bias: bool = False,
) -> tuple[ConvRow, ...]:
    """Standard, grouped, depthwise, pointwise and depthwise + pointwise convolutions of a
    ``1 x in_channels x size x size`` input to ``out_channels``, profiled."""
    for label, value in (
        ("in_channels", in_channels),
        ("out_channels", out_channels),
        ("kernel_size", kernel_size),
        ("size", size),
        ("groups", groups),
        ("stride", stride),
    ):
        if value < 1:
            raise ValueError(f"{label} must be at least 1, got {value}")
    if padding < 0:
        raise ValueError(f"padding must be 0 or more, got {padding}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide both in_channels={in_channels} and out_channels={out_channels}"
        )
    if size + 2 * padding < kernel_size:
        raise ValueError(
            f"a {kernel_size}x{kernel_size} kernel does not fit a {size}x{size} input with padding {padding}"
        )

    def conv(cin: int, cout: int, k: int, g: int, s: int, p: int) -> nn.Conv2d:
        # on meta: the weights of --in 100000 --out 100000 would take 40 GB
        return nn.Conv2d(cin, cout, k, stride=s, padding=p, groups=g, bias=bias, device="meta")

    x = torch.empty(1, in_channels, size, size, device="meta")
    depthwise = conv(in_channels, in_channels, kernel_size, in_channels, stride, padding)
    pointwise = conv(in_channels, out_channels, 1, 1, 1, 0)
    depthwise_report = profile(depthwise, x, compute=False)
    # The pointwise conv alone runs on what the depthwise conv produces, as in the pair.
    between = torch.empty(depthwise_report.layers[0].output_shape or (), device="meta")
    rows = [
        (
            "standard",
            profile(conv(in_channels, out_channels, kernel_size, 1, stride, padding), x, compute=False),
        ),
        (
            f"grouped (groups={groups})",
            profile(conv(in_channels, out_channels, kernel_size, groups, stride, padding), x, compute=False),
        ),
        ("depthwise", depthwise_report),
        ("pointwise", profile(pointwise, between, compute=False)),
        ("depthwise + pointwise", profile(nn.Sequential(depthwise, pointwise), x, compute=False)),
    ]
    base = rows[0][1].total
    return tuple(
        ConvRow(
            name=name,
            params=report.total.params,
            macs=report.total.macs,
            output_shape=report.layers[-1].output_shape or (),
            params_ratio=report.total.params / base.params if base.params else 0.0,
            macs_ratio=report.total.macs / base.macs if base.macs else 0.0,
            memory_bytes=report.total.memory_bytes,
        )
        for name, report in rows
    )
