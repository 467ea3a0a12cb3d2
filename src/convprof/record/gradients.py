"""The backward pass: which module call each autograd node belongs to, and running it.

Each autograd node is claimed by the module call that created it (a walk back from the call's
outputs when it returns, by autograd sequence number), and each operator of the backward pass
is recorded on the call whose node runs it. :func:`gradients` runs the backward through
``torch.autograd.grad``: the operators ``loss.backward()`` would run, and no ``.grad`` written
(with reentrant checkpointing, which refuses it, through ``backward()``, and every ``.grad``
put back).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from convprof.record.errors import ForwardError, gist
from convprof.record.frame import Frame
from convprof.record.tensors import op_call
from convprof.records import OpCall
from convprof.units import format_shape

# The sequence number autograd gives the nodes that accumulate into leaves (all of them alike).
_LEAF_NODE = 2**64 - 1


class Backward:
    """The autograd nodes of one pass by owner: sequence number -> index of the call that made
    it. ``weights`` holds the ids of the parameters as the graph has them (their stand-ins in
    zero compute), for :attr:`~convprof.records.OpCall.reads_weight`."""

    def __init__(self, calls: list[Frame]) -> None:
        self.calls = calls  # the session's, in order
        self.nodes: dict[int, int] = {}
        self.weights: set[int] = set()
        self.running = False  # the backward pass is running
        self.index: int | None = None  # the call whose gradient ran last
        # a distributed step: each parameter's shape as its module computes with it, by
        # (id(module), name) (FSDP2's gathered shard of tensor parallelism's, say)
        self.computed: dict[tuple[int, str], tuple[int, ...]] = {}

    def owner(self) -> int:
        """The call whose autograd node runs now (-1: none, as for the loss's gradient)."""
        node = torch._C._current_autograd_node()
        return self.nodes.get(node._sequence_nr(), -1) if node is not None else -1

    def record(
        self, func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
    ) -> None:
        """An operator of the backward pass, recorded on the call whose autograd node runs it.
        Operators outside any node the model's calls created (the loss's own gradient, the
        engine summing gradients) belong to no layer and are not recorded."""
        index = self.owner()
        if index >= 0:
            self.calls[index].backward.append(
                op_call(func, args, kwargs, out, reads_weight=any(self._is_weight(a) for a in args))
            )

    def record_call(self, call: OpCall) -> None:
        """A call recorded whole (a higher-order operator's), on the node's call as above."""
        index = self.owner()
        if index >= 0:
            self.calls[index].backward.append(call)

    def note_weights(self, module: nn.Module) -> None:
        """A distributed step: the tensors a module's operators read as its weights are its
        parameters as they are now (FSDP2's gathered ones in its forward) and DTensors' local
        shards, which no list of parameters made before the step holds; their shapes are
        those of the weights' gradients."""
        for name, param in module._parameters.items():
            if param is not None:
                self.weights.add(id(param))
                local = getattr(param, "_local_tensor", None)
                if local is not None:
                    self.weights.add(id(local))
                self.computed[(id(module), name)] = tuple((param if local is None else local).shape)

    def _is_weight(self, value: Any) -> bool:
        if not isinstance(value, torch.Tensor):
            return False
        base = value._base
        return id(value) in self.weights or (base is not None and id(base) in self.weights)

    def claim(self, frame: Frame, output: Any, before: int = _LEAF_NODE) -> None:
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
        self.index = index


def loss_of(
    model: nn.Module, output: Any, loss: Callable[[Any], torch.Tensor] | None, wanted: bool
) -> torch.Tensor | None:
    """What the backward differentiates: ``loss(output)``, by default the sum of every floating
    output that requires grad."""
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
        return value
    value = loss(output)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        got = (
            f"a tensor of shape {format_shape(tuple(value.shape))}"
            if isinstance(value, torch.Tensor)
            else type(value).__name__
        )
        raise TypeError(f"convprof: loss(output) must return a tensor with one element, got {got}")
    return value


def _reentrant_leaves(value: torch.Tensor) -> list[torch.Tensor] | None:
    """Every leaf of the graph when reentrant checkpointing is in it (``checkpoint(...,
    use_reentrant=True)``, which refuses ``torch.autograd.grad`` and needs ``.backward()``),
    else None."""
    leaves: list[torch.Tensor] = []
    reentrant = False
    seen: set[Any] = set()
    stack = [value.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        name = type(node).__name__
        if name == "CheckpointFunctionBackward":
            reentrant = True
        elif name == "AccumulateGrad":
            leaves.append(node.variable)  # type: ignore[attr-defined]  # AccumulateGrad's own
        stack.extend(child for child, _ in node.next_functions)
    return leaves if reentrant else None


def _accumulated(
    value: torch.Tensor, wanted: list[torch.Tensor], leaves: list[torch.Tensor]
) -> list[torch.Tensor | None]:
    """The gradients of ``wanted`` by ``value.backward()``, as a training step with reentrant
    checkpointing computes them, and every leaf's ``.grad`` and post-accumulate hooks (an
    optimizer in the backward) as they were before: the hooks do not fire, nothing stays."""
    everything = list({id(t): t for t in (*leaves, *wanted)}.values())
    grads = [t.grad for t in everything]
    hooks = [t._post_accumulate_grad_hooks for t in everything]
    try:
        for tensor in everything:
            tensor.grad = None
            if tensor._post_accumulate_grad_hooks is not None:
                tensor._post_accumulate_grad_hooks = OrderedDict()
        torch.autograd.backward(value)
        return [t.grad for t in wanted]
    finally:
        for tensor, grad, hook in zip(everything, grads, hooks, strict=True):
            tensor.grad = grad
            if hook is not None:
                tensor._post_accumulate_grad_hooks = hook


def gradients(
    model: nn.Module,
    params: list[torch.Tensor],
    backward: Backward,
    output: Any,
    loss: Callable[[Any], torch.Tensor] | None,
    inputs: Any,
    returned: int,
) -> dict[int, torch.Tensor | None]:
    """The backward pass: the gradient of the loss with respect to every parameter that
    requires grad (``params`` as the graph has them: stand-ins in zero compute) and every
    input that does. ``torch.autograd.grad`` runs what ``loss.backward()`` would and writes no
    ``.grad``; the gradients come back by id of the tensor (a training step's memory holds
    them). ``returned``: the autograd sequence number when the forward returned."""
    backward.weights = {id(p) for p in params}
    wanted = {id(t): t for t in params if t.requires_grad}
    for tensor in tree_leaves(inputs):
        if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
            wanted.setdefault(id(tensor), tensor)
    value = loss_of(model, output, loss, bool(wanted))
    if value is None or not value.requires_grad or not wanted:
        return {}  # nothing in the model requires grad: no backward runs
    if backward.calls:
        # The model's own nodes that no call claimed (an output convprof cannot look into, which
        # the loss reached): the root's, up to where the forward returned; the loss's are not.
        backward.claim(backward.calls[0], value, before=returned)
    backward.running = True
    try:
        leaves = _reentrant_leaves(value)
        if leaves is None:
            grads: Sequence[torch.Tensor | None] = torch.autograd.grad(
                value, list(wanted.values()), allow_unused=True
            )
        else:
            grads = _accumulated(value, list(wanted.values()), leaves)
        return dict(zip(wanted, grads, strict=True))
    except Exception as exc:
        index = backward.index
        where = (
            f" in the gradient of module '{backward.calls[index].name or '(root)'}'"
            if index is not None
            else ""
        )
        raise ForwardError(
            f"backward pass of {type(model).__name__} failed{where}: {type(exc).__name__}: {gist(exc)}"
        ) from exc
    finally:
        backward.running = False
