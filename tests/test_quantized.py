"""Quantized models: torchvision's published figures, and hand-made quantized layers.

torchvision's quantized weights publish the float model's ``_ops`` (GMACs at the crop): an int8
multiply-accumulate is still one. Their ``num_params`` is the float model's too, counted before
BatchNorm is folded into the convolutions; folding turns each BatchNorm's 2 x C parameters into
a C-element conv bias, so the quantized model holds ``num_params - sum(C)`` parameters.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import quantization

import convprof
from convprof.models.torchvision import _implied_kwargs

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

SLOW = {"quantized_resnext101_32x8d", "quantized_resnext101_64x4d"}
ENTRIES = [
    pytest.param(
        name, entry.name, marks=[pytest.mark.slow] if name in SLOW else [], id=f"{name}-{entry.name}"
    )
    for name in torchvision.models.list_models(module=quantization)
    for entry in torchvision.models.get_model_weights(name)
]


def test_every_quantized_weights_entry_is_listed() -> None:
    # 14 entries: googlenet, inception_v3, mobilenet_v2, mobilenet_v3_large, resnet18,
    # resnet50 (2), resnext101_32x8d (2), resnext101_64x4d, shufflenet_v2 (4 widths)
    assert len(ENTRIES) == 14


@pytest.mark.parametrize(("name", "weights"), ENTRIES)
def test_quantized_torchvision_models_match_published_macs(name: str, weights: str) -> None:
    entry = torchvision.models.get_model_weights(name)[weights]
    # the arguments torchvision sets when it loads these weights, as for the float models
    kwargs = _implied_kwargs(name.removeprefix("quantized_"), "classification", entry.meta)
    torch.manual_seed(0)
    model = getattr(quantization, name.removeprefix("quantized_"))(weights=None, quantize=True, **kwargs)
    crop = entry.transforms().crop_size[0]
    report = convprof.profile(model, torch.randn(1, 3, crop, crop))
    assert round(report.total.macs / 1e9, 3) == entry.meta["_ops"]
    assert report.complete, report.unexplained
    float_model = torchvision.models.get_model(name.removeprefix("quantized_"), weights=None, **kwargs)
    folded = sum(m.num_features for m in float_model.modules() if isinstance(m, nn.BatchNorm2d))
    assert report.total.params == entry.meta["num_params"] - folded


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant, self.dequant = torch.ao.quantization.QuantStub(), torch.ao.quantization.DeQuantStub()
        self.conv = nn.Conv2d(6, 10, 2, bias=False)
        self.dw = nn.Conv2d(10, 10, 3, groups=10, padding=1)
        self.up = nn.ConvTranspose2d(10, 4, 2, stride=2)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(self.dw(self.conv(self.quant(x))))
        return self.dequant(self.fc(x.flatten(1)))


def test_static_quantized_conv_family_and_linear() -> None:
    model = Tiny().eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig(torch.backends.quantized.engine)
    model.up.qconfig = torch.ao.quantization.default_qconfig  # per-tensor: transposed needs it
    torch.ao.quantization.prepare(model, inplace=True)
    model(torch.randn(1, 6, 4, 4))
    torch.ao.quantization.convert(model, inplace=True)
    report = convprof.profile(model, torch.randn(1, 6, 4, 4))
    # the tutorial's conv: 9 positions x 240 weights; depthwise 3x3 on 10 channels at 3x3;
    # transposed: 9 input positions x (10 x 4 x 2 x 2); linear 144 -> 5
    assert report.total.macs == 9 * 240 + 9 * (10 * 9) + 9 * (10 * 4 * 4) + 144 * 5
    # weights and biases, packed: 240 + (90 + 10) + (160 + 4) + (720 + 5)
    assert report.total.params == 240 + 100 + 164 + 725
    assert report.complete


def test_dynamic_quantized_linear_and_lstm() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    qmodel = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    report = convprof.profile(qmodel, torch.randn(2, 8))
    assert report.total.macs == 2 * 8 * 16 + 2 * 16 * 4
    assert report.total.params == (8 * 16 + 16) + (16 * 4 + 4)
    assert report.complete

    lstm = torch.ao.quantization.quantize_dynamic(nn.LSTM(8, 16, num_layers=2), {nn.LSTM}, dtype=torch.qint8)
    report = convprof.profile(lstm, torch.randn(5, 3, 8))
    assert report.total.macs == 15 * (4 * 16 * (8 + 16) + 4 * 16 * (16 + 16))
    # weights and both biases of each layer, packed inside the cells' saved state
    assert report.total.params == (64 * 8 + 64 * 16 + 2 * 64) + (64 * 16 + 64 * 16 + 2 * 64)
    assert report.complete


def test_dynamic_quantized_model_in_zero_compute_is_a_clear_refusal() -> None:
    # quantized::linear_dynamic has no meta kernel: zero compute says so, naming the quantized
    # layer (its class is called Linear, as the float one), and "auto" counts it for real
    model = torch.ao.quantization.quantize_dynamic(
        nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)), {nn.Linear}, dtype=torch.qint8
    )
    with pytest.raises(convprof.ValuesNeeded) as caught:
        convprof.profile(model, torch.randn(2, 16), compute=False)
    message = str(caught.value)
    assert "module '0' (torch.ao.nn.quantized.dynamic.Linear)" in message
    assert "no meta implementation of quantized.linear_dynamic" in message
    assert convprof.profile(model, torch.randn(2, 16), compute="auto").total.macs == 2 * 16 * 32 + 2 * 32 * 4
