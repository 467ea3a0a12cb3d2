"""The report's rows: one per module (:class:`Layer`), the totals, the operators nothing
explains, what the model holds (:class:`Sizes`) and the separable blocks found in it.

Rows carry each module's *own* cost (``macs`` of the operators it ran itself, ``params`` it
owns and no earlier row counted), so every column adds up to the totals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from convprof.records import Shape


def intensity(macs: int, memory_bytes: int) -> float:
    """Arithmetic intensity: MACs per byte of memory traffic (0 when nothing moved)."""
    return macs / memory_bytes if memory_bytes else 0.0


class _Derived:
    """What follows from a row's or the totals' counts: FLOPs, intensity, the backward pass."""

    __slots__ = ()
    macs: int
    memory_bytes: int
    grad_input_macs: int
    grad_weight_macs: int

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def intensity(self) -> float:
        return intensity(self.macs, self.memory_bytes)

    @property
    def backward_macs(self) -> int:
        return self.grad_input_macs + self.grad_weight_macs

    @property
    def train_macs(self) -> int:
        """Forward and backward: one training step's MACs (the optimizer's update aside)."""
        return self.macs + self.backward_macs


@dataclass(frozen=True, slots=True)
class Layer(_Derived):
    """One module of the model: its own params and MACs over all its calls.

    ``kind`` is set on conv-family rows: ``"standard"``, ``"grouped"``, ``"depthwise"`` or
    ``"pointwise"``; the conv fields (``kernel_size`` ... ``groups``) likewise.
    """

    name: str
    type: str
    kind: str | None
    input_shape: Shape | None
    output_shape: Shape | None
    params: int
    macs: int
    calls: int
    has_children: bool = False
    kernel_size: Shape | None = None
    stride: Shape | None = None
    padding: Shape | str | None = None
    dilation: Shape | None = None
    groups: int | None = None
    unexplained: tuple[str, ...] = ()
    memory_bytes: int = 0
    shapes_vary: bool = False  # later calls had other input or output shapes than the first
    # With a backward pass (Report.backward): MACs of the gradients this module's own
    # operators produced, with respect to their inputs (activations) and to weights.
    grad_input_macs: int = 0
    grad_weight_macs: int = 0
    trainable_params: int = 0  # of ``params``, those that require grad
    # With peak memory (Report.memory): the most bytes alive while this module ran (any call,
    # and its gradient in a training step), everything held before it included; a container's
    # covers its children's.
    peak_bytes: int = 0

    @property
    def depth(self) -> int:
        return self.name.count(".") + 1 if self.name else 0

    def to_dict(self, backward: bool = True, memory: bool = True) -> dict[str, Any]:
        """Fields and derived figures; the gradient ones only with ``backward`` and the peak
        only with ``memory`` (a report that measured neither leaves them out rather than show
        zeros)."""
        data = asdict(self)
        data["flops"] = self.flops
        data["intensity"] = self.intensity
        if backward:
            data["backward_macs"] = self.backward_macs
            data["train_macs"] = self.train_macs
        else:
            del data["grad_input_macs"], data["grad_weight_macs"]
        if not memory:
            del data["peak_bytes"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Layer:
        """The inverse of :meth:`to_dict` (JSON turned tuples into lists)."""
        derived = ("flops", "intensity", "backward_macs", "train_macs")
        fields = {k: v for k, v in data.items() if k not in derived}
        for key in ("input_shape", "output_shape", "kernel_size", "stride", "dilation", "unexplained"):
            if fields.get(key) is not None:
                fields[key] = tuple(fields[key])
        if isinstance(fields.get("padding"), list):
            fields["padding"] = tuple(fields["padding"])
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class Totals(_Derived):
    params: int
    macs: int
    memory_bytes: int = 0
    grad_input_macs: int = 0
    grad_weight_macs: int = 0
    # activation checkpointing: forwards run again in the backward, apart from macs and
    # train_macs (which count each forward once)
    recompute_macs: int = 0


@dataclass(frozen=True, slots=True)
class Sizes:
    """What the model holds and what its forward pass makes, in bytes: the torchinfo figures.

    ``trainable_params`` require grad (the rest of ``Totals.params`` is frozen or packed);
    buffers are running statistics, masks and other state (tied ones once).
    ``activation_bytes`` adds up the outputs of every call of a leaf module that makes new
    tensors (views such as Flatten or Dropout in eval make none), as torchinfo's "forward
    pass size": what a forward pass writes, and about what a training step would keep for
    backward. It is neither the peak memory of inference (outputs are freed as the pass
    goes) nor the memory traffic of ``Layer.memory_bytes`` (reads and writes per layer).
    """

    trainable_params: int = 0
    param_bytes: int = 0
    buffers: int = 0
    buffer_bytes: int = 0
    activation_bytes: int = 0
    input_bytes: int = 0  # the inputs' tensors (each storage once)

    @property
    def total_bytes(self) -> int:
        """Inputs + params + activations: torchinfo's "Estimated Total Size" with convprof's
        activations figure. A sum of sizes, not a peak (``profile(memory=True)`` predicts one)."""
        return self.input_bytes + self.param_bytes + self.activation_bytes


@dataclass(frozen=True, slots=True)
class Unexplained:
    """Operators that ran without a formula and are not free under the convention: their
    compute is *not* in the totals, and the report says so."""

    op: str
    calls: int
    layers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Block:
    """A depthwise-separable block (a depthwise conv whose output a pointwise conv consumes,
    possibly through norms, activations and scaling) or an inverted residual (a pointwise
    expand before the depthwise), found from the data flow, whatever the modules are called.

    ``params``, ``macs`` and ``memory_bytes`` add up the member layers' rows.
    ``standard_macs`` is what one standard convolution with the block's input and output
    channels, the depthwise kernel and stride and the block's output size would cost;
    ``cost_vs_standard = macs / standard_macs`` (below 1: cheaper than the standard conv), the
    MobileNet paper's ``1/N + 1/k^2`` for a separable block. It is a cost ratio, not a saving:
    an inverted residual with expansion 6 is 2.7, and a name such as "savings" reads backwards.
    """

    name: str
    kind: str  # "separable" or "inverted_residual"
    layers: tuple[str, ...]  # (expand,) depthwise, project, in execution order
    in_channels: int
    out_channels: int
    kernel_size: Shape
    stride: Shape
    output_shape: Shape
    params: int
    macs: int
    memory_bytes: int
    depthwise_params: int
    depthwise_macs: int
    standard_macs: int

    @property
    def pointwise_params(self) -> int:
        return self.params - self.depthwise_params

    @property
    def pointwise_macs(self) -> int:
        return self.macs - self.depthwise_macs

    @property
    def intensity(self) -> float:
        return intensity(self.macs, self.memory_bytes)

    @property
    def cost_vs_standard(self) -> float:
        return self.macs / self.standard_macs if self.standard_macs else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            pointwise_params=self.pointwise_params,
            pointwise_macs=self.pointwise_macs,
            cost_vs_standard=self.cost_vs_standard,
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Block:
        # derived on the way out; older reports called cost_vs_standard "savings"
        derived = ("pointwise_params", "pointwise_macs", "cost_vs_standard", "savings")
        fields = {k: v for k, v in data.items() if k not in derived}
        for key in ("layers", "kernel_size", "stride", "output_shape"):
            fields[key] = tuple(fields[key])
        return cls(**fields)
