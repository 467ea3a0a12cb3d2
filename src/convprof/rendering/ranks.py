"""A distributed step under the layer table: one row per rank class, then its collectives.

The table above is the first rank's step (its local shapes); these lines say what every class
of ranks holds at its peak, computes and sends, and, with a machine (``roofline``), the least
time the step can take: its training MACs at the machine's peak rate, or what it sends at the
machine's link bandwidths (NVLink within a node, the network between nodes), whichever is
longer (full overlap), and the model FLOPs utilisation that bound allows. A pipeline's ranks
wait for its slowest stage, and for it to fill and drain: (m + p - 1) of that stage's
micro-steps for m micro-batches over p stages.
"""

from __future__ import annotations

import math

from convprof.rendering.footer import seconds
from convprof.rendering.tables import rows
from convprof.report import RankClass, Report
from convprof.roofline import Machine, link_seconds
from convprof.units import format_binary_bytes, format_quantity


def _peak(rank: RankClass) -> str:
    memory = rank.memory
    if memory is None:
        return ""
    where = f", {memory.layer or '(root)'}" if memory.layer is not None else ""
    return f"{format_binary_bytes(rank.peak_bytes)} ({memory.phase}{where})"


def rank_lines(report: Report, machine: Machine | None, *, format: str = "table") -> str:
    """The rank classes and their collectives, as tables and lines in ``format``."""
    markdown = format == "markdown"
    world = sum(len(r.ranks) for r in report.ranks)
    first = report.ranks[0].name.split(",")[0].split("-")[0].replace("ranks", "rank")
    lines = [
        f"Parallel:     {report.plan} ({world} ranks); the table above is {first}'s step (its local shapes); "
        "per rank class:"
    ]
    recompute = any(rank.recompute_macs for rank in report.ranks)
    headers = ["Ranks", "Peak memory (when, where)", "MACs", "Train MACs"]
    headers += ["Recompute"] if recompute else []
    headers += ["Params held", "Sends / step"]
    cells = [
        [
            rank.name,
            _peak(rank),
            format_quantity(rank.macs),
            format_quantity(rank.train_macs),
            *([format_quantity(rank.recompute_macs)] if recompute else []),
            f"{format_quantity(rank.params)} ({format_binary_bytes(rank.param_bytes)})",
            format_binary_bytes(rank.sent_bytes),
        ]
        for rank in report.ranks
    ]
    text = "\n".join(f"{line}  " if markdown else line for line in lines) + "\n"
    text += rows(headers, cells, format=format, right=frozenset(headers[2:])) + "\n"
    text += _collectives(report, format)
    if machine is not None and machine.absolute:
        text += _bounds(report, machine, markdown)
    return text


def _collectives(report: Report, format: str) -> str:
    headers = ["Ranks", "Collective", "Phase", "Group", "Calls", "Payload", "Sent"]
    cells = [
        [
            rank.name,
            c.kind,
            c.phase,
            f"{c.group} ({c.group_size})",
            f"{c.count:,}",
            format_binary_bytes(c.bytes),
            format_binary_bytes(c.sent_bytes),
        ]
        for rank in report.ranks
        for c in rank.collectives
    ]
    if not cells:
        return "Collectives:  none (one rank's step sends nothing).\n"
    note = (
        "Collectives:  per rank and step; payload as nccl-tests counts it, sent = what one rank sends "
        "with ring algorithms."
    )
    return (
        note
        + ("  \n" if format == "markdown" else "\n")
        + rows(headers, cells, format=format, right=frozenset(headers[4:]))
    )


def _bounds(report: Report, machine: Machine, markdown: bool) -> str:
    lines = []
    # the step's arithmetic includes the recompute; MFU counts the model's FLOPs only
    computing = {
        rank.rank: (rank.train_macs + rank.recompute_macs) / machine.macs_per_second for rank in report.ranks
    }
    stages, chunks, looped = dict(report.mesh).get("pp", 1), report.microbatches, report.stages_per_rank
    # a pipeline goes at its slowest rank's pace, and fills and drains: its step is at least
    # (m v + p - 1) of that rank's stage steps (v stages a rank, each 1 / (m v) of its work;
    # GPipe and 1F1B run v = 1), whatever a rank computes
    steps = chunks * looped + stages - 1
    # (a zero-bubble schedule may fill it with weight gradients: the bound is its computing)
    filled = stages > 1 and chunks and not report.zero_bubble
    pipeline = max(computing.values()) * steps / (chunks * looped) if filled else 0.0
    for rank in report.ranks:
        model = rank.train_macs / machine.macs_per_second
        compute = max(computing[rank.rank], pipeline)
        unit = "micro-steps of its slowest stage" if looped == 1 else "stage steps of its slowest rank"
        waits = (
            f", the pipeline {seconds(pipeline)}: {steps} {unit}, {stages - 1} of them filling and draining"
            if pipeline
            else ""
        )
        sends = [(c.sent_bytes, span(report.mesh, c.group)) for c in rank.collectives]
        sending = link_seconds(machine.name, sends)
        if sending is None:
            lines.append(
                f"Step time:    {rank.name}: at least {seconds(compute)} on {machine.name} (computing "
                f"{seconds(computing[rank.rank])}{waits}); "
                "no link bandwidths for it, so communication is not bounded"
            )
            continue
        bound = max(compute, sending)
        lines.append(
            f"Step time:    {rank.name}: at least {seconds(bound)} on {machine.name} (computing "
            f"{seconds(computing[rank.rank])}{waits}, sending {seconds(sending)}, full overlap); MFU at most "
            f"{100 * model / bound:.0f}%"
        )
    return "\n".join(f"{line}  " if markdown else line for line in lines) + "\n"


def span(mesh: tuple[tuple[str, int], ...], group: str) -> int:
    """How many neighbouring ranks a group of the mesh dimension ``group`` spans: its size
    times the stride of the dimensions inside it (the whole world for an unknown group)."""
    names = [name for name, _ in mesh]
    if group not in names:
        return math.prod(size for _, size in mesh)
    index = names.index(group)
    inner = math.prod(size for _, size in mesh[index + 1 :])
    return (mesh[index][1] - 1) * inner + 1
