"""Module stand-ins: the output of a quiet built-in layer made from its input and attributes.

In a zero-compute pass the operators inside a quiet built-in layer are not recorded (a module
formula counts the call from its input and output, or the layer runs only free operators:
norms, activations), so the layer's forward need not run at all: its output follows from its
input and attributes. Skipping it saves the Python dispatch of each operator inside (one for a
convolution, two for a BatchNorm, four for a Linear on a 3-D input; 15-30 us each) and the
layer's own Python. Each function takes the module and its positional inputs and returns what
its forward would (the input itself where the forward returns it: in-place activations, Dropout
in eval, Identity), or None for anything unusual, and then the real forward runs on meta. Only
exact types are listed: a subclass may override forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from convprof.record.stand_ins.operators import batch_norm_fits, conv_out
from convprof.record.stand_ins.shapes import empty, is_float, same_as

# (module, positional inputs) -> output; the module is typed Any as its attributes are read as
# the built-in layer declares them, which nn.Module's typing cannot say
ModuleShortcut = Callable[[Any, tuple[Any, ...]], Any]


def _meta_input(args: tuple[Any, ...]) -> torch.Tensor | None:
    x = args[0] if len(args) == 1 else None
    return x if isinstance(x, torch.Tensor) and x.is_meta and is_float(x) else None


def _conv_module(module: Any, args: tuple[Any, ...]) -> Any:
    # Conv*d.forward: F.conv*d(x, weight, bias, stride, padding, dilation, groups); ConvTranspose
    # without output_size: F.conv_transpose*d(..., output_padding, groups, dilation). Both reach
    # aten.convolution with these arguments. The weight and bias are read from the module's
    # table: nn.Module.__getattr__ costs 1 us a read.
    x = _meta_input(args)
    if x is None or module.padding_mode != "zeros" or isinstance(module.padding, str):
        return None
    params = module._parameters
    weight, bias = params.get("weight"), params.get("bias")
    if weight is None or "bias" not in params:
        return None
    return conv_out(
        x,
        weight,
        bias,
        module.stride,
        module.padding,
        module.dilation,
        module.transposed,
        module.output_padding if module.transposed else 0,
        module.groups,
    )


_BATCH_NORM_RANKS: dict[type, tuple[int, ...]] = {
    nn.BatchNorm1d: (2, 3),
    nn.BatchNorm2d: (4,),
    nn.BatchNorm3d: (5,),
}


def _batch_norm_module(module: Any, args: tuple[Any, ...]) -> Any:
    # in eval with running statistics (the pass's mode): normalised with those, same shape out;
    # without them (track_running_stats=False) it uses the batch's, which is left to PyTorch
    x = _meta_input(args)
    params, buffers = module._parameters, module._buffers
    if x is None or module.training or buffers.get("running_mean") is None:
        return None
    if x.dim() not in _BATCH_NORM_RANKS[type(module)]:
        return None  # its _check_input_dim raises, with its message
    stats = (params.get("weight"), params.get("bias"), buffers["running_mean"], buffers.get("running_var"))
    return same_as(x) if batch_norm_fits(x, stats) else None


def _linear_module(module: Any, args: tuple[Any, ...]) -> Any:
    # F.linear on (..., in) gives (..., out), contiguous (2-D: addmm; more: a view of an mm)
    x, weight, bias = _meta_input(args), module._parameters.get("weight"), module._parameters.get("bias")
    if x is None or not is_float(weight) or weight.dim() != 2 or x.dtype != weight.dtype:
        return None
    if x.dim() < 1 or x.shape[-1] != weight.shape[1] or not x.is_contiguous():
        return None
    if bias is not None and (bias.dtype != x.dtype or tuple(bias.shape) != (weight.shape[0],)):
        return None
    return empty((*x.shape[:-1], weight.shape[0]), x)


def _activation_module(module: Any, args: tuple[Any, ...]) -> Any:
    # element-wise, float in, same shape and dtype out; in place: the input itself
    x = _meta_input(args)
    if x is None or getattr(module, "approximate", "none") not in ("none", "tanh"):  # GELU's check
        return None
    return x if getattr(module, "inplace", False) else same_as(x)


_ADAPTIVE_RANKS: dict[type, int] = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}


def _adaptive_pool_module(module: Any, args: tuple[Any, ...]) -> Any:
    # batched (N, C, *spatial) in, (N, C, *output_size) out, a None keeping the input's size;
    # contiguous in, contiguous out (squeeze-and-excitation's pooling, a classifier's head)
    x, n = _meta_input(args), _ADAPTIVE_RANKS[type(module)]
    if x is None or x.dim() != n + 2 or not x.is_contiguous() or 0 in x.shape:
        return None
    size = module.output_size
    sizes = [size] * n if type(size) is int else list(size) if isinstance(size, (tuple, list)) else []
    if len(sizes) != n:
        return None
    out = [x.shape[2 + i] if s is None else s for i, s in enumerate(sizes)]
    if not all(type(s) is int and s > 0 for s in out):
        return None  # PyTorch says what is wrong
    return empty((*x.shape[:2], *out), x)


def _same_tensor_module(module: Any, args: tuple[Any, ...]) -> Any:
    # Identity returns its input, and so does Dropout when not training
    x = _meta_input(args)
    if x is None or module.training:
        return None
    return x


_MODULE_TABLE: dict[type, ModuleShortcut] = {
    **{cls: _conv_module for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d)},
    **{cls: _conv_module for cls in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)},
    **{cls: _batch_norm_module for cls in _BATCH_NORM_RANKS},
    nn.Linear: _linear_module,
    **{cls: _adaptive_pool_module for cls in _ADAPTIVE_RANKS},
    **{
        cls: _activation_module
        for cls in (
            nn.ReLU,
            nn.ReLU6,
            nn.Hardtanh,
            nn.Hardswish,
            nn.Hardsigmoid,
            nn.SiLU,
            nn.GELU,
            nn.Sigmoid,
            nn.Tanh,
            nn.LeakyReLU,
            nn.ELU,
            nn.Mish,
        )
    },
    nn.Identity: _same_tensor_module,
    nn.Dropout: _same_tensor_module,
}


def _own_methods(cls: type) -> tuple[tuple[str, Any], ...]:
    """The methods a layer class and its bases below nn.Module define, as they are now."""
    return tuple(
        (name, value)
        for base in cls.__mro__
        if base is not nn.Module and base is not object
        for name, value in vars(base).items()
        if callable(value)
    )


def _from_pytorch(methods: tuple[tuple[str, Any], ...]) -> bool:
    return all(str(getattr(value, "__module__", "")).startswith("torch.") for _, value in methods)


# The methods of each class with a stand-in, as PyTorch defines them: a stand-in does what those
# do, so a class patched before this import (a method defined outside PyTorch) or since (its
# forward replaced, as some pruning and quantization tools do) gets none.
_ORIGINAL_METHODS = {cls: methods for cls in _MODULE_TABLE if _from_pytorch(methods := _own_methods(cls))}


_METHOD_NAMES: dict[type, frozenset[str]] = {}


def shadows_its_class(module: nn.Module) -> bool:
    """Whether an instance holds an attribute named like a method of its class (a ``forward``
    of its own, as accelerate installs, or a patched ``_conv_forward``): it may not do what the
    class does, so its own forward runs. The class's method names are read once per class."""
    cls = type(module)
    names = _METHOD_NAMES.get(cls)
    if names is None:
        names = _METHOD_NAMES[cls] = frozenset(n for n in dir(cls) if callable(getattr(cls, n, None)))
    return not module.__dict__.keys().isdisjoint(names)


def module_shortcut_for(module_type: type) -> ModuleShortcut | None:
    """The stand-in for the forward of a module of exactly this type, if it has one and the
    class's methods are still PyTorch's own (a few microseconds: ask once per class)."""
    shortcut = _MODULE_TABLE.get(module_type)
    original = _ORIGINAL_METHODS.get(module_type)
    if shortcut is None or original is None or _own_methods(module_type) != original:
        return None
    return shortcut
