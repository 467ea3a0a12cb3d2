"""The model state a profiling pass may change, and putting it back.

A forward pass can change a model in more ways than its tensors' values: it may store a tensor
as a plain attribute (``self.last = y``), grow a cache (``self.max_seq_len_cached = n`` with a
re-registered buffer), register a buffer lazily, materialise a lazy module (which also changes
its class), or rebind a buffer (``self.buf += 1`` on a meta stand-in makes a new tensor). A
zero-compute pass must, besides, point the model's own references to its parameters at meta
stand-ins, including references held outside ``_parameters`` (``nn.LSTM._flat_weights``), so
that operators whose composite code compares devices before any kernel runs see meta tensors.

:class:`ModelState` takes a shallow snapshot of every module (its class, ``__dict__``, the
``_parameters``, ``_buffers`` and ``_modules`` tables and its forward and backward hook tables,
by identity, never comparing tensors by value) and puts each entry back afterwards, removing
what was added: a forward that registers hooks (transformers' output capture, a lazy module
removing its initialising hook) leaves the model as it found it. The contents of the plain
dicts, lists and sets a module holds are put back too, in the same objects: a cache that the
forward fills in place (timm's LeViT and EfficientFormer keep their attention biases in a dict
keyed by device) is left as empty as it was, not holding a meta tensor or a tensor with a graph.
:class:`Values` keeps copies of the buffers that operators write in place, taken just before
the first write.

TorchScript modules keep their state in C++: only their ``training`` flag is set and put back,
through the script module's own attribute.
"""

from __future__ import annotations

import operator
import signal
import threading
from typing import Any

import torch
from torch import nn

# A module's tables of parameters, buffers and children (the recorder walks what is beside them).
TABLES = ("_parameters", "_buffers", "_modules")
# nn.Module's own attributes (its tables, hook dicts): the containers a model adds are the
# ones whose contents are put back here; the tables and hook dicts are put back on their own.
_OWN_CONTAINERS = frozenset(vars(nn.Module()))
# nn.Module's forward and backward hook tables, fetched in one call. A forward may register
# hooks of its own (transformers installs its output-capturing hooks on the first call that asks
# for hidden states, and marks the model as hooked with a plain attribute): the attribute is put
# back, so the hooks must be too, or the next call installs them again beside the ones left and
# LLaVA's image features come out None.
_hook_tables = operator.itemgetter(
    *(name for name in vars(nn.Module()) if name.startswith(("_forward", "_backward")) and "hooks" in name)
)
_NO_NAMES: frozenset[str] = frozenset()


class _Missing:
    pass


_MISSING = _Missing()


def _is_script(module: nn.Module) -> bool:
    return isinstance(module, torch.jit.ScriptModule)


class ModelState:
    """A snapshot of the Python state of ``modules``; :meth:`restore` puts it back."""

    def __init__(self, modules: list[nn.Module]) -> None:
        # (module, class, __dict__, its tables, non-persistent names); empty tables and sets as
        # None: most modules have few, and every container allocated here costs garbage
        # collection time later in the pass.
        self._python: list[
            tuple[nn.Module, type, dict[str, Any], tuple[dict[str, Any] | None, ...], set[str] | None]
        ] = []
        self._script: list[tuple[nn.Module, bool]] = []
        # (a dict, list or set a module holds, a copy of its contents or None when empty)
        self._containers: list[tuple[Any, Any]] = []
        # (module, attribute) holding a list or tuple of tensors, for point_at
        self._tensor_lists: list[tuple[nn.Module, str]] = []
        # id of a module with hooks: the entries of each of its hook tables (most have none)
        self._hooks: dict[int, tuple[list[tuple[Any, Any]], ...]] = {}
        for module in modules:
            if _is_script(module):
                self._script.append((module, module.training))
                continue
            state = module.__dict__
            # nn.Module's own entries (tables, hook dicts, flags) are four in five of a
            # module's attributes, and none is a container the model fills
            for key in state.keys() - _OWN_CONTAINERS:
                value = state[key]
                kind = type(value)
                if kind is dict or kind is list or kind is set:
                    self._containers.append((value, kind(value) if value else None))
                if (kind is list or kind is tuple) and value and isinstance(value[0], torch.Tensor):
                    self._tensor_lists.append((module, key))
            hooks = _hook_tables(state)
            if any(hooks):
                self._hooks[id(module)] = tuple(list(table.items()) for table in hooks)
            params, buffers, children = state["_parameters"], state["_buffers"], state["_modules"]
            non_persistent = state["_non_persistent_buffers_set"]
            self._python.append(
                (
                    module,
                    type(module),
                    dict(state),
                    (
                        dict(params) if params else None,
                        dict(buffers) if buffers else None,
                        dict(children) if children else None,
                    ),
                    set(non_persistent) if non_persistent else None,
                )
            )

    def set_eval(self, training: bool = False) -> None:
        """Every module's ``training`` flag off, as ``Module.eval()`` sets it but without any
        override of ``train()`` a model may define; on with ``training`` (a training step's
        memory: dropout's masks and batch statistics are part of it)."""
        for module, *_ in self._python:
            module.__dict__["training"] = training
        for module, _ in self._script:
            module.training = training

    def point_at(self, stand_ins: dict[int, torch.Tensor]) -> None:
        """Make each module's references to its parameters and buffers (in their tables and in
        plain attributes holding a list or tuple of them) point at their meta stand-ins."""
        for module, *_ in self._python:
            tables: tuple[dict[str, Any], ...] = (module._parameters, module._buffers)
            for table in tables:
                for key, value in table.items():
                    if value is not None and id(value) in stand_ins:
                        table[key] = stand_ins[id(value)]
        for module, key in self._tensor_lists:
            value = module.__dict__[key]
            if any(id(v) in stand_ins for v in value):
                module.__dict__[key] = type(value)(stand_ins.get(id(v), v) for v in value)

    def restore(self) -> None:
        for module, cls, attrs, tables, non_persistent in self._python:
            if type(module) is not cls:  # a lazy module that materialised
                module.__class__ = cls
            state = module.__dict__
            _put_back(state, attrs)
            for name, saved in zip(TABLES, tables, strict=True):
                table = state[name]
                if saved is not None:
                    _put_back(table, saved)
                elif table:  # it was empty
                    table.clear()
            hooks = _hook_tables(state)
            entries = self._hooks.get(id(module)) if self._hooks else None
            if entries is not None:
                for table, saved_hooks in zip(hooks, entries, strict=True):
                    _rehook(table, saved_hooks)
            elif any(hooks):  # it had none
                for table in hooks:
                    table.clear()
            names = state["_non_persistent_buffers_set"]
            if names != (non_persistent or _NO_NAMES):
                names.clear()
                names.update(non_persistent or ())
        for module, flag in self._script:
            module.training = flag
        for container, saved in self._containers:
            _refill(container, saved)


def _rehook(table: dict[Any, Any], entries: list[tuple[Any, Any]]) -> None:
    """Make a hook table hold ``entries`` in their order (hooks run in it), by identity."""
    if len(table) != len(entries) or any(
        key != k or value is not v for (key, value), (k, v) in zip(table.items(), entries, strict=True)
    ):
        table.clear()
        table.update(entries)


def _refill(container: Any, saved: Any) -> None:
    """Make a dict, list or set hold what it held (``saved``; None: nothing), by identity."""
    if saved is None:
        if container:
            container.clear()
    elif type(container) is dict:
        _put_back(container, saved)
    elif type(container) is list:
        if len(container) != len(saved) or any(a is not b for a, b in zip(container, saved, strict=True)):
            container[:] = saved
    elif {id(item) for item in container} != {id(item) for item in saved}:
        container.clear()
        container.update(saved)


def _put_back(current: dict[str, Any], saved: dict[str, Any]) -> None:
    """Make ``current`` hold exactly ``saved``'s entries, compared by identity."""
    for key, value in saved.items():
        if current.get(key, _MISSING) is not value:
            current[key] = value
    if len(current) != len(saved):  # now a superset of saved: the extra keys were added
        for key in [k for k in current if k not in saved]:
            del current[key]


# Asynchronous signals whose Python handlers may raise (Ctrl-C, timers, termination).
_ASYNC = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)


class HeldSignals:
    """Holds signal handlers while the model is put back: a KeyboardInterrupt that lands in the
    middle of the restore would leave it half done (a parameter still a meta stand-in).

    Python runs signal handlers in the main thread, whichever thread the signal reached, so
    blocking signals is not enough; instead each Python-level handler is swapped for one that
    notes the signal, and :meth:`release` puts the handlers back and runs the noted ones (a
    KeyboardInterrupt then surfaces there, once everything is back). Elsewhere than in the main
    thread no handler can interrupt the restore, and nothing is done.
    """

    def __init__(self) -> None:
        self._saved: dict[int, Any] | None = None
        self._noted: list[tuple[int, Any]] = []

    def hold(self) -> None:
        if self._saved is not None or threading.current_thread() is not threading.main_thread():
            return
        self._saved = {}
        for signum in _ASYNC:
            handler = signal.getsignal(signum)
            if callable(handler):  # SIG_DFL and SIG_IGN stay as they are
                self._saved[signum] = handler
                signal.signal(signum, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        self._noted.append((signum, frame))

    def release(self) -> None:
        saved, self._saved = self._saved, None
        if saved is None:
            return
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        noted, self._noted = self._noted, []
        for signum, frame in noted:
            saved[signum](signum, frame)


class Values:
    """Copies of the parameters and buffers that an operator writes in place, taken before the
    first write. Writes are matched by storage, not by tensor object: ``self.buf[0] = 5``,
    ``self.buf.view(-1).add_(1)`` and ``self.weight.data.mul_(0.5)`` write through views."""

    def __init__(self, watched: list[torch.Tensor]) -> None:
        # indexed by storage at the first write: many passes write nothing of their own in
        # place, and reading every tensor's storage costs 1-2 us each
        self._watched = watched
        self._by_storage: dict[int, list[torch.Tensor]] | None = None
        self._saved: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def __bool__(self) -> bool:
        return bool(self._watched)

    def before_write(self, args: tuple[Any, ...]) -> None:
        if self._by_storage is None:
            self._by_storage = {}
            for tensor in self._watched:
                key = _storage(tensor)
                if key:
                    self._by_storage.setdefault(key, []).append(tensor)
        for arg in args:
            if isinstance(arg, (list, tuple)):  # _foreach_* operators
                self.before_write(tuple(arg))
                continue
            for tensor in self._by_storage.get(_storage(arg), ()):
                if id(tensor) not in self._saved:
                    self._saved[id(tensor)] = (tensor, tensor.detach().clone(), tensor._version)

    def restore(self) -> None:
        """The values back, and with them each tensor's version counter: a graph the caller
        built before the pass (``loss = model(x).sum()``, then ``profile(...)``, then
        ``loss.backward()``) saved these tensors at those versions, and the data is theirs
        again (BatchNorm's weight and bias are saved here for the legacy kernel, which writes
        its statistics among its arguments, and would read as modified in place)."""
        with torch.no_grad():
            for tensor, saved, version in self._saved.values():
                tensor.copy_(saved)
                _set_version(tensor, version)


def _set_version(tensor: torch.Tensor, version: int) -> None:
    setter: Any = torch._C._autograd._unsafe_set_version_counter
    try:
        setter((tensor,), (version,))
    except TypeError:  # PyTorch before 2.5 takes one tensor
        setter(tensor, version)


def _storage(value: Any) -> int:
    """The address of a dense tensor's storage (0 for anything else or an empty one)."""
    if (
        not isinstance(value, torch.Tensor)
        or nn.parameter.is_lazy(value)  # a lazy module's parameter has no storage yet
        or value.layout != torch.strided
        or value.is_nested
    ):
        return 0
    try:
        return int(value.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # tensors without a storage (functional wrappers)
        return 0
