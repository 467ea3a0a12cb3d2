"""The session: module hooks and a dispatch mode for one pass, collecting a frame per call.

Module forward hooks (two global ones, which ignore modules outside the model) open and close a
:class:`~convprof.record.frame.Frame` per module call; the dispatch mode sees every ATen
operator and records it on the innermost call running, hands it meta stand-ins in zero compute
(:mod:`~convprof.record.zero_compute`), shows its outputs to the storage lifetimes when memory
is predicted, and in the backward pass records it on the call whose autograd node runs it
(:mod:`~convprof.record.gradients`).

Cost: a dispatch mode alone slows a mobile network's forward by 10-25%. Inside a childless
module whose operators need no watching (its module formula replaces them, or it is a
built-in that only runs free operators, see ``formulas.is_quiet``) the mode is popped off the
dispatch stack and pushed back after, so most operators of a CNN run at full speed. In zero
compute the mode must stay (it hands those operators their meta stand-ins), but it records
nothing of theirs either, so that both passes count the same operators and zero compute pays
for no record it would throw away. The checks on the hooks' path are inline: they run for every
module call.

Control flow: the post-hook is also called when a forward raises, so a call whose exception a
parent catches is closed there and counted from its operators. Only this session's own mode is
ever popped; a mode the model pushes itself, or one around ``profile()``, sees its operators.
A call of the model from another thread is refused when it starts and ignored when it ends.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module_globals
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode_stack, _push_mode
from torch.utils.hooks import RemovableHandle

from convprof.count.formulas import OpClass, classify
from convprof.memory.lifetimes import Lifetimes
from convprof.record import higher_order
from convprof.record.collectives import Collectives
from convprof.record.dataflow import UNTAGGED, Tags
from convprof.record.frame import Frame
from convprof.record.gradients import Backward
from convprof.record.stand_ins.operators import shortcut_for
from convprof.record.stand_ins.shapes import Shortcut
from convprof.record.stand_ins.values import value_shortcut_for
from convprof.record.state import Values
from convprof.record.tensors import meta_of, named_tensors, op_call, outputs
from convprof.record.zero_compute import MetaPass

# The dispatch-mode stack itself. PyTorch's _pop_mode, _push_mode and _get_current_dispatch_mode
# wrap these in Python for modes with a dispatch key (this one has none), which is 2 us more per
# quiet module in a computing pass.
_stack_len = torch._C._len_torch_dispatch_stack
_stack_at = torch._C._get_dispatch_stack_at
_stack_pop = torch._C._pop_torch_dispatch_stack
_stack_push = torch._C._push_on_torch_dispatch_stack

# Operators that write their arguments although their schema does not say so: the legacy batch
# norm kernels update running_mean and running_var in training (F.batch_norm(training=True)).
_WRITES_UNDECLARED = {
    torch.ops.aten.native_batch_norm.default,
    torch.ops.aten.cudnn_batch_norm.default,
    torch.ops.aten.miopen_batch_norm.default,
}


def _trains(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether one of those batch norms runs in training (``training`` is their sixth
    argument), the only case in which it writes. In eval (a norm whose class has no stand-in
    and no quiet type, such as timm's BatchNormAct2d) there is nothing to save: saving was
    40 us a call, a sixth of mobilenetv4_conv_small's forward."""
    training = args[5] if len(args) > 5 else kwargs.get("training", True)
    return training is not False


def _recompute_modes(session: Session, frame: Frame) -> None:
    """With a backward pass: the function modes the forward ran under (the device's attention,
    autocast), noted at its first call, pushed again for a checkpointed block's recompute
    (``frame.modes`` of them, popped by :func:`_leave`): the autograd engine runs the backward
    without them, and the model's own checkpoint calls take no context of convprof's
    (record.recompute gives one to a plan's)."""
    if not session.calls:
        session.forward_modes = _function_modes()
    elif frame.recompute and session.forward_modes:
        frame.modes = _enter(session.forward_modes)


def _leave(frame: Frame) -> None:
    for _ in range(frame.modes):
        torch._C._pop_torch_function_stack()
    frame.modes = 0


def _function_modes() -> list[Any]:
    return list(torch.overrides._get_current_function_mode_stack())  # type: ignore[no-untyped-call]


def _enter(modes: list[Any]) -> int:
    """Push those of ``modes`` the function-mode stack lacks; how many were pushed."""
    present = _function_modes()
    missing = [mode for mode in modes if not any(mode is other for other in present)]
    for mode in missing:
        torch._C._push_on_torch_function_stack(mode)
    return len(missing)


def _refuse(session: Session, name: str) -> None:
    """A module of the model called from another thread while it is profiled."""
    session.intruder = name
    raise RuntimeError(
        f"module '{name or '(root)'}' was called from another thread while convprof is "
        "profiling its model; run it after profile() returns"
    )


class Session(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Hooks and dispatch for one pass; ``stack`` holds the module calls running, ``calls``
    every call in order. ``meta``: zero compute's stand-ins (None when computing); ``values``:
    buffers to copy before an operator writes them (a computing pass)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # PyTorch wraps a mode's __torch_dispatch__ in torch._disable_dynamo unless this says
        # no. The wrapper imports torch._dynamo on first use (1.3 s in a fresh process, the
        # largest cost of a first profile) and adds a frame to every operator. The pass runs
        # eagerly, never under torch.compile, so there is nothing to disable.
        return False

    def __init__(self, values: Values | None, meta: MetaPass | None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.meta = meta
        self.values = values
        self.stack: list[Frame] = []
        self.calls: list[Frame] = []
        self.last_op: torch._ops.OpOverload | None = None
        self.modules: dict[int, tuple[str, bool, int]] = {}  # id(module) -> (name, quiet, role)
        self.tags = Tags()  # data flow: tensor -> indices of the producing calls
        self.quiet: Frame | None = None  # the childless module running with the mode popped
        self.thread = threading.get_ident()
        self.paused = 0  # > 0 while a nested convprof session runs inside this one
        self.intruder: str | None = None  # a module of the model called from another thread
        self.failed: Frame | None = None  # the innermost call an exception left, since then
        self.backward: Backward | None = None  # a backward pass follows the forward
        # Peak memory: storage lifetimes, shown every operator's outputs (then no mode is
        # popped and no forward skipped, so that every allocation passes through here)
        self.lifetimes: Lifetimes | None = None
        self._op_classes: dict[
            torch._ops.OpOverload, tuple[OpClass, bool, Shortcut | None, Shortcut | None]
        ] = {}
        self.distributed: Collectives | None = None  # a distributed step (record.step)
        self.forward_modes: list[Any] = []  # see _recompute_modes

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if self.paused:  # a nested convprof session records these
            return func(*args, **kwargs)
        distributed = self.distributed
        if distributed is not None and distributed.wraps(types):
            return NotImplemented  # the subclass runs its local operators, which come here
        if self.failed is not None:
            self.failed = None
        known = self._op_classes.get(func)
        if known is None:
            known = self._op_classes[func] = (
                classify(func),
                func._schema.is_mutable,
                shortcut_for(func),
                value_shortcut_for(func),
            )
        op_class, mutable, shortcut, with_values = known
        self.last_op = func
        if self.meta is not None:
            out, args, kwargs = self.meta.run(func, args, kwargs, shortcut, with_values)
        else:
            if self.values and (mutable or (func in _WRITES_UNDECLARED and _trains(args, kwargs))):
                self.values.before_write(args)
            out = func(*args, **kwargs)
        backward = self.backward
        if self.lifetimes is not None:
            self.lifetimes.see(func, out, args, kwargs, self.owner())
        if op_class is OpClass.COLLECTIVE:
            if distributed is not None:
                distributed.record(func, args, kwargs, out)
            return out
        if backward is not None and backward.running and not (self.stack and self.stack[-1].recompute):
            if op_class is not OpClass.FREE:
                backward.record(func, args, kwargs, out)
            return out
        if self.stack and self.stack[-1].quiet:  # zero compute inside a quiet module: see above
            return out
        if op_class is OpClass.FREE:
            if len(self.tags):
                self.tags.pass_on(args, out)
        elif self.stack:
            self.stack[-1].ops.append(op_call(func, args, kwargs, out))
        return out

    def owner(self) -> int:
        """The call an allocation is made by: the innermost running, or in the backward pass
        the one whose autograd node runs (-1: none, as for the loss and the optimizer)."""
        backward = self.backward
        if backward is not None and backward.running:
            return backward.owner()
        return self.stack[-1].index if self.stack else -1

    def opened(self, name: str) -> bool:
        """Whether the call just opened is of the module ``name``, with only this session's
        mode on the dispatch stack: the condition for a module stand-in."""
        return (
            bool(self.stack)
            and self.stack[-1].name == name
            and not self.paused
            and torch._C._len_torch_dispatch_stack() == 1
        )

    def restore_mode(self) -> None:
        """Push the mode back if a quiet module popped it and never got to its post-hook."""
        if self.quiet is not None:
            self.quiet = None
            _stack_push(self)

    def finish(self) -> None:
        """Before the ``with`` block pops this mode: make sure it is on the stack, also when an
        exception (a KeyboardInterrupt from a signal) arrived between a pop and its record."""
        self.restore_mode()
        if not any(mode is self for mode in _get_current_dispatch_mode_stack()):
            _push_mode(self)

    def pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Global forward pre-hook: open a frame for a module of the model (others pass by).
        Global pre-hooks see no keyword arguments; the post-hook adds their tensors."""
        known = self.modules.get(id(module))
        if known is None or self.paused:
            return
        if threading.get_ident() != self.thread:
            _refuse(self, known[0])
        name, quiet, _ = known
        if self.quiet is not None:  # restore_mode(), inline
            self.quiet = None
            _stack_push(self)
        self.failed = None
        frame = Frame(
            name,
            len(self.calls),
            (("0", meta_of(args[0])),)  # the common case, without the generators
            if len(args) == 1 and isinstance(args[0], torch.Tensor)
            else tuple(item for i, a in enumerate(args) for item in named_tensors(str(i), a)),
            self.tags.sources(args) if len(self.tags) else UNTAGGED,
            quiet,
        )
        if self.backward is not None:
            frame.start = torch._C._autograd._get_sequence_nr()
            frame.recompute = self.backward.running  # checkpointing runs forwards in the backward
            _recompute_modes(self, frame)
            if self.distributed is not None:  # the tensors its operators read as weights
                self.backward.note_weights(module)
        if self.lifetimes is not None:
            frame.opened = frame.closed = self.lifetimes.ticks
        self.stack.append(frame)
        self.calls.append(frame)
        # Only this session's own mode is popped: a mode the model pushed itself stays. Zero
        # compute keeps it: the operators need their stand-ins.
        if (
            quiet
            and self.meta is None
            and self.lifetimes is None
            and (depth := _stack_len())
            and _stack_at(depth - 1) is self
        ):
            _stack_pop(None)
            self.quiet = frame

    def post_hook(self, module: nn.Module, args: Any, *rest: Any) -> None:
        """Global forward hook, also called when the forward raises (``always_call``): then
        PyTorch passes ``(module, args, None)`` and the call's frame is closed as raised, so
        that a parent that catches the exception gets its later operators on its own row."""
        known = self.modules.get(id(module))
        if known is None or self.paused or threading.get_ident() != self.thread:
            return
        name, _, role = known
        if self.quiet is not None:  # restore_mode(), inline
            self.quiet = None
            _stack_push(self)
        raised = len(rest) == 1
        kwargs, output = (None, None) if raised else rest
        # Pop back to this module's frame (frames above it were left by exceptions).
        while self.stack:
            frame = self.stack.pop()
            _leave(frame)
            if frame.name != name:
                continue
            if self.lifetimes is not None:
                frame.closed = self.lifetimes.ticks
            if raised:
                frame.raised = True
                if self.failed is None:
                    self.failed = frame
                return
            self._close(frame, role, args, kwargs, output)
            return

    def _close(self, frame: Frame, role: int, args: Any, kwargs: dict[str, Any] | None, output: Any) -> None:
        """A call that returned: its outputs, its autograd nodes, and the tags of its outputs."""
        self.failed = None
        frame.outputs = outputs(output)
        if self.backward is not None:
            self.backward.claim(frame, output)
        self.tags.after(role, frame.index, args, output)
        if kwargs:
            frame.inputs += tuple(item for k, v in kwargs.items() for item in named_tensors(k, v))


higher_order.follow(Session)


def _untraced(*functions: Any) -> None:
    """Code that torch.compile must never trace: a model may compile part of its forward
    (transformers compiles its FlexAttention call), and the operators there reach this mode
    with the mode popped, when Dynamo sees no mode on the stack and would trace the
    session's own code (PyTorch's wrapper for that costs every operator a frame and a 1.3 s
    import; marking the code objects costs nothing)."""
    from torch._C._dynamo.eval_frame import _FrameAction, _FrameExecStrategy, set_code_exec_strategy

    for function in functions:
        set_code_exec_strategy(function.__code__, _FrameExecStrategy(_FrameAction.SKIP, _FrameAction.SKIP))


_untraced(Session.__torch_dispatch__, Session.pre_hook, Session.post_hook)


def _no_op(module: nn.Module, args: Any) -> None:
    return None


def install(
    session: Session, named: list[tuple[str, nn.Module]], handles: list[RemovableHandle], fused: bool = False
) -> None:
    """The session's hooks, appended to ``handles`` as they are made (for :func:`uninstall`,
    also when a later one fails). Two global hooks cost less than a pair per module
    (registration, removal); they ignore modules that are not part of the model."""
    handles.append(register_module_forward_pre_hook(session.pre_hook))
    handles.append(register_module_forward_hook(session.post_hook, with_kwargs=True, always_call=True))
    # nn.TransformerEncoderLayer swaps in one fused kernel in inference unless a hook is
    # attached to it; a no-op hook keeps every pass (computing, zero-compute, meta) on the
    # same path, so all give the same rows, sub-layers included. A pass that predicts the
    # CPU's memory (``fused``) runs the kernel the CPU would, whose memory is another.
    if not fused:
        handles.extend(
            m.register_forward_pre_hook(_no_op) for _, m in named if isinstance(m, nn.TransformerEncoderLayer)
        )


def uninstall(handles: list[RemovableHandle]) -> None:
    """Remove what :func:`install` added, PyTorch's global tables included."""
    for handle in handles:
        handle.remove()
        # PyTorch's handle forgets this table (every profile() would leave an entry, and
        # with it a global-hooks flag that slows every later forward and warns in compile)
        _module_globals._global_forward_hooks_with_kwargs.pop(handle.id, None)
        _module_globals._global_forward_hooks_always_called.pop(handle.id, None)
