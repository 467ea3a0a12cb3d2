"""The backward of a CPU convolution on oneDNN's path: its blocked copies of the gradient, the
input and the weight, which no operator shows, against hand arithmetic and the peak measured
from torch.profiler's memory events (the CNNs' Adam steps were 0.4% to 2.5% low without them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from measured_memory import inference_peak, training_peak
from torch import nn

import convprof
from convprof.memory.scratch import kernel_scratch

BACKWARD = torch.ops.aten.convolution_backward.default


@pytest.fixture
def threads() -> Iterator[Callable[[int], None]]:
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_the_backward_program_by_hand(threads: Callable[[int], None]) -> None:
    # Conv2d(64, 128, 3) on 2 x 64 x 28 x 28 floats (channels in whole blocks): the gradient
    # (2 x 128 x 784 x 4 = 802,816 B), the input (401,408 B) and the weight (294,912 B).
    # The input's gradient: the blocked gradient, weight and input gradient before it
    # (1,499,136); then the weights': the blocked gradient, input and weight gradient and the
    # bias's (512) beside the input's gradient, 1,901,056 less the three results (696,832).
    threads(2)
    grad, x, w = (torch.empty(s, device="meta") for s in ((2, 128, 28, 28), (2, 64, 28, 28), (128, 64, 3, 3)))
    args = (grad, x, w, [128], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, True])
    out = (torch.empty_like(x), torch.empty_like(w), torch.empty(128, device="meta"))
    assert kernel_scratch(BACKWARD, args, out) == (1_499_136, 1_901_056 - 696_832)
    # the gradient of a sum is expanded: made dense first (802,816 B more, before and after)
    expanded = (grad[:1, :1, :1, :1].expand(2, 128, 28, 28), *args[1:])
    assert kernel_scratch(BACKWARD, expanded, out) == (1_499_136 + 802_816, 1_901_056 - 696_832 + 802_816)
    # PyTorch's own path (1x1 on one thread below a batch of 16) makes its results only
    threads(1)
    w1 = torch.empty(128, 64, 1, 1, device="meta")
    args1 = (grad, x, w1, [128], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, True])
    assert kernel_scratch(BACKWARD, args1, (out[0], torch.empty_like(w1), out[2])) is None


def _assert_step_exact(model: nn.Module, x: torch.Tensor, slack: int = 0) -> None:
    """A training step without an optimizer, predicted on both paths, against its measured
    peak: within ``slack`` bytes."""
    measured = training_peak(model, (x,), optimizer=None)
    for compute in (True, False):
        memory = convprof.profile(model, x, compute=compute, memory=True, backward=True).memory
        assert memory is not None
        assert abs(memory.peak_bytes - measured) <= slack, (compute, memory.peak_bytes, measured)


class _Scaled(nn.Module):
    """A convolution whose gradient arrives dense (as inside a network), or expanded from
    the sum of its outputs when it is the last layer."""

    def __init__(self, conv: nn.Module, last: bool) -> None:
        super().__init__()
        self.conv, self.last = conv, last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.conv(x)
        return y if self.last else y * 1.5


CASES = {
    "3x3 64->128": (lambda: nn.Conv2d(64, 128, 3, padding=1), (2, 64, 28, 28)),
    "1x1 96->192": (lambda: nn.Conv2d(96, 192, 1), (2, 96, 28, 28)),
    "depthwise 3x3, 24 padded to 32": (lambda: nn.Conv2d(24, 24, 3, padding=1, groups=24), (2, 24, 28, 28)),
    "depthwise 7x7": (lambda: nn.Conv2d(96, 96, 7, padding=3, groups=96), (2, 96, 28, 28)),
    "grouped, 8 a group": (lambda: nn.Conv2d(48, 48, 3, padding=1, groups=6), (4, 48, 28, 28)),
    "12 channels, in blocks of 8": (lambda: nn.Conv2d(12, 32, 3, padding=1), (2, 12, 56, 56)),
}


@pytest.mark.parametrize("last", [False, True], ids=["dense", "expanded"])
@pytest.mark.parametrize("input_grad", [False, True], ids=["first-layer", "inner"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_convolution_step_matches_the_measured_peak(
    case: str, input_grad: bool, last: bool, threads: Callable[[int], None]
) -> None:
    threads(1)  # at 2 threads oneDNN sometimes adds a per-thread reduction buffer (below)
    conv, shape = CASES[case]
    torch.manual_seed(0)
    model, x = _Scaled(conv(), last), torch.randn(*shape, requires_grad=input_grad)
    # exact, but for the depthwise 7x7's per-thread buffer (its size fitted: 64 bytes)
    _assert_step_exact(model, x, slack=64)


@pytest.mark.parametrize(
    "conv",
    [lambda: nn.Conv2d(3, 96, 4, stride=4), lambda: nn.Conv2d(3, 64, 7, stride=2, padding=3)],
    ids=["ConvNeXt's stem", "ResNet's stem"],
)
def test_a_first_layers_weight_gradient_matches_the_measured_peak(
    conv: Callable[[], nn.Module], threads: Callable[[int], None]
) -> None:
    # three channels: the input is read as it is, the gradient and weight copied blocked
    threads(1)
    torch.manual_seed(0)
    model, x = _Scaled(conv(), False), torch.randn(2, 3, 112, 112)
    _assert_step_exact(model, x)


@pytest.mark.parametrize("count", [1, 2])
def test_a_patch_embeddings_weight_gradient_matches_the_measured_peak(
    count: int, threads: Callable[[int], None]
) -> None:
    # ViT's 16x16 patches of three channels: oneDNN's GEMM path, a buffer per thread (the
    # batch of 2 split between 2 threads) of one sample's unfolded input (3 x 256 x 49
    # floats) and four weight gradients (4 x 768 x 3 x 256 floats): ViT-B/16's training step
    # was 16.8 MB low without an optimizer, 0.3% with Adam
    threads(count)
    torch.manual_seed(0)
    model, x = _Scaled(nn.Conv2d(3, 768, 16, stride=16), False), torch.randn(2, 3, 112, 112)
    _assert_step_exact(model, x)


LAST = {
    "depthwise 7x7, 384 channels": (lambda: nn.Conv2d(384, 384, 7, padding=3, groups=384), (2, 384, 14, 14)),
    "depthwise 3x3": (lambda: nn.Conv2d(384, 384, 3, padding=1, groups=384), (2, 384, 14, 14)),
    "3x3 64": (lambda: nn.Conv2d(64, 64, 3, padding=1), (2, 64, 28, 28)),
}


@pytest.mark.parametrize("input_grad", [False, True], ids=["first-layer", "inner"])
@pytest.mark.parametrize("case", list(LAST))
def test_a_channels_last_step_matches_the_measured_peak(
    case: str, input_grad: bool, threads: Callable[[int], None]
) -> None:
    # channels-last, oneDNN copies no activations but the weight, and a depthwise kernel
    # beyond 3x3 takes 256 floats per channel and tap (19,267,584 B here, ConvNeXt's blocks:
    # its Adam step was 7.4% low at batch 2, 224 x 224); the gradient of the sum comes
    # contiguous and is copied into channels-last (602,112 B)
    threads(1)
    conv, shape = LAST[case]
    torch.manual_seed(0)
    x = torch.randn(*shape).to(memory_format=torch.channels_last).requires_grad_(input_grad)
    model = _Scaled(conv(), False)
    _assert_step_exact(model, x)


def test_zero_compute_keeps_a_broadcast_products_layout() -> None:
    # ConvNeXt's block ends with layer_scale (C x 1 x 1) times a permuted output: the CPU's
    # result is channels-last, so the next block's 7x7 depthwise convolution runs channels-last
    # (its 19 MB weight-gradient buffer); zero compute made the product contiguous and
    # predicted 13,959,104 B less than the computing pass
    pytest.importorskip("torchvision")
    from torchvision.models.convnext import CNBlock

    torch.manual_seed(0)
    model = nn.Sequential(CNBlock(384, 1e-6, 0.0), CNBlock(384, 1e-6, 0.0))
    x = torch.randn(2, 384, 14, 14)
    _assert_step_exact(model, x)


@pytest.mark.parametrize("compute", [True, False])
@pytest.mark.parametrize("training", [False, True])
def test_a_layer_norm_over_channels_copies_its_input(compute: bool, training: bool) -> None:
    # LayerNorm over the channels of an NCHW tensor (permuted to NHWC, a view): the CPU
    # kernel copies the input contiguous (2 x 96 x 56 x 56 x 4 = 2,408,448 B) in the forward
    # and again in the backward, and the incoming gradient too where it is not dense
    from torchvision.ops.misc import Permute

    torch.manual_seed(0)
    model = nn.Sequential(Permute([0, 2, 3, 1]), nn.LayerNorm(96), Permute([0, 3, 1, 2]))
    x = torch.randn(2, 96, 56, 56)
    if training:
        measured = training_peak(_Scaled(model, False), (x,), optimizer=None)
        memory = convprof.profile(
            _Scaled(model, False), x, compute=compute, memory=True, backward=True
        ).memory
        assert memory is not None
        # less oneDNN's per-thread sums of the norm's weight gradients (2 x 96 floats a thread)
        assert 0 <= measured - memory.peak_bytes <= 2 * 96 * 4 * torch.get_num_threads()
    else:
        measured = inference_peak(model, (x,))
        memory = convprof.profile(model, x, compute=compute, memory=True).memory
        assert memory is not None and memory.peak_bytes == measured


@pytest.mark.parametrize("compute", [True, False])
@pytest.mark.parametrize(
    ("name", "size"),
    [
        # depthwise, 1x1 and strided convolutions (2.5% low without the blocked copies)
        ("shufflenet_v2_x1_0", 112),
        # LayerNorms on permuted inputs (copied contiguous in both passes), blocks whose output
        # is channels-last, 7x7 depthwise convolutions (4.8% low)
        ("convnext_tiny", 64),
    ],
)
def test_a_cnn_adam_step_is_exact(name: str, size: int, compute: bool) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model, x = getattr(torchvision.models, name)(), torch.randn(2, 3, size, size)
    measured = training_peak(model, (x,), optimizer="adam")
    memory = convprof.profile(model, x, compute=compute, memory=True, backward=True, optimizer="adam").memory
    assert memory is not None and memory.peak_bytes == measured, (memory.peak_bytes, measured)
