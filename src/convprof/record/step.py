"""A training step run for real on a model convprof built itself, recorded like any pass.

The parallel wing (:mod:`convprof.parallel`) shards a copy of the user's model with PyTorch's
own FSDP2 and tensor parallelism in a fake process group, on fake tensors, and hands it here:
one rank's steady-state step is run as a training loop runs it (``loss.backward()``, which
FSDP2's hooks need, and the optimizer's own ``step()``), micro-step by micro-step, under the
:class:`~convprof.record.session.Session`. What differs from :func:`~convprof.record.record`:

- the model is convprof's own copy, so nothing is put back and nothing is stood in for: fake
  tensors (``FakeTensorMode``, entered by the caller) compute nothing;
- an operator on a tensor subclass that runs local operators (DTensor) is seen as those
  (the session answers ``NotImplemented`` for it), so shapes are this rank's;
- every call is counted from its operators (``Trace.ops_only``): a module's declared sizes
  are the whole model's, not this rank's shard;
- the collectives are recorded with their phase and micro-step, and the storages FSDP2 resizes
  in place (its unsharded parameters) are shown to the storage lifetimes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException
from torch.utils.hooks import RemovableHandle

from convprof.memory.lifetimes import Lifetimes, tensors_in
from convprof.record.collectives import Collectives
from convprof.record.dataflow import roles
from convprof.record.errors import ForwardError, ValuesNeeded, gist, where
from convprof.record.facts import read_info
from convprof.record.frame import Frame
from convprof.record.gradients import Backward, loss_of
from convprof.record.modes import Composites
from convprof.record.session import Session, install, uninstall
from convprof.record.tensors import named_tensors
from convprof.records import Trace

Inputs = tuple[tuple[Any, ...], dict[str, Any]]


def record_step(
    model: nn.Module,
    micro_inputs: Sequence[Inputs],
    *,
    optimizer: torch.optim.Optimizer | None,
    optimizer_name: str | None = None,
    loss: Callable[[Any], torch.Tensor] | None = None,
    memory: str | None = None,
    sync: Callable[[bool], None] | None = None,
    wrapped: tuple[type, ...] = (),
    groups: Mapping[str, tuple[str, int]] | None = None,
    local: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
) -> Trace:
    """Run one training step of ``model`` (one forward and backward per micro-step's inputs,
    then ``optimizer.step()`` and ``zero_grad(set_to_none=True)``) and record it.

    ``sync(last)`` is called before each micro-step (FSDP2 synchronises gradients on the last
    only); ``wrapped`` are the tensor subclasses seen as their local operators; ``groups``
    names each process group's mesh dimension and size; ``local`` gives the tensor a
    parameter's memory is (a DTensor's local shard). ``memory`` (``"cpu"`` or ``"cuda"``)
    tracks storage lifetimes from what the step starts with: parameters, buffers, the
    optimizer's state and the inputs of every micro-step.
    """
    named = list(model.named_modules())
    session = Session(None, None)
    # every call's operators are recorded (no quiet module pops the mode): counted from them
    session.modules = {id(m): (name, False, roles(name, m)[2]) for name, m in named}
    session.backward = Backward(session.calls)
    session.distributed = distributed = Collectives(wrapped, groups or {})
    if memory is not None:
        session.lifetimes = _held(model, optimizer, micro_inputs, memory, local)
    handles: list[RemovableHandle] = []
    try:
        install(session, named, handles)
        with torch.enable_grad(), session, Composites(session), _resizes(session):
            try:
                _run(model, micro_inputs, session, optimizer, loss, sync, local)
            finally:
                session.finish()
    finally:
        uninstall(handles)
    memory_trace = None
    if session.lifetimes is not None:
        memory_trace = session.lifetimes.close([(f.opened, f.closed) for f in session.calls], optimizer_name)
    computed = session.backward.computed
    infos = {name: read_info(name, module, id, computed) for name, module in named}
    calls = tuple(frame.call(infos[frame.name]) for frame in session.calls)
    return Trace(
        type(model).__name__,  # FSDP2's class for a sharded copy: the caller names it
        tuple(item for _, item in named_tensors("", micro_inputs[0])),
        tuple(infos.values()),
        calls,
        True,
        memory_trace,
        None,
        tuple(distributed.calls),
        ops_only=True,
    )


def _held(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    micro_inputs: Sequence[Inputs],
    device: str,
    local: Callable[[torch.Tensor], torch.Tensor],
) -> Lifetimes:
    """What the step starts from: parameters and buffers (their local shards), the
    optimizer's state, and every micro-step's inputs (a data loader holds them too)."""
    lifetimes = Lifetimes(device)
    lifetimes.hold([local(p) for p in model.parameters()], "parameter")
    lifetimes.hold([local(b) for b in model.buffers()], "buffer")
    state = (
        [local(t) for t in tensors_in(optimizer.state) if isinstance(t, torch.Tensor)] if optimizer else []
    )
    lifetimes.hold(state, "optimizer")
    lifetimes.hold([local(t) for t in tensors_in(list(micro_inputs))], "input")
    lifetimes.mark("held")
    return lifetimes


def _run(
    model: nn.Module,
    micro_inputs: Sequence[Inputs],
    session: Session,
    optimizer: torch.optim.Optimizer | None,
    loss: Callable[[Any], torch.Tensor] | None,
    sync: Callable[[bool], None] | None,
    local: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    backward, step = session.backward, session.distributed
    assert backward is not None and step is not None
    lifetimes = session.lifetimes
    named = list(model.named_modules())
    for micro, (args, kwargs) in enumerate(micro_inputs):
        if sync is not None:
            sync(micro == len(micro_inputs) - 1)
        step.phase, step.micro = "forward", micro
        first = len(session.calls)
        try:
            output = model(*args, **kwargs)
        except Exception as exc:
            running = session.failed or (session.stack[-1] if session.stack else None)
            raise _step_error(model, named, running, exc) from exc
        value = loss_of(model, output, loss, True)
        if lifetimes is not None:
            lifetimes.role(output, "output")
        del output
        if lifetimes is not None:
            lifetimes.mark("forward")
        if value is None or not value.requires_grad:
            raise ForwardError(f"training step of {type(model).__name__}: its loss does not require grad")
        if len(session.calls) > first:
            # the root's own nodes: up to where the forward returned (the loss's are not)
            backward.claim(session.calls[first], value, before=torch._C._autograd._get_sequence_nr())
        step.phase = "backward"
        backward.running = True
        try:
            value.backward()  # type: ignore[no-untyped-call]
        finally:
            backward.running = False
        del value
        if lifetimes is not None:
            grads = [local(p.grad) for p in model.parameters() if p.grad is not None]
            lifetimes.role(grads, "gradient")
            lifetimes.mark("backward")
    step.phase = "step"
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if lifetimes is not None:
            lifetimes.mark("step")


def _step_error(
    model: nn.Module, named: list[tuple[str, nn.Module]], running: Frame | None, exc: Exception
) -> ForwardError:
    """A forward of the step that raised: where, and for an operator whose output depends on
    tensor values (routing with ``nonzero``, ``.item()``), that the fake tensors have none."""
    name = (
        type(model).__mro__[2].__name__ if type(model).__name__.startswith("FSDP") else type(model).__name__
    )
    if isinstance(exc, (DataDependentOutputException, DynamicOutputShapeException)):
        return ValuesNeeded(
            f"training step of {name} stopped {where(named, running, exc)}: {exc} needs tensor values, "
            "which a parallel profile's fake tensors do not have (shapes only)"
        )
    return ForwardError(
        f"training step of {name} failed {where(named, running, exc)}: {type(exc).__name__}: {gist(exc)}"
    )


@contextlib.contextmanager
def _resizes(session: Session) -> Iterator[None]:
    """``UntypedStorage.resize_`` shown to the session's storage lifetimes while the step runs
    (FSDP2 allocates and frees unsharded parameters that way), and put back after."""
    lifetimes = session.lifetimes
    if lifetimes is None:
        yield
        return
    original = torch.UntypedStorage.resize_

    def resize(storage: torch.UntypedStorage, size: int) -> Any:
        before = storage.nbytes()
        result = original(storage, size)
        lifetimes.resized(storage, before, storage.nbytes(), session.owner())
        return result

    torch.UntypedStorage.resize_ = resize  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        torch.UntypedStorage.resize_ = original  # type: ignore[method-assign]
