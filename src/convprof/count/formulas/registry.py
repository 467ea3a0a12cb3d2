"""The cost registry: which function gives the MACs of a module call or of an operator call.

Two tables, one public ``register``:

* **module formulas**, keyed by ``nn.Module`` subclass and looked up through ``type(m).__mro__``,
  so a subclass of ``nn.Conv2d`` needs nothing (unless it brings its own ``forward``). A
  module formula is the cost of the module's own code: it replaces the operators that ran
  directly inside that module (children still count for themselves). It is how a module
  whose implementation varies (the fast path of ``nn.MultiheadAttention``) or hides its
  arithmetic in a custom kernel gets an exact count.
* **op formulas**, keyed by ATen operator name, for compute that no module formula covers:
  ``F.conv2d``, ``x @ w``, ``scaled_dot_product_attention`` inside any module.

Operators that do no multiply-accumulate under the convention (pointwise, reductions, views,
norms, pooling, data movement) are *free*; everything else without a formula is *unexplained*
and reported, never counted as a silent zero. The built-in formulas use this same ``register``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import TypeVar, overload

import torch
from torch import nn

from convprof.records import ModuleCall, OpCall

ModuleFormula = Callable[[ModuleCall], int]
OpFormula = Callable[[OpCall], int]
OpTarget = torch._ops.OpOverload | torch._ops.OpOverloadPacket | str

_M = TypeVar("_M", bound=ModuleFormula)
_O = TypeVar("_O", bound=OpFormula)

_MODULE_FORMULAS: dict[type, ModuleFormula] = {}
_OP_FORMULAS: dict[str, OpFormula] = {}
_FREE_OPS: set[str] = set()
_FREE_MODULES: set[type] = set()
_VIEW_MODULES: set[type] = set()
_RESOLVED: dict[type, ModuleFormula | None] = {}
_WEIGHT_PARTS: dict[str, OpFormula] = {}
_FREE_TAGS = (torch.Tag.pointwise, torch.Tag.reduction, torch.Tag.inplace_view)


class Uncounted(Exception):
    """Raised by a formula for a call whose cost its record cannot give (a product of two
    sparse tensors costs what their patterns make it, and records keep no values). The counter
    reports the call with the unexplained operators, as ``op (reason)``, so the total says it
    is incomplete instead of holding a guess."""


class OpClass(Enum):
    """How the recorder treats an operator: count it, skip it, report it, or (communication)
    record it as a collective."""

    FORMULA = "formula"
    FREE = "free"
    UNEXPLAINED = "unexplained"
    COLLECTIVE = "collective"


# torch.distributed's operators: communication, not arithmetic (the few that only wait or wrap
# are free, see formulas.free)
COMMUNICATION = frozenset({"c10d", "_c10d_functional", "_c10d_functional_autograd"})


def op_name(target: OpTarget) -> str:
    """``aten.mm`` for a packet, ``aten.mm.default`` for an overload; strings pass through."""
    return target if isinstance(target, str) else str(target)


@overload
def register(target: type[nn.Module]) -> Callable[[_M], _M]: ...
@overload
def register(target: OpTarget) -> Callable[[_O], _O]: ...
def register(target: type[nn.Module] | OpTarget) -> Callable[[_M], _M] | Callable[[_O], _O]:
    """Register the MAC formula of a module type or of an operator (packet or one overload).

    A later registration for the same target replaces the earlier one, so a user can override
    a built-in formula.
    """
    if isinstance(target, type):
        if not issubclass(target, nn.Module):
            raise TypeError(f"register() takes an nn.Module subclass or an operator, got {target!r}")
        module_type = target

        def add_module(formula: _M) -> _M:
            _MODULE_FORMULAS[module_type] = formula
            _RESOLVED.clear()  # a subclass may now resolve to the new formula
            return formula

        return add_module
    if not isinstance(target, (str, torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        raise TypeError(f"register() takes an nn.Module subclass or an operator, got {target!r}")
    name = op_name(target)

    def add_op(formula: _O) -> _O:
        _OP_FORMULAS[name] = formula
        _FREE_OPS.discard(name)
        return formula

    return add_op


def register_weight_part(target: OpTarget) -> Callable[[_O], _O]:
    """Register, for a backward operator that computes several gradients in one call
    (``convolution_backward``), the MACs of its gradient with respect to the weight; the rest
    of its op formula is the gradient with respect to the input (see formulas.backward)."""
    name = op_name(target)

    def add(formula: _O) -> _O:
        _WEIGHT_PARTS[name] = formula
        return formula

    return add


def weight_part(name: str) -> OpFormula | None:
    return _WEIGHT_PARTS.get(name) or _WEIGHT_PARTS.get(_packet(name))


def register_free(targets: Iterable[OpTarget]) -> None:
    """Declare operators that do no multiply-accumulate under the convention."""
    _FREE_OPS.update(op_name(t) for t in targets)


def register_free_modules(types: Iterable[type[nn.Module]]) -> None:
    """Declare built-in module types whose forward runs only free operators.

    Matched by *exact* type, never through the MRO: a subclass may add compute in its own
    forward, so its operators are still recorded.
    """
    _FREE_MODULES.update(types)


def register_view_modules(types: Iterable[type[nn.Module]]) -> None:
    """Declare built-in module types whose output is a view of their input (or the input
    itself): they read and write no memory. Exact types, as for free modules."""
    _VIEW_MODULES.update(types)


def moves_memory(module_type: type) -> bool:
    return module_type not in _VIEW_MODULES


def is_quiet(module_type: type) -> bool:
    """Whether the operators a (childless) module of this type runs need no recording:
    its module formula replaces them, or the type is a built-in that only runs free ops."""
    return module_type in _FREE_MODULES or module_formula(module_type) is not None


def module_formula(module_type: type) -> ModuleFormula | None:
    """The formula of the nearest class in the MRO that has one, unless a class on the way
    there, outside PyTorch, defines its own ``forward`` (remembered per type until the next
    registration: the recorder and the counter ask for every module call).

    A formula describes the forward of the class it is registered for, reading the call's
    input and output: a subclass that replaces the forward may transpose around the
    convolution (Parakeet's CTC head is a ``Conv1d`` called on ``(batch, time, channels)``),
    pad first or run something else entirely. Its operators are counted instead, which the
    op formulas cover. PyTorch's own subclasses (``Conv2d`` under ``_ConvNd``, the QAT
    layers) keep the formula; a formula registered for the subclass itself is used."""
    try:
        return _RESOLVED[module_type]
    except KeyError:
        pass
    found = None
    for cls in module_type.__mro__:
        found = _MODULE_FORMULAS.get(cls)
        if found is not None or ("forward" in vars(cls) and not cls.__module__.startswith("torch.")):
            break
    _RESOLVED[module_type] = found
    return found


def _packet(name: str) -> str:
    return name.rsplit(".", 1)[0] if name.count(".") >= 2 else name


def op_formula(name: str) -> OpFormula | None:
    """The formula for ``aten.mm.default``: registered for the overload or for its packet."""
    return _OP_FORMULAS.get(name) or _OP_FORMULAS.get(_packet(name))


def classify(op: torch._ops.OpOverload) -> OpClass:
    """Whether an operator is counted, free under the convention, or unexplained."""
    name = str(op)
    if op_formula(name) is not None:
        return OpClass.FORMULA
    if name in _FREE_OPS or _packet(name) in _FREE_OPS:
        return OpClass.FREE
    if op.namespace in COMMUNICATION:
        return OpClass.COLLECTIVE
    if op.is_view or _tagged_free(op) or _foreach_free(op):
        return OpClass.FREE
    return OpClass.UNEXPLAINED


def _tagged_free(op: torch._ops.OpOverload) -> bool:
    """PyTorch tags pointwise ops and reductions, but not every overload of them (``gelu_``,
    ``relu.out``): one tagged overload makes the whole packet free. Some in-place packets
    carry no tag in any overload (``abs_``, ``eq_``, ``true_divide_``: 20 in PyTorch 2.14,
    SigLIP 2's embeddings call ``abs_``); they are as free as the packet they write in place."""
    packet = op.overloadpacket
    if _packet_tagged(packet):
        return True
    name = packet.__name__
    if not name.endswith("_") or name.endswith("__"):
        return False
    outplace = getattr(torch.ops.aten, name[:-1], None) if str(packet).startswith("aten.") else None
    return isinstance(outplace, torch._ops.OpOverloadPacket) and _packet_tagged(outplace)


def _foreach_free(op: torch._ops.OpOverload) -> bool:
    """``_foreach_add_`` and its kin apply one operator to every tensor of a list (optimizers,
    gradient clipping, FSDP2's casts), untagged: as free as that operator (``_foreach_mm``,
    a list of products, has a formula of its own)."""
    name = op.overloadpacket.__name__
    if not name.startswith("_foreach_") or not str(op).startswith("aten."):
        return False
    base = name.removeprefix("_foreach_")
    if base == "powsum":  # a sum of powers per tensor: a reduction with no packet of its own
        return True
    for candidate in {base, base.removesuffix("_"), f"{base.removesuffix('_')}_"}:
        packet = getattr(torch.ops.aten, candidate, None)
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            continue
        overloads: list[str] = packet.overloads()  # type: ignore[no-untyped-call]  # unannotated in torch
        if any(classify(getattr(packet, o)) is OpClass.FREE for o in overloads):
            return True
    return False


def _packet_tagged(packet: torch._ops.OpOverloadPacket) -> bool:
    names = packet.overloads()  # type: ignore[no-untyped-call]  # unannotated in torch
    overloads = (getattr(packet, name) for name in names)
    return any(tag in candidate.tags for candidate in overloads for tag in _FREE_TAGS)
