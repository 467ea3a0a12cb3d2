"""Recording: one forward pass under module hooks and a dispatch mode, turned into a Trace.

This is the only module that touches PyTorch's hook and dispatch machinery. Module forward
hooks give rows their names, input and output shapes; a ``TorchDispatchMode`` sees every ATen
operator, including those that no module formula covers (``F.conv2d``, ``x @ w``, attention
inside custom modules), and attributes each to the innermost module running.

The pass runs in eval mode under ``torch.no_grad()``, which is what torchvision's published
figures measure and what keeps BatchNorm statistics still; every module's ``training`` flag is
set back afterwards, hooks are removed and mutated buffers restored, also when the forward
raises. Records hold shapes and plain values, never tensors.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from convprof.formulas import OpClass, classify
from convprof.records import (
    ArgValue,
    ConvSpec,
    ModuleCall,
    ModuleInfo,
    OpCall,
    ParamInfo,
    Plain,
    TensorMeta,
    Trace,
)
from convprof.units import format_shape


class ForwardError(RuntimeError):
    """The model's forward pass raised; the message names the module that was running."""


def meta_of(tensor: torch.Tensor) -> TensorMeta:
    return TensorMeta(
        shape=tuple(int(d) for d in tensor.shape),
        dtype=str(tensor.dtype).removeprefix("torch."),
        itemsize=tensor.element_size(),
    )


def _plain(value: Any) -> ArgValue:
    """An operator argument as a record value: tensors become TensorMeta, the rest plain."""
    if isinstance(value, torch.Tensor):
        return meta_of(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, torch.SymInt):
        return int(value)
    return str(value)


def _named_tensors(name: str, value: Any) -> Iterator[tuple[str, TensorMeta]]:
    if isinstance(value, torch.Tensor):
        yield name, meta_of(value)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _named_tensors(f"{name}[{i}]", item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _named_tensors(f"{name}[{key!r}]", item)


@dataclass
class _Frame:
    """A module call in progress."""

    name: str
    inputs: tuple[tuple[str, TensorMeta], ...]
    ops: list[OpCall] = field(default_factory=list)
    outputs: tuple[TensorMeta, ...] | None = None


class _Session(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Hooks and dispatch for one forward pass; ``frames`` is the stack of running modules."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.stack: list[_Frame] = []
        self.calls: list[_Frame] = []
        self._op_classes: dict[torch._ops.OpOverload, OpClass] = {}
        self._signatures: dict[type, inspect.Signature | None] = {}

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        op_class = self._op_classes.get(func)
        if op_class is None:
            op_class = self._op_classes[func] = classify(func)
        if op_class is not OpClass.FREE and self.stack:
            self.stack[-1].ops.append(
                OpCall(
                    op=str(func),
                    args=tuple(_plain(a) for a in args),
                    kwargs=tuple((k, _plain(v)) for k, v in kwargs.items()),
                    outputs=tuple(meta_of(t) for t in tree_leaves(out) if isinstance(t, torch.Tensor)),
                )
            )
        return out

    def _inputs(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[str, TensorMeta], ...]:
        """Tensor inputs named after the forward's parameters, so formulas can ask for 'query'."""
        cls = type(module)
        if "forward" in module.__dict__:
            signature = None
        elif cls in self._signatures:
            signature = self._signatures[cls]
        else:
            try:
                signature = inspect.signature(module.forward)
            except (TypeError, ValueError):
                signature = None
            self._signatures[cls] = signature
        named: list[tuple[str, Any]] = []
        bound = None
        if signature is not None:
            try:
                bound = signature.bind_partial(*args, **kwargs)
            except TypeError:
                bound = None
        if bound is not None:
            named.extend(bound.arguments.items())
        else:
            named.extend((str(i), a) for i, a in enumerate(args))
            named.extend(kwargs.items())
        return tuple(item for name, value in named for item in _named_tensors(name, value))

    def pre_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            frame = _Frame(name, self._inputs(module, args, kwargs))
            self.stack.append(frame)
            self.calls.append(frame)

        return hook

    def post_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            # Pop back to this module's frame: a child whose exception the parent caught
            # never reached its own post-hook.
            while self.stack:
                frame = self.stack.pop()
                if frame.name == name:
                    frame.outputs = tuple(
                        meta_of(t) for t in tree_leaves(output) if isinstance(t, torch.Tensor)
                    )
                    return

        return hook


def _config(module: nn.Module) -> tuple[tuple[str, Plain], ...]:
    """The module's public plain attributes (in_features, num_heads, ...), for formulas."""
    items: list[tuple[str, Plain]] = []
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training":
            continue
        scalar = isinstance(value, (bool, int, float, str)) or value is None
        if scalar or (
            isinstance(value, tuple) and all(isinstance(v, (bool, int, float, str)) for v in value)
        ):
            items.append((key, value))
    return tuple(items)


def _conv_spec(module: nn.Module) -> ConvSpec | None:
    if not isinstance(module, nn.modules.conv._ConvNd):
        return None
    padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
    return ConvSpec(
        in_channels=module.in_channels,
        out_channels=module.out_channels,
        kernel_size=tuple(module.kernel_size),
        stride=tuple(module.stride),
        padding=padding,
        dilation=tuple(module.dilation),
        groups=module.groups,
        transposed=module.transposed,
    )


def _module_info(name: str, module: nn.Module) -> ModuleInfo:
    params = tuple(
        ParamInfo(pname, id(p), tuple(int(d) for d in p.shape))
        for pname, p in module._parameters.items()
        if p is not None and not nn.parameter.is_lazy(p)
    )
    return ModuleInfo(
        name=name,
        type=type(module),
        params=params,
        config=_config(module),
        conv=_conv_spec(module),
        has_children=next(module.children(), None) is not None,
    )


def _describe(frame: _Frame) -> str:
    shapes = ", ".join(f"{name}: {format_shape(meta.shape)}" for name, meta in frame.inputs)
    return f"with inputs ({shapes})" if shapes else "with no tensor inputs"


def record(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Trace:
    """Run ``model(*args, **kwargs)`` once and return what it revealed.

    The model comes back exactly as it was: hooks removed, ``training`` flags and buffers
    restored, no gradients computed, also when the forward raises (then ForwardError).
    """
    session = _Session()
    named = list(model.named_modules())
    training = [(m, m.training) for _, m in named]
    buffers = [(b, b._version, b.detach().clone()) for b in model.buffers() if not b.is_meta]
    handles = []
    try:
        for name, module in named:
            handles.append(module.register_forward_pre_hook(session.pre_hook(name), with_kwargs=True))
            handles.append(module.register_forward_hook(session.post_hook(name), with_kwargs=True))
        for module, _ in training:
            module.training = False
        try:
            with torch.no_grad(), session:
                model(*args, **kwargs)
        except Exception as exc:
            running = session.stack[-1] if session.stack else None
            where = (
                f"in module '{running.name or '(root)'}' ({type(dict(named)[running.name]).__name__}) "
                f"{_describe(running)}"
                if running is not None
                else "outside any module"
            )
            raise ForwardError(
                f"forward pass of {type(model).__name__} failed {where}: {type(exc).__name__}: {exc}"
            ) from exc
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training:
            module.training = flag
        with torch.no_grad():
            for buffer, version, saved in buffers:
                if buffer._version != version:
                    buffer.copy_(saved)
    infos = {name: _module_info(name, module) for name, module in named}
    calls = tuple(ModuleCall(infos[f.name], f.inputs, f.outputs or (), tuple(f.ops)) for f in session.calls)
    inputs = tuple(item for _, item in _named_tensors("", (args, kwargs)))
    return Trace(type(model).__name__, inputs, tuple(infos.values()), calls)
