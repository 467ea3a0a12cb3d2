"""The pass's side of a peak-memory prediction: what exists before it starts, and the
training step's end (gradients held, the optimizer's update).

Storage lifetimes themselves are :mod:`convprof.memory.lifetimes`'s; this module says what
they are shown for a pass: the model's parameters and buffers as the pass sees them (stand-ins
in zero compute), tensors modules hold in plain attributes, and the optimizer's state, made on
meta by a warm-up update outside the pass (:mod:`convprof.memory.optimizers`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes

from convprof.memory.lifetimes import Lifetimes, tensors_in
from convprof.memory.optimizers import Step, meta_like
from convprof.record.state import TABLES


def held(
    named: list[tuple[str, nn.Module]], stand_ins: dict[int, torch.Tensor], device: str, optimizer: str | None
) -> tuple[Lifetimes, Step | None]:
    """What exists before a pass whose memory is tracked, the inputs aside: parameters and
    buffers (``stand_ins`` by id of the tensor they stand for, in zero compute) and, for a
    training step, the optimizer's state."""
    lifetimes = Lifetimes(device)
    params = [stand_ins.get(id(p), p) for _, m in named for p in m._parameters.values() if p is not None]
    lifetimes.hold(params, "parameter")
    lifetimes.hold(
        [stand_ins.get(id(b), b) for _, m in named for b in m._buffers.values() if b is not None], "buffer"
    )
    # tensors a module holds in plain attributes (a cache of attention biases, a list of its
    # weights): memory the device holds too, counted with the buffers, each storage once
    attributes = [{k: v for k, v in vars(m).items() if k not in TABLES} for _, m in named]
    lifetimes.hold([stand_ins.get(id(t), t) for t in tensors_in(attributes)], "buffer")
    step = None
    if optimizer is not None:
        unique = {id(p): p for p in params if p.requires_grad}
        step = Step(optimizer, list(unique.values()), device, keys=list(unique))
        lifetimes.hold(step.state(), "optimizer")
    return lifetimes, step


def after_backward(lifetimes: Lifetimes, update: Step | None, grads: dict[int, torch.Tensor | None]) -> None:
    """After the backward pass: the gradients held as ``.grad`` holds them, then the
    optimizer's update on meta copies (its temporaries are allocations of the step)."""
    lifetimes.role(list(grads.values()), "gradient")
    lifetimes.mark("backward")
    if update is None:
        return
    with _disable_current_modes():
        metas = [meta_like(g) if (g := grads.get(key)) is not None else None for key in update.keys]
    update.run(metas)
    lifetimes.mark("step")
