"""What a module is, as a record: its parameters and buffers, its plain attributes and its
convolution geometry (:class:`~convprof.records.ModuleInfo`), read once per module.

What was read from each module is kept for its next profile (a sweep over input sizes, a loop
in a notebook, a CI job over variants), where reading it again is a good part of the cost for
a small network. An entry is reused only when every fact it was read from is the same (see
:func:`_facts`), so a module changed in between is read afresh.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from convprof.count.formulas import module_formula, moves_memory
from convprof.record.tensors import packed_tensors
from convprof.records import ConvSpec, ModuleInfo, ParamInfo, Plain, Shape

_SCALAR_TYPES = (bool, int, float, str)
_SCALARS = frozenset(_SCALAR_TYPES)


def _plain_value(value: Any) -> bool:
    scalar = isinstance(value, _SCALAR_TYPES) or value is None
    return scalar or (isinstance(value, tuple) and all(isinstance(v, _SCALAR_TYPES) for v in value))


def _config(module: nn.Module) -> tuple[tuple[str, Plain], ...]:
    """The module's public plain attributes (in_features, num_heads, ...), for formulas: scalars,
    None, and tuples of scalars. Exact types are checked first, at C speed; subclasses (an
    IntEnum, a NumPy float) take the general check."""
    items: list[tuple[str, Plain]] = []
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training":
            continue
        kind = type(value)
        if (
            kind in _SCALARS
            or value is None
            or (kind is tuple and _SCALARS.issuperset(map(type, value)))
            or _plain_value(value)
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


def has_children(module: nn.Module) -> bool:
    children = module._modules
    return bool(children) and any(child is not None for child in children.values())


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _local(tensor: torch.Tensor) -> tuple[int, ...] | None:
    """A DTensor's local shard shape (a distributed step), else None."""
    local = getattr(tensor, "_local_tensor", None)
    return tuple(local.shape) if isinstance(local, torch.Tensor) else None


def _params(
    module: nn.Module, ident: Callable[[torch.Tensor], int], computed: Mapping[tuple[int, str], Shape]
) -> tuple[ParamInfo, ...]:
    """The parameters a module owns directly, packed ones (quantized kernels) included;
    ``computed``: shapes the step computed with, by (id(module), name), for sharded ones."""
    params = [
        ParamInfo(
            pname,
            ident(p),
            tuple(p.shape),
            p.element_size(),
            p.requires_grad,
            _dtype(p),
            computed.get((id(module), pname), _local(p)),
        )
        for pname, p in module._parameters.items()
        if p is not None and not nn.parameter.is_lazy(p)
    ]
    packed = [(attr, v) for attr, v in vars(module).items() if type(v) is torch.ScriptObject]
    for attr, value in packed:
        tensors = packed_tensors(value)
        params.extend(
            ParamInfo(f"{attr}.{i}", hash((id(value), i)), tuple(t.shape), t.element_size(), False, _dtype(t))
            for i, t in enumerate(tensors or ())
        )
    return tuple(params)


def _module_info(
    name: str,
    module: nn.Module,
    ident: Callable[[torch.Tensor], int],
    computed: Mapping[tuple[int, str], Shape],
) -> ModuleInfo:
    """What a module is. ``ident``: the key of a parameter or buffer (its id, or in zero
    compute the id of the tensor a stand-in stands for, so that both passes agree)."""
    params = _params(module, ident, computed)
    return ModuleInfo(
        name=name,
        type=type(module),
        params=params,
        # Only formulas read attributes; scanning every module's __dict__ costs time.
        config=_config(module) if module_formula(type(module)) is not None else (),
        conv=_conv_spec(module),
        has_children=has_children(module),
        moves_memory=moves_memory(type(module)),
        buffers=tuple(
            ParamInfo(bname, ident(b), tuple(b.shape), b.element_size(), False, _dtype(b))
            for bname, b in module._buffers.items()
            if b is not None and not nn.parameter.is_lazy(b)
        ),
    )


# Keyed by id() with a weak reference checked on every read (a module class may define __eq__
# and so not be hashable): a module that goes away takes its entry with it, and an entry holds
# no tensor and no module.
_INFOS: dict[int, tuple[weakref.ref[nn.Module], tuple[Any, ...], ModuleInfo]] = {}


def _forget(key: int, gone: weakref.ref[nn.Module]) -> None:
    entry = _INFOS.get(key)
    if entry is not None and entry[0] is gone:  # not a newer module that took the id
        del _INFOS[key]


def _tensor_facts(table: dict[str, Any], ident: Callable[[torch.Tensor], int]) -> tuple[Any, ...]:
    if not table:
        return ()
    return tuple(
        (key, ident(t), type(t), t.shape, t.dtype, t.requires_grad)
        for key, t in table.items()
        if t is not None
    )


def _facts(name: str, module: nn.Module, ident: Callable[[torch.Tensor], int]) -> tuple[Any, ...] | None:
    """Everything :func:`_module_info` reads from a module, in a form compared by value: its
    name, class, children or not, each parameter's and buffer's key, class (lazy or not),
    shape, dtype and requires_grad, and for a module with a formula its plain attributes. None
    for a module holding packed parameters, which is read every time."""
    if torch.ScriptObject in map(type, module.__dict__.values()):
        return None
    kind = type(module)
    with_config = module_formula(kind) is not None or isinstance(module, nn.modules.conv._ConvNd)
    return (
        name,
        kind,
        has_children(module),
        _tensor_facts(module._parameters, ident),
        _tensor_facts(module._buffers, ident),
        _config(module) if with_config else None,
    )


def read_info(
    name: str,
    module: nn.Module,
    ident: Callable[[torch.Tensor], int],
    computed: Mapping[tuple[int, str], Shape] | None = None,
) -> ModuleInfo:
    """The module's :class:`ModuleInfo`, from the last profile when nothing it says changed
    (a distributed step's, with ``computed`` shapes of its sharded parameters, is read anew)."""
    if computed:
        return _module_info(name, module, ident, computed)
    facts = _facts(name, module, ident)
    key = id(module)
    if facts is not None:
        known = _INFOS.get(key)
        if known is not None and known[0]() is module and known[1] == facts:
            return known[2]
    info = _module_info(name, module, ident, {})
    if facts is not None:
        _INFOS[key] = (weakref.ref(module, functools.partial(_forget, key)), facts, info)
    return info
