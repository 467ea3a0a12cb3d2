"""A model profiled again: what convprof read from its modules the first time is reused only
while it still holds, so a model changed between two profiles counts exactly as a fresh copy of
it (a deep copy, whose modules convprof has never seen)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

import convprof


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 8),
        nn.Linear(8, 8),
    )


def _stride(model: nn.Sequential) -> None:
    model[3].stride = (2, 2)


def _tie(model: nn.Sequential) -> None:
    model[6].weight = nn.Parameter(torch.randn(8, 8))  # a new parameter, the same shape
    model[7].weight = model[6].weight  # tied: counted once


def _freeze(model: nn.Sequential) -> None:
    model[0].weight.requires_grad_(False)


def _half(model: nn.Sequential) -> None:
    model.to(torch.float64)


def _reshape(model: nn.Sequential) -> None:
    # a layer resized in place, with its attribute: the same module and parameter objects
    model[7].weight.data = torch.randn(6, 8)
    model[7].bias.data = torch.randn(6)
    model[7].out_features = 6


def _replace(model: nn.Sequential) -> None:
    model[3] = nn.Conv2d(8, 16, 1)
    model[6] = nn.Linear(16, 8)


def _nest(model: nn.Sequential) -> None:
    model[2].add_module("inner", nn.Identity())  # a leaf that gains a child


def _buffer(model: nn.Sequential) -> None:
    model[1].register_buffer("extra", torch.zeros(3, 3))
    del model[1].num_batches_tracked


def _rename(model: nn.Sequential) -> None:
    del model[2]  # every later layer moves up one name


MUTATIONS: dict[str, Callable[[nn.Sequential], None]] = {
    "attribute a formula reads": _stride,
    "parameters replaced and tied": _tie,
    "parameter frozen": _freeze,
    "dtype": _half,
    "parameter resized in place": _reshape,
    "layers replaced": _replace,
    "leaf given a child": _nest,
    "buffers added and removed": _buffer,
    "layers renamed": _rename,
}


@pytest.mark.parametrize("compute", [True, False], ids=["compute", "zero"])
@pytest.mark.parametrize("name", list(MUTATIONS))
def test_a_model_changed_between_profiles_counts_as_a_fresh_copy(name: str, compute: bool) -> None:
    torch.manual_seed(0)
    model = _net()
    x = torch.randn(2, 3, 8, 8)
    before = convprof.profile(model, x, compute=compute)
    assert convprof.profile(model, x, compute=compute) == before  # unchanged: the same report
    MUTATIONS[name](model)
    dtype = next(model.parameters()).dtype
    again = convprof.profile(model, x.to(dtype), compute=compute)
    fresh = convprof.profile(copy.deepcopy(model), x.to(dtype), compute=compute)
    assert again == fresh
    assert again != before  # each change shows in the report


def test_the_changes_show_in_the_figures() -> None:
    # the oracle above is a fresh copy; here the figures themselves, written out
    model, x = _net(), torch.randn(2, 3, 8, 8)
    before = convprof.profile(model, x)
    _stride(model)
    # depthwise conv: 2 x 8 x 8x8 x 9 = 9,216 MACs at stride 1, a quarter at stride 2
    rows = {layer.name: layer for layer in convprof.profile(model, x).layers}
    assert {layer.name: layer for layer in before.layers}["3"].macs == 9216
    assert rows["3"].macs == 9216 // 4
    _freeze(model)
    sizes = convprof.profile(model, x).sizes
    assert sizes.trainable_params == before.sizes.trainable_params - 8 * 3 * 9
    _half(model)
    report = convprof.profile(model, x.double())
    assert report.sizes.param_bytes == 2 * before.sizes.param_bytes


def test_the_attributes_a_formula_reads() -> None:
    # public scalars, None and tuples of scalars, subclasses included (an IntEnum, a NumPy
    # float); not private ones, tensors, tuples holding None, or lists
    import enum

    import numpy as np

    from convprof.record.facts import _config

    class Mode(enum.IntEnum):
        A = 1

    module = nn.Module()
    module.heads, module.scale, module.mode, module.name = 4, np.float64(0.5), Mode.A, "q"
    module.size, module.mixed, module.nothing = torch.Size([2, 3]), (1, np.float64(2.0)), None
    module.holes, module.listed, module.tensor, module._private = (1, None), [1], torch.ones(1), 3
    assert _config(module) == (
        ("heads", 4),
        ("scale", 0.5),
        ("mode", Mode.A),
        ("name", "q"),
        ("size", (2, 3)),
        ("mixed", (1, 2.0)),
        ("nothing", None),
    )


def test_what_is_kept_goes_away_with_the_model() -> None:
    # the kept module records hold no module and no tensor, and leave with their module
    import gc
    import weakref

    from convprof.record import facts

    model = _net()
    convprof.profile(model, torch.randn(1, 3, 8, 8), compute=False)
    ids = {id(m) for m in model.modules()}
    assert ids <= facts._INFOS.keys()
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # nothing convprof kept holds the model
    assert not [key for key, entry in facts._INFOS.items() if key in ids and entry[0]() is not None]
    assert not ids & facts._INFOS.keys()
