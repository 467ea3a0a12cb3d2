"""Recording: one pass of the model under module hooks and a dispatch mode, turned into a Trace.

:func:`record` sets the pass up and takes it down; the rooms beside this one do the work:
the :class:`~convprof.record.session.Session` (hooks and dispatch, a frame per module call),
:mod:`~convprof.record.zero_compute` (the pass on meta stand-ins), :mod:`~convprof.record.modes`
(function modes: attention kernels, autocast, composite functions),
:mod:`~convprof.record.gradients` (the backward pass), :mod:`~convprof.record.memory` (what a
tracked pass holds), :mod:`~convprof.record.facts` (what each module is) and
:mod:`~convprof.record.state` (putting the model back).

The pass runs in eval mode under ``torch.no_grad()``, which is what torchvision's published
figures measure and what keeps BatchNorm statistics still. With a backward pass it runs with
gradients enabled (still in eval mode; in training mode when a training step's memory is
predicted).

Zero compute (``compute=False``, or a model or inputs on the meta device): the inputs are
replaced by meta tensors and the dispatch mode hands every operator meta stand-ins for the
real tensors it meets (same shape, stride and dtype, no data), so shapes flow and nothing is
computed; the model's weights are neither copied nor moved and the caller's tensors are not
touched. This costs a few microseconds per operator, whatever the input size (PyTorch's
FakeTensorMode does the same job at about ten times the cost per operator). Operators whose
output depends on values (``.item()``, ``nonzero``) cannot run and raise :class:`ValuesNeeded`.

Whatever the pass changes on the model is put back by :mod:`convprof.record.state`, also when
the forward raises or is interrupted: flags, attributes, parameter and buffer tables, hooks,
values written in place. A ``profile()`` nested in a profiled forward is recorded by the inner
session alone, and a call of the model from another thread while it is profiled is refused
with a clear error. Records hold shapes and plain values.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_leaves
from torch.utils.hooks import RemovableHandle

from convprof.memory.lifetimes import UntrackedLayout
from convprof.memory.optimizers import Step
from convprof.memory.scratch import unfollowed_kernel
from convprof.record import memory as tracked
from convprof.record.dataflow import roles
from convprof.record.errors import ForwardError, ValuesNeeded, forward_error, where
from convprof.record.facts import read_info
from convprof.record.fast_paths import follow_fast_paths
from convprof.record.gradients import Backward, gradients
from convprof.record.modes import Composites, DeviceAttention, autocast_region
from convprof.record.session import Session, install, uninstall
from convprof.record.state import HeldSignals, ModelState, Values
from convprof.record.tensors import named_tensors
from convprof.record.zero_compute import MetaPass, skip_forwards
from convprof.records import MemoryTrace, ModuleInfo, Trace

__all__ = ["ForwardError", "ValuesNeeded", "collector_paused", "record"]


def record(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    compute: bool = True,
    backward: bool = False,
    loss: Callable[[Any], torch.Tensor] | None = None,
    memory: str | None = None,
    optimizer: str | None = None,
    autocast: tuple[torch.dtype, str] | None = None,
) -> Trace:
    """Run ``model(*args, **kwargs)`` once and return what it revealed.

    With ``compute=False``, or a model or inputs on the meta device, nothing is computed.
    The model comes back exactly as it was (see :mod:`convprof.record.state`): hooks removed,
    ``training`` flags, attributes, parameters and buffers restored, also when the forward
    raises (then ForwardError).

    ``backward=True`` runs the forward with gradients enabled, then the gradient of
    ``loss(output)`` (default: the sum of every floating output that requires grad) with
    respect to the parameters that require grad and the inputs that do, through
    ``torch.autograd.grad``: the same operators ``loss.backward()`` runs, but nothing is
    accumulated into ``.grad``. Each backward operator is recorded on the module call whose
    autograd node runs it.

    ``memory`` (``"cpu"`` or ``"cuda"``, the device whose allocator is predicted) also records
    storage lifetimes (:mod:`convprof.memory.lifetimes`). With a backward pass the step is a
    training step: the forward runs in training mode (restored after), the gradients are held
    as ``.grad`` would hold them, and ``optimizer`` (see :mod:`convprof.memory.optimizers`) runs
    its update on meta copies of the trainable parameters, its state held from the start.

    ``autocast`` (a lower-precision dtype and the device whose policy applies) runs the forward
    under mixed precision (see :mod:`convprof.record.autocast`); the backward and the update
    run as they do after an autocast region.
    """
    with collector_paused():
        return _Pass(model, args, kwargs, compute, backward, memory, loss, optimizer, autocast).run()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the pass (and, from ``profile()``, its
    counting), and back on after. Both make thousands of small objects (frames, records,
    stand-ins, rows); their count triggers collections that walk every object of the process,
    the model's included, several times per profile (5-10% of a small network's). Reference
    counting still frees what they drop; only cycles wait for the next collection after it."""
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# The sessions running in this thread, outermost first (a profile() inside a model's forward).
_LOCAL = threading.local()


def _sessions() -> list[Session]:
    sessions: list[Session] | None = getattr(_LOCAL, "sessions", None)
    if sessions is None:
        sessions = _LOCAL.sessions = []
    return sessions


class _Pass:
    """One pass being recorded: what it is given, what it installs, and what it must take
    away again (``handles``, ``skipped``), in the order :meth:`run` sets it up."""

    def __init__(
        self,
        model: nn.Module,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        compute: bool,
        backward: bool,
        memory: str | None,
        loss: Callable[[Any], torch.Tensor] | None,
        optimizer: str | None,
        autocast: tuple[torch.dtype, str] | None,
    ) -> None:
        self.model, self.args, self.kwargs = model, args, kwargs
        self.loss, self.optimizer, self.autocast = loss, optimizer, autocast
        self.named = list(model.named_modules())
        self.owned = _owned(self.named)
        leaves = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        self.computing = compute and not any(t.is_meta for t in (*self.owned, *leaves))
        self.backward, self.memory = backward, memory
        self.handles: list[RemovableHandle] = []
        self.skipped: list[nn.Module] = []

    def run(self) -> Trace:
        if not self.computing:
            _refuse_without_values(self.model, self.named, self.owned, self.backward, self.memory)
        named = self.named
        state = ModelState([m for _, m in named])
        if self.computing:
            session = Session(Values(self.owned), None)
        else:
            with _disable_current_modes():  # a user's dispatch mode sees the model's operators only
                session = Session(None, MetaPass(self.owned, tracked=self.memory is not None))
        session.modules = {id(m): roles(name, m) for name, m in named}
        if self.backward:
            session.backward = Backward(session.calls)
        outer = _sessions()
        held = HeldSignals()
        try:
            install(session, named, self.handles, fused=self._fused())
            state.set_eval(training=self.backward and self.memory is not None)
            update, inputs = self._prepare(session, state)
            for running in outer:
                running.paused += 1
            outer.append(session)
            memory_trace = self._forward(session, held, inputs, update)
            if session.intruder is not None:
                raise ForwardError(
                    f"module '{session.intruder or '(root)'}' of {type(self.model).__name__} was called "
                    "from another thread while convprof was profiling it; that call was refused. Profile "
                    "a model that no other thread runs, or a copy of it"
                )
            # Read before the state is put back: a lazy module knows its sizes only now.
            ident = id if session.meta is None else session.meta.ident()
            infos = {name: read_info(name, module, ident) for name, module in named}
        finally:
            held.hold()
            try:
                self._take_down(session, outer, state)
            finally:
                held.release()
        return _trace(
            self.model, (self.args, self.kwargs), self.backward, session, infos, memory_trace, self.autocast
        )

    def _fused(self) -> bool:
        """Whether the pass predicts the CPU's memory, for which PyTorch's attention layers run
        their fused inference kernels as the CPU would (:mod:`convprof.record.fast_paths`; under
        autocast too: the CPU's autocast does not stop them); in any other pass they run their
        layers one by one, so that every pass gives the same rows."""
        return self.memory == "cpu"

    def _prepare(
        self, session: Session, state: ModelState
    ) -> tuple[Step | None, tuple[tuple[Any, ...], dict[str, Any]]]:
        """What the pass runs on: the inputs (meta copies in zero compute, with the model
        pointed at its stand-ins) and, when memory is tracked, what is held from the start."""
        update = None
        meta = session.meta
        if self.memory is not None:
            stand_ins = meta.stand_ins if meta is not None else {}
            session.lifetimes, update = tracked.held(self.named, stand_ins, self.memory, self.optimizer)
            session.lifetimes.autocast = self.autocast is not None
        call_args, call_kwargs = self.args, self.kwargs
        if meta is not None:
            state.point_at(meta.stand_ins)
            with _disable_current_modes():
                call_args, call_kwargs = meta.copy_inputs((self.args, self.kwargs), {})
            self.skipped += follow_fast_paths(self.named, self._fused(), nested=True)
            # (a layer's shortcut makes its output in its input's dtype: not under autocast)
            if not self.backward and self.memory is None and self.autocast is None:
                modules = session.modules
                self.skipped += skip_forwards(self.named, lambda m: modules[id(m)][1], session.opened)
        elif self._fused() and self.autocast is not None:
            # convprof's autocast is a function mode, which PyTorch's layers take for a reason
            # not to fuse (has_torch_function); the CPU's own autocast is none
            self.skipped += follow_fast_paths(self.named, True, nested=False)
        if session.lifetimes is not None:
            session.lifetimes.hold((call_args, call_kwargs), "input")
            session.lifetimes.mark("held")
        return update, (call_args, call_kwargs)

    def _forward(
        self,
        session: Session,
        held: HeldSignals,
        inputs: tuple[tuple[Any, ...], dict[str, Any]],
        update: Step | None,
    ) -> MemoryTrace | None:
        """The forward (and backward) under the session and the function modes."""
        attention: Any = contextlib.nullcontext()
        if self.memory is not None and session.meta is not None:
            attention = DeviceAttention(self.memory)
        grad_mode = torch.enable_grad() if self.backward else torch.no_grad()
        with grad_mode, attention, session, Composites(session):
            try:
                return self._step(session, inputs, update)
            finally:
                held.hold()  # from here until the model is back, an interrupt waits
                session.finish()

    def _step(
        self, session: Session, inputs: tuple[tuple[Any, ...], dict[str, Any]], update: Step | None
    ) -> MemoryTrace | None:
        model = self.model
        try:
            with autocast_region(self.autocast):
                output = model(*inputs[0], **inputs[1])
        except UntrackedLayout as exc:  # a refusal of the prediction, not a failure of the model's
            running = session.failed or (session.stack[-1] if session.stack else None)
            raise UntrackedLayout(f"{where(self.named, running, exc)}: {exc}") from None
        except Exception as exc:
            running = session.failed or (session.stack[-1] if session.stack else None)
            raise forward_error(model, self.named, running, session.last_op, exc, self.computing) from exc
        lifetimes = session.lifetimes
        if lifetimes is not None:
            lifetimes.role(output, "output")
            lifetimes.mark("forward")
        if session.backward is not None:
            returned = torch._C._autograd._get_sequence_nr()
            stand_ins = session.meta.stand_ins if session.meta is not None else {}
            params = [
                stand_ins.get(id(p), p)
                for _, m in self.named
                for p in m._parameters.values()
                if p is not None
            ]
            grads = gradients(model, params, session.backward, output, self.loss, inputs, returned)
            if lifetimes is not None:
                tracked.after_backward(lifetimes, update, grads)
        if lifetimes is None:
            return None
        return lifetimes.close([(f.opened, f.closed) for f in session.calls], self.optimizer)

    def _take_down(self, session: Session, outer: list[Session], state: ModelState) -> None:
        """Everything the pass installed taken away, and the model put back."""
        if outer and outer[-1] is session:
            outer.pop()
            for running in outer:
                running.paused -= 1
        uninstall(self.handles)
        for module in self.skipped:
            module.__dict__.pop("forward", None)
        state.restore()
        if session.values is not None:
            session.values.restore()


def _refuse_without_values(
    model: nn.Module,
    named: list[tuple[str, nn.Module]],
    owned: list[torch.Tensor],
    backward: bool,
    memory: str | None,
) -> None:
    """Zero compute's refusals before the pass: what it cannot follow without values."""
    if backward and any(isinstance(m, torch.jit.ScriptModule) for _, m in named):
        # A script's gradient runs in TorchScript's own graph executor, which a zero-compute
        # pass does not see into (it would count nothing): refuse, as for any operator that
        # needs real tensors, so that compute="auto" counts it with a real pass.
        raise ValuesNeeded(
            f"zero-compute backward pass of {type(model).__name__}: a TorchScript module's gradient "
            "runs inside TorchScript and needs real tensors; profile with compute=True and real inputs"
        )
    lazy = _lazy(named, owned)
    if lazy is not None:
        # a lazy module's parameters take their shapes from its first real input
        raise ValuesNeeded(
            f"zero-compute pass of {type(model).__name__}: module '{lazy[0] or '(root)'}' "
            f"({type(lazy[1]).__name__}) has lazy parameters that its first forward sizes; profile "
            "with compute=True and real inputs"
        )
    unfollowed = unfollowed_kernel(named, memory) if memory is not None else None
    if unfollowed is not None:
        raise ValuesNeeded(
            f"zero-compute peak memory of {type(model).__name__}: {unfollowed}; profile with "
            "compute=True and real inputs"
        )


def _trace(
    model: nn.Module,
    given: tuple[tuple[Any, ...], dict[str, Any]],
    backward: bool,
    session: Session,
    infos: dict[str, ModuleInfo],
    memory_trace: MemoryTrace | None,
    autocast: tuple[torch.dtype, str] | None,
) -> Trace:
    """The frames of the pass as records."""
    calls = tuple(frame.call(infos[frame.name]) for frame in session.calls)
    inputs = tuple(item for _, item in named_tensors("", given))
    return Trace(
        type(model).__name__,
        inputs,
        tuple(infos.values()),
        calls,
        backward,
        memory_trace,
        str(autocast[0]).removeprefix("torch.") if autocast is not None else None,
    )


def _owned(named: list[tuple[str, nn.Module]]) -> list[torch.Tensor]:
    """Every parameter and buffer of the model."""
    return [
        value
        for _, module in named
        for table in (module._parameters, module._buffers)
        for value in table.values()
        if value is not None
    ]


def _lazy(named: list[tuple[str, nn.Module]], owned: list[torch.Tensor]) -> tuple[str, nn.Module] | None:
    """The first module holding an uninitialised lazy parameter or buffer, which has no shape;
    the model's tensors (``owned``) are looked through first, the modules only if one is."""
    if not any(nn.parameter.is_lazy(t) for t in owned):
        return None
    for name, module in named:
        tensors = (*module._parameters.values(), *module._buffers.values())
        if any(t is not None and nn.parameter.is_lazy(t) for t in tensors):
            return name, module
    return None
