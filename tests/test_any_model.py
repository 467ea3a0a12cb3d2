"""Families that used to crash or count zero: parametrized weights, TorchScript, nested
tensors, profiler markers, detection operators. Expected values are written as arithmetic or
taken from torchvision's metadata; transformers' Wav2Vec2 and HuBERT, whose positional conv is
weight-normed, are checked against FlopCounterMode on meta in tests/test_zoo.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

import convprof
from convprof import ForwardError, ValuesNeeded

# The tutorial's conv: 1x6x4x4 in, 6 -> 10 channels, 2x2 kernel, 3x3 out: 9 x 240 MACs.
SEED_X = (1, 6, 4, 4)
SEED_MACS = 9 * (10 * 6 * 2 * 2)


class Symmetric(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.triu() + x.triu(1).transpose(0, 1)


def _symmetric_linear() -> nn.Module:
    layer = nn.Linear(8, 8)
    parametrize.register_parametrization(layer, "weight", Symmetric())
    return layer


def _legacy_weight_norm(module: nn.Module) -> nn.Module:
    with pytest.warns(FutureWarning):
        return torch.nn.utils.weight_norm(module)


# name: (build, input shape, MACs, params)
PARAMETRIZED: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int, int]] = {
    # v (10 x 6 x 2 x 2 = 240) and g (one per output channel, 10)
    "weight_norm conv2d": (lambda: weight_norm(nn.Conv2d(6, 10, 2, bias=False)), SEED_X, SEED_MACS, 240 + 10),
    "legacy weight_norm conv2d": (
        lambda: _legacy_weight_norm(nn.Conv2d(6, 10, 2, bias=False)),
        SEED_X,
        SEED_MACS,
        240 + 10,
    ),
    # sigma = u . (W v) each call: W seen as 10 x 24, so 240 + 10 MACs more, in the
    # parametrization's own row
    "spectral_norm conv2d": (
        lambda: spectral_norm(nn.Conv2d(6, 10, 2, bias=False)),
        SEED_X,
        SEED_MACS + 10 * 24 + 10,
        240,
    ),
    # batch 2, length 10 -> 8 positions, weight 8 x 4 x 3; v 96 + g 8 + bias 8
    "weight_norm conv1d": (
        lambda: weight_norm(nn.Conv1d(4, 8, 3)),
        (2, 4, 10),
        2 * 8 * (8 * 4 * 3),
        96 + 8 + 8,
    ),
    # transposed: 9 input positions x weight 4 x 2 x 2 x 2; g per input channel (dim 0): 4
    "weight_norm conv_transpose2d": (
        lambda: weight_norm(nn.ConvTranspose2d(4, 2, 2)),
        (1, 4, 3, 3),
        9 * (4 * 2 * 2 * 2),
        32 + 4 + 2,
    ),
    "parametrized linear": (_symmetric_linear, (4, 8), 4 * 8 * 8, 64 + 8),
}


@pytest.mark.parametrize("name", list(PARAMETRIZED))
def test_parametrized_weights(name: str) -> None:
    build, shape, macs, params = PARAMETRIZED[name]
    torch.manual_seed(0)
    model, x = build(), torch.randn(shape)
    assert sum(p.numel() for p in model.parameters()) == params
    reports = [
        convprof.profile(model, x),
        convprof.profile(model, x, compute=False),
        convprof.profile(build().to("meta"), x.to("meta")),
    ]
    for report in reports:
        assert (report.total.macs, report.total.params) == (macs, params)
        assert report.complete, report.unexplained


def test_legacy_weight_norm_attribute_is_left_real_after_zero_compute() -> None:
    # the legacy hook stores the computed weight as a plain attribute before every forward
    conv = _legacy_weight_norm(nn.Conv2d(6, 10, 2))
    x = torch.randn(SEED_X)
    before = conv(x)
    convprof.profile(conv, x, compute=False)
    assert not conv.weight.is_meta
    assert torch.equal(conv(x), before)


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.bn(self.conv(x))).flatten(1))


# batch 2: conv 2 x 36 positions x 108 weights; linear 2 x 144 x 5
SMALL_MACS = 2 * 36 * (4 * 3 * 3 * 3) + 2 * 144 * 5
SMALL_PARAMS = (108 + 4) + (4 + 4) + (720 + 5)


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_modules_are_counted_and_left_as_they_were(how: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    scripted = torch.jit.script(Small()) if how == "script" else torch.jit.trace(Small().eval(), x)
    scripted.train()
    stats = scripted.bn.running_mean.clone()
    for compute in (True, False):
        report = convprof.profile(scripted, x, compute=compute)
        assert (report.total.macs, report.total.params) == (SMALL_MACS, SMALL_PARAMS)
        assert report.complete
        # the script runs its submodules itself: no hooks fire inside, the root row holds the MACs
        assert report.layers[0].name == "" and report.layers[0].macs == SMALL_MACS
    assert scripted.training and scripted.bn.training
    assert torch.equal(scripted.bn.running_mean, stats)


def test_script_error_names_its_cause() -> None:
    # PyTorch cannot script a parametrized module; its long interpreter message ends in the cause
    scripted = torch.jit.script(weight_norm(nn.Conv2d(6, 10, 2)))
    with pytest.raises(
        ForwardError, match=r"TorchScript interpreter\. \.\.\. .*Parametrization is not working"
    ):
        convprof.profile(scripted, torch.randn(SEED_X))


def _encoder() -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=True)


def _encoder_layer_macs(length: int, embed: int = 16, hidden: int = 32) -> int:
    # q, k, v and out projections; scores and mixing; the two feed-forward layers
    return 4 * length * embed * embed + 2 * length * length * embed + 2 * length * embed * hidden


def test_encoder_with_padding_mask_counts_the_real_tokens() -> None:
    encoder, x = _encoder(), torch.randn(2, 5, 16)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    report = convprof.profile(encoder, (x,), {"src_key_padding_mask": mask})
    # PyTorch drops the padding (a nested batch of lengths 5 and 3) in eval
    assert report.total.macs == 2 * (_encoder_layer_macs(5) + _encoder_layer_macs(3))
    assert report.complete, report.unexplained
    dense = convprof.profile(encoder, x)
    assert dense.total.macs == 2 * 2 * _encoder_layer_macs(5)
    with pytest.raises(ValuesNeeded, match=r"nested tensors of the tokens src_key_padding_mask keeps"):
        convprof.profile(encoder, (x,), {"src_key_padding_mask": mask}, compute=False)


class Marked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autograd.profiler.record_function("block"):
            return self.fc(x) @ x.T


@pytest.mark.parametrize("wrap", [lambda m: m, nn.DataParallel], ids=["record_function", "DataParallel"])
def test_profiler_markers_are_free(wrap: Callable[[nn.Module], nn.Module]) -> None:
    report = convprof.profile(wrap(Marked()), torch.randn(3, 4))
    assert report.total.macs == 3 * 4 * 4 + 3 * 4 * 3
    assert report.complete, report.unexplained


DETECTION = [
    pytest.param("ssdlite320_mobilenet_v3_large", 320, id="ssdlite320_mobilenet_v3_large"),
    *(
        pytest.param(name, 800, marks=pytest.mark.slow, id=name)
        for name in (
            "ssd300_vgg16",
            "fcos_resnet50_fpn",
            "retinanet_resnet50_fpn",
            "retinanet_resnet50_fpn_v2",
        )
    ),
]


@pytest.mark.parametrize(("name", "size"), DETECTION)
def test_detection_models_are_complete_and_match_published_macs(name: str, size: int) -> None:
    # Models whose heads are dense over anchors. The R-CNNs run their box head once per RPN
    # proposal that survives NMS, and Mask/Keypoint R-CNN a head per detection: with random
    # weights those counts change with the values (still complete; docs/conventions.md).
    entry = torchvision.models.get_model_weights(name).DEFAULT
    torch.manual_seed(0)
    model = torchvision.models.get_model(
        name, weights=None, weights_backbone=None, num_classes=len(entry.meta["categories"])
    )
    report = convprof.profile(model, ([torch.rand(3, size, size)],))
    assert report.complete, report.unexplained
    assert round(report.total.macs / 1e9, 3) == entry.meta["_ops"]


@pytest.mark.parametrize("compute", [True, False])
def test_losses_in_a_forward_are_free(compute: bool) -> None:
    # A codec's commitment loss (DAC's mse_loss), a head given labels: no weight is applied, so
    # the only MACs are the Linear's, 2 rows x 4 x 3 = 24, and the report is complete.
    class WithLosses(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            out = self.linear(x)
            f = nn.functional
            return (
                f.mse_loss(out, torch.zeros_like(out))
                + f.cross_entropy(out, labels)
                + f.binary_cross_entropy_with_logits(out, torch.ones_like(out))
                + f.smooth_l1_loss(out, out.detach())
                + f.kl_div(out.log_softmax(-1), out.softmax(-1), reduction="batchmean")
            )

    report = convprof.profile(WithLosses(), (torch.randn(2, 4), torch.tensor([0, 2])), compute=compute)
    assert report.complete, [u.op for u in report.unexplained]
    assert report.total.macs == 24


class _ChannelsLastHead(nn.Conv1d):
    """Parakeet's CTC head: a kernel-1 Conv1d called on (batch, time, channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class _OutputsOnly(nn.LSTM):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[0]


@pytest.mark.parametrize("compute", [True, False])
def test_a_subclass_with_its_own_forward_is_counted_from_its_operators(compute: bool) -> None:
    # The Conv1d formula reads the module's input and output, which here are transposed: it
    # would take the 1,024 channels for the length (1,025 x 1,024 x 1,024 MACs). The
    # convolution itself maps 13 positions from 1,024 to 1,025 channels.
    head = convprof.profile(_ChannelsLastHead(1024, 1025, 1), torch.randn(1, 13, 1024), compute=compute)
    assert head.complete
    assert head.total.macs == 13 * 1024 * 1025
    # An LSTM subclass: 2 x 5 steps of layer 1, 4 gates x 16 x (8 + 16), and layer 2, 4 x 16 x
    # (16 + 16), counted from oneDNN's layer operator (CPU) or the per-step products (meta).
    lstm = convprof.profile(_OutputsOnly(8, 16, 2, batch_first=True), torch.randn(2, 5, 8), compute=compute)
    assert lstm.complete
    assert lstm.total.macs == 10 * (64 * (8 + 16) + 64 * (16 + 16))


@pytest.mark.parametrize("compute", [True, False])
def test_scans_and_membership_are_free(compute: bool) -> None:
    # Grounding DINO builds its text masks with cummax/cummin and isin, TAPAS pools cells
    # with scatter_reduce, ViLT samples patches with multinomial, Qwen2.5-VL finds its windows
    # with unique_consecutive: comparisons, sums by index, sampling, no products; the Linear's
    # 3 rows x 4 x 2 = 24 MACs are the only ones.
    class Masks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            special = torch.isin(ids, torch.tensor([0, 3]))
            running = torch.cummax(ids, 0).values + torch.cummin(ids, 0).values
            pooled = torch.zeros(4).scatter_reduce(0, ids, x[:, 0], reduce="amax")
            picked = torch.multinomial(x.softmax(-1), 2)
            runs = torch.unique_consecutive(ids).numel() + torch.unique(ids).numel()
            out = self.linear(x).sum() + special.sum() + running.sum() + x.logcumsumexp(0).sum() + runs
            return out + pooled.sum() + picked.sum()

    report = convprof.profile(Masks(), (torch.randn(3, 4), torch.tensor([1, 3, 0])), compute=compute)
    assert report.complete, [u.op for u in report.unexplained]
    assert report.total.macs == 24


@pytest.mark.parametrize("compute", [True, False])
def test_in_place_forms_of_untagged_elementwise_ops_are_free(compute: bool) -> None:
    # PyTorch tags abs, eq, ge, true_divide, copysign as pointwise but not their in-place
    # forms (SigLIP 2's position embeddings call abs_): the in-place form is as free as the
    # one it writes in place, and the Linear's 2 rows x 3 x 5 = 30 MACs are the only ones.
    class InPlace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.linear(x)
            y.abs_().true_divide_(2.0).copysign_(x.sum())
            flags = y.clone().ge_(0.5).eq_(1.0).lt_(2.0)
            return y + flags

    report = convprof.profile(InPlace(), torch.randn(2, 3), compute=compute)
    assert report.complete, [u.op for u in report.unexplained]
    assert report.total.macs == 2 * 3 * 5


class _Attention(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: object = None) -> torch.Tensor:
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _jagged(lengths: list[int], heads: int = 2, dim: int = 8) -> torch.Tensor:
    parts = [torch.randn(length, heads, dim) for length in lengths]
    return torch.nested.nested_tensor(parts, layout=torch.jagged).transpose(1, 2)


def test_jagged_nested_attention_is_counted_per_sequence() -> None:
    # two sequences of 30 and 50 positions, 2 heads of 8: Q K^T and P V per sequence, each
    # length^2 * 8 per head: 2 * (30^2 + 50^2) * (8 + 8) = 108,800 MACs; the sizes asked of
    # the nested tensor (sym_is_contiguous and kin) are metadata, not uncounted compute
    q = _jagged([30, 50])
    report = convprof.profile(_Attention(), (q, q, q))
    assert (report.total.macs, report.complete) == (108_800, True)
    with pytest.raises(ValuesNeeded, match="nested tensor of 2 sequences"):
        convprof.profile(_Attention(), (q, q, q), compute=False)
    assert convprof.profile(_Attention(), (q, q, q), compute="auto").total.macs == 108_800


def test_jagged_nested_times_a_weight() -> None:
    # 3 + 5 rows of 8 through an 8 x 4 weight: 8 * 8 * 4 = 256 MACs
    x = torch.nested.nested_tensor([torch.randn(3, 8), torch.randn(5, 8)], layout=torch.jagged)
    assert convprof.profile(nn.Linear(8, 4, bias=False), x).total.macs == 256


@pytest.mark.parametrize("compute", [True, False])
@pytest.mark.parametrize("variant", ["lower_right", "upper_left"])
def test_causal_bias_as_an_input(variant: str, compute: bool) -> None:
    # batch 3, 1 head, 12 queries over 7 keys of 8: 3 * 12 * 7 * (8 + 8) = 4,032 MACs; zero
    # compute used to turn the bias into a dense mask of another shape (6,048, or a broadcast
    # error with 2 heads)
    from torch.nn.attention import bias

    mask = getattr(bias, f"causal_{variant}")(12, 7)
    q, k = torch.randn(3, 1, 12, 8), torch.randn(3, 1, 7, 8)
    assert convprof.profile(_Attention(), (q, k, k, mask), compute=compute).total.macs == 4_032
    q, k = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 10, 8)
    mask = getattr(bias, f"causal_{variant}")(6, 10)
    report = convprof.profile(_Attention(), (q, k, k), {"mask": mask}, compute=compute, memory=True)
    assert report.total.macs == 2 * 4 * 6 * 10 * 16
