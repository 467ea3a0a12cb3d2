"""``torchvision:NAME``: the architecture that the model's DEFAULT weights imply.

The weights are not downloaded, so the result is comparable with the weights' published
metadata (``meta["num_params"]``, ``meta["_ops"]`` in GMACs): the number of classes, and the
builder arguments that torchvision overrides when it loads weights (below). The default input
is the one the weights were measured at: the evaluation crop for classification (1x3x224x224,
1x3x299x299 for Inception v3), 1x3x520x520 for segmentation, 16 frames at the crop for video,
a pair of 1x3x512x512 frames for optical flow.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from convprof.models.build import Loaded, SpecError, build
from convprof.models.inputs import Input
from convprof.records import Shape

FAMILIES = ("classification", "segmentation", "video", "optical_flow")


@dataclass(frozen=True, slots=True)
class Weights:
    """What a torchvision weights entry says about its model: reference counts and inputs."""

    name: str  # e.g. "ResNet50_Weights.IMAGENET1K_V2"
    model: str  # the builder, e.g. "resnet50"
    family: str
    num_params: int
    gmacs: float
    inputs: tuple[Shape, ...]

    @property
    def input_shape(self) -> Shape:
        return self.inputs[0]


def _family(name: str) -> str:
    import torchvision

    for family in FAMILIES:
        module = torchvision.models if family == "classification" else getattr(torchvision.models, family)
        if name in torchvision.models.list_models(module=module):
            return family
    raise SpecError(f"torchvision has no classification, segmentation, video or optical flow model {name!r}")


def _entry(name: str, weights: str | None) -> Any:
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    if weights is None:
        return enum.DEFAULT
    try:
        return enum[weights]
    except KeyError:
        raise SpecError(
            f"{name} has no weights {weights!r} (has {', '.join(e.name for e in enum)})"
        ) from None


def _implied_kwargs(name: str, family: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Builder arguments that torchvision sets itself when it loads weights."""
    kwargs: dict[str, Any] = {}
    if meta.get("categories") is not None:
        kwargs["num_classes"] = len(meta["categories"])
    if family == "segmentation":
        kwargs["weights_backbone"] = None  # the default would download ImageNet weights
        if not name.startswith("lraspp"):
            kwargs["aux_loss"] = True
    elif name == "googlenet":
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


def _inputs(family: str, entry: Any) -> tuple[Shape, ...]:
    if family == "segmentation":
        return ((1, 3, 520, 520),)
    if family == "optical_flow":
        return ((1, 3, 512, 512),) * 2
    crop = entry.transforms().crop_size
    size = tuple(crop) * 2 if len(crop) == 1 else tuple(crop)
    return ((1, 3, 16, *size),) if family == "video" else ((1, 3, *size),)


def torchvision_weights(name: str, weights: str | None = None) -> Weights:
    """A torchvision weights entry (DEFAULT unless named) and what it says about its model."""
    family = _family(name)
    entry = _entry(name, weights)
    return Weights(
        name=f"{type(entry).__name__}.{entry.name}",
        model=name,
        family=family,
        num_params=int(entry.meta["num_params"]),
        gmacs=float(entry.meta["_ops"]),
        inputs=_inputs(family, entry),
    )


def all_weights(families: tuple[str, ...] = FAMILIES) -> list[Weights]:
    """Every weights entry of the given torchvision families."""
    import torchvision

    found: list[Weights] = []
    for family in families:
        module = torchvision.models if family == "classification" else getattr(torchvision.models, family)
        for name in torchvision.models.list_models(module=module):
            found.extend(
                torchvision_weights(name, entry.name) for entry in torchvision.models.get_model_weights(name)
            )
    return found


def torchvision_model(name: str, weights: str | None = None, *, meta: bool = False, **given: Any) -> Loaded:
    """A torchvision model as its weights (DEFAULT unless named) imply, untrained, and its
    inputs; ``given`` builder arguments (``num_classes=10``) override the implied ones."""
    import torchvision

    info = torchvision_weights(name, weights)
    entry = _entry(name, weights)
    kwargs = {**_implied_kwargs(name, info.family, entry.meta), **given}
    try:
        loaded = build(
            lambda: torchvision.models.get_model(name, weights=None, **kwargs),
            meta=meta,
            what=f"torchvision:{name}",
        )
    except Exception as exc:  # a builder argument it rejects (num_classes="ten", bogus=1)
        if not given:
            raise
        reason = f"{type(exc).__name__}: {exc}"
        raise SpecError(f"building torchvision:{name} with {given} failed: {reason}") from exc
    # the forward's first parameter (``x``, ``images``): --input x=SHAPE replaces the default
    names = list(inspect.signature(loaded.model.forward).parameters)
    return Loaded(
        loaded.model,
        tuple(Input(shape) for shape in info.inputs),
        loaded.note,
        main=names[0] if names else None,
    )
