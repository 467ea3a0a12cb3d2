"""The errors of a pass, and the message that says where the model's forward failed.

A forward that raises becomes a :class:`ForwardError` naming the module that was running
(with its input shapes) and the exception. In a zero-compute pass, an operator whose result
depends on values, a meta tensor where the model's code wants a real one, or an operator
without a meta kernel becomes :class:`ValuesNeeded`: the remedy is a real pass, which
``compute="auto"`` and the command line then run.
"""

from __future__ import annotations

import traceback
from typing import Any

import torch
from torch import nn

from convprof.record.frame import Frame
from convprof.record.tensors import named_tensors
from convprof.records import TensorMeta
from convprof.units import format_shape

_VALUE_TAGS = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape)


class ForwardError(RuntimeError):
    """The model's forward pass raised; the message names the module that was running."""


class ValuesNeeded(ForwardError):
    """A zero-compute pass reached an operator whose result depends on tensor values."""


class StandInUnknown(Exception):
    """A zero-compute stand-in cannot know what an operator's result holds (a sparse result's
    stored values): the pass stops with :class:`ValuesNeeded` rather than go on with a guess."""


def where(named: list[tuple[str, nn.Module]], running: Frame | None, exc: BaseException) -> str:
    """Where a forward failed: the module running, its class and its input shapes."""
    if running is None:
        return "outside any module"
    module = dict(named)[running.name]
    return f"in module '{running.name or '(root)'}' ({type_label(module)}) {_describe(running, module, exc)}"


def forward_error(
    model: nn.Module,
    named: list[tuple[str, nn.Module]],
    running: Frame | None,
    op: torch._ops.OpOverload | None,
    exc: Exception,
    computing: bool,
) -> ForwardError:
    """The error to raise for ``exc``, raised by the forward while ``running`` (the innermost
    module call open, or the one an exception left) ran and ``op`` was the last operator."""
    where_ = where(named, running, exc)
    if not computing and isinstance(exc, StandInUnknown):
        return ValuesNeeded(
            f"zero-compute pass of {type(model).__name__} stopped {where_}: {exc}; profile with "
            "compute=True and real inputs"
        )
    if (
        not computing
        and op is not None
        and (any(tag in op.tags for tag in _VALUE_TAGS) or str(op).startswith("aten._local_scalar_dense"))
    ):
        return ValuesNeeded(
            f"zero-compute pass of {type(model).__name__} stopped {where_}: {op} needs real tensor "
            "values (data-dependent shapes or .item()); profile with compute=True and real inputs"
        )
    if (
        not computing
        and any(word in str(exc).lower() for word in ("meta", "unallocated storage"))
        and not isinstance(exc, NotImplementedError)
    ):
        # The model's own code met a meta tensor where it wants a real one (it checks a
        # device, as pack_padded_sequence does for its lengths, or reads values: tolist() of
        # a meta tensor speaks of "unallocated storage", as JetMoE's router finds).
        return ValuesNeeded(
            f"zero-compute pass of {type(model).__name__} stopped {where_}: {type(exc).__name__}: "
            f"{gist(exc)}; the model needs real tensors there: profile with compute=True and real inputs"
        )
    if (
        not computing
        and op is not None
        and isinstance(exc, NotImplementedError)
        and ("Meta" in str(exc) or "fake impl" in str(exc))
    ):
        # No meta kernel: the operator cannot run without data (nested tensors from a mask,
        # some custom and backend-specific operators, the dynamically quantized kernels, whose
        # error speaks of a missing "fake impl"), which is the same remedy.
        return ValuesNeeded(
            f"zero-compute pass of {type(model).__name__} stopped {where_}: PyTorch has no meta "
            f"implementation of {op}, so it needs real tensors; profile with compute=True and real inputs"
        )
    return ForwardError(
        f"forward pass of {type(model).__name__} failed {where_}: {type(exc).__name__}: {gist(exc)}"
    )


def _describe(frame: Frame, module: nn.Module, exc: BaseException) -> str:
    inputs = frame.inputs
    if frame.raised:
        inputs += _raised_kwargs(module, exc)
    shapes = ", ".join(f"{name}: {format_shape(meta.shape)}" for name, meta in inputs)
    return f"with inputs ({shapes})" if shapes else "with no tensor inputs"


def _raised_kwargs(module: nn.Module, exc: BaseException) -> tuple[tuple[str, TensorMeta], ...]:
    """The keyword inputs of a module call that raised. The forward hook that records them is
    not given them then (PyTorch passes keyword arguments to an always-called global hook only
    when the forward returns), so they are read from the call's frame in the traceback."""
    call = nn.Module._call_impl.__code__
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        if frame.f_code is call and frame.f_locals.get("self") is module:
            kwargs: Any = frame.f_locals.get("kwargs")
            if isinstance(kwargs, dict):
                return tuple(item for k, v in kwargs.items() for item in named_tensors(k, v))
    return ()


def type_label(module: nn.Module) -> str:
    """A module's class as an error names it: a quantized one with its package, since its
    plain name (``Linear``) reads as the float layer's; one FSDP2 sharded (its class
    ``FSDPLinear``, made on the fly) as the class the user wrote."""
    kind = type(module)
    if (
        kind.__name__.startswith("FSDP")
        and len(kind.__mro__) > 2
        and kind.__mro__[1].__name__ == "FSDPModule"
    ):
        kind = kind.__mro__[2]
    if ".quantized." not in f"{kind.__module__}.":
        return kind.__name__
    parts = kind.__module__.split(".")
    package = ".".join(parts[: parts.index("modules")] if "modules" in parts else parts)
    return f"{package}.{kind.__name__}"


def gist(exc: Exception) -> str:
    """A long message (TorchScript's carries the script's stack) as its first and last lines."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) <= 2:
        return " ".join(lines)
    return f"{lines[0]} ... {lines[-1]}"
