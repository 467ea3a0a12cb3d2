"""The report: frozen rows and totals, numbers only.

Rows carry each module's *own* cost (``macs`` of the operators it ran itself, ``params`` it
owns and no earlier row counted), so every column adds up to the totals; ``rollup(depth)``
gives inclusive figures per name prefix, as fvcore's table does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from convprof.records import Shape

SCHEMA = 1
CONVENTION = (
    "MACs = multiply-accumulates of convolutions, linear layers, matmuls and attention, "
    "bias excluded; FLOPs = 2 x MACs; params counted once per tensor"
)
MEMORY_CONVENTION = (
    "peak = the most bytes of tensor storage alive at once (views and tied weights once), "
    "{rounding}; not counted: the CUDA context, library workspaces (cuBLAS, cuDNN), other "
    "kernels' internal scratch, allocator caching and fragmentation"
)
# The optimizers whose step a training step's memory can include (convprof.optimizers).
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
# What a peak holds, in the order tables list it (see convprof.peak).
CATEGORIES = (
    "parameter",
    "buffer",
    "input",
    "optimizer",
    "gradient",
    "activation",
    "output",
    "kept",
    "temporary",
)


def _table(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"a {what} must be a JSON object, got {value!r}")
    return value


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
class Memory:
    """Peak memory of the pass, predicted from storage lifetimes (see :mod:`convprof.memory.peak`).

    ``peak_bytes`` is the most bytes alive at once, everything the pass starts from included
    (``held_bytes``: parameters, buffers, inputs and, for a training step, the optimizer's
    state). ``at_peak`` splits it by category (see ``CATEGORIES``), ``phase`` says when it was
    reached (``forward``, ``backward`` or the optimizer's ``step``) and ``layer`` which module
    made the allocation that reached it (None: the loss, the optimizer, code outside any
    module). ``training``: a training step (forward in training mode, backward, ``optimizer``'s
    update, if any); else one inference forward under ``no_grad``. ``block``: the allocator's
    rounding applied to every storage (512 bytes for ``device`` cuda, 1 for cpu).
    ``autocast``: the dtype of a mixed-precision forward (None: none).
    """

    peak_bytes: int
    phase: str
    layer: str | None
    at_peak: tuple[tuple[str, int], ...]
    held_bytes: int
    training: bool = False
    optimizer: str | None = None
    device: str = "cpu"
    block: int = 1
    autocast: str | None = None

    def held_at_peak(self, category: str) -> int:
        """Bytes of one category alive at the peak (0 when there are none)."""
        return dict(self.at_peak).get(category, 0)

    @property
    def convention(self) -> str:
        rounding = (
            "each storage rounded up to CUDA's 512-byte blocks"
            if self.block > 1
            else "each storage at its size (the CPU allocator does not round), with oneDNN's "
            "convolution and LSTM copies and BLAS's operand copies"
        )
        return MEMORY_CONVENTION.format(rounding=rounding)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at_peak"] = dict(self.at_peak)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Memory:
        fields = dict(data)
        fields["at_peak"] = tuple(_table(fields.get("at_peak", {}), "memory split").items())
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class LayerTime:
    """Seconds one forward pass spends in a leaf module (all its calls): median, fastest, slowest."""

    name: str
    median: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Timing:
    """What :func:`convprof.record.timing.measure` measured: per leaf layer and end to end."""

    device: str  # e.g. "cpu, 2 threads"
    repeats: int
    forward: float  # end-to-end forward without hooks, median seconds
    forward_low: float
    forward_high: float
    layers: tuple[LayerTime, ...]

    @property
    def attributed(self) -> float:
        """The leaf layers' median times added up."""
        return sum(layer.median for layer in self.layers)

    def of(self, name: str) -> LayerTime | None:
        return next((layer for layer in self.layers if layer.name == name), None)


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


@dataclass(frozen=True, slots=True)
class Report:
    model: str
    inputs: tuple[Shape, ...]
    layers: tuple[Layer, ...]
    total: Totals
    unexplained: tuple[Unexplained, ...] = ()
    convention: str = CONVENTION
    blocks: tuple[Block, ...] = ()
    sizes: Sizes = Sizes()
    dtype: str = "float32"  # what the model computes in: its weights' dtype (most bytes), else its input's
    backward: bool = False  # a backward pass was counted: the grad_* figures are measured, not zero
    memory: Memory | None = None  # peak memory, when it was asked for (Layer.peak_bytes too)

    @property
    def complete(self) -> bool:
        """True when every operator that ran was counted by a formula or is free."""
        return not self.unexplained

    def rollup(self, depth: int) -> tuple[Layer, ...]:
        """Rows merged by the first ``depth`` components of their names, inclusive of
        everything below; a group keeps the metadata of the module that names it."""
        if depth < 0:
            raise ValueError(f"depth must be 0 or more, got {depth}")
        groups: dict[str, list[Layer]] = {}
        for layer in self.layers:
            key = ".".join(layer.name.split(".")[:depth]) if layer.name else ""
            groups.setdefault(key, []).append(layer)
        rows = []
        for key, members in groups.items():
            head = next((m for m in members if m.name == key), members[0])
            collapsed = len(members) > 1 or (head.has_children and head.depth == depth)
            rows.append(
                replace(
                    head,
                    name=key,
                    params=sum(m.params for m in members),
                    macs=sum(m.macs for m in members),
                    memory_bytes=sum(m.memory_bytes for m in members),
                    grad_input_macs=sum(m.grad_input_macs for m in members),
                    grad_weight_macs=sum(m.grad_weight_macs for m in members),
                    peak_bytes=max(m.peak_bytes for m in members),
                    trainable_params=sum(m.trainable_params for m in members),
                    has_children=head.has_children and not collapsed,
                    kind=head.kind if len(members) == 1 else None,
                    unexplained=tuple(op for m in members for op in m.unexplained),
                )
            )
        return tuple(rows)

    def inclusive(self) -> dict[str, Totals]:
        """Params, MACs and bytes of every module *with everything below it*, by name."""
        sums: dict[str, list[int]] = {}
        for layer in self.layers:
            parts = layer.name.split(".") if layer.name else []
            for depth in range(len(parts) + 1):
                acc = sums.setdefault(".".join(parts[:depth]), [0, 0, 0, 0, 0])
                acc[0] += layer.params
                acc[1] += layer.macs
                acc[2] += layer.memory_bytes
                acc[3] += layer.grad_input_macs
                acc[4] += layer.grad_weight_macs
        return {name: Totals(*acc) for name, acc in sums.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Read back what :meth:`to_dict` wrote (``convprof profile --format json``)."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a convprof report of schema {SCHEMA} (schema: {found!r})")
        try:
            return cls(
                model=data["model"],
                inputs=tuple(tuple(s) for s in data["inputs"]),
                layers=tuple(Layer.from_dict(_table(layer, "layer")) for layer in data["layers"]),
                total=Totals(
                    data["total"]["params"],
                    data["total"]["macs"],
                    data["total"].get("memory_bytes", 0),
                    data["total"].get("grad_input_macs", 0),
                    data["total"].get("grad_weight_macs", 0),
                ),
                unexplained=tuple(
                    Unexplained(u["op"], u["calls"], tuple(u["layers"])) for u in data["unexplained"]
                ),
                convention=data["convention"],
                blocks=tuple(Block.from_dict(b) for b in data.get("blocks", ())),
                sizes=Sizes(**_table(data.get("sizes", {}), "sizes table")),
                dtype=data.get("dtype", "float32"),
                backward=data.get("backward", False),
                memory=Memory.from_dict(_table(data["memory"], "memory table"))
                if data.get("memory")
                else None,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed convprof report: {type(exc).__name__}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form with stable keys (``schema`` versions it)."""
        return {
            "schema": SCHEMA,
            "convention": self.convention,
            "model": self.model,
            "dtype": self.dtype,
            "inputs": [list(s) for s in self.inputs],
            "total": {
                "params": self.total.params,
                "macs": self.total.macs,
                "flops": self.total.flops,
                "memory_bytes": self.total.memory_bytes,
                **(
                    {
                        "grad_input_macs": self.total.grad_input_macs,
                        "grad_weight_macs": self.total.grad_weight_macs,
                        "backward_macs": self.total.backward_macs,
                        "train_macs": self.total.train_macs,
                    }
                    if self.backward
                    else {}
                ),
            },
            **({"backward": True} if self.backward else {}),
            "complete": self.complete,
            "unexplained": [asdict(u) for u in self.unexplained],
            "layers": [layer.to_dict(self.backward, self.memory is not None) for layer in self.layers],
            "blocks": [block.to_dict() for block in self.blocks],
            "sizes": asdict(self.sizes),
            **({"memory": self.memory.to_dict()} if self.memory is not None else {}),
        }

    def __str__(self) -> str:
        from convprof.rendering.render import render

        return render(self)

    def _repr_html_(self) -> str:
        """Jupyter shows a report as its HTML table (rendered, like ``str``, by render)."""
        from convprof.rendering.render import render

        return render(self, format="html")

    def _repr_markdown_(self) -> str:
        """For front ends that take Markdown rather than HTML."""
        from convprof.rendering.render import render

        return render(self, format="markdown")
