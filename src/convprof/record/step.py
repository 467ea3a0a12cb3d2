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
from typing import Any, Protocol

import torch
from torch import nn
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException
from torch.utils.hooks import RemovableHandle

from convprof.memory.lifetimes import Lifetimes, tensors_in
from convprof.memory.optimizers import quiet_optimizers
from convprof.record.collectives import Collectives
from convprof.record.dataflow import roles
from convprof.record.errors import ForwardError, ValuesNeeded, gist, type_label, where
from convprof.record.facts import read_info
from convprof.record.frame import Frame
from convprof.record.gradients import Backward, loss_of
from convprof.record.modes import Composites, DeviceAttention
from convprof.record.session import Session, install, uninstall
from convprof.records import TensorMeta, Trace

Inputs = tuple[tuple[Any, ...], dict[str, Any]]


class Phases:
    """What a step's driver tells the recording as the step goes: that a micro-step's forward
    or backward runs (the collectives' phase, the storage lifetimes' marks, autograd's
    operators as the backward's), and what a forward that raised means."""

    def __init__(
        self, session: Session, model: nn.Module, local: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        assert session.backward is not None and session.distributed is not None
        self.session, self.model, self.local = session, model, local
        self.backward, self.collectives = session.backward, session.distributed

    @contextlib.contextmanager
    def forward(self, micro: int) -> Iterator[None]:
        """A micro-step's forward (its loss included, where the driver computes it)."""
        self.collectives.phase, self.collectives.micro = "forward", micro
        try:
            yield
        except ForwardError:
            raise
        except Exception as exc:
            session = self.session
            running = session.failed or (session.stack[-1] if session.stack else None)
            raise _step_error(self.model, list(self.model.named_modules()), running, exc) from exc
        if self.session.lifetimes is not None:
            self.session.lifetimes.mark("forward")

    @contextlib.contextmanager
    def backward_of(self, micro: int) -> Iterator[None]:
        """A micro-step's backward: autograd's operators recorded as its gradients, and the
        parameters' gradients, once it is done, held as gradients."""
        self.collectives.phase, self.collectives.micro = "backward", micro
        self.backward.running = True
        try:
            yield
        finally:
            self.backward.running = False
        lifetimes = self.session.lifetimes
        if lifetimes is not None:
            grads = [self.local(p.grad) for p in self.model.parameters() if p.grad is not None]
            lifetimes.role(grads, "gradient")
            lifetimes.mark("backward")

    def returned(self, first: int, value: torch.Tensor) -> None:
        """The loss of the forward whose first call was ``first``: the root's own autograd
        nodes, up to where the forward returned, are the root's (the loss's are not)."""
        if len(self.session.calls) > first:
            self.backward.claim(
                self.session.calls[first], value, before=torch._C._autograd._get_sequence_nr()
            )


class Driver(Protocol):
    """How a step runs its forwards and backwards (the optimizer's update is the recording's)."""

    def held(self) -> Any:
        """What the step starts with besides the model and the optimizer: inputs, buffers."""

    def run(self, phases: Phases) -> None:
        """The step's forwards and backwards, announced to ``phases``."""


class MicroSteps:
    """The plain step: per micro-step's inputs, a forward, the loss and ``loss.backward()``;
    ``sync(last)`` before each (FSDP2 synchronises gradients on the last only)."""

    def __init__(
        self,
        model: nn.Module,
        micro_inputs: Sequence[Inputs],
        loss: Callable[[Any], torch.Tensor] | None = None,
        sync: Callable[[bool], None] | None = None,
    ) -> None:
        self.model, self.micro_inputs, self.loss, self.sync = model, micro_inputs, loss, sync

    def held(self) -> Any:
        return list(self.micro_inputs)

    def run(self, phases: Phases) -> None:
        model = self.model
        for micro, (args, kwargs) in enumerate(self.micro_inputs):
            if self.sync is not None:
                self.sync(micro == len(self.micro_inputs) - 1)
            first = len(phases.session.calls)
            with phases.forward(micro):
                output = model(*args, **kwargs)
                value = loss_of(model, output, self.loss, True)
                if phases.session.lifetimes is not None:
                    phases.session.lifetimes.role(output, "output")
                del output
            if value is None or not value.requires_grad:
                raise ForwardError(f"training step of {type_label(model)}: its loss does not require grad")
            phases.returned(first, value)
            with phases.backward_of(micro):
                value.backward()  # type: ignore[no-untyped-call]
            del value


def record_step(
    model: nn.Module,
    driver: Driver,
    *,
    optimizer: torch.optim.Optimizer | None,
    optimizer_name: str | None = None,
    memory: str | None = None,
    wrapped: tuple[type, ...] = (),
    groups: Mapping[str, tuple[str, int]] | None = None,
    local: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    inputs: tuple[TensorMeta, ...] = (),
) -> Trace:
    """Run one training step of ``model`` (``driver``'s forwards and backwards, then
    ``optimizer.step()`` and ``zero_grad(set_to_none=True)``) and record it.

    ``wrapped`` are the tensor subclasses seen as their local operators; ``groups`` names each
    process group's mesh dimension and size; ``local`` gives the tensor a parameter's memory is
    (a DTensor's local shard). ``memory`` (``"cpu"`` or ``"cuda"``) tracks storage lifetimes
    from what the step starts with: parameters, buffers, the optimizer's state and what the
    driver holds (its inputs). ``inputs`` are the trace's inputs as records.
    """
    named = list(model.named_modules())
    session = Session(None, None)
    # every call's operators are recorded (no quiet module pops the mode): counted from them
    session.modules = {id(m): (name, False, roles(name, m)[2]) for name, m in named}
    session.backward = Backward(session.calls)
    session.distributed = distributed = Collectives(wrapped, groups or {})
    if memory is not None:
        session.lifetimes = _held(model, optimizer, driver.held(), memory, local)
    handles: list[RemovableHandle] = []
    try:
        install(session, named, handles)
        # on fake CPU tensors, attention runs the CPU's kernel choice: for CUDA, CUDA's
        attention = DeviceAttention(memory) if memory == "cuda" else contextlib.nullcontext()
        with torch.enable_grad(), attention, session, Composites(session), _resizes(session):
            try:
                driver.run(Phases(session, model, local))
                distributed.phase = "step"
                if optimizer is not None:
                    with quiet_optimizers():
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    if session.lifetimes is not None:
                        session.lifetimes.mark("step")
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
        inputs,
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
    held: Any,
    device: str,
    local: Callable[[torch.Tensor], torch.Tensor],
) -> Lifetimes:
    """What the step starts from: parameters and buffers (their local shards), the
    optimizer's state, and what the driver holds (every micro-step's inputs)."""
    lifetimes = Lifetimes(device)
    lifetimes.hold([local(p) for p in model.parameters()], "parameter")
    lifetimes.hold([local(b) for b in model.buffers()], "buffer")
    state = tensors_in(optimizer.state) if optimizer is not None else []
    lifetimes.hold([local(t) for t in state], "optimizer")
    lifetimes.hold([local(t) for t in tensors_in(held)], "input")
    lifetimes.mark("held")
    return lifetimes


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
