"""Mixed precision (``autocast=``): the device's autocast policy applied without arithmetic too.

Expected values: a closed form written out for an MLP (its float32 weights beside the
bfloat16 copies autocast caches for the forward), the measured peak of the same passes under
the CPU's own ``torch.autocast`` (tests/measured_memory.py, which runs nothing of convprof),
and, for each operator family, the dtype PyTorch's CPU autocast gives its result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from measured_memory import inference_peak, training_peak
from test_peak_memory import MODELS, X, mlp
from torch import nn

import convprof
from convprof.record import autocast as policy

F32, BF16 = 4, 2
PARAMS = 100 * 200 + 200 + 200 * 10 + 10  # 22,210 numbers


@pytest.mark.parametrize("compute", [True, False])
def test_mlp_inference_holds_the_weights_copies_for_the_forward(compute: bool) -> None:
    memory = convprof.profile(mlp(), X, memory="cpu", compute=compute, autocast="bfloat16").memory
    assert memory is not None and memory.autocast == "bfloat16"
    # The peak is at the second Linear's output: the float32 weights and input, every weight's
    # and bias's bfloat16 copy (autocast caches them until the forward ends), the ReLU's
    # bfloat16 output and the Linear's (the first Linear's output and the cast input are gone).
    expected = PARAMS * F32 + 8 * 100 * F32 + PARAMS * BF16 + 8 * 200 * BF16 + 8 * 10 * BF16
    assert memory.peak_bytes == expected == 139_820
    assert memory.layer == "2"


def test_report_computes_in_the_autocast_dtype() -> None:
    report = convprof.profile(mlp(), X, compute=False, autocast=torch.bfloat16)
    assert report.dtype == "bfloat16"  # the roofline's precision
    assert report.total.macs == convprof.profile(mlp(), X, compute=False).total.macs


ORACLE = [
    ("resnet18", False),
    ("resnet18", True),
    ("mobilenet_v2", False),
    ("mobilenet_v2", True),
    ("t5", False),
    ("t5", True),
    ("conv-bn-dropout", True),
    ("in-place", True),
]


@pytest.mark.parametrize("compute", [True, False], ids=["computing", "zero-compute"])
@pytest.mark.parametrize(("name", "training"), ORACLE)
def test_within_3_percent_of_the_measured_peak_under_cpu_autocast(
    name: str, training: bool, compute: bool
) -> None:
    # Inference of the smallest models is left out: the CPU's bfloat16 matrix products keep a
    # packing buffer of up to ~260 KB that no operator shows (docs/memory.md), most of their peak.
    model, args, kwargs = MODELS[name]()
    if training:
        measured = training_peak(model, args, kwargs, optimizer="adam", autocast=torch.bfloat16)
    else:
        measured = inference_peak(model, args, kwargs, autocast=torch.bfloat16)
    report = convprof.profile(
        model,
        args,
        kwargs,
        memory="cpu",
        compute=compute,
        backward=training,
        optimizer="adam" if training else None,
        autocast="bfloat16",
    )
    assert report.memory is not None
    error = report.memory.peak_bytes / measured - 1
    assert abs(error) <= 0.03, f"{name}: predicted {report.memory.peak_bytes:,}, measured {measured:,}"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("name", ["llama", "bert", "t5"])
def test_zero_compute_predicts_what_a_computing_pass_sees(name: str, device: str) -> None:
    from hf_models import _entries

    _, _, build, inputs = next(entry for entry in _entries() if entry[0] == name)
    torch.manual_seed(0)
    model = build()
    args, kwargs = inputs()
    for training in (False, True):
        options: dict[str, Any] = {"memory": device, "backward": training, "autocast": "bfloat16"}
        options["optimizer"] = "adamw" if training else None
        zero = convprof.profile(model, args, kwargs, compute=False, **options).memory
        real = convprof.profile(model, args, kwargs, compute=True, **options).memory
        assert zero is not None and real is not None
        assert (zero.peak_bytes, zero.at_peak) == (real.peak_bytes, real.at_peak), training
    # and it is not the float32 figure: the inference holds bfloat16 copies of the weights
    plain = convprof.profile(model, args, kwargs, compute=False, memory=device).memory
    mixed = convprof.profile(model, args, kwargs, compute=False, memory=device, autocast="bfloat16").memory
    assert plain is not None and mixed is not None and mixed.peak_bytes > plain.peak_bytes


# One call per autocast rule of the CPU's policy, against what torch.autocast("cpu") gives. The
# tensors are the pass's inputs, so that without arithmetic they are meta stand-ins, which
# PyTorch's autocast never casts: only convprof's policy does.
A, B = torch.randn(4, 8), torch.randn(8, 8)
IMAGE, KERNEL, VOLUME = torch.randn(1, 2, 6, 6), torch.randn(3, 2, 3, 3), torch.randn(1, 2, 4, 4, 4)
Call = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
CALLS: dict[str, Call] = {
    "linear": lambda a, b, i, k, v: F.linear(a, b),
    "mm": lambda a, b, i, k, v: torch.mm(a, b),
    "matmul": lambda a, b, i, k, v: torch.matmul(a, b),
    "__matmul__": lambda a, b, i, k, v: a @ b,
    "bmm": lambda a, b, i, k, v: torch.bmm(a[None], b[None]),
    "baddbmm": lambda a, b, i, k, v: torch.baddbmm(a[None], a[None], b[None]),
    "addmm": lambda a, b, i, k, v: torch.addmm(a, a, b),
    "conv2d": lambda a, b, i, k, v: F.conv2d(i, k),
    "conv_transpose2d": lambda a, b, i, k, v: F.conv_transpose2d(i, k.transpose(0, 1)),
    "einsum": lambda a, b, i, k, v: torch.einsum("ij,jk->ik", a, b),
    "sdpa": lambda a, b, i, k, v: F.scaled_dot_product_attention(a[None], a[None], a[None]),
    "prelu": lambda a, b, i, k, v: F.prelu(a, b[0, :1]),
    "layer_norm": lambda a, b, i, k, v: F.layer_norm(a.bfloat16(), (8,)),  # no CPU rule: its input's dtype
    "softmax": lambda a, b, i, k, v: torch.softmax(a.bfloat16(), -1),  # no CPU rule
    "sum": lambda a, b, i, k, v: a.bfloat16().sum(),  # no CPU rule
    "mse_loss": lambda a, b, i, k, v: F.mse_loss(a.bfloat16(), a.bfloat16()),
    "cdist": lambda a, b, i, k, v: torch.cdist(a.bfloat16(), a.bfloat16()),
    "avg_pool3d": lambda a, b, i, k, v: F.avg_pool3d(v.bfloat16(), 2),
    "prod": lambda a, b, i, k, v: a.bfloat16().prod(),
    "cat": lambda a, b, i, k, v: torch.cat([a.bfloat16(), a]),
    "stack": lambda a, b, i, k, v: torch.stack([a.bfloat16(), a]),
}


class _Calls(nn.Module):
    """Runs one call in its forward, and keeps its result to look at."""

    last: torch.Tensor | None = None

    def __init__(self, call: Call) -> None:
        super().__init__()
        self.call = call

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        out = self.call(*tensors)
        type(self).last = out.detach()
        return out


@pytest.mark.parametrize("name", list(CALLS))
def test_the_cpu_policy_is_the_cpu_autocast(name: str) -> None:
    call, inputs = CALLS[name], (A, B, IMAGE, KERNEL, VOLUME)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = call(*inputs)
    convprof.profile(_Calls(call), inputs, compute=False, memory="cpu", autocast="bfloat16")
    assert _Calls.last is not None and _Calls.last.is_meta and _Calls.last.dtype == expected.dtype, name


def test_the_cuda_policy_keeps_norms_and_softmax_in_float32() -> None:
    # PyTorch's CUDA lists (autocast_mode.h): layer_norm float32, softmax float32 by its dtype
    # argument, linear lower; the CPU's have only linear
    assert (policy.rule("cuda", "layer_norm"), policy.rule("cpu", "layer_norm")) == ("float32", None)
    assert (policy.rule("cuda", "softmax"), policy.rule("cpu", "softmax")) == ("float32_dtype", None)
    assert policy.rule("cuda", "linear") == policy.rule("cpu", "linear") == "lower"


class Disables(nn.Module):
    """A product in a region where the model turns autocast off stays float32."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            kept = x @ x.T
        return self.proj(x) + kept.sum()


def test_a_region_the_model_turns_off_is_left_alone() -> None:
    report = convprof.profile(Disables(), torch.randn(4, 8), memory="cpu", autocast="bfloat16")
    assert report.memory is not None
    plain = convprof.profile(Disables(), torch.randn(4, 8), memory="cpu")
    assert plain.memory is not None
    # the Linear's bfloat16 weight copy (128 + 16 bytes) is extra; the 4 x 4 product is float32
    # either way, so nothing else differs in what is held at once
    assert report.memory.autocast == "bfloat16" and report.memory.peak_bytes != plain.memory.peak_bytes


def test_bad_autocast_is_refused() -> None:
    with pytest.raises(ValueError, match="autocast must be a lower-precision dtype"):
        convprof.profile(mlp(), X, autocast="int8")
    with pytest.raises(ValueError, match="autocast must be a lower-precision dtype"):
        convprof.profile(mlp(), X, autocast=torch.float32)


def test_zero_compute_without_memory_keeps_autocast() -> None:
    """Without a peak, zero compute makes a built-in layer's output directly (a shortcut in
    its input's dtype); under autocast the layer runs its operators: a conv-BN-ReLU's three
    1 x 16 x 32 x 32 outputs in bf16, 2 bytes each (the convolution casts to bf16, and the
    CPU's policy lets the norm and the activation follow its output), as the computing pass
    finds; without autocast they are fp32, twice as large."""
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()).eval()
    x = torch.randn(1, 3, 32, 32)
    zero = convprof.profile(model, x, autocast="bfloat16", compute=False).sizes.activation_bytes
    real = convprof.profile(model, x, autocast="bfloat16", compute=True).sizes.activation_bytes
    assert zero == real == 3 * 16 * 32 * 32 * 2
    assert convprof.profile(model, x, compute=False).sizes.activation_bytes == 2 * zero
