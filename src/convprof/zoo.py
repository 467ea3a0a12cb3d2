"""Model specs: turn ``torchvision:NAME`` or ``package.module:callable`` into a model.

``torchvision:NAME`` builds the architecture that the model's DEFAULT weights imply, without
downloading them, so the result is comparable with the weights' published metadata
(``meta["num_params"]``, ``meta["_ops"]`` in GMACs): the number of classes, and the few
builder arguments that torchvision overrides when it loads weights (below). The default input
is the weights' evaluation crop, e.g. 1x3x224x224, 1x3x299x299 for Inception v3.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from convprof.records import Shape


class SpecError(ValueError):
    """A model spec that cannot be resolved, imported or called."""


@dataclass(frozen=True, slots=True)
class Weights:
    """What a torchvision weights entry says about its model: reference counts and input."""

    name: str
    num_params: int
    gmacs: float
    input_shape: Shape


def _implied_kwargs(name: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Builder arguments that torchvision sets itself when it loads weights."""
    kwargs: dict[str, Any] = {}
    if "categories" in meta:
        kwargs["num_classes"] = len(meta["categories"])
    if name == "googlenet":
        # Built with aux heads to load the checkpoint, which are then dropped; its num_params
        # counts the model without them.
        kwargs.update(aux_logits=False, init_weights=False, transform_input=True)
    elif name == "inception_v3":
        # Same dance, but this checkpoint's num_params (27,161,264) counts the aux head too:
        # build it as the checkpoint has it. In eval the head never runs (0 MACs, calls == 0).
        kwargs.update(aux_logits=True, init_weights=False, transform_input=True)
    elif name.startswith("vit_"):
        kwargs["image_size"] = meta["min_size"][0]
    elif name.startswith("maxvit_"):
        kwargs["input_size"] = meta["min_size"]
    return kwargs


def _default_weights(name: str) -> Any:
    import torchvision

    try:
        return torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError) as exc:
        raise SpecError(f"torchvision has no model called {name!r} with weights") from exc


def _summary(entry: Any) -> Weights:
    crop = entry.transforms().crop_size
    size = tuple(crop) * 2 if len(crop) == 1 else tuple(crop)
    return Weights(
        name=f"{type(entry).__name__}.{entry.name}",
        num_params=int(entry.meta["num_params"]),
        gmacs=float(entry.meta["_ops"]),
        input_shape=(1, 3, *size),
    )


def torchvision_weights(name: str) -> Weights:
    """The DEFAULT weights entry of a torchvision classification model."""
    return _summary(_default_weights(name))


def torchvision_model(name: str) -> tuple[nn.Module, Shape]:
    """A torchvision model as its DEFAULT weights imply (untrained), and its input shape."""
    import torchvision

    entry = _default_weights(name)
    model = torchvision.models.get_model(name, weights=None, **_implied_kwargs(name, entry.meta))
    return model, _summary(entry).input_shape


def load(spec: str) -> tuple[nn.Module, Shape | None]:
    """The model a spec names, and its default input shape when the spec implies one."""
    if spec.startswith("torchvision:"):
        return torchvision_model(spec.removeprefix("torchvision:"))
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SpecError(f"model spec {spec!r} is not 'package.module:callable' or 'torchvision:NAME'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"cannot import {module_name!r} for spec {spec!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise SpecError(f"{module_name!r} has no attribute {attr!r} (spec {spec!r})")
    if not callable(target):
        raise SpecError(f"{spec!r} is not callable")
    builder: Callable[[], Any] = target
    try:
        model = builder()
    except Exception as exc:
        raise SpecError(f"calling {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise SpecError(f"{spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model, None
