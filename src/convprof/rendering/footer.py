"""The lines under a table: totals in exact integers and human units, the convention, what was
not counted, and, when asked for, the backward pass, peak memory, per-token figures, measured
times and the roofline's summary."""

from __future__ import annotations

from collections.abc import Sequence

from convprof.report import Layer, LayerTime, Memory, Report, Timing, rolled_name
from convprof.report.tokens import TokenCost
from convprof.roofline import Machine
from convprof.units import format_binary_bytes, format_bytes, format_quantity


def rolled_times(timing: Timing, depth: int) -> dict[str, LayerTime]:
    """The measured times of rows rolled up to ``depth`` (``Report.rollup``): each group's
    leaves added up, under the group's name."""
    groups: dict[str, list[LayerTime]] = {}
    for layer in timing.layers:
        groups.setdefault(rolled_name(layer.name, depth), []).append(layer)
    return {key: LayerTime.total(key, members) for key, members in groups.items()}


def measured_time(timing: Timing, name: str, tree: bool) -> LayerTime | None:
    """A row's own measurement; in the tree, a container's is its own and everything's inside
    it added up."""
    if not tree:
        return timing.of(name)
    inside = [layer for layer in timing.layers if within(layer.name, name)]
    return LayerTime.total(name, inside) if inside else None


def timing_lines(timing: Timing, leaves: Sequence[Layer], *, markdown: bool) -> str:
    """The end-to-end forward next to what the timed layers account for (the leaves, and the
    containers' own work where they compute), and each conv kind's share of the MACs next to
    its share of the measured layer time: where they part ways."""
    share = 100 * timing.attributed / timing.forward if timing.forward else 0.0
    rest = timing.forward - timing.attributed
    lines = [
        f"Measured:     forward {seconds(timing.forward)} end to end (median of {timing.repeats}, "
        f"{seconds(timing.forward_low)} to {seconds(timing.forward_high)}; {timing.device}); layers "
        f"{seconds(timing.attributed)} ({share:.0f}%), "
        + (f"{seconds(rest)} in no layer." if rest >= 0 else "the hooks' cost exceeds the rest."),
    ]
    macs = sum(layer.macs for layer in leaves)
    kinds = [
        kind
        for kind in ("standard", "grouped", "depthwise", "pointwise")
        if any(x.kind == kind for x in leaves)
    ]
    if kinds and macs and timing.attributed:
        parts = []
        for kind in kinds:
            rows = [x for x in leaves if x.kind == kind]
            spent = sum(m.median for x in rows if (m := timing.of(x.name)) is not None)
            share = 100 * sum(x.macs for x in rows) / macs
            parts.append(
                f"{kind} {share:.1f}% of the MACs, {100 * spent / timing.attributed:.1f}% of the time"
            )
        lines.append("By kind:      " + "; ".join(parts) + ".")
    return "\n".join(f"{line}  " if markdown else line for line in lines) + "\n"


def within(name: str, container: str) -> bool:
    return not container or name == container or name.startswith(f"{container}.")


def roofline_lines(
    layers: Sequence[Layer], times: Sequence[float], machine: Machine, *, markdown: bool
) -> str:
    """How many rows sit under the memory roof, and the share of MACs and of roofline time
    that the memory-bound rows and the depthwise rows hold: where MACs and time part ways.
    ``times`` are the rows' roofline times, as the table computed them."""
    total_time, total_macs = sum(times), sum(layer.macs for layer in layers)

    def shares(chosen: list[tuple[Layer, float]]) -> str:
        macs = 100 * sum(layer.macs for layer, _ in chosen) / total_macs if total_macs else 0.0
        seconds = 100 * sum(t for _, t in chosen) / total_time if total_time else 0.0
        return f"{macs:.1f}% of the MACs, {seconds:.1f}% of the roofline time"

    rows = list(zip(layers, times, strict=True))
    memory_bound = [
        (layer, t) for layer, t in rows if machine.bound(layer.macs, layer.memory_bytes) == "memory"
    ]
    depthwise = [(layer, t) for layer, t in rows if layer.kind == "depthwise"]
    head = (
        f"{machine.name} ({machine.description}); balance {machine.balance:.1f} MACs/B; "
        f"lower bound {seconds(total_time)} (no fusion)."
        if machine.absolute
        else f"machine balance {machine.balance:g} MACs/B (times relative)."
    )
    lines = [
        f"Roofline:     {head}",
        f"              {len(memory_bound)} of {len(layers)} rows memory-bound: {shares(memory_bound)}.",
    ]
    if depthwise:
        plural = "s" if len(depthwise) != 1 else ""
        lines.append(f"              {len(depthwise)} depthwise row{plural}: {shares(depthwise)}.")
    return "\n".join(f"{line}  " if markdown else line for line in lines) + "\n"


def token_lines(cost: TokenCost, *, markdown: bool = False) -> str:
    """A language model's pass per token: tokens and context, MACs per token, parameters
    without embeddings, the rule of thumb next to the count, and the prefill before a cache."""
    batch = f"batch {cost.batch:,} x {cost.new:,} new"
    cached = f", after {cost.past:,} cached" if cost.past else ""
    lines = [
        f"Tokens:       {cost.tokens:,} ({batch}{cached}; context {cost.context:,})",
        f"Per token:    {format_quantity(round(cost.macs_per_token))} MACs, "
        f"{format_quantity(round(2 * cost.macs_per_token))} FLOPs (totals / tokens)",
        f"Params:       {cost.non_embedding_params:,} without embeddings "
        f"({format_quantity(cost.non_embedding_params)}); embeddings {cost.embedding_params:,}",
    ]
    rule = cost.rule_macs_per_token
    if rule is not None and cost.counted_vs_rule is not None:
        lines.append(
            f"Rule:         2N + 2 n_layer n_ctx d_attn = {format_quantity(2 * rule)} FLOPs per token "
            f"(N = params without embeddings; Kaplan et al. 2020); counted {cost.counted_vs_rule:.3f}x"
        )
    train = cost.train_macs_per_token
    if train is not None:
        versus = cost.train_counted_vs_rule
        lines.append(
            f"Training:     {format_quantity(round(2 * train))} FLOPs per token (train step / tokens)"
            + (
                f"; rule 6N + 6 n_layer n_ctx d_attn = {format_quantity(6 * rule)}, counted {versus:.3f}x"
                if rule is not None and versus is not None
                else ""
            )
        )
    if cost.prefill_macs is not None:
        per = cost.prefill_macs / (cost.batch * cost.past)
        lines.append(
            f"Prefill:      {cost.past:,} cached tokens cost {cost.prefill_macs:,} MACs "
            f"({format_quantity(round(per))} per token), not in the table"
        )
    return "\n".join(f"{line}  " if markdown else line for line in lines) + "\n"


def seconds(value: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def _backward_lines(report: Report) -> list[str]:
    """With a backward pass: its MACs by gradient, and the training step's MACs and FLOPs."""
    if not report.backward:
        return []
    total = report.total
    ratio = f", {total.train_macs / total.macs:.2f}x the forward" if total.macs else ""
    return [
        f"Backward:     {total.backward_macs:,} MACs ({format_quantity(total.backward_macs)}): gradients "
        f"w.r.t. inputs (dX) {total.grad_input_macs:,}, w.r.t. weights (dW) {total.grad_weight_macs:,}",
        f"Train step:   {total.train_macs:,} MACs ({format_quantity(total.train_macs)}) = "
        f"{2 * total.train_macs:,} FLOPs ({format_quantity(2 * total.train_macs)}), forward + backward"
        f"{ratio}; the optimizer step and the loss are not counted",
    ]


_PHASES = {
    "forward": "in the forward pass",
    "backward": "in the backward pass",
    "step": "in the optimizer's update",
}


def _peak_lines(memory: Memory | None) -> list[str]:
    """With peak memory: the peak, when and where it is reached, what it holds, and how."""
    if memory is None:
        return []
    what = (
        (f"training step ({memory.optimizer} update)" if memory.optimizer else "training step (no optimizer)")
        if memory.training
        else "inference (no_grad)"
    )
    if memory.autocast:
        what += f" under autocast ({memory.autocast})"
    where = f", at {memory.layer or '(root)'}" if memory.layer is not None else ""
    held = ", ".join(f"{name} {format_binary_bytes(size)}" for name, size in memory.at_peak)
    lines = [
        f"Peak memory:  {format_binary_bytes(memory.peak_bytes)} ({memory.peak_bytes:,} bytes), {what} on "
        f"{memory.device}, {_PHASES.get(memory.phase, memory.phase)}{where}",
        f"At the peak:  {held}",
        f"Memory:       {memory.convention}.",
    ]
    if memory.unmodelled:
        names = ", ".join(name or "(root)" for name in memory.unmodelled[:3]) + (
            f" and {len(memory.unmodelled) - 3} more" if len(memory.unmodelled) > 3 else ""
        )
        lines.append(
            f"Not modelled: the scratch of the CPU kernels in {names}, which no operator shows and no "
            "rule found predicts (oneDNN's for convolutions dilated beyond 6, the fused attention "
            "kernels under autocast; see docs/memory.md): expect the peak to differ there."
        )
    return lines


def footer(report: Report, *, markdown: bool = False, memory: bool = False) -> str:
    """Totals in exact integers and human units, the convention, and what was not counted."""
    total = report.total
    sizes = report.sizes
    lines = [
        f"Total params: {total.params:,} ({format_quantity(total.params)}); trainable "
        f"{sizes.trainable_params:,}, non-trainable {total.params - sizes.trainable_params:,}",
        f"Total MACs:   {total.macs:,} ({format_quantity(total.macs)})",
        f"Total FLOPs:  {total.flops:,} ({format_quantity(total.flops)})",
        *_backward_lines(report),
        f"Sizes:        params {format_bytes(sizes.param_bytes)}, "
        f"buffers {format_bytes(sizes.buffer_bytes)}; activations {format_bytes(sizes.activation_bytes)} "
        "(every leaf module's outputs, which a "
        "training step would keep for backward)",
        f"Total size:   {format_bytes(sizes.total_bytes)} = inputs {format_bytes(sizes.input_bytes)} "
        f"+ params {format_bytes(sizes.param_bytes)} + activations {format_bytes(sizes.activation_bytes)} "
        "(torchinfo's Estimated Total Size, with the activations above); a sum of sizes, not a peak: "
        "see --peak-memory",
    ]
    if memory:
        lines.append(
            f"Total bytes:  {total.memory_bytes:,} ({format_bytes(total.memory_bytes)}), "
            f"{total.intensity:.2f} MACs per byte; bytes = inputs read + weights read + outputs "
            "written by each leaf module (memory access cost)."
        )
    lines += _peak_lines(report.memory)
    lines.append(f"Convention:   {report.convention}.")
    if report.unexplained:
        lines.append("Not counted:  operators with no formula ran; their compute is missing above:")
        for u in report.unexplained:
            where = ", ".join(name or "(root)" for name in u.layers)
            lines.append(f"  {u.op}: {u.calls} call{'s' if u.calls != 1 else ''} in {where}")
    else:
        lines.append("Coverage:     complete (every operator that ran was counted or is free).")
    return "\n".join(f"{line}  " if markdown else line for line in lines) + "\n"
