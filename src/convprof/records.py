"""Frozen facts that one forward pass revealed.

Records are the hand-off between the only module that touches PyTorch's machinery
(:mod:`convprof.record.recorder`) and everything downstream. They hold shapes and plain values,
never tensors, so counting, reporting and rendering stay pure arithmetic and a record can be
built by hand in a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

Shape = tuple[int, ...]
Plain = int | float | bool | str | None | tuple["Plain", ...]


@dataclass(frozen=True, slots=True)
class TensorMeta:
    """Shape and element type of one tensor: what a cost formula may look at.

    A nested tensor (a batch of sequences of different lengths, as ``nn.TransformerEncoder``
    makes from a padding mask) has its components' shapes in ``parts``; ``shape`` is then the
    padded shape they fit in, and ``numel`` counts the real elements only.

    A sparse tensor (COO, CSR, CSC, BSR, BSC) has ``stored``: the scalar values it keeps (a
    block layout's blocks times their size). A product with it multiplies those only, so
    counting one as dense would overstate it by the inverse of its density (see
    formulas.linear); ``numel`` stays the dense count, as PyTorch's is.
    """

    shape: Shape
    dtype: str
    itemsize: int
    parts: tuple[Shape, ...] = ()
    stored: int | None = None  # a sparse tensor's stored values; None for a dense one
    # derived once: counting reads it for every input and output of every call
    numel: int = field(init=False, repr=False, compare=False)
    nbytes: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        numel = sum(prod(part) for part in self.parts) if self.parts else prod(self.shape)
        object.__setattr__(self, "numel", numel)
        object.__setattr__(self, "nbytes", numel * self.itemsize)

    @property
    def sequences(self) -> tuple[Shape, ...]:
        """The shapes of the batch's members: the parts of a nested tensor, else the shape."""
        return self.parts or (self.shape,)


ArgValue = TensorMeta | Plain | tuple["ArgValue", ...]


@dataclass(frozen=True, slots=True)
class OpCall:
    """One ATen operator call seen by the dispatch mode.

    ``args`` mirrors the operator's positional arguments (tensors replaced by their
    :class:`TensorMeta`), so an op formula reads them by position as in the schema.
    """

    op: str
    args: tuple[ArgValue, ...]
    kwargs: tuple[tuple[str, ArgValue], ...] = ()
    outputs: tuple[TensorMeta, ...] = ()
    # In a backward pass: an operand is one of the model's parameters (or a view of one), so
    # the operator computes a gradient with respect to something else (see formulas.backward).
    reads_weight: bool = False

    def tensor(self, index: int) -> TensorMeta:
        """The positional argument ``index``, which the schema says is a tensor."""
        value = self.args[index]
        if not isinstance(value, TensorMeta):
            raise TypeError(f"{self.op}: argument {index} is not a tensor ({value!r})")
        return value


@dataclass(frozen=True, slots=True)
class ParamInfo:
    """A parameter (or buffer) a module owns directly; ``key`` identifies the tensor so tied
    weights count once."""

    name: str
    key: int
    shape: Shape
    itemsize: int = 4
    trainable: bool = True  # requires_grad (False for buffers and packed quantized weights)
    dtype: str = "float32"
    # a distributed step: the shape this rank computes with (FSDP2's gathered parameter, a
    # tensor-parallel shard), at which the backward computes its gradient; None when whole
    local: Shape | None = None
    # derived once (a module's record is kept across profiles): counting reads them per call
    numel: int = field(init=False, repr=False, compare=False)
    nbytes: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "numel", prod(self.shape))
        object.__setattr__(self, "nbytes", self.numel * self.itemsize)


@dataclass(frozen=True, slots=True)
class ConvSpec:
    """Hyperparameters of a conv-family module, as the module declares them."""

    in_channels: int
    out_channels: int
    kernel_size: Shape
    stride: Shape
    padding: Shape | str
    dilation: Shape
    groups: int
    transposed: bool

    @property
    def weight_shape(self) -> Shape:
        """The weight the module applies, whether it is a parameter of its own or computed
        (``weight_norm``, ``spectral_norm``, any parametrization): ``(C_out, C_in/g, *k)``,
        or ``(C_in, C_out/g, *k)`` when transposed."""
        if self.transposed:
            return (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @property
    def kind(self) -> str:
        """``depthwise``: one group per input channel (channel multipliers included);
        ``grouped``: any other grouping (a grouped 1x1 too); ``pointwise``: all-ones kernel;
        ``standard``: the rest."""
        if self.groups > 1 and self.groups == self.in_channels:
            return "depthwise"
        if self.groups > 1:
            return "grouped"
        if all(k == 1 for k in self.kernel_size):
            return "pointwise"
        return "standard"


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """What a module is, independent of any call: name, type, own parameters, plain attributes."""

    name: str
    type: type
    params: tuple[ParamInfo, ...]
    config: tuple[tuple[str, Plain], ...] = ()
    conv: ConvSpec | None = None
    has_children: bool = False
    moves_memory: bool = True  # False for views and pass-throughs (Flatten, Identity, Dropout)
    buffers: tuple[ParamInfo, ...] = ()  # buffers it owns directly (running statistics, masks)

    @property
    def type_name(self) -> str:
        return self.type.__name__

    def attr(self, key: str) -> Plain:
        """A plain attribute of the module (``in_features``, ``num_heads``, ...), or None."""
        return dict(self.config).get(key)

    def param(self, name: str) -> ParamInfo | None:
        return next((p for p in self.params if p.name == name), None)


@dataclass(frozen=True, slots=True)
class ModuleCall:
    """One call of a module's forward: its tensor inputs by argument name, outputs, the
    operators that ran while it was the innermost module running, and where its input came from."""

    module: ModuleInfo
    inputs: tuple[tuple[str, TensorMeta], ...]
    outputs: tuple[TensorMeta, ...]
    ops: tuple[OpCall, ...] = ()
    # Data flow: indices (into Trace.calls) of the earlier calls of modules with a formula
    # (conv, linear, attention) whose outputs reach this call's positional inputs through
    # shape-preserving free operators only (norms, activations, residual adds, scaling).
    sources: tuple[int, ...] = ()
    # The call raised (its parent caught the exception): it has no outputs, so its cost is
    # counted from the operators it ran, not from its module formula.
    raised: bool = False
    # With a backward pass: the operators that ran in the autograd nodes this call created
    # (the gradient of what it computed), in the order they ran.
    backward: tuple[OpCall, ...] = ()
    # The call ran in the backward pass: activation checkpointing running a forward again to
    # remake what it did not keep (its MACs are the step's recompute, not its forward)
    recompute: bool = False

    def input(self, name: str, position: int = 0) -> TensorMeta | None:
        """The tensor input called ``name``, else the one at ``position``, else None."""
        for key, meta in self.inputs:
            if key == name:
                return meta
        return self.inputs[position][1] if len(self.inputs) > position else None


@dataclass(frozen=True, slots=True)
class CollectiveCall:
    """One collective a rank ran, as a distributed training step's dispatch mode saw it.

    ``kind`` is what it does (``all_gather``, ``reduce_scatter``, ``all_reduce``,
    ``all_to_all``, ``broadcast``, ``send``, ``recv``, ``gather``, ``scatter``, ``reduce``),
    ``op`` the operator, ``phase`` when (``forward``, ``backward`` or the optimizer's
    ``step``) and ``micro`` in which micro-step. ``group`` names the mesh dimension its
    process group spans (``dp_shard``, ``tp``, ...; ``world`` for a group of no dimension),
    ``group_size`` its ranks. ``bytes`` is the payload as nccl-tests counts it: the gathered
    output of an all-gather, the input of a reduce-scatter, the buffer of an all-reduce,
    broadcast, send or receive, the send buffer of an all-to-all.
    """

    kind: str
    op: str
    phase: str
    micro: int
    group: str
    group_size: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Trace:
    """Everything one forward pass revealed: modules in ``named_modules()`` order and calls in
    the order they started."""

    model: str
    inputs: tuple[TensorMeta, ...]
    modules: tuple[ModuleInfo, ...]
    calls: tuple[ModuleCall, ...] = ()
    backward: bool = False  # a backward pass was recorded (ModuleCall.backward)
    memory: MemoryTrace | None = None  # storage lifetimes, when peak memory was asked for
    autocast: str | None = None  # the dtype of a mixed-precision forward (torch.autocast's)
    collectives: tuple[CollectiveCall, ...] = ()  # a distributed step's, in the order they ran
    # A distributed step: every call is counted from its operators, since a module's declared
    # sizes (in_features) are the whole model's, not the shard this rank computes with
    ops_only: bool = False


@dataclass(frozen=True, slots=True)
class MemoryTrace:
    """Storage lifetimes of one pass (see :mod:`convprof.memory.lifetimes`), as plain integers.

    Storage ``i`` has ``sizes[i]`` bytes, was made at tick ``made[i]`` by call ``owners[i]``
    (-1: before the pass or outside any module) and freed at tick ``freed[i]`` (-1: still
    alive when the pass ended). ``roles[i]`` is ``parameter``, ``buffer``, ``input``,
    ``optimizer``, ``gradient`` or empty (classified by its lifetime). ``marks`` holds the
    ticks at which the phases ended (``held``: what existed before the pass; ``forward``;
    ``backward``; ``step``), ``calls`` the (open, close) ticks of each module call in
    ``Trace.calls`` order, ``block`` the allocator's rounding in bytes (512 on CUDA, 1 on CPU).
    ``optimizer`` names the optimizer whose step was simulated, if any; ``unmodelled`` the
    calls that ran a kernel whose scratch the prediction leaves out.
    """

    sizes: tuple[int, ...]
    roles: tuple[str, ...]
    owners: tuple[int, ...]
    made: tuple[int, ...]
    freed: tuple[int, ...]
    ticks: int
    marks: tuple[tuple[str, int], ...]
    calls: tuple[tuple[int, int], ...]
    block: int = 1
    optimizer: str | None = None
    device: str = "cpu"
    unmodelled: tuple[int, ...] = ()  # calls whose kernels keep scratch not modelled (scratch.unmodelled)
