"""Building a model from a builder, on meta when asked: the step every spec shares.

With ``meta=True`` the model is built without materialising weights: under
``torch.device("meta")``, or, for builders that compute on tensors while constructing
(RegNet calls ``.tolist()``), with each parameter and buffer moved to meta as it is
registered. :class:`Loaded` says which was done, and what the spec says about feeding the model.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from convprof.models.inputs import Input
from convprof.report.tokens import TextShape


class SpecError(ValueError):
    """A model spec that cannot be resolved, imported or called."""


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
