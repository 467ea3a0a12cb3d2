"""Separable blocks and inverted residuals, found from the data flow.

Expected MACs are hand arithmetic (N * C_out * H_out * W_out * C_in/g * k*k); expected block
counts for torchvision come from the architectures' own block classes and settings, which the
detection never looks at.
"""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn

import convprof
from convprof.report import Report

X = torch.ones(1, 6, 4, 4)


def tutorial_separable() -> nn.Module:
    return nn.Sequential(nn.Conv2d(6, 6, 2, groups=6, bias=False), nn.Conv2d(6, 10, 1, bias=False))


@pytest.mark.parametrize("compute", [True, False])
def test_tutorial_separable_block(compute: bool) -> None:
    report = convprof.profile(tutorial_separable(), X, compute=compute)
    (block,) = report.blocks
    assert block.kind == "separable"
    assert block.layers == ("0", "1")
    assert (block.in_channels, block.out_channels, block.kernel_size, block.stride) == (6, 10, (2, 2), (1, 1))
    assert (block.params, block.macs) == (24 + 60, 216 + 540)
    assert (block.depthwise_params, block.depthwise_macs) == (24, 216)
    assert (block.pointwise_params, block.pointwise_macs) == (60, 540)
    assert block.standard_macs == 10 * 3 * 3 * 6 * 2 * 2 == 2160  # Conv2d(6, 10, 2) on 4x4
    assert block.cost_vs_standard == pytest.approx(756 / 2160)
    n, k = 10, 2
    assert block.cost_vs_standard == pytest.approx(1 / n + 1 / k**2)  # the MobileNet paper's ratio: 0.35
    assert block.memory_bytes == 696 + 816


class Oddly(nn.Module):
    """A hand-written separable block: arbitrary attribute names, functional activation, a
    squeeze-and-excitation style rescaling and a batch norm between the two convs."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.norm = nn.BatchNorm2d(8)
        self.gate = nn.Conv2d(8, 8, 1)
        self.mix = nn.Conv2d(8, 16, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm(self.spatial(x)))
        scale = torch.sigmoid(self.gate(y.mean((2, 3), keepdim=True)))
        return self.mix(y * scale)


@pytest.mark.parametrize("compute", [True, False])
def test_found_through_norm_activation_and_scaling(compute: bool) -> None:
    report = convprof.profile(Oddly(), torch.ones(2, 8, 5, 5), compute=compute)
    (block,) = report.blocks
    assert block.layers == ("spatial", "mix")  # the gate conv reads a pooled copy: not a member
    assert block.depthwise_macs == 2 * 8 * 5 * 5 * 1 * 3 * 3  # 3600
    assert block.pointwise_macs == 2 * 16 * 5 * 5 * 8  # 6400
    assert block.standard_macs == 2 * 16 * 5 * 5 * 8 * 3 * 3  # 57600
    assert block.cost_vs_standard == pytest.approx(1 / 16 + 1 / 9)
    assert block.name == "spatial + mix"  # no common prefix below the root


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


@pytest.mark.parametrize("compute", [True, False])
def test_inverted_residuals_in_a_chain(compute: bool) -> None:
    model = nn.Sequential(InvertedResidual(4, 8, 6, 2), InvertedResidual(8, 8, 6, 1))
    report = convprof.profile(model, torch.ones(1, 4, 8, 8), compute=compute)
    first, second = report.blocks
    assert (first.kind, second.kind) == ("inverted_residual", "inverted_residual")
    assert first.layers == ("0.body.0", "0.body.3", "0.body.6")
    assert first.name == "0.body"
    expand = 1 * 24 * 8 * 8 * 4  # 6144
    depthwise = 1 * 24 * 4 * 4 * 9  # 3456, stride 2
    project = 1 * 8 * 4 * 4 * 24  # 3072
    assert first.macs == expand + depthwise + project == 12672
    assert first.depthwise_macs == depthwise
    assert first.standard_macs == 1 * 8 * 4 * 4 * 4 * 9  # Conv2d(4, 8, 3, stride 2): 4608
    assert first.cost_vs_standard == pytest.approx(12672 / 4608)  # expansion 6 costs more than the plain conv
    assert (first.stride, second.stride) == ((2, 2), (1, 1))
    # The residual add mixes the previous block's output into the next input; still two blocks.
    assert second.layers == ("1.body.0", "1.body.3", "1.body.6")
    assert second.macs == 1 * 48 * 16 * 8 + 1 * 48 * 16 * 9 + 1 * 8 * 16 * 48


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Conv2d(6, 6, 2, groups=6), nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(6, 10, 1)),
        nn.Sequential(nn.Conv2d(6, 6, 2, groups=3), nn.Conv2d(6, 10, 1)),  # grouped, not depthwise
        nn.Sequential(nn.Conv2d(6, 6, 2, groups=6), nn.Conv2d(6, 10, 2)),  # then a standard conv
        nn.Sequential(nn.Conv2d(6, 6, 1), nn.Conv2d(6, 10, 1)),
        nn.Sequential(nn.Conv2d(6, 6, 2, groups=6), nn.Flatten(), nn.Linear(54, 10)),
    ],
    ids=["pool-between", "grouped", "standard-after", "two-pointwise", "linear-after"],
)
def test_not_blocks(model: nn.Module) -> None:
    assert convprof.profile(model, X).blocks == ()


def test_shared_modules_make_one_row() -> None:
    block = tutorial_separable()
    # A standard conv between the two calls (a pointwise one would make the second call an
    # inverted residual, which it then is).
    model = nn.Sequential(block, nn.Conv2d(10, 6, 3, padding=1, bias=False), block)
    report = convprof.profile(model, torch.ones(1, 6, 6, 6))
    (row,) = report.blocks
    assert row.layers == ("0.0", "0.1")
    first = 6 * 5 * 5 * 4 + 10 * 5 * 5 * 6  # on 6x6: output 5x5
    second = 6 * 4 * 4 * 4 + 10 * 4 * 4 * 6  # on 5x5: output 4x4
    assert row.macs == first + second
    assert row.standard_macs == 10 * 5 * 5 * 6 * 4 + 10 * 4 * 4 * 6 * 4


def test_blocks_survive_json() -> None:
    report = convprof.profile(tutorial_separable(), X)
    data = json.loads(convprof.render(report, format="json"))
    (block,) = data["blocks"]
    assert (block["kind"], block["macs"], block["standard_macs"]) == ("separable", 756, 2160)
    assert block["cost_vs_standard"] == pytest.approx(0.35)
    assert Report.from_dict(data).blocks == report.blocks
    block["savings"] = block.pop("cost_vs_standard")  # as older reports wrote it
    assert Report.from_dict(data).blocks == report.blocks


def _expected(model: nn.Module, block_type: type, has_expand: str) -> tuple[int, int]:
    """(separable, inverted residual) counted from the architecture's own block classes."""
    separable = inverted = 0
    for module in model.modules():
        if isinstance(module, block_type):
            convs = [m for m in module.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
            expands = has_expand == "yes" or (has_expand == "count" and len(convs) >= 2)
            inverted += expands
            separable += not expands
    return separable, inverted


MODELS = {
    # MobileNetV2 t=1 block has no expand conv; SE convs (1x1 on 1x1 maps) are counted away by
    # requiring >= 2 pointwise convs outside the SE, which torchvision's blocks satisfy only
    # when there is an expand.
    "mobilenet_v2": (torchvision.models.mobilenetv2.InvertedResidual, "count"),
    "mnasnet1_0": (torchvision.models.mnasnet._InvertedResidual, "yes"),
    "shufflenet_v2_x1_0": (torchvision.models.shufflenetv2.InvertedResidual, "count"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_torchvision_blocks(name: str) -> None:
    model = torchvision.models.get_model(name)
    block_type, rule = MODELS[name]
    separable, inverted = _expected(model, block_type, rule)
    if name == "mnasnet1_0":
        separable += 1  # the stem: conv, depthwise 3x3, pointwise 1x1, written inline
    if name == "shufflenet_v2_x1_0":
        # Every unit has branch2 (pointwise, depthwise, pointwise); the 3 stride-2 units also
        # have branch1 (depthwise, pointwise).
        separable, inverted = 3, 4 + 8 + 4
    report = convprof.profile(model, torch.ones(1, 3, 224, 224), compute=False)
    kinds = [b.kind for b in report.blocks]
    assert (kinds.count("separable"), kinds.count("inverted_residual")) == (separable, inverted)
    for block in report.blocks:
        assert block.macs == sum(layer.macs for layer in report.layers if layer.name in block.layers)


def test_mobilenet_v3_and_efficientnet_blocks_through_squeeze_excitation() -> None:
    for name, count in (("mobilenet_v3_large", 15), ("efficientnet_b0", 16)):
        # MobileNetV3-Large has 15 bneck rows in the paper's Table 1; EfficientNet-B0 has
        # 1 + 2 + 2 + 3 + 3 + 4 + 1 = 16 MBConv blocks; the first of each has no expand.
        report = convprof.profile(
            torchvision.models.get_model(name), torch.ones(1, 3, 224, 224), compute=False
        )
        kinds = [b.kind for b in report.blocks]
        assert (kinds.count("separable"), kinds.count("inverted_residual")) == (1, count - 1), name


def test_models_without_depthwise_convs_have_no_blocks() -> None:
    report = convprof.profile(torchvision.models.resnet18(), torch.ones(1, 3, 64, 64), compute=False)
    assert report.blocks == ()


def test_one_dimensional_separable_block() -> None:
    model = nn.Sequential(nn.Conv1d(8, 8, 5, padding=2, groups=8), nn.GELU(), nn.Conv1d(8, 16, 1))
    (block,) = convprof.profile(model, torch.ones(1, 8, 20)).blocks
    assert block.depthwise_macs == 8 * 20 * 5  # 800
    assert block.pointwise_macs == 16 * 20 * 8  # 2,560
    assert block.standard_macs == 16 * 20 * 8 * 5  # Conv1d(8, 16, 5, padding=2): 12,800
    assert block.cost_vs_standard == pytest.approx(1 / 16 + 1 / 5)


EFFICIENT = [f"efficientnet_b{i}" for i in range(8)] + ["efficientnet_v2_s", "efficientnet_v2_m", "maxvit_t"]


@pytest.mark.slow
@pytest.mark.parametrize("name", EFFICIENT)
def test_mbconv_families(name: str) -> None:
    """Every MBConv of EfficientNet v1/v2 and MaxViT is a block: separable when it has no
    expand conv (its ``block`` Sequential holds depthwise, SE, project: 3 parts), else an
    inverted residual. Counted from torchvision's classes; FusedMBConv has no depthwise conv."""
    from torchvision.models.efficientnet import MBConv
    from torchvision.models.maxvit import MBConv as MaxVitMBConv

    from convprof.models.load import load

    loaded = load(f"torchvision:{name}", meta=True)
    separable = inverted = 0
    for module in loaded.model.modules():
        if isinstance(module, MBConv):
            separable += len(module.block) == 3
            inverted += len(module.block) == 4
        elif isinstance(module, MaxVitMBConv):
            inverted += 1  # MaxViT's MBConv always expands (ratio 4)
    report = convprof.profile(loaded.model, tuple(torch.empty(s.shape, device="meta") for s in loaded.inputs))
    kinds = [b.kind for b in report.blocks]
    assert (kinds.count("separable"), kinds.count("inverted_residual")) == (separable, inverted)
    assert separable + inverted > 0


class ChannelMix(nn.Module):
    """A user module with its own formula, shape-preserving."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(6, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nchw,dc->ndhw", x, self.weight)


convprof.register(ChannelMix)(lambda call: call.outputs[0].numel * 6)


def test_a_formula_module_between_breaks_the_block() -> None:
    plain = nn.Sequential(nn.Conv2d(6, 6, 2, groups=6), nn.ReLU(), nn.Conv2d(6, 10, 1))
    mixed = nn.Sequential(nn.Conv2d(6, 6, 2, groups=6), ChannelMix(), nn.Conv2d(6, 10, 1))
    assert len(convprof.profile(plain, X).blocks) == 1
    report = convprof.profile(mixed, X)
    assert report.blocks == ()
    assert report.layers[2].macs == 1 * 6 * 3 * 3 * 6  # the registered formula ran


def test_data_flow_tags_forget_a_dead_tensor_whose_id_was_taken() -> None:
    """Tags are kept by id() with a weak reference beside them: a tensor that died must not
    pass its tags to a new tensor that got the same id (CPython reuses ids at once)."""
    from convprof.record.dataflow import Tags

    tags = Tags()
    produced = torch.zeros(1)
    tags.set(produced, frozenset({3}))
    assert tags.get(produced) == frozenset({3})
    stale = tags._by_id.pop(id(produced))
    del produced
    newcomer = torch.zeros(1)
    tags._by_id[id(newcomer)] = stale  # what the dict holds when the id is reused
    assert tags.get(newcomer) == frozenset()
    assert len(tags) == 1  # the entry stays until the pass ends, holding no tensor
