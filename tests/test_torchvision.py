"""torchvision's published metadata as the oracle: ``weights.meta["num_params"]`` and
``weights.meta["_ops"]`` (GMACs at the weights' evaluation crop), for a subset that covers every
family. The full list (80 models) runs with ``pytest -m slow`` and in scripts/torchvision_sweep.py.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

import convprof
from convprof.models.torchvision import torchvision_model, torchvision_weights

SUBSET = [
    "resnet18",
    "resnext50_32x4d",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "shufflenet_v2_x0_5",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "densenet121",
    "googlenet",
    "inception_v3",
    "convnext_tiny",
    "vit_b_32",
    "swin_t",
    "swin_v2_t",
    "maxvit_t",
    "mnasnet0_5",
    "squeezenet1_1",
    "alexnet",
]
ALL = torchvision.models.list_models(module=torchvision.models)


def check(name: str) -> None:
    weights = torchvision_weights(name)
    torch.manual_seed(0)
    loaded = torchvision_model(name)
    model, shape = loaded.model, loaded.inputs[0].shape
    report = convprof.profile(model, torch.randn(shape))
    assert report.complete, report.unexplained
    assert report.total.params == weights.num_params
    assert round(report.total.macs / 1e9, 3) == weights.gmacs


@pytest.mark.parametrize("name", SUBSET)
def test_matches_torchvision_metadata(name: str) -> None:
    check(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL if n not in SUBSET])
def test_matches_torchvision_metadata_all(name: str) -> None:
    check(name)


def test_vit_b_16_counts_functional_attention() -> None:
    # Hook-only counters get 11.27 G here: the attention runs inside one fused op.
    weights = torchvision_weights("vit_b_16")
    loaded = torchvision_model("vit_b_16")
    model, shape = loaded.model, loaded.inputs[0].shape
    report = convprof.profile(model, torch.randn(shape))
    assert (report.total.params, round(report.total.macs / 1e9, 3)) == (weights.num_params, weights.gmacs)
    assert weights.gmacs == 17.564


@pytest.mark.parametrize("name", SUBSET)
def test_cpu_zero_compute_and_meta_agree_in_train_and_eval(name: str) -> None:
    torch.manual_seed(0)
    loaded = torchvision_model(name)
    x = torch.randn(loaded.inputs[0].shape)
    computed = convprof.profile(loaded.model.eval(), x)
    assert convprof.profile(loaded.model.train(), x, compute=False) == computed
    assert convprof.profile(loaded.model.eval(), x, compute=False) == computed
    meta = torchvision_model(name, meta=True).model
    assert convprof.profile(meta.train(), x.to("meta")) == computed
