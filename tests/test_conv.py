"""Closed-form counts for the conv family, expected values written as arithmetic.

Non-transposed: MACs = N * prod(out_spatial) * C_out * (C_in / groups) * prod(kernel).
Transposed:     MACs = N * prod(in_spatial)  * C_in  * (C_out / groups) * prod(kernel).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convprof

Case = tuple[Callable[[], nn.Module], tuple[int, ...], int, int, str]

CASES: dict[str, Case] = {
    # name: (build, input shape, params, MACs, kind)
    "conv1d": (lambda: nn.Conv1d(4, 8, 3), (2, 4, 10), 8 * 4 * 3 + 8, 2 * 8 * (8 * 4 * 3), "standard"),
    "conv2d stride 2 pad 1": (
        lambda: nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
        (1, 3, 32, 32),
        16 * 3 * 9,
        1 * 16 * 16 * (16 * 3 * 9),
        "standard",
    ),
    "conv2d dilation 2": (
        lambda: nn.Conv2d(3, 4, 3, dilation=2, bias=False),
        (1, 3, 9, 9),
        4 * 3 * 9,
        5 * 5 * (4 * 3 * 9),
        "standard",
    ),  # 9 - 2*(3-1) = 5
    "conv2d same padding": (
        lambda: nn.Conv2d(3, 4, (3, 5), padding="same", bias=False),
        (1, 3, 8, 8),
        4 * 3 * 15,
        8 * 8 * (4 * 3 * 15),
        "standard",
    ),
    "conv2d reflect padding": (
        lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect", bias=False),
        (1, 2, 6, 6),
        3 * 2 * 9,
        6 * 6 * (3 * 2 * 9),
        "standard",
    ),
    "conv2d circular padding": (
        lambda: nn.Conv2d(2, 3, 3, padding=2, padding_mode="circular", bias=False),
        (1, 2, 6, 6),
        3 * 2 * 9,
        8 * 8 * (3 * 2 * 9),
        "standard",
    ),
    "conv2d bias excluded": (lambda: nn.Conv2d(3, 4, 1), (1, 3, 5, 5), 4 * 3 + 4, 25 * (4 * 3), "pointwise"),
    "grouped 3x3": (
        lambda: nn.Conv2d(8, 12, 3, groups=4, bias=False),
        (1, 8, 5, 5),
        12 * 2 * 9,
        3 * 3 * (12 * 2 * 9),
        "grouped",
    ),
    "grouped 1x1 is grouped": (
        lambda: nn.Conv2d(8, 8, 1, groups=2, bias=False),
        (1, 8, 4, 4),
        8 * 4,
        16 * (8 * 4),
        "grouped",
    ),
    "depthwise": (
        lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
        (1, 8, 6, 6),
        8 * 1 * 9,
        36 * (8 * 9),
        "depthwise",
    ),
    "depthwise multiplier 2": (
        lambda: nn.Conv2d(4, 8, 3, groups=4, bias=False),
        (1, 4, 5, 5),
        8 * 1 * 9,
        9 * (8 * 9),
        "depthwise",
    ),
    "conv3d": (
        lambda: nn.Conv3d(2, 4, (1, 3, 3), bias=False),
        (1, 2, 4, 6, 6),
        4 * 2 * 9,
        4 * 4 * 4 * (4 * 2 * 9),
        "standard",
    ),
    "unbatched conv2d": (
        lambda: nn.Conv2d(3, 4, 3, bias=False),
        (3, 5, 5),
        4 * 3 * 9,
        9 * (4 * 3 * 9),
        "standard",
    ),
    # Transposed: one kernel slice (C_out/g * prod(k)) per input element (N * C_in * prod(in)).
    "conv_transpose1d": (
        lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, bias=False),
        (2, 4, 5),
        4 * 6 * 3,
        2 * 5 * (4 * 6 * 3),
        "standard",
    ),
    "conv_transpose2d output_padding": (
        lambda: nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, bias=False),
        (1, 4, 7, 7),
        4 * 2 * 9,
        49 * (4 * 2 * 9),
        "standard",
    ),
    "conv_transpose2d grouped": (
        lambda: nn.ConvTranspose2d(4, 6, 2, groups=2, bias=False),
        (1, 4, 3, 3),
        4 * 3 * 4,
        9 * (4 * 3 * 4),
        "grouped",
    ),
    "conv_transpose3d": (
        lambda: nn.ConvTranspose3d(2, 3, 2, stride=2),
        (1, 2, 2, 3, 3),
        2 * 3 * 8 + 3,
        18 * (2 * 3 * 8),
        "standard",
    ),
    "lazy conv2d": (
        lambda: nn.LazyConv2d(5, 3, bias=False),
        (1, 2, 6, 6),
        5 * 2 * 9,
        16 * (5 * 2 * 9),
        "standard",
    ),
    "lazy conv_transpose2d": (
        lambda: nn.LazyConvTranspose2d(3, 2, bias=False),
        (1, 2, 4, 4),
        2 * 3 * 4,
        16 * (2 * 3 * 4),
        "standard",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_conv_family(name: str) -> None:
    build, shape, params, macs, kind = CASES[name]
    torch.manual_seed(0)
    report = convprof.profile(build(), torch.randn(shape))
    (row,) = report.layers
    assert (row.params, row.macs, row.kind) == (params, macs, kind)
    assert (report.total.params, report.total.macs, report.total.flops) == (params, macs, 2 * macs)
    assert report.complete


def test_conv_row_carries_settings() -> None:
    conv = nn.Conv2d(4, 8, (3, 1), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
    row = convprof.profile(conv, torch.randn(1, 4, 8, 8)).layers[0]
    settings = (row.kernel_size, row.stride, row.padding, row.dilation, row.groups)
    assert settings == ((3, 1), (2, 1), (1, 0), (1, 2), 2)


class FunctionalConv(nn.Module):
    """Convolution through F.conv2d with its own parameter: op-level counting must catch it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 3, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(F.conv2d(x, self.weight, stride=2), self.weight)


def test_functional_conv_is_attributed_to_its_module() -> None:
    model = nn.Sequential(nn.Identity(), FunctionalConv())
    report = convprof.profile(model, torch.randn(1, 3, 9, 9))
    row = next(r for r in report.layers if r.name == "1")
    conv = 4 * 4 * (6 * 3 * 9)  # (9 - 3) // 2 + 1 = 4
    transposed = 4 * 4 * (6 * 3 * 9)  # input 1x6x4x4; weight (C_in=6, C_out=3, 3, 3)
    assert row.macs == conv + transposed
    assert row.params == 6 * 3 * 9
    assert row.kind is None
    assert report.total.macs == conv + transposed
