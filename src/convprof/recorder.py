"""Recording: one forward pass under module hooks and a dispatch mode, turned into a Trace.

This is the only module that touches PyTorch's hook and dispatch machinery. Module forward
hooks give rows their names, input and output shapes; a ``TorchDispatchMode`` sees every ATen
operator, including those no module formula covers (``F.conv2d``, ``x @ w``, attention in
custom modules), and attributes each to the innermost module running.

Cost: a dispatch mode alone slows a mobile network's forward by 10-25%. Inside a childless
module whose operators need no watching (its module formula replaces them, or it is a
built-in that only runs free operators, see ``formulas.is_quiet``) the mode is popped off the
dispatch stack and pushed back after, so most operators of a CNN run at full speed. In zero
compute the mode must stay (it hands those operators their meta stand-ins), but it records
nothing of theirs either, so that both passes count the same operators and zero compute pays
for no record it would throw away.

Zero compute (``compute=False``, or a model or inputs on the meta device): the inputs are
replaced by meta tensors and the dispatch mode hands every operator meta stand-ins for the
real tensors it meets (same shape, stride and dtype, no data), so shapes flow and nothing is
computed; the model's weights are neither copied nor moved and the caller's tensors are not
touched. This costs a few microseconds per operator, whatever the input size (PyTorch's
FakeTensorMode does the same job at about ten times the cost per operator). A built-in layer
whose operators nothing records (a conv, counted by its module formula; a norm or an
activation, which runs only free operators) does not even run: for the pass, its forward is a
module stand-in that makes the output from the input and the layer's attributes
(``skip_forwards``, ``meta_shapes.module_shortcut_for``). Operators whose output depends on
values (``.item()``, ``nonzero``) cannot run and raise :class:`ValuesNeeded`.

The pass runs in eval mode under ``torch.no_grad()``, which is what torchvision's published
figures measure and what keeps BatchNorm statistics still. With a backward pass it runs with
gradients enabled (still in eval mode); each autograd node is claimed by the module call that
created it (a walk back from the call's outputs when it returns, by autograd sequence number),
and each operator of the backward pass is recorded on the call whose node runs it.

Whatever the pass changes on the model is put back by :mod:`convprof.state`, also when the
forward raises or is interrupted: flags, attributes, parameter and buffer tables, values
written in place. In a zero-compute pass the model's own references point at meta stand-ins,
the caller's inputs are copied (their tensors as stand-ins, except small integer tensors that
steer control flow), and nothing the caller owns is written. Records hold shapes and plain
values.

Control flow: the post-hook is also called when a forward raises, so a call whose exception a
parent catches is closed there and counted from its operators. Only this session's own mode is
ever popped; a mode the model pushes itself, or one around ``profile()``, sees its operators.
A ``profile()`` nested in a profiled forward is recorded by the inner session alone, and a call
of the model from another thread while it is profiled is refused with a clear error.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import threading
import traceback
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module_globals
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import (
    TorchDispatchMode,
    _disable_current_modes,
    _get_current_dispatch_mode_stack,
    _push_mode,
)
from torch.utils._pytree import tree_leaves

from convprof import autocast as mixed
from convprof import fused_attention
from convprof.formulas import OpClass, classify, is_quiet, module_formula, moves_memory
from convprof.lifetimes import Lifetimes, tensors_in, unfollowed_kernel
from convprof.meta_shapes import (
    ModuleShortcut,
    Shortcut,
    literal,
    module_shortcut_for,
    shadows_its_class,
    shortcut_for,
    steers,
    value_shortcut_for,
)
from convprof.optimizers import Step, meta_like
from convprof.records import (
    ArgValue,
    ConvSpec,
    ModuleCall,
    ModuleInfo,
    OpCall,
    ParamInfo,
    Plain,
    TensorMeta,
    Trace,
)
from convprof.state import TABLES, HeldSignals, ModelState, Values
from convprof.units import format_shape

_VALUE_TAGS = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape)

# The sequence number autograd gives the nodes that accumulate into leaves (all of them alike).
_LEAF_NODE = 2**64 - 1


class ForwardError(RuntimeError):
    """The model's forward pass raised; the message names the module that was running."""


class ValuesNeeded(ForwardError):
    """A zero-compute pass reached an operator whose result depends on tensor values."""


_DTYPES: dict[torch.dtype, tuple[str, int]] = {}
# TensorMeta by (shape, dtype): records are frozen, so one instance serves every tensor of that
# shape and dtype (a conv's output, the norm and activation after it, the next conv's input),
# and a lookup costs a third of making one. Cleared when it grows past _MAX_METAS (a sweep over
# many input sizes).
_METAS: dict[tuple[torch.Size, torch.dtype], TensorMeta] = {}
_MAX_METAS = 4096


def meta_of(tensor: torch.Tensor) -> TensorMeta:
    if tensor.is_nested:
        return _nested_meta(tensor, _dtype_facts(tensor.dtype))
    key = (tensor.shape, tensor.dtype)
    try:
        known = _METAS.get(key)
    except TypeError:  # a symbolic size: not hashable
        known = None
    if known is None:
        facts = _dtype_facts(key[1])
        known = TensorMeta(tuple(key[0]), facts[0], facts[1])
        if len(_METAS) >= _MAX_METAS:
            _METAS.clear()
        with contextlib.suppress(TypeError):
            _METAS[key] = known
    return known


def _dtype_facts(dtype: torch.dtype) -> tuple[str, int]:
    known = _DTYPES.get(dtype)
    if known is None:
        known = _DTYPES[dtype] = (str(dtype).removeprefix("torch."), dtype.itemsize)
    return known


def _nested_meta(tensor: torch.Tensor, dtype: tuple[str, int]) -> TensorMeta:
    """A nested tensor (``nn.TransformerEncoder``'s padding-free fast path) has no shape of its
    own: its components' shapes are the parts, its shape the padded one they fit in."""
    with _disable_current_modes():
        parts = tuple(tuple(part.shape) for part in tensor.unbind())
    padded = tuple(max(sizes) for sizes in zip(*parts, strict=True)) if parts else ()
    return TensorMeta((len(parts), *padded), dtype[0], dtype[1], parts)


def _unpacked(value: Any) -> tuple[torch.Tensor | None, ...] | None:
    """The tensors inside a packed-parameter object (quantized Linear and conv kernels keep
    their weight and bias in one, which ``parameters()`` does not list), else None."""
    if isinstance(value, torch.ScriptObject) and value._has_method("unpack"):  # type: ignore[attr-defined]
        with _disable_current_modes():
            unpacked = value.unpack()  # type: ignore[attr-defined]
        return tuple(t if isinstance(t, torch.Tensor) else None for t in unpacked)
    return None


def _packed_tensors(value: Any) -> list[torch.Tensor] | None:
    """Every tensor a packed object holds: what it unpacks to, or, for containers of packed
    objects (a dynamically quantized LSTM cell's parameters), what its saved state holds."""
    unpacked = _unpacked(value)
    if unpacked is not None:
        return [t for t in unpacked if t is not None]
    if not (isinstance(value, torch.ScriptObject) and value._has_method("__getstate__")):  # type: ignore[attr-defined]
        return None
    found: list[torch.Tensor] = []

    def walk(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            for part in item:
                walk(part)
        else:
            found.extend(_packed_tensors(item) or ())

    with _disable_current_modes():
        walk(value.__getstate__())
    # the state may hold a bias both on its own and inside a packed object
    unique = {(t.data_ptr(), tuple(t.shape)): t for t in found}
    return list(unique.values())


def _plain(value: Any) -> ArgValue:
    """An operator argument as a record value: tensors become TensorMeta, the rest plain."""
    if isinstance(value, torch.Tensor):
        return meta_of(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, torch.SymInt):
        return int(value)
    unpacked = _unpacked(value)
    if unpacked is not None:
        return tuple(_plain(t) for t in unpacked)
    return str(value)


def _named_tensors(name: str, value: Any) -> Iterator[tuple[str, TensorMeta]]:
    if isinstance(value, torch.Tensor):
        yield name, meta_of(value)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _named_tensors(f"{name}[{i}]", item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _named_tensors(f"{name}[{key!r}]", item)


def _op_call(
    func: torch._ops.OpOverload,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    out: Any,
    reads_weight: bool = False,
) -> OpCall:
    """The record of one operator call, of the forward or the backward pass."""
    return OpCall(
        op=str(func),
        args=tuple(_plain(a) for a in args),
        kwargs=tuple((k, _plain(v)) for k, v in kwargs.items()),
        outputs=_outputs(out),
        reads_weight=reads_weight,
    )


def _outputs(value: Any) -> tuple[TensorMeta, ...]:
    if isinstance(value, torch.Tensor):
        return (meta_of(value),)
    return tuple(meta_of(t) for t in tree_leaves(value) if isinstance(t, torch.Tensor))


class _Frame:
    """A module call in progress (a plain slotted class: one is made per module call)."""

    __slots__ = (
        "backward",
        "closed",
        "index",
        "inputs",
        "name",
        "opened",
        "ops",
        "outputs",
        "quiet",
        "raised",
        "sources",
        "start",
    )

    def __init__(
        self,
        name: str,
        index: int,
        inputs: tuple[tuple[str, TensorMeta], ...],
        sources: frozenset[int],
        quiet: bool,
    ) -> None:
        self.name = name
        self.index = index  # position in the trace's calls
        self.inputs = inputs
        self.sources = sources
        self.ops: list[OpCall] = []
        self.outputs: tuple[TensorMeta, ...] | None = None
        self.raised = False  # the call raised (a parent caught it, or the pass failed here)
        self.start = 0  # with a backward pass: the autograd sequence number when the call began
        self.backward: list[OpCall] = []
        self.quiet = quiet  # a childless module whose operators are not recorded (is_quiet)
        self.opened = self.closed = 0  # with peak memory: the lifetime ticks it ran between


_UNTAGGED: frozenset[int] = frozenset()


class _Tags:
    """Data-flow tags by tensor identity, for one pass: a dict keyed by ``id`` with a weak
    reference beside each entry, checked on every read, so that a tensor that died (and whose
    id a new tensor took) reads as untagged and no tensor is kept alive or compared by value.
    Several times cheaper per read and write than ``WeakIdKeyDictionary``, which makes a Python
    weak-reference object for every lookup; the entries of dead tensors stay until the pass
    ends, a few hundred bytes each."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[weakref.ref[torch.Tensor], frozenset[int]]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, tensor: torch.Tensor) -> frozenset[int]:
        entry = self._by_id.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            return _UNTAGGED
        return entry[1]

    def set(self, tensor: torch.Tensor, tags: frozenset[int]) -> None:
        self._by_id[id(tensor)] = (weakref.ref(tensor), tags)


# What a module call does to the data-flow tags of the tensors it returns.
_PRODUCES = 1  # a module with a formula: its outputs start a new tag (its call index)
_PASSES = 2  # a quiet childless module (norm, activation): outputs inherit the tags of inputs of
# the same shape, as the free operators it ran unseen would have passed them on
_NOTHING = 0  # containers and watched modules: the operators inside already tagged the outputs


class _Session(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Hooks and dispatch for one forward pass; ``stack`` holds the modules running."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # PyTorch wraps a mode's __torch_dispatch__ in torch._disable_dynamo unless this says
        # no. The wrapper imports torch._dynamo on first use (1.3 s in a fresh process, the
        # largest cost of a first profile) and adds a frame to every operator. The pass runs
        # eagerly, never under torch.compile, so there is nothing to disable.
        return False

    def __init__(self, values: Values | None, stand_ins: dict[int, torch.Tensor] | None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        # Zero compute: id of a parameter or buffer -> its meta stand-in (None when computing).
        self._stand_ins = stand_ins
        self.stack: list[_Frame] = []
        self.calls: list[_Frame] = []
        self.last_op: torch._ops.OpOverload | None = None
        self.modules: dict[int, tuple[str, bool, int]] = {}  # id(module) -> (name, quiet, role)
        # Data flow: tensor -> indices of the producing calls (see ModuleCall.sources).
        self.tags = _Tags()
        self.quiet: _Frame | None = None  # the childless module running with the mode popped
        self._values = values  # buffers to copy before an operator writes them (computing)
        self.thread = threading.get_ident()
        self.paused = 0  # > 0 while a nested convprof session runs inside this one
        self.intruder: str | None = None  # a module of the model called from another thread
        self.failed: _Frame | None = None  # the innermost call an exception left, since then
        # Backward pass: autograd nodes are claimed by the call that created them (sequence
        # number -> call index); ``weights`` holds the ids of the parameters as the graph has
        # them (their stand-ins in zero compute), for OpCall.reads_weight.
        self.grads = False
        self.in_backward = False
        self.nodes: dict[int, int] = {}
        self.weights: set[int] = set()
        self.backward_index: int | None = None  # the call whose gradient ran last
        # Peak memory: storage lifetimes, shown every operator's outputs (then no mode is
        # popped and no forward skipped, so that every allocation passes through here)
        self.lifetimes: Lifetimes | None = None
        self._op_classes: dict[
            torch._ops.OpOverload, tuple[OpClass, bool, Shortcut | None, Shortcut | None]
        ] = {}

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
        out = None
        if self._stand_ins is not None and with_values is not None:
            out = with_values(func, args, kwargs)
        if out is None and self._stand_ins is not None and self._needs_meta(args, kwargs):
            args = tuple(self._metas(a) for a in args)
            if kwargs:
                kwargs = {k: self._metas(v) for k, v in kwargs.items()}
            # A mode below this one (a user's FlopCounterMode around profile()) must see the
            # operator itself, so the stand-in is used only when no other mode is active.
            if shortcut is not None and not torch._C._len_torch_dispatch_stack():
                out = shortcut(func, args, kwargs)
        elif self._values and (mutable or (func in _WRITES_UNDECLARED and _trains(args, kwargs))):
            self._values.before_write(args)
        if out is None:
            out = func(*args, **kwargs)
        if self.lifetimes is not None:
            self.lifetimes.see(func, out, args, kwargs, self._owner())
        if self.in_backward:
            if op_class is not OpClass.FREE:
                self._record_gradient(func, args, kwargs, out)
            return out
        if self.stack and self.stack[-1].quiet:  # zero compute inside a quiet module: see above
            return out
        if op_class is OpClass.FREE:
            if len(self.tags):
                self._pass_tags(args, out)
        elif self.stack:
            self.stack[-1].ops.append(_op_call(func, args, kwargs, out))
        return out

    def _owner(self) -> int:
        """The call an allocation is made by: the innermost running, or in the backward pass
        the one whose autograd node runs (-1: none, as for the loss and the optimizer)."""
        if self.in_backward:
            node = torch._C._current_autograd_node()
            return self.nodes.get(node._sequence_nr(), -1) if node is not None else -1
        return self.stack[-1].index if self.stack else -1

    def _record_gradient(
        self, func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
    ) -> None:
        """An operator of the backward pass, recorded on the call whose autograd node runs it.
        Operators outside any node the model's calls created (the loss's own gradient, the
        engine summing gradients) belong to no layer and are not recorded."""
        node = torch._C._current_autograd_node()
        index = self.nodes.get(node._sequence_nr()) if node is not None else None
        if index is None:
            return
        self.calls[index].backward.append(
            _op_call(func, args, kwargs, out, reads_weight=any(self._is_weight(a) for a in args))
        )

    def _is_weight(self, value: Any) -> bool:
        if not isinstance(value, torch.Tensor):
            return False
        base = value._base
        return id(value) in self.weights or (base is not None and id(base) in self.weights)

    def claim(self, frame: _Frame, output: Any, before: int = _LEAF_NODE) -> None:
        """Give a call the autograd nodes it created: those reachable from its outputs that
        are newer than the call, less those a call inside it claimed already (the walk goes
        on through them, to what this call computed before calling them). What a module made
        without returning it (a cache it keeps) falls to its parent. ``before``: the sequence
        number from which nodes are not the call's (made after it returned)."""
        todo = [
            t.grad_fn for t in tree_leaves(output) if isinstance(t, torch.Tensor) and t.grad_fn is not None
        ]
        seen: set[int] = set()
        while todo:
            node = todo.pop()
            seq = node._sequence_nr()
            if seq < frame.start or seq in seen:
                continue
            seen.add(seq)
            if seq >= before:  # made after the call returned (the loss): not its, but leads to it
                todo.extend(next_node for next_node, _ in node.next_functions if next_node is not None)
                continue
            owner = self.nodes.setdefault(seq, frame.index)
            if owner < frame.index:  # made by an earlier call (a new node cannot be)
                continue
            if owner == frame.index:  # so that a gradient that raises can be placed
                node.register_prehook(functools.partial(self._entered, owner))
            todo.extend(next_node for next_node, _ in node.next_functions if next_node is not None)

    def _entered(self, index: int, grads: Any) -> None:
        self.backward_index = index

    def _sources(self, args: tuple[Any, ...]) -> frozenset[int]:
        tags: frozenset[int] = frozenset()
        for arg in args:
            if isinstance(arg, torch.Tensor):
                tags = tags | self.tags.get(arg)
        return tags

    def _pass_tags(self, args: tuple[Any, ...], out: Any) -> None:
        """Tag the first output of a shape-preserving operator or module with the tags of its
        positional inputs of the same shape: ``bn(x)``, ``relu(x)``, ``x * scale``, ``x + y``."""
        first = out if isinstance(out, torch.Tensor) else None
        if first is None and isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            first = out[0]
        if first is None or first.is_nested:
            return
        if len(args) == 1:  # a module's single input (bn, relu): the common case, inline
            only = args[0]
            if isinstance(only, torch.Tensor) and not only.is_nested and only.shape == first.shape:
                tags = self.tags.get(only)
                if tags:
                    self.tags.set(first, tags)
            return
        shape = first.shape
        tags = self._sources(
            tuple(a for a in args if isinstance(a, torch.Tensor) and not a.is_nested and a.shape == shape)
        )
        if tags:
            self.tags.set(first, tags)

    def _meta(self, tensor: torch.Tensor) -> torch.Tensor:
        """A meta tensor like ``tensor`` (itself when it is one): no data is read or copied."""
        if tensor.is_meta:
            return tensor
        assert self._stand_ins is not None
        known = self._stand_ins.get(id(tensor))
        if known is not None:
            return known
        return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="meta")

    def _needs_meta(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether a zero-compute operator touches a meta tensor or the model's own tensors.
        One that does not works only on small real tensors (the caller's lengths or masks, or
        what the model made from them) and runs for real: ``lengths.max().item()`` works."""
        assert self._stand_ins is not None
        for value in (*args, *kwargs.values()):
            for tensor in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(tensor, torch.Tensor) and (tensor.is_meta or id(tensor) in self._stand_ins):
                    return True
        return False

    def meta_copy(self, value: Any, memo: dict[int, Any], depth: int) -> Any:
        """The caller's inputs for a zero-compute pass: tensors as meta stand-ins, and every
        container or object holding them (a transformers cache, a dataclass) copied, so that
        nothing the caller owns is touched when the model writes into it. Aliases stay
        aliases (``memo``); modules, classes and objects nested deeper than 8 are shared."""
        known = memo.get(id(value))
        if known is not None:
            return known
        copied: Any = value
        if isinstance(value, torch.Tensor):
            copied = value if steers(value) else self._meta(value)
            if copied is value and value.is_meta and self.lifetimes is not None:
                # peak memory: a storage of the copy's own, which dies when the model replaces it
                # (a key/value cache's tensors do, step by step), as the caller's reference would
                # otherwise keep it alive
                copied = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=_META)
            if value.requires_grad and not copied.requires_grad:  # a backward pass wants its gradient
                copied = copied.detach().requires_grad_()
        elif depth > 8 or isinstance(value, (nn.Module, type, str, bytes, int, float, bool)) or value is None:
            return value
        elif isinstance(value, (list, tuple)):
            items = [self.meta_copy(v, memo, depth + 1) for v in value]
            copied = type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
        elif isinstance(value, dict):
            copied = copy.copy(value)
            for key, item in value.items():
                copied[key] = self.meta_copy(item, memo, depth + 1)
        elif hasattr(value, "__dict__") and not callable(value):
            copied = copy.copy(value)
            for key, item in vars(value).items():
                vars(copied)[key] = self.meta_copy(item, memo, depth + 1)
        memo[id(value)] = copied
        return copied

    def _metas(self, value: Any) -> Any:
        """``value`` with every tensor in it (also inside lists, as for ``cat``) made meta."""
        if isinstance(value, torch.Tensor):
            return value if value.is_meta else self._meta(value)
        if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
            return type(value)(self._metas(v) for v in value)
        return value

    def skip_forwards(self, named: list[tuple[str, nn.Module]]) -> list[nn.Module]:
        """Zero compute without a backward pass: give each quiet built-in layer that has a
        module stand-in (meta_shapes) a forward of its own that makes its output directly, and
        return those modules (the caller takes the forwards away; the state's restore would
        too). A backward pass needs the operators' autograd graph, so it keeps them all."""
        skipped = []
        shortcuts: dict[type, ModuleShortcut | None] = {}
        for name, module in named:
            kind = type(module)
            if kind not in shortcuts:
                shortcuts[kind] = module_shortcut_for(kind)
            shortcut = shortcuts[kind]
            if shortcut is not None and self.modules[id(module)][1] and not shadows_its_class(module):
                module.__dict__["forward"] = self._skipping(module, name, shortcut)
                skipped.append(module)
        return skipped

    def _skipping(self, module: nn.Module, name: str, shortcut: ModuleShortcut) -> Callable[..., Any]:
        real = functools.partial(type(module).forward, module)

        def forward(*args: Any, **kwargs: Any) -> Any:
            # Only for a call this session opened a frame for (not ``module.forward(x)`` called
            # by other code, whose operators are recorded on the caller), with no other mode
            # on the stack (a mode pushed by the model, or a user's mode around profile(),
            # must see the operators).
            if (
                not kwargs
                and self.stack
                and self.stack[-1].name == name
                and not self.paused
                and torch._C._len_torch_dispatch_stack() == 1
            ):
                with torch._C._DisableTorchDispatch():
                    out = shortcut(module, args)
                if out is not None:
                    return out
            return real(*args, **kwargs)

        return forward

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

    def _refuse(self, name: str) -> None:
        """A module of the model called from another thread while it is profiled."""
        self.intruder = name
        raise RuntimeError(
            f"module '{name or '(root)'}' was called from another thread while convprof is "
            "profiling its model; run it after profile() returns"
        )

    def pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Global forward pre-hook: open a frame for a module of the model (others pass by).
        Global pre-hooks see no keyword arguments; the post-hook adds their tensors."""
        # Only this session's own calls, and only from its thread (a call from another thread
        # is refused when it starts and ignored when it ends); the checks are inline, as this
        # runs for every module call.
        known = self.modules.get(id(module))
        if known is None or self.paused:
            return
        if threading.get_ident() != self.thread:
            self._refuse(known[0])
        name, quiet, _ = known
        if self.quiet is not None:  # restore_mode(), inline
            self.quiet = None
            _stack_push(self)
        self.failed = None
        frame = _Frame(
            name,
            len(self.calls),
            (("0", meta_of(args[0])),)  # the common case, without the generators
            if len(args) == 1 and isinstance(args[0], torch.Tensor)
            else tuple(item for i, a in enumerate(args) for item in _named_tensors(str(i), a)),
            self._sources(args) if len(self.tags) else _UNTAGGED,
            quiet,
        )
        if self.grads:
            frame.start = torch._C._autograd._get_sequence_nr()
        if self.lifetimes is not None:
            frame.opened = frame.closed = self.lifetimes.ticks
        self.stack.append(frame)
        self.calls.append(frame)
        # Only this session's own mode is popped: a mode the model pushed itself stays. Zero
        # compute keeps it: the operators need their stand-ins.
        if (
            quiet
            and self._stand_ins is None
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
            if frame.name != name:
                continue
            if self.lifetimes is not None:
                frame.closed = self.lifetimes.ticks
            if raised:
                frame.raised = True
                if self.failed is None:
                    self.failed = frame
                return
            self.failed = None
            frame.outputs = _outputs(output)
            if self.grads:
                self.claim(frame, output)
            if role == _PRODUCES:
                tag = frozenset({frame.index})
                for tensor in (output,) if isinstance(output, torch.Tensor) else tree_leaves(output):
                    if isinstance(tensor, torch.Tensor):
                        self.tags.set(tensor, tag)
            elif role == _PASSES and len(self.tags):
                self._pass_tags(args, output)
            if kwargs:
                frame.inputs += tuple(item for k, v in kwargs.items() for item in _named_tensors(k, v))
            return


class _DeviceAttention(TorchFunctionMode):
    """Zero compute with peak memory: ``F.scaled_dot_product_attention`` on meta tensors runs
    the kernel the target device would (see :mod:`convprof.fused_attention`), not the math
    path, whose attention matrix the device never holds."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is _SDPA:
            with _disable_current_modes():
                kind = fused_attention.backend(self.device, args, kwargs)
            if kind is not None:
                return fused_attention.run(kind, args, kwargs)
        return func(*args, **kwargs)


_SDPA = torch.nn.functional.scaled_dot_product_attention


class _Autocast(TorchFunctionMode):
    """Mixed precision as ``device``'s autocast would run it (see :mod:`convprof.autocast`),
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


class _Composites:
    """Functions that work above the dispatcher, where no operator shows what they do:
    ``torch.linalg.vecdot`` decomposes into a multiplication and a sum (free under the
    convention), and ``torch.tensor`` / ``torch.as_tensor`` make a tensor from Python data
    below it. For the pass, ``torch.linalg.vecdot`` is a wrapper that runs the original and
    records the call as the operator ``aten.linalg_vecdot`` on the running module (a formula
    counts it); in a zero-compute pass the two makers keep small integer tables real
    (:func:`convprof.meta_shapes.literal`). All are put back after, also when the forward
    raises. A call from another thread, or while a nested profile runs, only runs the
    original. A model that bound a function before the pass (``from torch.linalg import
    vecdot``) is not seen."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.original: Any = None
        self.makers: tuple[Any, Any] | None = None

    def __enter__(self) -> None:
        original = self.original = torch.linalg.vecdot
        session = self.session
        if session._stand_ins is not None:
            self.makers = (torch.tensor, torch.as_tensor)
            torch.tensor, torch.as_tensor = (_maker(session, make) for make in self.makers)

        def vecdot(x: torch.Tensor, y: torch.Tensor, *, dim: int = -1, out: Any = None) -> torch.Tensor:
            result: torch.Tensor = original(x, y, dim=dim, out=out)
            if session.stack and not session.paused and threading.get_ident() == session.thread:
                call = _op_call(_VECDOT_OP, (x, y), {"dim": dim}, result)
                session.stack[-1].ops.append(call)
            return result

        torch.linalg.vecdot = vecdot

    def __exit__(self, *exc: object) -> None:
        torch.linalg.vecdot = self.original
        if self.makers is not None:
            torch.tensor, torch.as_tensor = self.makers


def _maker(session: _Session, make: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def maker(data: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not args and session.stack and not session.paused and threading.get_ident() == session.thread:
            made = literal(make, data, kwargs)
            if made is not None:
                return made
        return make(data, *args, **kwargs)

    return maker


_VECDOT_OP = torch.ops.aten.linalg_vecdot.default


@contextlib.contextmanager
def _autocast_region(autocast: tuple[torch.dtype, str] | None) -> Iterator[None]:
    """The forward under mixed precision to ``autocast``'s (dtype, device): PyTorch's own
    autocast state on for the device (what the model's code may read, and the real casts of a
    computing pass on that device), the mode on top of the function-mode stack, and, at the
    end, autocast's caches emptied."""
    if autocast is None:
        yield
        return
    dtype, device = autocast
    casting = _Autocast(dtype, device)
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


# The sessions running in this thread, outermost first (a profile() inside a model's forward).
_LOCAL = threading.local()


def _sessions() -> list[_Session]:
    sessions: list[_Session] | None = getattr(_LOCAL, "sessions", None)
    if sessions is None:
        sessions = _LOCAL.sessions = []
    return sessions


_SCALAR_TYPES = (bool, int, float, str)
_SCALARS = frozenset(_SCALAR_TYPES)


def _plain_value(value: Any) -> bool:
    scalar = isinstance(value, _SCALAR_TYPES) or value is None
    return scalar or (isinstance(value, tuple) and all(isinstance(v, _SCALAR_TYPES) for v in value))


def _config(module: nn.Module) -> tuple[tuple[str, Plain], ...]:
    """The module's public plain attributes (in_features, num_heads, ...), for formulas: scalars,
    None, and tuples of scalars. Exact types are checked first, at C speed; subclasses (an
    IntEnum, a NumPy float) take the general check."""
    items: list[tuple[str, Plain]] = []
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training":
            continue
        kind = type(value)
        if (
            kind in _SCALARS
            or value is None
            or (kind is tuple and _SCALARS.issuperset(map(type, value)))
            or _plain_value(value)
        ):
            items.append((key, value))
    return tuple(items)


def _conv_spec(module: nn.Module) -> ConvSpec | None:
    if not isinstance(module, nn.modules.conv._ConvNd):
        return None
    padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
    return ConvSpec(
        in_channels=module.in_channels,
        out_channels=module.out_channels,
        kernel_size=tuple(module.kernel_size),
        stride=tuple(module.stride),
        padding=padding,
        dilation=tuple(module.dilation),
        groups=module.groups,
        transposed=module.transposed,
    )


def _no_op(module: nn.Module, args: Any) -> None:
    return None


def _has_children(module: nn.Module) -> bool:
    children = module._modules
    return bool(children) and any(child is not None for child in children.values())


def _roles(name: str, module: nn.Module) -> tuple[str, bool, int]:
    """(name, quiet, data-flow role) of a module of the model."""
    quiet = is_quiet(type(module)) and not _has_children(module)
    if module_formula(type(module)) is not None:
        return name, quiet, _PRODUCES
    return name, quiet, _PASSES if quiet else _NOTHING


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _params(module: nn.Module, ident: Callable[[torch.Tensor], int]) -> tuple[ParamInfo, ...]:
    """The parameters a module owns directly, packed ones (quantized kernels) included."""
    params = [
        ParamInfo(pname, ident(p), tuple(p.shape), p.element_size(), p.requires_grad, _dtype(p))
        for pname, p in module._parameters.items()
        if p is not None and not nn.parameter.is_lazy(p)
    ]
    packed = [(attr, v) for attr, v in vars(module).items() if type(v) is torch.ScriptObject]
    for attr, value in packed:
        tensors = _packed_tensors(value)
        params.extend(
            ParamInfo(f"{attr}.{i}", hash((id(value), i)), tuple(t.shape), t.element_size(), False, _dtype(t))
            for i, t in enumerate(tensors or ())
        )
    return tuple(params)


def _module_info(name: str, module: nn.Module, ident: Callable[[torch.Tensor], int]) -> ModuleInfo:
    """What a module is. ``ident``: the key of a parameter or buffer (its id, or in zero
    compute the id of the tensor a stand-in stands for, so that both passes agree)."""
    params = _params(module, ident)
    return ModuleInfo(
        name=name,
        type=type(module),
        params=params,
        # Only formulas read attributes; scanning every module's __dict__ costs time.
        config=_config(module) if module_formula(type(module)) is not None else (),
        conv=_conv_spec(module),
        has_children=_has_children(module),
        moves_memory=moves_memory(type(module)),
        buffers=tuple(
            ParamInfo(bname, ident(b), tuple(b.shape), b.element_size(), False, _dtype(b))
            for bname, b in module._buffers.items()
            if b is not None and not nn.parameter.is_lazy(b)
        ),
    )


# What was read from each module, kept for its next profile (a sweep over input sizes, a loop
# in a notebook, a CI job over variants), where reading it again is a good part of the cost for
# a small network. An entry is reused only when every fact it was read from is the same (see
# _facts), so a module changed in between is read afresh. Keyed by id() with a weak reference
# checked on every read (a module class may define __eq__ and so not be hashable): a module
# that goes away takes its entry with it, and an entry holds no tensor and no module.
_INFOS: dict[int, tuple[weakref.ref[nn.Module], tuple[Any, ...], ModuleInfo]] = {}


def _forget(key: int, gone: weakref.ref[nn.Module]) -> None:
    entry = _INFOS.get(key)
    if entry is not None and entry[0] is gone:  # not a newer module that took the id
        del _INFOS[key]


def _tensor_facts(table: dict[str, Any], ident: Callable[[torch.Tensor], int]) -> tuple[Any, ...]:
    if not table:
        return ()
    return tuple(
        (key, ident(t), type(t), t.shape, t.dtype, t.requires_grad)
        for key, t in table.items()
        if t is not None
    )


def _facts(name: str, module: nn.Module, ident: Callable[[torch.Tensor], int]) -> tuple[Any, ...] | None:
    """Everything :func:`_module_info` reads from a module, in a form compared by value: its
    name, class, children or not, each parameter's and buffer's key, class (lazy or not),
    shape, dtype and requires_grad, and for a module with a formula its plain attributes. None
    for a module holding packed parameters, which is read every time."""
    if torch.ScriptObject in map(type, module.__dict__.values()):
        return None
    kind = type(module)
    with_config = module_formula(kind) is not None or isinstance(module, nn.modules.conv._ConvNd)
    return (
        name,
        kind,
        _has_children(module),
        _tensor_facts(module._parameters, ident),
        _tensor_facts(module._buffers, ident),
        _config(module) if with_config else None,
    )


def _read_info(name: str, module: nn.Module, ident: Callable[[torch.Tensor], int]) -> ModuleInfo:
    """The module's :class:`ModuleInfo`, from the last profile when nothing it says changed."""
    facts = _facts(name, module, ident)
    key = id(module)
    if facts is not None:
        known = _INFOS.get(key)
        if known is not None and known[0]() is module and known[1] == facts:
            return known[2]
    info = _module_info(name, module, ident)
    if facts is not None:
        _INFOS[key] = (weakref.ref(module, functools.partial(_forget, key)), facts, info)
    return info


def _describe(frame: _Frame, module: nn.Module, exc: BaseException) -> str:
    inputs = frame.inputs
    if frame.raised:
        inputs += _raised_kwargs(module, exc)
    shapes = ", ".join(f"{name}: {format_shape(meta.shape)}" for name, meta in inputs)
    return f"with inputs ({shapes})" if shapes else "with no tensor inputs"


def _raised_kwargs(module: nn.Module, exc: BaseException) -> tuple[tuple[str, TensorMeta], ...]:
    """The keyword inputs of a module call that raised. The forward hook that records them is
    not given them then (PyTorch passes keyword arguments to an always-called global hook only
    when the forward returns), so they are read from the call's frame in the traceback."""
    call = nn.Module._call_impl.__code__
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        if frame.f_code is call and frame.f_locals.get("self") is module:
            kwargs = frame.f_locals.get("kwargs")
            if isinstance(kwargs, dict):
                return tuple(item for k, v in kwargs.items() for item in _named_tensors(k, v))
    return ()


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


_META = torch.device("meta")


def _stand_in(tensor: torch.Tensor) -> torch.Tensor:
    """A meta tensor like one of the model's own; a real copy of a small integer or boolean
    buffer, which steers as the caller's lengths do (EnCodec keeps its convolutions' strides
    and paddings in buffers and computes its padding from them; BatchNorm counts batches)."""
    if not isinstance(tensor, nn.Parameter) and not tensor.dtype.is_floating_point and steers(tensor):
        return tensor.clone()
    meta = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device=_META)
    if isinstance(tensor, nn.Parameter):  # what nn.Parameter(meta) does, without its Python
        return torch.Tensor._make_subclass(nn.Parameter, meta, tensor.requires_grad)
    return meta


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
    The model comes back exactly as it was (see :mod:`convprof.state`): hooks removed,
    ``training`` flags, attributes, parameters and buffers restored, also when the forward
    raises (then ForwardError).

    ``backward=True`` runs the forward with gradients enabled, then the gradient of
    ``loss(output)`` (default: the sum of every floating output that requires grad) with
    respect to the parameters that require grad and the inputs that do, through
    ``torch.autograd.grad``: the same operators ``loss.backward()`` runs, but nothing is
    accumulated into ``.grad``. Each backward operator is recorded on the module call whose
    autograd node runs it.

    ``memory`` (``"cpu"`` or ``"cuda"``, the device whose allocator is predicted) also records
    storage lifetimes (:mod:`convprof.lifetimes`). With a backward pass the step is a training
    step: the forward runs in training mode (restored after), the gradients are held as
    ``.grad`` would hold them, and ``optimizer`` (see :mod:`convprof.optimizers`) runs its
    update on meta copies of the trainable parameters, its state held from the start.

    ``autocast`` (a lower-precision dtype and the device whose policy applies) runs the forward
    under mixed precision (see :mod:`convprof.autocast`); the backward and the update run as
    they do after an autocast region.
    """
    with collector_paused():
        return _record(
            model,
            args,
            kwargs,
            compute=compute,
            backward=backward,
            loss=loss,
            memory=memory,
            optimizer=optimizer,
            autocast=autocast,
        )


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


def _record(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    compute: bool,
    backward: bool,
    loss: Callable[[Any], torch.Tensor] | None,
    memory: str | None = None,
    optimizer: str | None = None,
    autocast: tuple[torch.dtype, str] | None = None,
) -> Trace:
    named = list(model.named_modules())
    owned = _owned(named)
    leaves = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    computing = compute and not any(t.is_meta for t in owned) and not any(t.is_meta for t in leaves)
    if backward and not computing and any(isinstance(m, torch.jit.ScriptModule) for _, m in named):
        # A script's gradient runs in TorchScript's own graph executor, which a zero-compute
        # pass does not see into (it would count nothing): refuse, as for any operator that
        # needs real tensors, so that compute="auto" counts it with a real pass.
        raise ValuesNeeded(
            f"zero-compute backward pass of {type(model).__name__}: a TorchScript module's gradient "
            "runs inside TorchScript and needs real tensors; profile with compute=True and real inputs"
        )
    lazy = None if computing else _lazy(named, owned)
    if lazy is not None:
        # a lazy module's parameters take their shapes from its first real input
        raise ValuesNeeded(
            f"zero-compute pass of {type(model).__name__}: module '{lazy[0] or '(root)'}' "
            f"({type(lazy[1]).__name__}) has lazy parameters that its first forward sizes; profile "
            "with compute=True and real inputs"
        )
    unfollowed = unfollowed_kernel(named, memory) if memory is not None and not computing else None
    if unfollowed is not None:
        raise ValuesNeeded(
            f"zero-compute peak memory of {type(model).__name__}: {unfollowed}; profile with "
            "compute=True and real inputs"
        )
    state = ModelState([m for _, m in named])
    if computing:
        session = _Session(Values(owned), None)
    else:
        session = _Session(None, {id(t): _stand_in(t) for t in owned if not t.is_meta})
    session.grads = backward
    session.modules = {id(m): _roles(name, m) for name, m in named}
    # Two global hooks cost less than a pair per module (registration, removal); they ignore
    # modules that are not part of the model.
    handles = []
    skipped: list[nn.Module] = []
    outer = _sessions()
    held = HeldSignals()
    try:
        handles.append(register_module_forward_pre_hook(session.pre_hook))
        handles.append(register_module_forward_hook(session.post_hook, with_kwargs=True, always_call=True))
        # nn.TransformerEncoderLayer swaps in one fused kernel in inference unless a hook is
        # attached to it; a no-op hook keeps every pass (computing, zero-compute, meta) on the
        # same path, so all give the same rows, sub-layers included.
        handles.extend(
            m.register_forward_pre_hook(_no_op) for _, m in named if isinstance(m, nn.TransformerEncoderLayer)
        )
        state.set_eval(training=backward and memory is not None)
        step = None
        memory_trace = None
        if memory is not None:
            session.lifetimes, step = _held(named, session, memory, optimizer)
        call_args, call_kwargs = args, kwargs
        if session._stand_ins is not None:
            state.point_at(session._stand_ins)
            call_args, call_kwargs = session.meta_copy((args, kwargs), {}, 0)
            if not backward and memory is None:
                skipped = session.skip_forwards(named)
        if session.lifetimes is not None:
            session.lifetimes.hold((call_args, call_kwargs), "input")
            session.lifetimes.mark("held")
        for running in outer:
            running.paused += 1
        outer.append(session)
        attention = (
            _DeviceAttention(memory)
            if memory is not None and session._stand_ins is not None
            else contextlib.nullcontext()
        )
        with torch.enable_grad() if backward else torch.no_grad(), attention, session, _Composites(session):
            try:
                try:
                    with _autocast_region(autocast):
                        output = model(*call_args, **call_kwargs)
                except Exception as exc:
                    raise _forward_error(model, named, session, exc, computing) from exc
                lifetimes = session.lifetimes
                if lifetimes is not None:
                    lifetimes.role(output, "output")
                    lifetimes.mark("forward")
                if backward:
                    returned = torch._C._autograd._get_sequence_nr()
                    grads = _gradients(
                        model, named, session, output, loss, (call_args, call_kwargs), returned
                    )
                    if lifetimes is not None:
                        _step(lifetimes, step, grads)
                if lifetimes is not None:
                    memory_trace = lifetimes.close([(f.opened, f.closed) for f in session.calls], optimizer)
            finally:
                held.hold()  # from here until the model is back, an interrupt waits
                session.finish()
        if session.intruder is not None:
            raise ForwardError(
                f"module '{session.intruder or '(root)'}' of {type(model).__name__} was called from another "
                "thread while convprof was profiling it; that call was refused. Profile a model that no "
                "other thread runs, or a copy of it"
            )
        # Read before the state is put back: a lazy module knows its sizes only now.
        if session._stand_ins is None:
            ident: Callable[[torch.Tensor], int] = id
        else:
            originals = {id(stand_in): key for key, stand_in in session._stand_ins.items()}

            def ident(tensor: torch.Tensor) -> int:
                return originals.get(id(tensor), id(tensor))

        infos = {name: _read_info(name, module, ident) for name, module in named}
    finally:
        held.hold()
        try:
            if outer and outer[-1] is session:
                outer.pop()
                for running in outer:
                    running.paused -= 1
            for handle in handles:
                handle.remove()
                # PyTorch's handle forgets this table (every profile() would leave an entry, and
                # with it a global-hooks flag that slows every later forward and warns in compile)
                _module_globals._global_forward_hooks_with_kwargs.pop(handle.id, None)
                _module_globals._global_forward_hooks_always_called.pop(handle.id, None)
            for module in skipped:
                module.__dict__.pop("forward", None)
            state.restore()
            if session._values is not None:
                session._values.restore()
        finally:
            held.release()
    calls = tuple(
        ModuleCall(
            infos[f.name],
            f.inputs,
            f.outputs or (),
            tuple(f.ops),
            tuple(sorted(f.sources)),
            f.raised,
            tuple(f.backward),
        )
        for f in session.calls
    )
    inputs = tuple(item for _, item in _named_tensors("", (args, kwargs)))
    return Trace(
        type(model).__name__,
        inputs,
        tuple(infos.values()),
        calls,
        backward,
        memory_trace if memory is not None else None,
        str(autocast[0]).removeprefix("torch.") if autocast is not None else None,
    )


def _held(
    named: list[tuple[str, nn.Module]], session: _Session, device: str, optimizer: str | None
) -> tuple[Lifetimes, Step | None]:
    """What exists before a pass whose memory is tracked, the inputs aside: parameters and
    buffers (as the pass sees them: stand-ins in zero compute) and, for a training step, the
    optimizer's state, made on meta by a warm-up update outside the pass."""
    stand_ins = session._stand_ins or {}
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


def _step(lifetimes: Lifetimes, step: Step | None, grads: dict[int, torch.Tensor | None]) -> None:
    """After the backward pass: the gradients held as ``.grad`` holds them, then the
    optimizer's update on meta copies (its temporaries are allocations of the step)."""
    lifetimes.role(list(grads.values()), "gradient")
    lifetimes.mark("backward")
    if step is None:
        return
    with _disable_current_modes():
        metas = [meta_like(g) if (g := grads.get(key)) is not None else None for key in step.keys]
    step.run(metas)
    lifetimes.mark("step")


def _gradients(
    model: nn.Module,
    named: list[tuple[str, nn.Module]],
    session: _Session,
    output: Any,
    loss: Callable[[Any], torch.Tensor] | None,
    inputs: Any,
    returned: int,
) -> dict[int, torch.Tensor | None]:
    """The backward pass: the gradient of the loss with respect to every parameter that
    requires grad (as the graph has it: its stand-in in zero compute) and every input that
    does. ``torch.autograd.grad`` runs what ``loss.backward()`` would and writes no ``.grad``;
    the gradients come back by id of the tensor (a training step's memory holds them)."""
    params = [p for _, m in named for p in m._parameters.values() if p is not None]
    stand_ins = session._stand_ins or {}
    graph_params = [stand_ins.get(id(p), p) for p in params]
    session.weights = {id(p) for p in graph_params}
    wanted = {id(t): t for t in graph_params if t.requires_grad}
    for tensor in tree_leaves(inputs):
        if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
            wanted.setdefault(id(tensor), tensor)
    if loss is None:
        parts = [
            t.sum()
            for t in tree_leaves(output)
            if isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point()
        ]
        value = sum(parts[1:], parts[0]) if parts else None
        if value is None and wanted:
            raise TypeError(
                f"convprof: backward=True: the output of {type(model).__name__} "
                f"({type(output).__name__}) holds no floating tensor that requires grad where convprof "
                "looks (tensors, lists, tuples, dicts, registered pytrees); pass loss= to say what to "
                "differentiate"
            )
    else:
        value = loss(output)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            got = (
                f"a tensor of shape {format_shape(tuple(value.shape))}"
                if isinstance(value, torch.Tensor)
                else type(value).__name__
            )
            raise TypeError(f"convprof: loss(output) must return a tensor with one element, got {got}")
    if value is None or not value.requires_grad or not wanted:
        return {}  # nothing in the model requires grad: no backward runs
    if session.calls:
        # The model's own nodes that no call claimed (an output convprof cannot look into, which
        # the loss reached): the root's, up to where the forward returned; the loss's are not.
        session.claim(session.calls[0], value, before=returned)
    session.in_backward = True
    try:
        grads = torch.autograd.grad(value, list(wanted.values()), allow_unused=True)
        return dict(zip(wanted, grads, strict=True))
    except Exception as exc:
        index = session.backward_index
        where = (
            f" in the gradient of module '{session.calls[index].name or '(root)'}'"
            if index is not None
            else ""
        )
        raise ForwardError(
            f"backward pass of {type(model).__name__} failed{where}: {type(exc).__name__}: {_gist(exc)}"
        ) from exc
    finally:
        session.in_backward = False


def _forward_error(
    model: nn.Module, named: list[tuple[str, nn.Module]], session: _Session, exc: Exception, computing: bool
) -> ForwardError:
    running = session.failed or (session.stack[-1] if session.stack else None)
    where = (
        f"in module '{running.name or '(root)'}' ({_type_label(dict(named)[running.name])}) "
        f"{_describe(running, dict(named)[running.name], exc)}"
        if running is not None
        else "outside any module"
    )
    op = session.last_op
    if (
        not computing
        and op is not None
        and (any(tag in op.tags for tag in _VALUE_TAGS) or str(op).startswith("aten._local_scalar_dense"))
    ):
        return ValuesNeeded(
            f"zero-compute pass of {type(model).__name__} stopped {where}: {op} needs real tensor "
            "values (data-dependent shapes or .item()); profile with compute=True and real inputs"
        )
    if (
        not computing
        and any(word in str(exc).lower() for word in ("meta", "unallocated storage"))
        and not isinstance(exc, NotImplementedError)
    ):
        # The model's own code met a meta tensor where it wants a real one (it checks a
        # device, as pack_padded_sequence does for its lengths, or reads values: tolist() of
        # a meta tensor speaks of "unallocated storage", as JetMoE's router finds).
        return ValuesNeeded(
            f"zero-compute pass of {type(model).__name__} stopped {where}: {type(exc).__name__}: "
            f"{_gist(exc)}; the model needs real tensors there: profile with compute=True and real inputs"
        )
    if (
        not computing
        and op is not None
        and isinstance(exc, NotImplementedError)
        and ("Meta" in str(exc) or "fake impl" in str(exc))
    ):
        # No meta kernel: the operator cannot run without data (nested tensors from a mask,
        # some custom and backend-specific operators, the dynamically quantized kernels, whose
        # error speaks of a missing "fake impl"), which is the same remedy.
        return ValuesNeeded(
            f"zero-compute pass of {type(model).__name__} stopped {where}: PyTorch has no meta "
            f"implementation of {op}, so it needs real tensors; profile with compute=True and real inputs"
        )
    return ForwardError(
        f"forward pass of {type(model).__name__} failed {where}: {type(exc).__name__}: {_gist(exc)}"
    )


def _type_label(module: nn.Module) -> str:
    """A module's class as an error names it: a quantized one with its package, since its
    plain name (``Linear``) reads as the float layer's."""
    kind = type(module)
    if ".quantized." not in f"{kind.__module__}.":
        return kind.__name__
    parts = kind.__module__.split(".")
    package = ".".join(parts[: parts.index("modules")] if "modules" in parts else parts)
    return f"{package}.{kind.__name__}"


def _gist(exc: Exception) -> str:
    """A long message (TorchScript's carries the script's stack) as its first and last lines."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) <= 2:
        return " ".join(lines)
    return f"{lines[0]} ... {lines[-1]}"


@contextlib.contextmanager
def leaf_hooks(
    model: nn.Module, before: Callable[[str], None], after: Callable[[str], None]
) -> Iterator[None]:
    """Call ``before(name)`` and ``after(name)`` around every call of the model's leaf modules
    (no children), for measurements; the hooks are removed on the way out, whatever happens.
    The only other place that installs hooks: the recording above."""
    names = {id(m): name for name, m in model.named_modules() if not _has_children(m)}

    def pre(module: nn.Module, args: Any) -> None:
        name = names.get(id(module))
        if name is not None:
            before(name)

    def post(module: nn.Module, args: Any, *rest: Any) -> None:
        name = names.get(id(module))
        if name is not None:
            after(name)

    handles = [register_module_forward_pre_hook(pre)]
    try:
        handles.append(register_module_forward_hook(post, always_call=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
