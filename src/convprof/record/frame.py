"""A module call in progress: what the session collects for it until its forward returns."""

from __future__ import annotations

from convprof.records import ModuleCall, ModuleInfo, OpCall, TensorMeta


class Frame:
    """One module call of the pass (a plain slotted class: one is made per module call)."""

    __slots__ = (
        "backward",
        "closed",
        "index",
        "inputs",
        "modes",
        "name",
        "opened",
        "ops",
        "outputs",
        "quiet",
        "raised",
        "recompute",
        "sources",
        "start",
    )

    def __init__(
        self,
        name: str,
        index: int,
        inputs: tuple[tuple[str, TensorMeta], ...],
        sources: frozenset[int],
        quiet: bool,
    ) -> None:
        self.name = name
        self.index = index  # position in the trace's calls
        self.inputs = inputs
        self.sources = sources
        self.ops: list[OpCall] = []
        self.outputs: tuple[TensorMeta, ...] | None = None
        self.raised = False  # the call raised (a parent caught it, or the pass failed here)
        self.start = 0  # with a backward pass: the autograd sequence number when the call began
        self.backward: list[OpCall] = []
        self.quiet = quiet  # a childless module whose operators are not recorded (is_quiet)
        self.opened = self.closed = 0  # with peak memory: the lifetime ticks it ran between
        self.recompute = False  # opened in the backward pass: a checkpointed forward run again
        self.modes = 0  # function modes a recompute pushed back for itself (Session.pre_hook)

    def call(self, info: ModuleInfo) -> ModuleCall:
        """The record of this call, of the module ``info`` describes."""
        return ModuleCall(
            info,
            self.inputs,
            self.outputs or (),
            tuple(self.ops),
            tuple(sorted(self.sources)),
            self.raised,
            tuple(self.backward),
            self.recompute,
        )
