"""The optimizer's part of a training step's memory: its state and its update's temporaries.

A training step's peak depends on the optimizer: SGD keeps nothing, SGD with momentum one
buffer per parameter, Adam and AdamW two, and each update makes temporaries (Adam's
``sqrt(v) / bias_correction + eps``; with ``foreach``, the default on CUDA, one list of them
for all parameters at once). Rather than a table of closed forms that would drift from
PyTorch's code, convprof runs ``torch.optim``'s own update on meta copies of the trainable
parameters: no value is read or written, and the same operators allocate the same storages.

The step is the steady state of training, the one that repeats: the state exists before the
forward (made here by one warm-up update, outside the pass) and ``zero_grad(set_to_none=True)``
left no gradients, so the forward starts from parameters, buffers and optimizer state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from convprof.report import OPTIMIZERS

# name -> how to build it over the parameters, with foreach as the target device's default
_MAKERS: dict[str, Callable[[list[torch.Tensor], bool], torch.optim.Optimizer]] = {
    "sgd": lambda params, foreach: torch.optim.SGD(params, lr=0.01, foreach=foreach),
    "momentum": lambda params, foreach: torch.optim.SGD(params, lr=0.01, momentum=0.9, foreach=foreach),
    "adam": lambda params, foreach: torch.optim.Adam(params, foreach=foreach),
    "adamw": lambda params, foreach: torch.optim.AdamW(params, foreach=foreach),
}


def make(
    name: str, params: list[torch.Tensor], device: str, foreach: bool | None = None
) -> torch.optim.Optimizer:
    """``torch.optim``'s optimizer ``name`` over ``params``, with foreach as on ``device``
    unless ``foreach`` says."""
    if name not in _MAKERS:
        raise ValueError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")
    return _MAKERS[name](params, device == "cuda" if foreach is None else foreach)


@contextlib.contextmanager
def quiet_optimizers() -> Iterator[None]:
    """convprof's own optimizer steps without the user's global optimizer hooks
    (``register_optimizer_step_pre_hook`` / ``_post_hook``, which fire for every optimizer in
    the process): a profile is not a training step of theirs. Put back after, also on error."""
    from torch.optim import optimizer as module

    kept: list[tuple[Any, dict[int, Any]]] = [
        (hooks, dict(hooks))
        for hooks in (module._global_optimizer_pre_hooks, module._global_optimizer_post_hooks)
    ]
    for hooks, _ in kept:
        hooks.clear()
    try:
        yield
    finally:
        for hooks, items in kept:
            hooks.update(items)


class Step:
    """An optimizer over meta copies of ``params``, its state already made (see above)."""

    def __init__(self, name: str, params: list[torch.Tensor], device: str, keys: list[int]) -> None:
        self.name = name
        self.device = device
        self.keys = keys  # what identifies each parameter's gradient, in order
        self.params = [
            torch.empty_strided(p.shape, p.stride(), dtype=p.dtype, device="meta").requires_grad_()
            for p in params
        ]
        # PyTorch defaults foreach on CUDA only; on the CPU each parameter is updated alone
        self._optimizer = make(name, self.params, device)
        self.run(list(map(torch.zeros_like, self.params)))

    def state(self) -> list[torch.Tensor]:
        """The state tensors the device holds (Adam's step counters live on the CPU, unless
        the optimizer is capturable or fused, so a CUDA device does not hold them)."""
        tensors = [t for entry in self._optimizer.state.values() for t in entry.values()]
        return [t for t in tensors if isinstance(t, torch.Tensor) and (t.is_meta or self.device != "cuda")]

    def run(self, grads: list[torch.Tensor | None]) -> None:
        """One update with these gradients (meta tensors of the parameters' shapes); the
        gradients are dropped after it, as ``zero_grad(set_to_none=True)`` would."""
        for param, grad in zip(self.params, grads, strict=True):
            param.grad = grad
        try:
            with torch.no_grad(), quiet_optimizers():
                self._optimizer.step()
        finally:
            for param in self.params:
                param.grad = None


def meta_like(tensor: torch.Tensor) -> torch.Tensor:
    """A meta tensor of the same shape, strides and dtype (a gradient's stand-in for the step)."""
    return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="meta")
