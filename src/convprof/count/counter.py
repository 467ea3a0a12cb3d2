"""Counting: a Trace in, a Report out. Plain arithmetic over records; no torch machinery and no
formatting.

For each module call, the module formula (looked up through the MRO) gives the cost of the
module's own code; without one, the op formulas of the operators that ran directly inside it
add up, and operators without a formula are collected as unexplained. Calls of one module
merge into one row, with the first call's shapes (``shapes_vary`` says when later calls had
others). Parameters go to the first row, in execution order, whose module owns them, so tied
weights count once; modules that never ran keep their parameters in rows with ``calls == 0``,
placed after their parent's rows, and the params column adds up to ``sum(p.numel() for p in
model.parameters())``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from convprof.count.blocks import find_blocks
from convprof.count.formulas import Uncounted, module_formula, op_formula
from convprof.count.formulas.backward import shape_key, split
from convprof.memory.peak import call_peaks, levels, summarize
from convprof.records import ModuleCall, ModuleInfo, ParamInfo, Shape, Trace
from convprof.report import Layer, Memory, Report, Sizes, Totals, Unexplained


def call_macs(call: ModuleCall, ops_only: bool = False) -> tuple[int, list[str]]:
    """MACs of one call's own code and the operators in it that nothing explains (from its
    operators alone with ``ops_only``)."""
    formula = None if ops_only else module_formula(call.module.type)
    if formula is not None and not call.raised:
        return formula(call), []
    macs, unexplained = 0, []
    for op in call.ops:
        op_cost = op_formula(op.op)
        if op_cost is None:
            unexplained.append(op.op)
            continue
        try:
            macs += op_cost(op)
        except Uncounted as why:
            unexplained.append(f"{op.op} ({why})")
    return macs, unexplained


def call_gradients(call: ModuleCall, trainable: frozenset[Shape]) -> tuple[int, int, list[str]]:
    """Input-gradient and weight-gradient MACs of the backward operators a call's autograd
    nodes ran, and those that nothing explains. ``trainable``: sorted shapes of the trainable
    parameters of the module and its children (see formulas.backward.split)."""
    grad_input = grad_weight = 0
    unexplained = []
    for op in call.backward:
        op_cost = op_formula(op.op)
        if op_cost is None:
            unexplained.append(op.op)
            continue
        try:
            to_input, to_weight = split(op, op_cost(op), trainable)
        except Uncounted as why:
            unexplained.append(f"{op.op} ({why})")
            continue
        grad_input += to_input
        grad_weight += to_weight
    return grad_input, grad_weight, unexplained


def _trainable(modules: tuple[ModuleInfo, ...]) -> dict[str, frozenset[Shape]]:
    """Per module name, the sorted shapes of the trainable parameters it and its children own
    (and, in a distributed step, of this rank's shards of them)."""
    shapes: dict[str, set[Shape]] = {}
    for info in modules:
        parts = info.name.split(".") if info.name else []
        own = {shape_key(p.shape) for p in info.params if p.trainable}
        own.update(shape_key(p.local) for p in info.params if p.trainable and p.local is not None)
        for depth in range(len(parts) + 1):
            shapes.setdefault(".".join(parts[:depth]), set()).update(own)
    return {name: frozenset(found) for name, found in shapes.items()}


@dataclass(slots=True)
class _Row:
    info: ModuleInfo
    first: ModuleCall | None
    macs: int = 0
    calls: int = 0
    params: int = 0
    trainable_params: int = 0
    memory_bytes: int = 0
    unexplained: Counter[str] | None = None  # made for the few rows that have any
    shapes_vary: bool = False
    grad_input_macs: int = 0
    grad_weight_macs: int = 0
    peak_bytes: int = 0

    def add(self, call: ModuleCall) -> None:
        """Another call of the module: a different input or output shape from the first
        call's is noted, since the row shows the first call's shapes only."""
        if self.first is not None and not self.shapes_vary:
            self.shapes_vary = _shapes(call) != _shapes(self.first)

    def freeze(self) -> Layer:
        spec = self.info.conv
        x = self.first.inputs[0][1].shape if self.first and self.first.inputs else None
        y = self.first.outputs[0].shape if self.first and self.first.outputs else None
        return Layer(
            name=self.info.name,
            type=self.info.type_name,
            kind=spec.kind if spec else None,
            input_shape=x,
            output_shape=y,
            params=self.params,
            macs=self.macs,
            calls=self.calls,
            has_children=self.info.has_children,
            kernel_size=spec.kernel_size if spec else None,
            stride=spec.stride if spec else None,
            padding=spec.padding if spec else None,
            dilation=spec.dilation if spec else None,
            groups=spec.groups if spec else None,
            unexplained=tuple(sorted(self.unexplained)) if self.unexplained else (),
            memory_bytes=self.memory_bytes,
            shapes_vary=self.shapes_vary,
            grad_input_macs=self.grad_input_macs,
            grad_weight_macs=self.grad_weight_macs,
            peak_bytes=self.peak_bytes,
            trainable_params=self.trainable_params,
        )


def _shapes(call: ModuleCall) -> tuple[tuple[int, ...], ...]:
    return tuple(meta.shape for _, meta in call.inputs) + tuple(meta.shape for meta in call.outputs)


def _place(rows: dict[str, _Row], idle: list[_Row]) -> list[_Row]:
    """Rows in execution order, and each module that never ran itself (its parent used its
    weights directly, as MultiheadAttention does with ``out_proj``) after its parent's last
    row, not at the end where its name would read out of place."""
    placed = list(rows.values())
    for row in idle:
        parent = row.info.name.rpartition(".")[0]
        family = [
            i
            for i, other in enumerate(placed)
            if other.info.name == parent or other.info.name.startswith(f"{parent}.") or not parent
        ]
        placed.insert(family[-1] + 1 if family else len(placed), row)
    return placed


def call_bytes(call: ModuleCall, alone: Mapping[str, int] = MappingProxyType({})) -> int:
    """Memory traffic of one call of a leaf module (the ShuffleNet V2 paper's memory access
    cost): its tensor inputs read, its own weights read, its outputs written, at their dtypes.
    Containers move nothing themselves (their children account for the traffic), but for
    those in ``alone`` (:func:`ran_alone`: their children's weights, read by the container
    itself), nor do modules that return a view of their input."""
    children = alone.get(call.module.name)
    if (call.module.has_children and children is None) or not call.module.moves_memory:
        return 0
    return (
        sum(meta.nbytes for _, meta in call.inputs)
        + sum(meta.nbytes for meta in call.outputs)
        + sum(p.nbytes for p in call.module.params)
        + (children or 0)
    )


def ran_alone(trace: Trace) -> dict[str, int]:
    """Containers that ran while none of their children did, with their children's parameter
    bytes: PyTorch's fused inference layers (``nn.MultiheadAttention``,
    ``nn.TransformerEncoderLayer`` in eval under no_grad run one kernel with their children's
    weights), or a module that calls its children's weights itself. They are the leaves of
    what ran: their outputs are what the pass made, their children's weights what it read."""
    above = {name for call in trace.calls for name in _ancestors(call.module.name)}
    alone = {
        call.module.name: 0
        for call in trace.calls
        if call.module.has_children and call.module.name not in above
    }
    seen: set[int] = set()
    for info in trace.modules:
        owner = next((name for name in _ancestors(info.name) if name in alone), None)
        if owner is None:
            continue
        for param in info.params:
            if param.key not in seen:
                seen.add(param.key)
                alone[owner] += param.nbytes
    return alone


def _ancestors(name: str) -> list[str]:
    """The modules above module ``name``, the root (named "") first."""
    parts = name.split(".") if name else []
    return [".".join(parts[:i]) for i in range(len(parts))]


def count(trace: Trace) -> Report:
    rows: dict[str, _Row] = {}
    unexplained: dict[str, tuple[int, list[str]]] = {}
    trainable = _trainable(trace.modules) if trace.backward else {}
    memory, peaks = _memory(trace)
    alone = ran_alone(trace)
    recompute = 0
    for index, call in enumerate(trace.calls):
        row = rows.get(call.module.name)
        if row is None:
            row = rows[call.module.name] = _Row(call.module, call)
        elif not call.recompute:
            row.add(call)
        macs, missing = call_macs(call, trace.ops_only)
        if call.backward:
            grad_input, grad_weight, missing_grads = call_gradients(
                call, trainable.get(call.module.name, frozenset())
            )
            row.grad_input_macs += grad_input
            row.grad_weight_macs += grad_weight
            missing += missing_grads
        if peaks:
            row.peak_bytes = max(row.peak_bytes, peaks[index])
        if call.recompute:  # a forward run again in the backward: the step's, not the row's
            recompute += macs
        else:
            row.macs += macs
            row.memory_bytes += call_bytes(call, alone)
            row.calls += 1
        if not missing:
            continue
        if row.unexplained is None:
            row.unexplained = Counter()
        row.unexplained.update(missing)
        for op in missing:
            seen_calls, where = unexplained.get(op, (0, []))
            if call.module.name not in where:
                where.append(call.module.name)
            unexplained[op] = (seen_calls + 1, where)
    idle = [_Row(info, None) for info in trace.modules if info.name not in rows and info.params]
    containers = tuple(
        (info.name, info.type_name)
        for info in trace.modules
        if info.has_children and info.name not in rows and any(n.startswith(f"{info.name}.") for n in rows)
    )
    ordered = _place(rows, idle)
    seen: set[int] = set()
    for row in [*rows.values(), *idle]:  # params to the first row *that ran* owning them
        for param in row.info.params:
            if param.key not in seen:
                seen.add(param.key)
                row.params += param.numel
                row.trainable_params += param.numel if param.trainable else 0
    if peaks:  # a container ran while anything below it did (its children's gradients too)
        _inherit_peaks(ordered)
    layers = tuple(row.freeze() for row in ordered if row.calls or row.params)
    sizes = _sizes(trace, alone)
    return Report(
        model=trace.model,
        inputs=tuple(t.shape for t in trace.inputs),
        layers=layers,
        total=Totals(
            params=sum(r.params for r in layers),
            macs=sum(r.macs for r in layers),
            memory_bytes=sum(r.memory_bytes for r in layers),
            grad_input_macs=sum(r.grad_input_macs for r in layers),
            grad_weight_macs=sum(r.grad_weight_macs for r in layers),
            recompute_macs=recompute,
        ),
        unexplained=tuple(Unexplained(op, calls, tuple(names)) for op, (calls, names) in unexplained.items()),
        blocks=find_blocks(trace.calls, layers),
        sizes=sizes,
        dtype=trace.autocast or _dtype(trace),  # under autocast its products run in its dtype
        backward=trace.backward,
        memory=memory,
        containers=containers,
    )


def _inherit_peaks(rows: list[_Row]) -> None:
    """Each row's peak at least its descendants' (by name prefix, as ``Report.inclusive``)."""
    highest: dict[str, int] = {}
    for row in rows:
        parts = row.info.name.split(".") if row.info.name else []
        for depth in range(len(parts) + 1):
            key = ".".join(parts[:depth])
            highest[key] = max(highest.get(key, 0), row.peak_bytes)
    for row in rows:
        row.peak_bytes = highest.get(row.info.name, row.peak_bytes)


def _memory(trace: Trace) -> tuple[Memory | None, list[int]]:
    """The pass's peak memory and each call's, when its storage lifetimes were recorded."""
    if trace.memory is None:
        return None, []
    level = levels(trace.memory)
    memory = summarize(trace.memory, level, [c.module.name for c in trace.calls])
    return replace(memory, autocast=trace.autocast), call_peaks(trace.memory, level)


def _dtype(trace: Trace) -> str:
    """The dtype holding most parameter bytes; without parameters, the first floating input's."""
    held: Counter[str] = Counter()
    seen: set[int] = set()
    for info in trace.modules:
        for param in info.params:
            if param.key not in seen:
                seen.add(param.key)
                held[param.dtype] += param.nbytes
    if held:
        return held.most_common(1)[0][0]
    floating = [t.dtype for t in trace.inputs if t.dtype.startswith(("float", "bfloat"))]
    return floating[0] if floating else "float32"


def _sizes(trace: Trace, alone: Mapping[str, int]) -> Sizes:
    """Trainable params, params and buffers in bytes (each tensor once), and the outputs of
    every leaf-module call (or container that ran alone) that makes new tensors (see
    :class:`Sizes`)."""
    params: dict[int, ParamInfo] = {}
    buffers: dict[int, ParamInfo] = {}
    for info in trace.modules:
        for param in info.params:
            params.setdefault(param.key, param)
        for buffer in info.buffers:
            buffers.setdefault(buffer.key, buffer)
    activations = sum(
        meta.nbytes
        for call in trace.calls
        if (not call.module.has_children or call.module.name in alone)
        and call.module.moves_memory
        and not call.recompute  # checkpointing's second forward: the same tensors again
        for meta in call.outputs
    )
    return Sizes(
        trainable_params=sum(p.numel for p in params.values() if p.trainable),
        param_bytes=sum(p.nbytes for p in params.values()),
        buffers=sum(b.numel for b in buffers.values()),
        buffer_bytes=sum(b.nbytes for b in buffers.values()),
        activation_bytes=activations,
        input_bytes=sum(t.nbytes for t in trace.inputs),
    )
