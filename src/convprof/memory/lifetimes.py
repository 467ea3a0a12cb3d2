"""Storage lifetimes: which tensor storages exist at each moment of a pass, for peak memory.

Memory is held by storages, not tensors: views, ``detach()``, in-place results and tied
weights share one, and a storage is freed when the last tensor (or autograd's saved copy of
it) that uses it goes away. The recorder shows every operator's outputs to :meth:`Lifetimes.see`;
an output whose storage is new (not one of the operator's inputs', not one already known) is
an allocation, and a weak reference with a callback on the storage's Python object notes the
moment it is freed. PyTorch keeps one Python object per storage for as long as the storage
lives (its "PyObject preservation"), so the callback runs when the memory is given back, on
real and meta tensors alike: a zero-compute pass's stand-ins live and die as the real tensors
would.

Kernels' own scratch, which no operator shows, is added where it moves a CPU peak
(:mod:`convprof.memory.scratch`).

Time is a tick counter: one tick per allocation or free. The result is :class:`MemoryTrace`,
plain integers that :mod:`convprof.memory.peak` turns into a peak, its categories and the peak of
every module call. This module touches no hooks and no dispatch mode; it only watches what it
is shown.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from convprof.memory.scratch import kernel_scratch, unmodelled
from convprof.records import MemoryTrace
from convprof.units import format_shape


def _tensors(value: Any, depth: int, seen: set[int]) -> Any:
    """Every tensor in ``value``: in containers and in plain objects' attributes, 8 deep."""
    if isinstance(value, torch.Tensor):
        yield value
        return
    if depth > 8 or id(value) in seen or isinstance(value, (str, bytes, int, float, bool, type, nn.Module)):
        return
    seen.add(id(value))
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, (list, tuple, set)):
        items = value
    elif hasattr(value, "__dict__") and not callable(value):
        items = vars(value).values()
    else:
        return
    for item in items:
        yield from _tensors(item, depth + 1, seen)


def tensors_in(value: Any) -> list[torch.Tensor]:
    """Every tensor in ``value``, its containers and its plain objects' attributes."""
    return list(_tensors(value, 0, set()))


# Operators that return their input's memory under another tensor object, which their schema
# does not say: functional collectives wrap their result (an AsyncCollectiveTensor; under fake
# tensors a fresh empty_like) and hand back the same memory when waited on. Known by name (the
# wrapping operator is registered when torch.distributed is imported), the answer kept per
# operator.
_WRAPPER_NAMES = ("_c10d_functional::_wrap_tensor_autograd", "_c10d_functional::wait_tensor")
_WRAPPERS: dict[Any, bool] = {}


def _wraps(func: Any) -> bool:
    known = _WRAPPERS.get(func)
    if known is None:
        schema = getattr(func, "_schema", None)
        known = _WRAPPERS[func] = schema is not None and schema.name in _WRAPPER_NAMES
    return known


# the layouts whose tensors keep some values only, in values and indices tensors of their own
SPARSE = frozenset({torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc})


class UntrackedLayout(NotImplementedError):
    """A sparse or nested tensor met by a pass that predicts memory: its values, indices or
    sequences live in storages the tensor does not show, and kernels for nested tensors pad
    and unpad them inside (PyTorch's fused attention layers), so the peak would leave them
    out. Refused instead."""


def _storage(tensor: torch.Tensor) -> torch.UntypedStorage | None:
    """A dense tensor's storage; None for layouts without one (nested, wrappers)."""
    if tensor.layout is not torch.strided:
        if tensor.layout in SPARSE:
            layout = str(tensor.layout).removeprefix("torch.")
            raise UntrackedLayout(
                f"peak memory is not predicted for sparse tensors ({layout} "
                f"{format_shape(tuple(tensor.shape))}); profile without memory"
            )
        return None
    if tensor.is_nested:
        raise UntrackedLayout(
            f"peak memory is not predicted for nested tensors (a batch of {tensor.size(0)} "
            f"sequences of {tensor.dim() - 1}-D tensors); profile without memory"
        )
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return None


class Lifetimes:
    """Allocations and frees of storages during one pass, in order (see the module docstring).

    ``role`` names what a storage is when that is known when it is seen or later
    (:meth:`mark`): ``parameter``, ``buffer``, ``input``, ``optimizer`` (state), ``gradient``;
    every other storage is classified by when it was made and freed (see :mod:`convprof.memory.peak`).
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.sizes: list[int] = []
        self.roles: list[str] = []
        self.owners: list[int] = []  # index of the module call that made it, -1: none
        self.made: list[int] = []
        self.freed: list[int] = []  # -1 while alive
        self.ticks = 0
        self.marks: list[tuple[str, int]] = []
        # id(storage) -> (weak reference, index); the reference is checked on every read, so a
        # storage that died and whose id a new one took reads as unknown
        self._known: dict[int, tuple[weakref.ref[torch.UntypedStorage], int]] = {}
        self._holders: dict[int, int] = {}  # entry -> the storage objects that hold its memory
        self.unmodelled: list[int] = []  # calls that ran a kernel with scratch not modelled
        self.autocast = False  # the pass runs under autocast (see scratch.unmodelled)
        self._open = True

    def _index(self, storage: torch.UntypedStorage) -> int | None:
        entry = self._known.get(id(storage))
        if entry is None or entry[0]() is not storage:
            return None
        return entry[1]

    def _add(self, storage: torch.UntypedStorage, role: str, owner: int) -> int:
        index = len(self.sizes)
        self.sizes.append(int(storage.nbytes()))
        self.roles.append(role)
        self.owners.append(owner)
        self.made.append(self.ticks)
        self.freed.append(-1)
        self.ticks += 1
        self._hold(storage, index)
        return index

    def _hold(self, storage: torch.UntypedStorage, index: int) -> None:
        """``storage`` (its Python object) holds the memory of entry ``index``: the memory is
        freed when the last object holding it goes."""
        self._holders[index] = self._holders.get(index, 0) + 1

        def gone(_: Any) -> None:
            self._holders[index] -= 1
            if not self._holders[index] and self._open and self.freed[index] < 0:
                self.freed[index] = self.ticks
                self.ticks += 1

        self._known[id(storage)] = (weakref.ref(storage, gone), index)

    def hold(self, value: Any, role: str) -> None:
        """Storages that exist before the pass (parameters, buffers, inputs, optimizer state):
        each once, under the first role given. Inputs are looked for inside the objects that
        hold them too (a transformers key/value cache), as the pass's copy of them does."""
        for tensor in tensors_in(value):
            storage = _storage(tensor)
            if storage is not None and self._index(storage) is None:
                self._add(storage, role, -1)

    def see(self, func: Any, out: Any, args: tuple[Any, ...], kwargs: dict[str, Any], owner: int) -> None:
        """An operator's outputs: each new storage among them is an allocation made by call
        ``owner``. A view, an in-place or ``out=`` result shares an input's storage and is none."""
        if _wraps(func):
            self._wrapped(out, args)
            return
        scratch = kernel_scratch(func, args, out) if self.device == "cpu" else None
        if self.device == "cpu" and unmodelled(func, args, self.autocast) and owner >= 0:
            self.unmodelled.append(owner)
        if scratch is not None:
            self._transient(scratch[0], owner)
        inputs: set[int] | None = None
        for tensor in (out,) if isinstance(out, torch.Tensor) else tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = _storage(tensor)
            if storage is None or self._index(storage) is not None:
                continue
            if inputs is None:
                inputs = {
                    id(s)
                    for a in tree_leaves((args, kwargs))
                    if isinstance(a, torch.Tensor) and (s := _storage(a)) is not None
                }
            if id(storage) not in inputs:
                # FSDP2's all-gather and reduce-scatter buffers are made by its own operators
                self._add(storage, "communication" if func.namespace == "fsdp" else "", owner)
        if scratch is not None:
            self._transient(scratch[1], owner)

    def _wrapped(self, out: Any, args: tuple[Any, ...]) -> None:
        """An operator whose output wraps its input's memory (a functional collective's
        result, wrapped for autograd): the output's storage object is one more holder of the
        input's entry (fake tensors give it a storage of its own; real ones a wrapper)."""
        source = _storage(args[0]) if args and isinstance(args[0], torch.Tensor) else None
        index = self._index(source) if source is not None else None
        target = _storage(out) if isinstance(out, torch.Tensor) else None
        if index is not None and target is not None and self._index(target) is None:
            self._hold(target, index)

    def resized(self, storage: torch.UntypedStorage, before: int, after: int, owner: int) -> None:
        """A storage resized in place (``UntypedStorage.resize_``, which no operator shows):
        FSDP2 gives each unsharded parameter its memory before an all-gather and takes it
        away after, on the same storage. Grown from nothing it is a new allocation, shrunk
        to nothing a free; any other resize is the old allocation freed and a new one made."""
        index = self._index(storage)
        if index is not None and self.freed[index] < 0 and before:
            self.freed[index] = self.ticks
            self.ticks += 1
        if index is not None:
            del self._known[id(storage)]
        if after:
            self._add(storage, "unsharded parameter", owner)

    def _transient(self, size: int, owner: int) -> None:
        """Scratch a kernel makes and frees inside one operator, after its output."""
        if size:
            self.sizes.append(size)
            self.roles.append("")
            self.owners.append(owner)
            self.made.append(self.ticks)
            self.freed.append(self.ticks + 1)
            self.ticks += 2

    def mark(self, name: str) -> None:
        """A phase boundary (``held``, then ``forward``, ``backward``, ``step``; a step of
        several micro-steps repeats forward and backward): the tick the phase ends at."""
        self.marks.append((name, self.ticks))

    def role(self, value: Any, role: str) -> None:
        """Give the known storages of ``value``'s tensors a role (the gradients, once returned)."""
        for tensor in tree_leaves(value):
            if isinstance(tensor, torch.Tensor):
                storage = _storage(tensor)
                index = self._index(storage) if storage is not None else None
                if index is not None and not self.roles[index]:
                    self.roles[index] = role

    def close(self, calls: list[tuple[int, int]], optimizer: str | None) -> MemoryTrace:
        """Stop watching (late frees are not events of the pass) and hand over the facts;
        ``calls`` is the (open, close) tick of every module call, in call order. The block is
        the predicted device's allocator's (CUDA's rounds every block up to 512 bytes)."""
        self._open = False
        self._known.clear()
        return MemoryTrace(
            sizes=tuple(self.sizes),
            roles=tuple(self.roles),
            owners=tuple(self.owners),
            made=tuple(self.made),
            freed=tuple(self.freed),
            ticks=self.ticks,
            marks=tuple(self.marks),
            calls=tuple(calls),
            block=512 if self.device == "cuda" else 1,
            optimizer=optimizer,
            device=self.device,
            unmodelled=tuple(self.unmodelled),
        )
