"""Trainable and frozen params, params and buffers in bytes, and activations (issue 11, item
5): every figure written out by hand from the model's layers."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import convprof


def small() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),  # 8x3x3x3 + 8 = 224 params; 1x3x8x8 in -> 1x8x6x6 = 288 values out
        nn.BatchNorm2d(8),  # 16 params; buffers: running mean and var (8 + 8 float32), count (1 int64)
        nn.ReLU(),  # 288 values out
        nn.Flatten(),  # a view: no new tensor
        nn.Linear(288, 10),  # 2,880 + 10 params; 10 values out
    )


PARAMS = 224 + 16 + 2890


@pytest.mark.parametrize("compute", [True, False])
def test_sizes_by_hand(compute: bool) -> None:
    model = small()
    model[0].weight.requires_grad_(False)  # frozen: 216 params
    report = convprof.profile(model, torch.randn(1, 3, 8, 8), compute=compute)
    sizes = report.sizes
    assert report.total.params == PARAMS
    assert sizes.trainable_params == PARAMS - 216
    assert sizes.param_bytes == 4 * PARAMS
    assert (sizes.buffers, sizes.buffer_bytes) == (17, 16 * 4 + 8)
    # conv, BatchNorm and ReLU write 288 values each, Linear 10; Flatten's view writes nothing
    assert sizes.activation_bytes == 4 * (3 * 288 + 10)
    text = convprof.render(report)
    assert f"Total params: {PARAMS:,} (3.13K); trainable {PARAMS - 216:,}, non-trainable 216" in text
    assert "Sizes:        params 12.52KB, buffers 72B; activations 3.50KB" in text  # 4 x 3,130; 4 x 874
    data = json.loads(convprof.render(report, format="json"))
    assert convprof.Report.from_dict(data).sizes == sizes


def test_half_precision_and_tied_weights_once() -> None:
    embed = nn.Embedding(50, 16)
    head = nn.Linear(16, 50, bias=False)
    head.weight = embed.weight  # tied: 800 params, once
    model = nn.Sequential(embed, head).half()
    sizes = convprof.profile(model, torch.zeros(1, 4, dtype=torch.long), compute=False).sizes
    assert (sizes.trainable_params, sizes.param_bytes) == (800, 2 * 800)
    assert sizes.activation_bytes == 2 * (4 * 16 + 4 * 50)  # embedding out, logits out


def test_older_reports_read_back_without_sizes() -> None:
    data = json.loads(convprof.render(convprof.profile(small(), torch.randn(1, 3, 8, 8)), format="json"))
    del data["sizes"]
    assert convprof.Report.from_dict(data).sizes == convprof.Sizes()
