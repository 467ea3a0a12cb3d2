"""The measured peak memory of a pass on the CPU: the oracle convprof's prediction is held to.

``torch.profiler`` with ``profile_memory=True`` records every allocation and free of PyTorch's
CPU allocator, in order; the measured peak is what existed before the pass (every storage the
parameters, buffers, inputs and optimizer state hold, each once) plus the highest running sum
of those events. Nothing of convprof runs here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.01),
    "momentum": lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params),
    "adamw": lambda params: torch.optim.AdamW(params),
}


def _tensors(value: Any, seen: set[int]) -> list[torch.Tensor]:
    """The tensors in containers and plain objects (a transformers key/value cache)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if id(value) in seen or isinstance(value, (str, bytes, int, float, bool, type, nn.Module)):
        return []
    seen.add(id(value))
    if isinstance(value, dict):
        items: Any = list(value.values())
    elif isinstance(value, (list, tuple, set)):
        items = list(value)
    elif hasattr(value, "__dict__") and not callable(value):
        items = list(vars(value).values())
    else:
        return []
    return [t for item in items for t in _tensors(item, seen)]


def _model_tensors(model: nn.Module) -> list[Any]:
    """Parameters, buffers and every tensor the modules hold in attributes (caches)."""
    return [list(model.parameters()), list(model.buffers()), [vars(m) for m in model.modules()]]


def held_bytes(*values: Any) -> int:
    """Bytes of the storages the values hold, each once."""
    seen: dict[int, int] = {}
    for tensor in _tensors(values, set()):
        if tensor.layout is torch.strided:
            storage = tensor.untyped_storage()
            seen[storage.data_ptr() or id(storage)] = storage.nbytes()
    return sum(seen.values())


def _peak_of(run: Callable[[], Any]) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]  # type: ignore[union-attr]
    level = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        if event.device_type() == torch.autograd.DeviceType.CPU:
            level += event.nbytes()
            peak = max(peak, level)
    return peak


def loss_of(output: Any) -> torch.Tensor:
    """The sum of the floating outputs that require grad: the loss convprof's training step uses."""
    parts = [
        t.sum()
        for t in torch.utils._pytree.tree_leaves(output)
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad
    ]
    return sum(parts[1:], parts[0])


def _region(autocast: torch.dtype | None) -> Any:
    """The forward's mixed-precision region: CPU autocast to ``autocast``, or none."""
    return torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext()


def inference_peak(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None = None,
    autocast: torch.dtype | None = None,
) -> int:
    """Bytes at the peak of one forward in eval mode under no_grad (under the CPU's autocast
    to ``autocast``, when given)."""
    kwargs = kwargs or {}
    model.eval()

    def run() -> None:
        with torch.no_grad(), _region(autocast):
            model(*args, **kwargs)

    run()  # warm-up: lazy caches, oneDNN's first-call allocations
    return held_bytes(_model_tensors(model), args, kwargs) + _peak_of(run)  # the caches held too


def training_peak(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None = None,
    optimizer: str | None = "adam",
    autocast: torch.dtype | None = None,
) -> int:
    """Bytes at the peak of a steady-state training step: zero_grad(set_to_none=True), the
    forward in training mode (under the CPU's autocast to ``autocast``, when given), the sum of
    the floating outputs' backward and the update (after one warm-up step, so the optimizer's
    state exists, as in every step after the first)."""
    kwargs = kwargs or {}
    model.train()
    opt = OPTIMIZERS[optimizer](model.parameters()) if optimizer else None

    def run() -> None:
        with _region(autocast):
            output = model(*args, **kwargs)  # held to the end of the step, as a training loop holds it
        loss_of(output).backward()
        if opt is not None:
            opt.step()
        del output

    run()
    model.zero_grad(set_to_none=True)
    state = [list(s.values()) for s in opt.state.values()] if opt is not None else []
    held = held_bytes(_model_tensors(model), args, kwargs, state)
    peak = _peak_of(run)
    model.zero_grad(set_to_none=True)
    return held + peak
