"""Property tests: random conv and linear configurations against PyTorch's own counter,
``torch.utils.flop_counter.FlopCounterMode`` on meta tensors (FLOPs there = 2 x MACs), an
implementation that shares no code with convprof."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import convprof


def flop_counter_macs(module: nn.Module, x: torch.Tensor) -> int:
    meta_module = module.to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta_module(x.to("meta"))
    return counter.get_total_flops() // 2


@st.composite
def conv_configs(draw: st.DrawFn) -> tuple[nn.Module, torch.Tensor]:
    dims = draw(st.sampled_from([1, 2, 3]))
    transposed = draw(st.booleans())
    groups = draw(st.sampled_from([1, 2, 3]))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    padding = draw(st.integers(0, 2))
    size = tuple(draw(st.integers(dilation * (k - 1) + 1, 9)) for k in kernel)
    cls = {
        (1, False): nn.Conv1d,
        (2, False): nn.Conv2d,
        (3, False): nn.Conv3d,
        (1, True): nn.ConvTranspose1d,
        (2, True): nn.ConvTranspose2d,
        (3, True): nn.ConvTranspose3d,
    }
    module = cls[dims, transposed](
        c_in,
        c_out,
        kernel,
        stride=stride,
        padding=0 if transposed else padding,
        dilation=dilation,
        groups=groups,
        bias=draw(st.booleans()),
    )
    return module, torch.randn(draw(st.integers(1, 3)), c_in, *size)


@settings(max_examples=60, deadline=None)
@given(conv_configs())
def test_conv_matches_flop_counter(config: tuple[nn.Module, torch.Tensor]) -> None:
    module, x = config
    report = convprof.profile(module, x)
    assert report.total.params == sum(p.numel() for p in module.parameters())
    assert report.total.macs == flop_counter_macs(module, x)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 33), st.integers(1, 33), st.booleans())
def test_linear_matches_flop_counter(batch: int, seq: int, n_in: int, n_out: int, bias: bool) -> None:
    module = nn.Linear(n_in, n_out, bias=bias)
    x = torch.randn(batch, seq, n_in)
    report = convprof.profile(module, x)
    assert report.total.macs == flop_counter_macs(module, x) == batch * seq * n_in * n_out
