"""The tutorial's worked example (../shared/seed): input 1x6x4x4, 6 -> 10 channels, 2x2 kernel,
stride 1, no padding, no bias, output 3x3. Expected values are the tutorial's arithmetic."""

from __future__ import annotations

import torch
from torch import nn

import convprof

X = torch.ones(1, 6, 4, 4)
OUT_POSITIONS = 3 * 3  # (4 - 2) / 1 + 1 = 3 per side


def test_normal_conv() -> None:
    report = convprof.profile(nn.Conv2d(6, 10, kernel_size=2, bias=False), X)
    params = 10 * 6 * 2 * 2  # 240
    assert report.total.params == params == 240
    assert report.total.macs == params * OUT_POSITIONS == 2160
    assert report.total.flops == 2 * 2160
    assert [layer.kind for layer in report.layers] == ["standard"]
    assert report.layers[0].output_shape == (1, 10, 3, 3)


def test_group_conv() -> None:
    report = convprof.profile(nn.Conv2d(6, 10, kernel_size=2, bias=False, groups=2), X)
    params = 10 * (6 // 2) * 2 * 2  # each of 10 kernels sees 3 of the 6 channels: 120
    assert report.total.params == params == 120
    assert report.total.macs == params * OUT_POSITIONS == 1080
    assert report.layers[0].kind == "grouped"
    assert report.layers[0].groups == 2


def test_depthwise_separable() -> None:
    model = nn.Sequential(
        nn.Conv2d(6, 6, kernel_size=2, bias=False, groups=6),
        nn.Conv2d(6, 10, kernel_size=1, bias=False),
    )
    report = convprof.profile(model, X)
    depthwise, pointwise = report.layers[1:]  # row 0 is the Sequential itself
    assert (depthwise.kind, pointwise.kind) == ("depthwise", "pointwise")
    assert depthwise.params == 6 * 1 * 2 * 2 == 24
    assert pointwise.params == 10 * 6 * 1 * 1 == 60
    assert depthwise.macs == 24 * OUT_POSITIONS == 216
    assert pointwise.macs == 60 * OUT_POSITIONS == 540
    assert (report.total.params, report.total.macs) == (24 + 60, 216 + 540) == (84, 756)
    assert pointwise.output_shape == (1, 10, 3, 3)
