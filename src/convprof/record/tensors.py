"""Tensors as records: shapes, dtypes and plain values, never the tensors themselves.

Every operator and module call the session records passes its tensors through here, so the
common cases are cheap: one :class:`TensorMeta` per (shape, dtype) is shared by every tensor
of that shape and dtype.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_leaves

from convprof.memory.lifetimes import SPARSE
from convprof.records import ArgValue, OpCall, TensorMeta

_DTYPES: dict[torch.dtype, tuple[str, int]] = {}
# TensorMeta by (shape, dtype): records are frozen, so one instance serves every tensor of that
# shape and dtype (a conv's output, the norm and activation after it, the next conv's input),
# and a lookup costs a third of making one. Cleared when it grows past _MAX_METAS (a sweep over
# many input sizes).
_METAS: dict[tuple[torch.Size, torch.dtype], TensorMeta] = {}
_MAX_METAS = 4096


def meta_of(tensor: torch.Tensor) -> TensorMeta:
    if tensor.is_nested:
        return _nested_meta(tensor, _dtype_facts(tensor.dtype))
    if tensor.layout in SPARSE:
        return _sparse_meta(tensor, _dtype_facts(tensor.dtype))
    key = (tensor.shape, tensor.dtype)
    try:
        known = _METAS.get(key)
    except TypeError:  # a symbolic size: not hashable
        known = None
    if known is None:
        facts = _dtype_facts(key[1])
        known = TensorMeta(tuple(key[0]), facts[0], facts[1])
        if len(_METAS) >= _MAX_METAS:
            _METAS.clear()
        with contextlib.suppress(TypeError):
            _METAS[key] = known
    return known


def _dtype_facts(dtype: torch.dtype) -> tuple[str, int]:
    known = _DTYPES.get(dtype)
    if known is None:
        known = _DTYPES[dtype] = (str(dtype).removeprefix("torch."), dtype.itemsize)
    return known


def _nested_meta(tensor: torch.Tensor, dtype: tuple[str, int]) -> TensorMeta:
    """A nested tensor (``nn.TransformerEncoder``'s padding-free fast path) has no shape of its
    own: its components' shapes are the parts, its shape the padded one they fit in."""
    with _disable_current_modes():
        parts = tuple(tuple(part.shape) for part in tensor.unbind())
    padded = tuple(max(sizes) for sizes in zip(*parts, strict=True)) if parts else ()
    return TensorMeta((len(parts), *padded), dtype[0], dtype[1], parts)


def _sparse_meta(tensor: torch.Tensor, dtype: tuple[str, int]) -> TensorMeta:
    """A sparse tensor: its shape, and the scalar values it stores (an uncoalesced COO
    tensor's duplicates included: its product multiplies each)."""
    with _disable_current_modes():
        values = tensor._values() if tensor.layout == torch.sparse_coo else tensor.values()
        stored = values.numel()
    return TensorMeta(tuple(tensor.shape), dtype[0], dtype[1], stored=stored)


def unpacked(value: Any) -> tuple[torch.Tensor | None, ...] | None:
    """The tensors inside a packed-parameter object (quantized Linear and conv kernels keep
    their weight and bias in one, which ``parameters()`` does not list), else None."""
    if isinstance(value, torch.ScriptObject) and value._has_method("unpack"):  # type: ignore[attr-defined]
        with _disable_current_modes():
            tensors = value.unpack()  # type: ignore[attr-defined]
        return tuple(t if isinstance(t, torch.Tensor) else None for t in tensors)
    return None


def packed_tensors(value: Any) -> list[torch.Tensor] | None:
    """Every tensor a packed object holds: what it unpacks to, or, for containers of packed
    objects (a dynamically quantized LSTM cell's parameters), what its saved state holds."""
    tensors = unpacked(value)
    if tensors is not None:
        return [t for t in tensors if t is not None]
    if not (isinstance(value, torch.ScriptObject) and value._has_method("__getstate__")):  # type: ignore[attr-defined]
        return None
    found: list[torch.Tensor] = []

    def walk(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            for part in item:
                walk(part)
        else:
            found.extend(packed_tensors(item) or ())

    with _disable_current_modes():
        walk(value.__getstate__())
    # the state may hold a bias both on its own and inside a packed object
    unique = {(t.data_ptr(), tuple(t.shape)): t for t in found}
    return list(unique.values())


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
    tensors = unpacked(value)
    if tensors is not None:
        return tuple(_plain(t) for t in tensors)
    return str(value)


def named_tensors(name: str, value: Any) -> Iterator[tuple[str, TensorMeta]]:
    """The tensors in an input, each named by where it sits (``0``, ``0[1]``, ``mask``)."""
    if isinstance(value, torch.Tensor):
        yield name, meta_of(value)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from named_tensors(f"{name}[{i}]", item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from named_tensors(f"{name}[{key!r}]", item)


def op_call(
    func: torch._ops.OpOverload,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    out: Any,
    reads_weight: bool = False,
) -> OpCall:
    """The record of one operator call, of the forward or the backward pass."""
    return OpCall(
        op=str(func),
        args=tuple(_plain(a) for a in args),
        kwargs=tuple((k, _plain(v)) for k, v in kwargs.items()),
        outputs=outputs(out),
        reads_weight=reads_weight,
    )


def outputs(value: Any) -> tuple[TensorMeta, ...]:
    """The tensors an operator or a module returned, in order."""
    if isinstance(value, torch.Tensor):
        return (meta_of(value),)
    return tuple(meta_of(t) for t in tree_leaves(value) if isinstance(t, torch.Tensor))
