"""Data flow between module calls: which earlier calls made the tensors a call reads.

Each tensor a module with a formula returns is tagged with that call's index; free operators
and quiet layers (norms, activations) pass the tags of their inputs on to outputs of the same
shape, so a call's ``sources`` (:attr:`~convprof.records.ModuleCall.sources`) name the calls
whose outputs reached it: what finds depthwise-separable blocks and inverted residuals.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from convprof.count.formulas import is_quiet, module_formula
from convprof.record.facts import has_children

UNTAGGED: frozenset[int] = frozenset()

# What a module call does to the data-flow tags of the tensors it returns.
PRODUCES = 1  # a module with a formula: its outputs start a new tag (its call index)
PASSES = 2  # a quiet childless module (norm, activation): outputs inherit the tags of inputs of
# the same shape, as the free operators it ran unseen would have passed them on
NOTHING = 0  # containers and watched modules: the operators inside already tagged the outputs


def roles(name: str, module: nn.Module) -> tuple[str, bool, int]:
    """(name, quiet, data-flow role) of a module of the model."""
    quiet = is_quiet(type(module)) and not has_children(module)
    if module_formula(type(module)) is not None:
        return name, quiet, PRODUCES
    return name, quiet, PASSES if quiet else NOTHING


class Tags:
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
            return UNTAGGED
        return entry[1]

    def set(self, tensor: torch.Tensor, tags: frozenset[int]) -> None:
        self._by_id[id(tensor)] = (weakref.ref(tensor), tags)

    def sources(self, args: tuple[Any, ...]) -> frozenset[int]:
        """The tags of every tensor among ``args``."""
        tags: frozenset[int] = frozenset()
        for arg in args:
            if isinstance(arg, torch.Tensor):
                tags = tags | self.get(arg)
        return tags

    def after(self, role: int, index: int, args: Any, output: Any) -> None:
        """A module call ``index`` returned ``output``: a producer tags it with its index, a
        quiet layer passes its inputs' tags on (see ``roles``)."""
        if role == PRODUCES:
            tag = frozenset({index})
            for tensor in (output,) if isinstance(output, torch.Tensor) else tree_leaves(output):
                if isinstance(tensor, torch.Tensor):
                    self.set(tensor, tag)
        elif role == PASSES and self._by_id:
            self.pass_on(args, output)

    def pass_on(self, args: tuple[Any, ...], out: Any) -> None:
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
                tags = self.get(only)
                if tags:
                    self.set(first, tags)
            return
        shape = first.shape
        tags = self.sources(
            tuple(a for a in args if isinstance(a, torch.Tensor) and not a.is_nested and a.shape == shape)
        )
        if tags:
            self.set(first, tags)
