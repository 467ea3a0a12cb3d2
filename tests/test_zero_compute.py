"""Zero compute: ``compute=False``, meta models and meta inputs count exactly what a computing
pass counts, touch nothing, and refuse value-dependent models with a clear error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convprof
from convprof.record.stand_ins.operators import shortcut_for
from tests.test_behaviour import Counting, Tied, assert_unchanged, small_net, snapshot
from tests.test_conv import CASES as CONV_CASES
from tests.test_linear_attention import SDPA, Products

MODELS: dict[str, Callable[[], tuple[nn.Module, tuple[Any, ...]]]] = {
    "small_net": lambda: (small_net(), (torch.randn(2, 3, 6, 6),)),
    "tied": lambda: (Tied(), (torch.tensor([[1, 2, 3]]),)),
    "products": lambda: (Products(), (torch.randn(4, 8),)),
    "sdpa": lambda: (SDPA(), (torch.randn(2, 4, 10, 8),) * 3),
    "mha": lambda: (nn.MultiheadAttention(16, 4, batch_first=True), (torch.randn(2, 5, 16),) * 3),
    "encoder_layer": lambda: (
        nn.TransformerEncoderLayer(32, 4, 64, batch_first=True),
        (torch.randn(2, 9, 32),),
    ),
    "bilinear": lambda: (nn.Bilinear(3, 4, 5), (torch.randn(7, 3), torch.randn(7, 4))),
    "lstm_free_parts": lambda: (
        nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8)),
        (torch.tensor([[1, 2]]),),
    ),
    **{
        f"conv: {name}": (lambda case=case: (case[0](), (torch.randn(case[1]),)))  # type: ignore[misc]
        for name, case in CONV_CASES.items()
        if "lazy" not in name
    },
}


@pytest.mark.parametrize("name", list(MODELS))
def test_zero_compute_counts_equal_computing_counts(name: str) -> None:
    torch.manual_seed(0)
    model, args = MODELS[name]()
    computed = convprof.profile(model, args)
    shapes_only = convprof.profile(model, args, compute=False)
    assert shapes_only == computed


@pytest.mark.parametrize(
    "name", ["small_net", "mha", "encoder_layer", "conv: conv_transpose2d output_padding"]
)
def test_meta_model_and_meta_inputs_need_no_option(name: str) -> None:
    torch.manual_seed(0)
    model, args = MODELS[name]()
    expected = convprof.profile(model, args)
    meta_args = tuple(a.to("meta") for a in args)
    assert convprof.profile(model, meta_args) == expected  # real model, meta inputs
    meta_model = model.to("meta")
    assert convprof.profile(meta_model, args) == expected  # meta model, real inputs
    assert convprof.profile(meta_model, meta_args) == expected


def test_weights_and_inputs_are_neither_copied_moved_nor_changed() -> None:
    model = small_net().train()
    pointers = [p.data_ptr() for p in model.parameters()]
    before = snapshot(model)
    x = torch.randn(2, 3, 6, 6)
    x_before, version = x.clone(), x._version
    convprof.profile(model, x, compute=False)
    assert_unchanged(before, model)
    assert [p.data_ptr() for p in model.parameters()] == pointers
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert torch.equal(x, x_before) and x._version == version


def test_buffer_rebound_in_forward_is_put_back() -> None:
    model = Counting()
    buffer = model.seen
    convprof.profile(model, torch.randn(2), compute=False)
    assert model.seen is buffer and model.seen.item() == 0 and not model.seen.is_meta


class Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[x.nonzero(as_tuple=True)] if x.sum().item() > 0 else x


def gated() -> nn.Module:
    """Spec target: a model whose forward depends on tensor values."""
    return nn.Sequential(nn.Linear(4, 4), Gate())


def test_value_dependent_model_is_refused_with_a_clear_error() -> None:
    model = nn.Sequential(nn.Linear(4, 4), Gate())
    with pytest.raises(convprof.ValuesNeeded) as info:
        convprof.profile(model, torch.randn(2, 4), compute=False)
    message = str(info.value)
    assert "module '1' (Gate)" in message and "compute=True" in message
    assert "aten._local_scalar_dense" in message  # .item()
    assert convprof.profile(model, torch.ones(2, 4)).total.macs == 2 * 4 * 4  # real values: fine


def _meta(*shapes: tuple[int, ...], dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    return [torch.empty(s, dtype=dtype, device="meta") for s in shapes]


aten = torch.ops.aten
x4, c, ln = _meta((2, 8, 5, 5))[0], _meta((8,))[0], _meta((5,))[0]
h4, hc, hln = _meta((2, 8, 5, 5), (8,), (5,), dtype=torch.bfloat16)
STAND_INS = [
    (aten.native_batch_norm.default, (x4, c, c, c, c, False, 0.1, 1e-5)),
    (aten.native_batch_norm.default, (x4, c, c, None, None, True, 0.1, 1e-5)),  # weight standardization
    (aten.native_batch_norm.default, (h4, hc, hc, hc, hc, False, 0.1, 1e-5)),  # float32 statistics
    (aten._native_batch_norm_legit.default, (x4, c, c, c, c, True, 0.1, 1e-5)),
    (aten._batch_norm_with_update.default, (x4, c, c, c, c, 0.1, 1e-5)),
    (aten._batch_norm_no_update.default, (x4, c, c, c, c, 0.1, 1e-5)),
    (aten.native_layer_norm.default, (h4, [5], hln, hln, 1e-5)),
    (aten._native_batch_norm_legit_no_training.default, (x4, c, c, c, c, 0.1, 1e-5)),
    (aten.native_layer_norm.default, (x4, [5], ln, ln, 1e-5)),
    (aten.add.Tensor, (x4, _meta((8, 1, 1))[0])),
    # broadcasting: a squeeze-and-excitation scale, the smaller operand first, both grown
    (aten.mul.Tensor, (x4, _meta((2, 8, 1, 1))[0])),
    (aten.add.Tensor, (_meta((8, 1, 1))[0], x4)),
    (aten.mul.Tensor, tuple(_meta((2, 1, 5, 1), (1, 8, 1, 5)))),
    (aten.add.Tensor, tuple(_meta((0, 1, 3), (4, 1)))),
    (aten.mul.Tensor, (x4, x4)),
    (aten.relu_.default, (x4,)),
    (aten.hardtanh_.default, (x4, 0.0, 6.0)),
    (aten.gelu.default, (x4,)),
    (aten._softmax.default, (x4, -1, False)),
    (aten.addmm.default, (_meta((6,))[0], *_meta((3, 4), (4, 6)))),
    (aten.bmm.default, tuple(_meta((2, 3, 4), (2, 4, 6)))),
    (aten.cat.default, ([*_meta((2, 3, 5), (2, 4, 5))], 1)),
    (aten.masked_fill.Scalar, (x4, _meta((1, 1, 5, 5), dtype=torch.bool)[0], 0.0)),
    (aten.roll.default, (x4, [1], [2])),
    # convolutions: strides, padding, dilation, groups, transposed with output padding, 1-D, 3-D
    (aten.convolution.default, (x4, _meta((16, 8, 3, 3))[0], None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)),
    (aten.convolution.default, (x4, _meta((8, 1, 3, 3))[0], None, [2, 2], [0, 0], [1, 1], False, [0, 0], 8)),
    (aten.convolution.default, (x4, _meta((4, 4, 2, 2))[0], None, [1, 2], [1, 0], [2, 1], False, [0, 0], 2)),
    (aten.convolution.default, (x4, _meta((8, 3, 3, 3))[0], None, [2, 2], [1, 1], [1, 1], True, [1, 0], 1)),
    (
        aten.convolution.default,
        (_meta((1, 4, 9))[0], _meta((6, 4, 3))[0], None, [2], [1], [1], False, [0], 1),
    ),
    (
        aten.convolution.default,
        (_meta((1, 2, 4, 6, 6))[0], _meta((3, 2, 1, 3, 3))[0], None, [1], [0], [1], False, [0], 1),
    ),
    # reductions and pooling
    (aten.mean.dim, (x4, [-1, -2], True)),
    (aten.mean.dim, (x4, [1])),
    (aten.mean.default, (x4,)),
    (aten.sum.dim_IntList, (x4, [0, 3], False)),
    (aten._adaptive_avg_pool2d.default, (x4, [1, 1])),
    (aten._adaptive_avg_pool2d.default, (x4, [3, 2])),
    (aten.max_pool2d_with_indices.default, (x4, [3, 3], [2, 2], [1, 1])),
    (aten.max_pool2d_with_indices.default, (x4, [2, 2], [2, 2], [0, 0], [1, 1], True)),
    (aten.max_pool2d_with_indices.default, (x4, [3, 3], [2, 2], [1, 1], [2, 2], True)),
    (aten.avg_pool2d.default, (x4, [2, 2], [2, 2], [0, 0], True)),
    (aten.avg_pool2d.default, (x4, [3, 3], [1, 1], [1, 1])),
    # backward operators: every output (None where the mask asks for none) must match
    (aten.threshold_backward.default, (x4, x4, 0.0)),
    (aten.gelu_backward.default, (x4, x4)),
    (aten.hardswish_backward.default, (x4, x4)),
    (aten._softmax_backward_data.default, (x4, x4, -1, torch.float32)),
    (aten.native_batch_norm_backward.default, (x4, x4, c, c, c, c, c, False, 1e-5, [True, False, False])),
    (aten.native_batch_norm_backward.default, (x4, x4, c, None, None, c, c, True, 1e-5, [True, True, True])),
    (aten.native_batch_norm_backward.default, (h4, h4, hc, hc, hc, c, c, False, 1e-5, [True, True, True])),
    (
        aten.native_layer_norm_backward.default,
        (x4, x4, [5], *_meta((2, 8, 5, 1), (2, 8, 5, 1)), ln, ln, [True] * 3),
    ),
    (
        aten.native_layer_norm_backward.default,
        (x4, x4, [5], *_meta((2, 8, 5, 1), (2, 8, 5, 1)), None, None, [True, False, False]),
    ),
    (
        aten.convolution_backward.default,
        (
            _meta((2, 16, 3, 3))[0],
            x4,
            _meta((16, 8, 3, 3))[0],
            [16],
            [1, 1],
            [0, 0],
            [1, 1],
            False,
            [0, 0],
            1,
            [True] * 3,
        ),
    ),
    (
        aten.convolution_backward.default,
        (
            _meta((2, 8, 3, 3))[0],
            x4,
            _meta((8, 1, 3, 3))[0],
            None,
            [1, 1],
            [0, 0],
            [1, 1],
            False,
            [0, 0],
            8,
            [False, True, False],
        ),
    ),
]


@pytest.mark.parametrize("func,args", STAND_INS, ids=[str(f) for f, _ in STAND_INS])
def test_stand_ins_match_pytorch_meta_kernels(func: torch._ops.OpOverload, args: tuple[Any, ...]) -> None:
    shortcut = shortcut_for(func)
    assert shortcut is not None
    ours = shortcut(func, args, {})
    theirs = func(*args)
    ours_t = ours if isinstance(ours, tuple) else (ours,)
    theirs_t = theirs if isinstance(theirs, tuple) else (theirs,)
    # The first output is what the model goes on with, the others (a norm's saved statistics)
    # what a backward pass reads: shape, dtype and strides must match for all.
    assert len(ours_t) == len(theirs_t)
    for mine, pytorch in zip(ours_t, theirs_t, strict=True):
        if pytorch is None:
            assert mine is None
            continue
        assert (mine.shape, mine.dtype, mine.stride()) == (pytorch.shape, pytorch.dtype, pytorch.stride())


def test_stand_ins_decline_what_they_cannot_know() -> None:
    half, full = _meta((2, 3))[0].half(), _meta((2, 3))[0]
    assert shortcut_for(aten.add.Tensor)(aten.add.Tensor, (half, full), {}) is None  # type: ignore[misc]
    # shapes that do not broadcast (5 against 3): PyTorch's kernel says so
    assert shortcut_for(aten.mul.Tensor)(aten.mul.Tensor, (x4, _meta((3, 1))[0]), {}) is None  # type: ignore[misc]
    ints = torch.empty((2, 3), dtype=torch.int64, device="meta")
    assert shortcut_for(aten.relu.default)(aten.relu.default, (ints,), {}) is None  # type: ignore[misc]
    assert shortcut_for(aten._softmax.default)(aten._softmax.default, (half, -1, True), {}) is None  # type: ignore[misc]
    assert shortcut_for(aten.nonzero.default) is None
    # what PyTorch rejects goes to its kernel, which raises: 5 input channels for a conv of 8
    conv, pool = aten.convolution.default, aten.max_pool2d_with_indices.default
    w = _meta((16, 8, 3, 3))[0]
    x5 = _meta((2, 5, 5, 5))[0]
    assert shortcut_for(conv)(conv, (x5, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1), {}) is None  # type: ignore[misc]
    bias = _meta((3,))[0]
    assert shortcut_for(conv)(conv, (x4, w, bias, [1, 1], [0, 0], [1, 1], False, [0, 0], 1), {}) is None  # type: ignore[misc]
    assert shortcut_for(pool)(pool, (x4, [2, 2], [2, 2], [2, 2]), {}) is None  # type: ignore[misc]


def test_functional_model_zero_compute() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, 3, 3, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu(F.conv2d(x, self.w, padding=1))
            return F.scaled_dot_product_attention(y, y, y)

    model, x = Functional(), torch.randn(1, 3, 8, 8)
    assert convprof.profile(model, x, compute=False) == convprof.profile(model, x)


def test_profiling_never_imports_dynamo() -> None:
    # PyTorch would import torch._dynamo (1.3 s) on a dispatch mode's first use unless the mode
    # opts out; a profiler should not pay for a compiler it never uses.
    import subprocess
    import sys

    code = (
        "import sys, torch, convprof\n"
        "m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 2))\n"
        "convprof.profile(m, torch.randn(1, 3, 8, 8))\n"
        "convprof.profile(m, torch.randn(1, 3, 8, 8), compute=False)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


class DeviceAutocast(torch.nn.Module):
    """What timm 1.0.29's EfficientViT attention does: an autocast region keyed by the device of
    its input, which PyTorch refuses for the meta device (no autocast dtype)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.proj(x)


def test_api_compute_auto_runs_for_real_whatever_stopped_zero_compute() -> None:
    model, x = DeviceAutocast(), torch.randn(2, 4)
    with pytest.raises(
        convprof.ForwardError, match=r"module '\(root\)' \(DeviceAutocast\).*unsupported scalarType"
    ):
        convprof.profile(model, x, compute=False)
    # the real pass runs: 2 rows x 4 inputs x 4 outputs
    assert convprof.profile(model, x, compute="auto").total.macs == 2 * 4 * 4


def test_api_compute_auto_raises_the_real_pass_error() -> None:
    model = torch.nn.Linear(4, 4)
    with pytest.raises(convprof.ForwardError, match="mat1 and mat2 shapes cannot be multiplied"):
        convprof.profile(model, torch.randn(2, 5), compute="auto")


class Call(nn.Module):
    """A module that calls one function on its inputs."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any) -> Any:
        return self.fn(*args)


# Inputs that do not fit the model: PyTorch refuses each when it computes. Zero compute's
# stand-ins skip PyTorch's kernels, so each must refuse too rather than count a made-up shape
# (before, all but the batch norm and the conv were counted: e.g. 32 MACs for the Linear given
# 5 features).
MISFITS: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]] = {
    "linear in_features": (nn.Linear(4, 4), (torch.randn(2, 5),)),
    "mm inner dim": (Call(torch.mm), (torch.randn(2, 3), torch.randn(4, 5))),
    "bmm inner dim": (Call(torch.bmm), (torch.randn(2, 3, 4), torch.randn(2, 5, 6))),
    "bmm batch": (Call(torch.bmm), (torch.randn(2, 3, 4), torch.randn(3, 4, 6))),
    "addmm bias": (Call(torch.addmm), (torch.randn(5), torch.randn(2, 3), torch.randn(3, 4))),
    "layer norm shape": (nn.LayerNorm(5), (torch.randn(2, 4),)),
    "mean dim": (Call(lambda x: x.mean(3)), (torch.randn(2, 4),)),
    "mean dim twice": (Call(lambda x: x.mean((1, -1))), (torch.randn(2, 4),)),
    "softmax dim": (Call(lambda x: x.softmax(2)), (torch.randn(2, 4),)),
    "attention head dim": (
        Call(F.scaled_dot_product_attention),
        (torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 6), torch.randn(1, 2, 4, 8)),
    ),
    "batch norm channels": (nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(4)), (torch.randn(2, 3),)),
    "conv channels": (nn.Conv2d(3, 8, 3), (torch.randn(1, 4, 8, 8),)),
    "grouped mm inner dim": (
        Call(lambda a, b: torch._grouped_mm(a, b, offs=torch.tensor([4, 8], dtype=torch.int32))),
        (torch.randn(8, 8, dtype=torch.bfloat16), torch.randn(2, 16, 8, dtype=torch.bfloat16)),
    ),
}


@pytest.mark.parametrize("name", list(MISFITS))
def test_zero_compute_refuses_what_pytorch_refuses(name: str) -> None:
    model, args = MISFITS[name]
    with pytest.raises(convprof.ForwardError) as real:
        convprof.profile(model, args)
    with pytest.raises(convprof.ForwardError) as zero:
        convprof.profile(model, args, compute=False)
    # both name the same module
    assert str(zero.value).split(" with inputs")[0] == str(real.value).split(" with inputs")[0]
