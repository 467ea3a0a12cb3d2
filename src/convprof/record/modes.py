"""The function modes a pass may run under, above the dispatcher, and the functions it wraps.

- :class:`DeviceAttention`: zero compute with peak memory, the attention kernel the device
  would run (:mod:`~convprof.record.stand_ins.attention`);
- :class:`Autocast` (entered by :func:`autocast_region`): mixed precision as the device's
  autocast would run it (:mod:`~convprof.record.autocast`);
- :class:`Composites`: functions that work above the dispatcher, where no operator shows what
  they do.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import _disable_current_modes

from convprof.record import autocast as mixed
from convprof.record import higher_order
from convprof.record.session import Session
from convprof.record.stand_ins import attention
from convprof.record.stand_ins.values import literal
from convprof.record.tensors import op_call

_SDPA = torch.nn.functional.scaled_dot_product_attention
_MHA = torch.nn.functional.multi_head_attention_forward
_VECDOT_OP = torch.ops.aten.linalg_vecdot.default


class DeviceAttention(TorchFunctionMode):
    """Zero compute with peak memory: ``F.scaled_dot_product_attention`` on meta tensors runs
    the kernel the target device would (see :mod:`~convprof.record.stand_ins.attention`), not
    the math path, whose attention matrix the device never holds."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device

    def _attention(self, *args: Any, **kwargs: Any) -> Any:
        with _disable_current_modes():
            kind = attention.backend(self.device, args, kwargs)
        if kind is not None:
            return attention.run(kind, args, kwargs)
        return _SDPA(*args, **kwargs)

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is _SDPA:
            return self._attention(*args, **kwargs)
        if func is _MHA:
            # nn.MultiheadAttention's path in training runs its attention inside a function
            # that hands itself to the modes, so this mode is popped when the attention runs:
            # the function's own name for it is this mode's for the call (not for the pass: a
            # CausalBias checks that name is PyTorch's)
            original = torch.nn.functional.scaled_dot_product_attention
            torch.nn.functional.scaled_dot_product_attention = self._attention
            try:
                return func(*args, **kwargs)
            finally:
                torch.nn.functional.scaled_dot_product_attention = original
        return func(*args, **kwargs)


class Autocast(TorchFunctionMode):
    """Mixed precision as ``device``'s autocast would run it (see :mod:`convprof.record.autocast`),
    for any pass: meta tensors are never cast by PyTorch's own autocast. A region where the
    model turns autocast off (``torch.autocast(..., enabled=False)``) is left alone."""

    def __init__(self, dtype: torch.dtype, device: str) -> None:
        super().__init__()
        self.casts = mixed.Casts(dtype)
        self.device = device

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        kind = mixed.rule(self.device, getattr(func, "__name__", ""))
        if kind is not None and torch.is_autocast_enabled(self.device):
            args, kwargs = self.casts.apply(kind, args, kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def autocast_region(autocast: tuple[torch.dtype, str] | None) -> Iterator[None]:
    """The forward under mixed precision to ``autocast``'s (dtype, device): PyTorch's own
    autocast state on for the device (what the model's code may read, and the real casts of a
    computing pass on that device), the mode on top of the function-mode stack, and, at the
    end, autocast's caches emptied."""
    if autocast is None:
        yield
        return
    dtype, device = autocast
    casting = Autocast(dtype, device)
    enabled, previous = torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
    torch.set_autocast_enabled(device, True)
    torch.set_autocast_dtype(device, dtype)
    torch.autocast_increment_nesting()
    try:
        with casting:
            yield
    finally:
        if torch.autocast_decrement_nesting() == 0:
            torch.clear_autocast_cache()
        torch.set_autocast_enabled(device, enabled)
        torch.set_autocast_dtype(device, previous)
        casting.casts.clear()


class Composites:
    """Functions that work above the dispatcher, where no operator shows what they do:
    ``torch.linalg.vecdot`` decomposes into a multiplication and a sum (free under the
    convention), and ``torch.tensor`` / ``torch.as_tensor`` make a tensor from Python data
    below it. For the pass, ``torch.linalg.vecdot`` is a wrapper that runs the original and
    records the call as the operator ``aten.linalg_vecdot`` on the running module (a formula
    counts it); in a zero-compute pass the two makers keep small integer tables real
    (:func:`~convprof.record.stand_ins.values.literal`). FlexAttention runs its operator
    uncompiled (:func:`~convprof.record.higher_order.eager_flex`). All are put back after, also when the
    forward raises. A call from another thread, or while a nested profile runs, only runs the
    original. A model that bound a function before the pass (``from torch.linalg import
    vecdot``) is not seen."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.original: Any = None
        self.makers: tuple[Any, Any] | None = None
        self.flex = higher_order.eager_flex(session.meta is not None)

    def __enter__(self) -> None:
        self.flex.__enter__()
        original = self.original = torch.linalg.vecdot
        session = self.session
        if session.meta is not None:
            self.makers = (torch.tensor, torch.as_tensor)
            torch.tensor, torch.as_tensor = (_maker(session, make) for make in self.makers)

        def vecdot(x: torch.Tensor, y: torch.Tensor, *, dim: int = -1, out: Any = None) -> torch.Tensor:
            result: torch.Tensor = original(x, y, dim=dim, out=out)
            if session.stack and not session.paused and threading.get_ident() == session.thread:
                call = op_call(_VECDOT_OP, (x, y), {"dim": dim}, result)
                session.stack[-1].ops.append(call)
            return result

        torch.linalg.vecdot = vecdot

    def __exit__(self, *exc: object) -> None:
        torch.linalg.vecdot = self.original
        if self.makers is not None:
            torch.tensor, torch.as_tensor = self.makers
        self.flex.__exit__(None, None, None)


def _maker(session: Session, make: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def maker(data: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not args and session.stack and not session.paused and threading.get_ident() == session.thread:
            made = literal(make, data, kwargs)
            if made is not None:
                return made
        return make(data, *args, **kwargs)

    return maker
