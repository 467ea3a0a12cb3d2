"""Memory traffic (the ShuffleNet V2 paper's memory access cost) and arithmetic intensity.

Expected values are written out by hand: bytes = elements read (input activations and the
layer's own weights) plus elements written (output), times the bytes per element.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

import convprof
from convprof.records import ParamInfo, TensorMeta
from convprof.report import Report

X = torch.ones(1, 6, 4, 4)
F32 = 4


def test_tutorial_normal_conv_float32() -> None:
    report = convprof.profile(nn.Conv2d(6, 10, 2, bias=False), X)
    read_input = 1 * 6 * 4 * 4 * F32  # 384
    read_weight = 10 * 6 * 2 * 2 * F32  # 960
    write_output = 1 * 10 * 3 * 3 * F32  # 360
    layer = report.layers[0]
    assert layer.memory_bytes == read_input + read_weight + write_output == 1704
    assert layer.intensity == pytest.approx(2160 / 1704)
    assert round(layer.intensity, 2) == 1.27
    assert report.total.memory_bytes == 1704


def test_half_precision_halves_the_bytes_not_the_macs() -> None:
    model = nn.Conv2d(6, 10, 2, bias=False).to(torch.bfloat16)
    report = convprof.profile(model, X.to(torch.bfloat16), compute=False)
    assert report.total.memory_bytes == (96 + 240 + 90) * 2 == 852
    assert report.total.macs == 2160


def test_bias_is_read() -> None:
    report = convprof.profile(nn.Conv2d(6, 10, 2), X)
    assert report.total.memory_bytes == 1704 + 10 * F32


def test_depthwise_separable_rows_and_totals() -> None:
    model = nn.Sequential(nn.Conv2d(6, 6, 2, groups=6, bias=False), nn.Conv2d(6, 10, 1, bias=False))
    report = convprof.profile(model, X)
    root, depthwise, pointwise = report.layers
    assert root.memory_bytes == 0  # a container moves nothing itself; its children do
    assert depthwise.memory_bytes == (96 + 24 + 54) * F32 == 696
    assert pointwise.memory_bytes == (54 + 60 + 90) * F32 == 816
    assert report.total.memory_bytes == 696 + 816 == 1512
    # Depthwise does 216 MACs on 696 bytes; pointwise 540 on 816: the depthwise layer is the
    # memory-bound one.
    assert depthwise.intensity == pytest.approx(216 / 696)
    assert pointwise.intensity == pytest.approx(540 / 816)
    assert report.total.intensity == pytest.approx(756 / 1512)


def test_views_move_nothing_but_activations_do() -> None:
    model = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Identity(), nn.Dropout())
    report = convprof.profile(model, X)
    relu, flatten, identity, dropout = report.layers[1:]
    assert relu.memory_bytes == 2 * 96 * F32  # reads and writes every element
    assert flatten.memory_bytes == identity.memory_bytes == dropout.memory_bytes == 0
    assert relu.intensity == 0.0


def test_calls_add_up() -> None:
    conv = nn.Conv2d(6, 6, 1, bias=False)
    model = nn.Sequential(conv, conv)
    report = convprof.profile(model, X)
    one_call = (96 + 36 + 96) * F32
    row = next(layer for layer in report.layers if layer.name == "0")
    assert row.calls == 2
    assert row.memory_bytes == 2 * one_call


def test_rollup_and_json_keep_the_bytes() -> None:
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(6, 6, 2, groups=6, bias=False), nn.Conv2d(6, 10, 1, bias=False))
    )
    report = convprof.profile(model, X)
    (block,) = [layer for layer in report.rollup(1) if layer.name == "0"]
    assert block.memory_bytes == 1512
    data = json.loads(convprof.render(report, format="json"))
    assert data["total"]["memory_bytes"] == 1512
    assert [layer["memory_bytes"] for layer in data["layers"]] == [0, 0, 696, 816]
    assert Report.from_dict(data).total.memory_bytes == 1512


def test_records_derive_elements_and_bytes_when_made() -> None:
    # a nested batch of two sequences, 3x4 and 5x4, padded to 2x5x4: 12 + 20 real elements
    nested = TensorMeta((2, 5, 4), "float16", 2, ((3, 4), (5, 4)))
    assert (nested.numel, nested.nbytes) == (32, 64)
    dense = TensorMeta((2, 5, 4), "float32", 4)
    assert (dense.numel, dense.nbytes) == (40, 160)
    assert dataclasses.replace(dense, shape=(1, 3)).numel == 3  # derived again, not copied
    weight = ParamInfo("weight", 1, (10, 6, 2, 2), itemsize=2)
    assert (weight.numel, weight.nbytes) == (240, 480)
