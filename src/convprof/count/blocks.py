"""Depthwise-separable blocks and inverted residuals, found from the recorded data flow.

A profiler lists layers; the question the tutorial asks is about blocks: what does a
depthwise conv plus a pointwise conv cost next to the one standard conv it replaces? The
recorder tags every tensor with the conv (or other formula module) calls it came from, carried
through shape-preserving free operators only (norms, activations, ``x * scale`` of a
squeeze-and-excitation, residual adds), so ``ModuleCall.sources`` says which calls feed
which. From that alone, never from module names or classes:

- a **separable** block is a depthwise conv and the first later pointwise conv it feeds;
- an **inverted residual** is the same with a pointwise conv feeding the depthwise one (the
  expand of MobileNetV2, MobileNetV3, EfficientNet, MNASNet, ShuffleNet V2's branches).

Each conv belongs to at most one block, taken in execution order. Pure arithmetic over records
and rows; the reference standard conv is costed by the engine's own conv formula.
"""

from __future__ import annotations

from collections.abc import Sequence

from convprof.count.formulas.conv import conv_macs
from convprof.records import ConvSpec, ModuleCall
from convprof.report import Block, Layer


def match(calls: Sequence[ModuleCall]) -> list[tuple[int, ...]]:
    """Indices into ``calls`` of each block's convs: ``(depthwise, project)`` or
    ``(expand, depthwise, project)``."""
    kinds = {
        i: call.module.conv.kind
        for i, call in enumerate(calls)
        if call.module.conv is not None and not call.module.conv.transposed and call.outputs
    }
    consumers: dict[int, list[int]] = {}
    for i, kind in kinds.items():
        if kind == "pointwise":
            for source in calls[i].sources:
                consumers.setdefault(source, []).append(i)
    used: set[int] = set()
    found: list[tuple[int, ...]] = []
    for d, kind in kinds.items():
        if kind != "depthwise" or d in used:
            continue
        project = next((p for p in consumers.get(d, ()) if p not in used), None)
        if project is None:
            continue
        expands = [e for e in calls[d].sources if kinds.get(e) == "pointwise" and e not in used]
        members = (d, project) if not expands else (max(expands), d, project)
        used.update(members)
        found.append(members)
    return found


def _prefix(names: Sequence[str]) -> str:
    common: list[str] = []
    for column in zip(*(name.split(".") for name in names), strict=False):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    return ".".join(common)


def _conv(call: ModuleCall) -> ConvSpec:
    spec = call.module.conv
    assert spec is not None, "match() returns conv calls only"
    return spec


def find_blocks(calls: Sequence[ModuleCall], layers: Sequence[Layer]) -> tuple[Block, ...]:
    """One :class:`Block` per distinct set of member modules (a block whose modules run
    several times is one row with the costs of all its calls)."""
    rows = {layer.name: layer for layer in layers}
    standard: dict[tuple[str, ...], int] = {}
    first: dict[tuple[str, ...], tuple[ModuleCall, ModuleCall, ModuleCall]] = {}
    for members in match(calls):
        names = tuple(calls[i].module.name for i in members)
        head, depthwise, project = calls[members[0]], calls[members[-2]], calls[members[-1]]
        # The reference: one standard conv from the block's input to its output.
        weight = (_conv(project).out_channels, _conv(head).in_channels, *_conv(depthwise).kernel_size)
        x, out = head.inputs[0][1].shape, project.outputs[0].shape
        standard[names] = standard.get(names, 0) + conv_macs(x, weight, out, False)
        first.setdefault(names, (head, depthwise, project))
    # The blocks with a member inside each module (by name): a block's common prefix names it
    # when that module holds this block only (MNASNet's first block sits directly in "layers",
    # which holds every block).
    holders: dict[str, set[tuple[str, ...]]] = {}
    for names in first:
        for name in names:
            parts = name.split(".")
            for depth in range(1, len(parts)):
                holders.setdefault(".".join(parts[:depth]), set()).add(names)
    blocks = []
    for names, (head, depthwise, project) in first.items():
        member_rows = [rows[name] for name in names]
        dw_row = rows[names[-2]]
        prefix = _prefix(names)
        unique = prefix and holders.get(prefix, set()) == {names}
        blocks.append(
            Block(
                name=prefix if unique else " + ".join(names),
                kind="inverted_residual" if len(names) == 3 else "separable",
                layers=names,
                in_channels=_conv(head).in_channels,
                out_channels=_conv(project).out_channels,
                kernel_size=_conv(depthwise).kernel_size,
                stride=_conv(depthwise).stride,
                output_shape=project.outputs[0].shape,
                params=sum(r.params for r in member_rows),
                macs=sum(r.macs for r in member_rows),
                memory_bytes=sum(r.memory_bytes for r in member_rows),
                depthwise_params=dw_row.params,
                depthwise_macs=dw_row.macs,
                standard_macs=standard[names],
            )
        )
    return tuple(blocks)
