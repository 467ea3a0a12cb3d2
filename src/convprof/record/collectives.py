"""Collectives as records: what a torch.distributed operator sends, over which group, and when.

Every collective reaches the dispatch mode as an operator of ``c10d`` (the process group's
own: FSDP2's ``_allgather_base_`` and ``_reduce_scatter_base_``, DDP's ``allreduce_``,
pipelining's ``send`` and ``recv_``) or ``_c10d_functional`` (DTensor's: ``all_reduce``,
``all_gather_into_tensor``, ``all_to_all_single``). Its payload is read from the tensors the
schema says carry it, as nccl-tests counts it: the gathered output of an all-gather, the input
of a reduce-scatter, the buffer of an all-reduce, a broadcast, a send or a receive, the send
buffer of an all-to-all. The group is named by the mesh dimension it spans.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils._pytree import tree_leaves

from convprof.records import CollectiveCall

# operator name (no namespace, no overload) -> (kind, where the payload is: an argument's
# position, or -1 for the output)
_KINDS: dict[str, tuple[str, int]] = {
    "_allgather_base_": ("all_gather", 0),
    "allgather_": ("all_gather", 0),
    "allgather_into_tensor_coalesced_": ("all_gather", 0),
    "allgather_coalesced_": ("all_gather", 0),
    "all_gather_into_tensor": ("all_gather", -1),
    "all_gather_into_tensor_out": ("all_gather", -1),
    "all_gather_into_tensor_coalesced": ("all_gather", -1),
    "_reduce_scatter_base_": ("reduce_scatter", 1),
    "reduce_scatter_": ("reduce_scatter", 1),
    "reduce_scatter_tensor_coalesced_": ("reduce_scatter", 1),
    "reduce_scatter_tensor": ("reduce_scatter", 0),
    "reduce_scatter_tensor_coalesced": ("reduce_scatter", 0),
    "allreduce_": ("all_reduce", 0),
    "allreduce_coalesced_": ("all_reduce", 0),
    "all_reduce": ("all_reduce", 0),
    "all_reduce_": ("all_reduce", 0),
    "all_reduce_coalesced": ("all_reduce", 0),
    "all_reduce_coalesced_": ("all_reduce", 0),
    "alltoall_base_": ("all_to_all", 1),
    "alltoall_": ("all_to_all", 1),
    "all_to_all_single": ("all_to_all", 0),
    "broadcast_": ("broadcast", 0),
    "broadcast": ("broadcast", 0),
    "send": ("send", 0),
    "recv_": ("recv", 0),
    "recv_any_source_": ("recv", 0),
    "gather_": ("gather", 1),
    "scatter_": ("scatter", 1),
    "reduce_": ("reduce", 0),
}


def _bytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(value) if isinstance(t, torch.Tensor))


def _group(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[str | None, int]:
    """The process group's name and size (0: not known here): a ``ProcessGroup`` object among
    a ``c10d`` operator's arguments, or the group name a functional one takes."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.ScriptObject) and "ProcessGroup" in str(value._type()):
            group = torch._C._distributed_c10d.ProcessGroup.unbox(value)
            return group.group_name, group.size()
    names = [v for v in (*args, *kwargs.values()) if isinstance(v, str)]
    return (names[-1], 0) if names else (None, 0)


def collective_call(
    func: torch._ops.OpOverload,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    out: Any,
    phase: str,
    micro: int,
    groups: Mapping[str, tuple[str, int]],
) -> CollectiveCall | None:
    """The record of a collective (None for an operator of those namespaces that sends
    nothing). ``groups`` gives the mesh dimension and size of each process group by name."""
    name = func._schema.name.split("::")[-1]
    known = _KINDS.get(name)
    if known is None:
        return None
    kind, where = known
    payload = _bytes(out if where < 0 else args[where] if len(args) > where else ())
    group, size = _group(args, kwargs)
    dim, size = groups.get(group or "", ("world", size))
    return CollectiveCall(kind, str(func), phase, micro, dim, size, payload)


class Collectives:
    """What a session records of a distributed step: the tensor subclasses whose operators
    are seen as the local operators they run (``wrapped``: DTensor), the collectives, and the
    phase and micro-step they ran in (set by the step as it goes)."""

    def __init__(self, wrapped: tuple[type, ...], groups: Mapping[str, tuple[str, int]]) -> None:
        self.wrapped = wrapped
        self.groups = dict(groups)
        self.calls: list[CollectiveCall] = []
        self.phase, self.micro = "forward", 0
        # tensors a driver will send or receive later, batched with others (a pipeline's):
        # id -> (phase, micro-step) they belong to, which the moment they run does not say
        self.tagged: dict[int, tuple[str, int]] = {}

    def wraps(self, types: Any) -> bool:
        """Whether an operator's tensor types include a wrapped subclass."""
        return any(issubclass(t, self.wrapped) for t in types)

    def record(
        self, func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any
    ) -> None:
        phase, micro = self.phase, self.micro
        if self.tagged:
            first = args[0][0] if args and isinstance(args[0], list) and args[0] else None
            phase, micro = self.tagged.get(id(first), (phase, micro))
        call = collective_call(func, args, kwargs, out, phase, micro, self.groups)
        if call is not None:
            self.calls.append(call)
