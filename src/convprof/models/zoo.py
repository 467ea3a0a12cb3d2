"""Model specs: turn ``torchvision:NAME`` or ``package.module:callable`` into a model.

``torchvision:NAME`` builds the architecture that the model's DEFAULT weights imply, without
downloading them, so the result is comparable with the weights' published metadata
(``meta["num_params"]``, ``meta["_ops"]`` in GMACs): the number of classes, and the builder
arguments that torchvision overrides when it loads weights (below). The default input is the
one the weights were measured at: the evaluation crop for classification (1x3x224x224,
1x3x299x299 for Inception v3), 1x3x520x520 for segmentation, 16 frames at the crop for video,
a pair of 1x3x512x512 frames for optical flow.

With ``meta=True`` the model is built without materialising weights: under
``torch.device("meta")``, or, for builders that compute on tensors while constructing
(RegNet calls ``.tolist()``), with each parameter and buffer moved to meta as it is
registered. :class:`Loaded` says which was done.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convprof.models.inputs import Input
from convprof.records import Shape
from convprof.report.tokens import TextShape

FAMILIES = ("classification", "segmentation", "video", "optical_flow")


class SpecError(ValueError):
    """A model spec that cannot be resolved, imported or called."""


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


@dataclass(frozen=True, slots=True)
class Loaded:
    """A model a spec built, and what the spec says about feeding it."""

    model: nn.Module
    inputs: tuple[Input, ...] | None  # the default inputs, when the spec implies them
    note: str | None = None  # how the model was built, when it is worth saying
    id_limit: int | None = None  # integer inputs are token ids below this (the vocabulary size)
    text: TextShape | None = None  # a language model's figures, for the per-token summary
    main: str | None = None  # the name of the forward's main input (input_ids, pixel_values)
    decoder: bool = False  # generates from a cache of its own past tokens (can take --past)


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


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Move every parameter and buffer to meta as a module registers it (builder code that
    needs real tensors still gets them; initialisers then act on meta tensors, for free).

    The methods are patched on ``nn.Module`` for the duration, but act only in the building
    thread: modules other threads build meanwhile are registered as usual."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer
    builder_thread = threading.get_ident()

    def parameter(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta and threading.get_ident() == builder_thread:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def buffer(self: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        if tensor is not None and threading.get_ident() == builder_thread:
            tensor = tensor.to("meta")
        register_buffer(self, name, tensor, persistent)

    nn.Module.register_parameter = parameter  # type: ignore[method-assign]
    nn.Module.register_buffer = buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


def build(builder: Callable[[], Any], *, meta: bool = False, what: str = "the model") -> Loaded:
    """Call ``builder``; with ``meta=True`` without materialising its weights."""
    if not meta:
        return Loaded(builder(), None)
    try:
        with torch.device("meta"):
            return Loaded(builder(), None)
    except (NotImplementedError, RuntimeError) as exc:
        with _parameters_on_meta():
            model = builder()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Loaded(
            model,
            None,
            f"{what} cannot be built under torch.device('meta') (its builder reads tensor values: "
            f"{reason}); built on the CPU with each parameter and buffer moved to meta as it was created",
        )


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
    return Loaded(loaded.model, tuple(Input(shape) for shape in info.inputs), loaded.note)


@contextlib.contextmanager
def _importable_from(folders: Sequence[Path]) -> Iterator[None]:
    """Put ``folders`` first on ``sys.path`` while a spec's module is imported, as ``python -m``
    and pytest do for the current directory."""
    added = [str(Path(folder).resolve()) for folder in folders]
    sys.path[:0] = added
    try:
        yield
    finally:
        for folder in added:
            if folder in sys.path:
                sys.path.remove(folder)


_CALL = re.compile(r"^(?P<base>[^()]+)\((?P<arguments>.*)\)$", re.S)


def split_call(spec: str) -> tuple[str, dict[str, Any]]:
    """``'torchvision:resnet50(num_classes=10)'`` -> ``('torchvision:resnet50', {'num_classes': 10})``.

    Keyword arguments only, with Python literal values (numbers, strings, booleans, None,
    tuples, lists, dicts): a spec is text from a command line or a config file, never code."""
    found = _CALL.match(spec.strip())
    if found is None:
        return spec, {}
    try:
        call = ast.parse(f"f({found['arguments']})", mode="eval").body
    except SyntaxError:
        raise SpecError(f"spec {spec!r}: the arguments are not NAME=VALUE, ...") from None
    assert isinstance(call, ast.Call)
    if call.args or any(keyword.arg is None for keyword in call.keywords):
        raise SpecError(f"spec {spec!r}: give arguments by name (NAME=VALUE, ...)")
    kwargs: dict[str, Any] = {}
    for keyword in call.keywords:
        try:
            kwargs[str(keyword.arg)] = ast.literal_eval(keyword.value)
        except ValueError:
            raise SpecError(
                f"spec {spec!r}: {keyword.arg}= must be a literal (number, string, True, None, tuple ...)"
            ) from None
    return found["base"].strip(), kwargs


def load(spec: str, *, meta: bool = False, folders: Sequence[Path] = ()) -> Loaded:
    """The model a spec names, and its default inputs when the spec implies them.

    A ``package.module:callable`` spec is imported from ``folders`` first, then from
    ``sys.path``: importing it runs its code, as ``python -c 'import package.module'`` would.
    Any spec may end with keyword arguments, ``NAME(key=value, ...)``: the builder's for
    ``torchvision:`` (over those the weights imply) and callables, the configuration's for
    ``transformers:``.
    """
    spec, kwargs = split_call(spec)
    if spec.startswith("torchvision:"):
        return torchvision_model(spec.removeprefix("torchvision:"), meta=meta, **kwargs)
    if spec.startswith("transformers:"):
        from convprof.models.hf import transformers_model

        return transformers_model(spec.removeprefix("transformers:"), meta=meta, **kwargs)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SpecError(
            f"model spec {spec!r} is not 'package.module:callable', 'torchvision:NAME' or 'transformers:NAME'"
        )
    try:
        with _importable_from(folders):
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"cannot import {module_name!r} for spec {spec!r}: {exc}") from exc
    except Exception as exc:  # the module's own code raised (SyntaxError, RuntimeError, ...)
        raise SpecError(
            f"importing {module_name!r} for spec {spec!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise SpecError(f"{module_name!r} has no attribute {attr!r} (spec {spec!r})")
    if not callable(target):
        raise SpecError(f"{spec!r} is not callable")
    try:
        loaded = build(functools.partial(target, **kwargs), meta=meta, what=spec)
    except Exception as exc:
        raise SpecError(f"calling {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(loaded.model, nn.Module):
        raise SpecError(f"{spec!r} returned {type(loaded.model).__name__}, not a torch.nn.Module")
    return loaded
