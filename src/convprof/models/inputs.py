"""Inputs the command line makes for a model: ``1,3,224,224``, ``1,128:int64``,
``attention_mask=1,128:int64``.

An :class:`Input` is a shape, optionally a dtype and optionally the name of the forward's
keyword argument it goes to; without a name it is the next positional input. What the values
are matters only where the model reads them, so the rule is simple and stated once:

- floating inputs are standard normal (``--dtype`` unless the input names its own);
- integer inputs are token ids, uniform below the model's vocabulary size when the spec knows
  it (``transformers:``), else zeros; inputs named like a mask (``attention_mask``) are ones,
  so that every position is attended to;
- ``bool`` inputs are all ``True``;
- an input that names no dtype takes the dtype of the default input it replaces (``--input
  1,16`` for a language model is 16 token ids), and inputs named ``*_ids`` or ``*mask*`` are
  int64.

Floating inputs of a zero-compute pass are made on meta and cost nothing. Integer and bool
inputs are made for real up to the sizes a zero-compute pass keeps real (models read them:
lengths and masks steer control flow), and on meta beyond (250 million token ids would be 2 GB
the pass never reads).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from convprof.records import Shape

if TYPE_CHECKING:
    import torch

FLOATING = ("float32", "float16", "bfloat16", "float64")
# the integer and bool tensors a zero-compute pass keeps real (record.stand_ins.values'
# STEERING_NUMEL and CONSTANT_NUMEL; tests/test_zero_compute_inputs.py holds them equal)
_REAL = {False: 4096, True: 1 << 22}
INTEGER = ("int64", "int32", "int16", "int8", "uint8")
DTYPES = (*FLOATING, *INTEGER, "bool")


@dataclass(frozen=True, slots=True)
class Input:
    """One input to make: its shape, dtype (None: the model's dtype) and keyword name (None:
    positional)."""

    shape: Shape
    dtype: str | None = None
    name: str | None = None

    def __str__(self) -> str:
        text = "x".join(map(str, self.shape))
        text = f"{text}:{self.dtype}" if self.dtype else text
        return f"{self.name}={text}" if self.name else text


def parse(text: str) -> Input:
    """``'1,128'``, ``'1x128:int64'`` or ``'attention_mask=1,128:int64'`` -> :class:`Input`."""
    name: str | None = None
    rest = text.strip()
    if "=" in rest:
        name, _, rest = rest.partition("=")
        name = name.strip()
        if not name.isidentifier():
            raise ValueError(f"bad input {text!r}: {name!r} is not a keyword argument name")
    shape_text, _, dtype_text = rest.partition(":")
    dtype = dtype_text.strip() or None
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"bad input {text!r}: unknown dtype {dtype!r} (one of {', '.join(DTYPES)})")
    parts = shape_text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(
            f"bad input {text!r}: expected positive integers separated by commas, e.g. 1,3,224,224 "
            "(optionally :DTYPE, and NAME= for a keyword input)"
        )
    if math.prod(shape) >= 2**62:
        raise ValueError(f"bad input {text!r}: {math.prod(shape):.3g} elements is too many")
    return Input(shape, dtype, name)


def floating_bytes(inputs: Sequence[Input], dtype: str) -> int:
    """Bytes the floating inputs take when made for real (what a computing pass allocates)."""
    import torch

    total = 0
    for item in inputs:
        kind = getattr(torch, item.dtype or dtype)
        total += math.prod(item.shape) * kind.itemsize
    return total


def _masklike(name: str | None) -> bool:
    return name is not None and "mask" in name


def _tensor(item: Input, dtype: str, compute: bool, id_limit: int | None, seed: int) -> torch.Tensor:
    import torch

    kind = getattr(torch, item.dtype or dtype)
    if not compute and not kind.is_floating_point and math.prod(item.shape) > _REAL[kind == torch.bool]:
        return torch.empty(item.shape, dtype=kind, device="meta")
    if kind == torch.bool:
        return torch.ones(item.shape, dtype=kind)
    if kind.is_floating_point:
        if not compute:
            return torch.empty(item.shape, dtype=kind, device="meta")
        return torch.randn(item.shape, dtype=kind, generator=torch.Generator().manual_seed(seed))
    if _masklike(item.name):
        return torch.ones(item.shape, dtype=kind)
    if not id_limit:
        return torch.zeros(item.shape, dtype=kind)
    high = min(id_limit, torch.iinfo(kind).max + 1)
    return torch.randint(0, high, item.shape, dtype=kind, generator=torch.Generator().manual_seed(seed))


def make(
    inputs: Sequence[Input], *, dtype: str = "float32", compute: bool = True, id_limit: int | None = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword inputs to call a model with (see the module docstring)."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for seed, item in enumerate(inputs):
        tensor = _tensor(item, dtype, compute, id_limit, seed)
        if item.name is None:
            args.append(tensor)
        else:
            kwargs[item.name] = tensor
    return tuple(args), kwargs


def _typed(item: Input, defaults: Sequence[Input], main: str | None) -> Input:
    """``item`` with the dtype it implies when it names none: that of the default it replaces
    (``--input 1,16`` for a language model is token ids), int64 for ids and masks by name."""
    if item.dtype is not None:
        return item
    for default in defaults:
        same = default.name == item.name or {default.name, item.name} == {None, main}
        if same and default.dtype is not None:
            return replace(item, dtype=default.dtype)
    if item.name is not None and (item.name.endswith("_ids") or "mask" in item.name):
        return replace(item, dtype="int64")
    return item


def merge(given: Sequence[Input], defaults: Sequence[Input], main: str | None = None) -> tuple[Input, ...]:
    """The inputs to use when the user gave ``given`` and the spec implies ``defaults``.

    Nothing given: the defaults. Otherwise a default stays only when it is a keyword input the
    user did not name (a seq2seq model's ``decoder_input_ids`` when only the encoder input is
    given); a default positional input goes when the user gives one, or names it (``main``,
    the forward's first parameter, e.g. ``input_ids``)."""
    if not given:
        return tuple(defaults)
    given = [_typed(item, defaults, main) for item in given]
    names = {item.name for item in given}
    replaced_main = None in names or (main is not None and main in names)
    kept = [
        item
        for item in defaults
        if (item.name is None and not replaced_main) or (item.name is not None and item.name not in names)
    ]
    return (*given, *kept)
