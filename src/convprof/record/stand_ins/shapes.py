"""What every stand-in is made of: meta tensors of a given shape, and the checks that decide
whether a call is plain enough to stand in for (anything else goes to PyTorch's own kernel)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

# (operator, args, kwargs) -> output, or None for PyTorch's own meta kernel
Shortcut = Callable[[torch._ops.OpOverload, tuple[Any, ...], dict[str, Any]], Any]

META = torch.device("meta")


def is_float(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype.is_floating_point


def same_as(x: torch.Tensor) -> torch.Tensor:
    """``empty_like`` on meta as the CPU makes it: the cheap way for a contiguous tensor
    (PyTorch's own goes through a Python reference that works out the memory format, 0.1 ms a
    call), and a dense one's strides kept exactly, those of its size-1 dimensions included.
    Meta's reference renumbers those (a batch of one in channels-last order, (64, 1, 4096, 64)
    on the CPU, became (262144, 1, 4096, 64)), and a GroupNorm after it then kept channels
    last where the CPU's goes back to NCHW (PyTorch's suggest_memory_format reads them)."""
    if x.is_contiguous():
        return torch.empty(x.shape, dtype=x.dtype, device=META)
    if _dense(x):
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=META)
    return torch.empty_like(x)


def _dense(x: torch.Tensor) -> bool:
    """Non-overlapping and dense: the dimensions longer than one, ordered by stride, are
    packed one after another."""
    expected = 1
    for size, stride in sorted(
        (p for p in zip(x.shape, x.stride(), strict=True) if p[0] != 1), key=lambda p: p[1]
    ):
        if stride != expected:
            return False
        expected *= size
    return True


def empty(shape: Any, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=like.dtype, device=META)


_INT = frozenset({int})


def int_sizes(value: Any, n: int) -> Sequence[int] | None:
    """A size argument (an int or a list of 1 or n ints) as n ints, else None."""
    if type(value) is tuple and len(value) == n and _INT.issuperset(map(type, value)):
        return value  # a module's own attribute (stride=(2, 2)): as it is
    items = [value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else []
    if not items or not all(type(v) is int for v in items):
        return None
    return items * n if len(items) == 1 else items if len(items) == n else None
