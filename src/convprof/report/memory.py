"""Peak memory in a report: the figure, when and where it was reached, and what it held."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from convprof.report.schema import json_object

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
    "unsharded parameter",  # a distributed step: FSDP's gathered parameters
    "communication",  # a distributed step: all-gather and reduce-scatter buffers
    "activation",
    "output",
    "kept",
    "temporary",
)


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
    ``autocast``: the dtype of a mixed-precision forward (None: none). ``unmodelled``: the
    modules that ran a CPU kernel whose scratch is not modelled (a convolution dilated beyond
    6, a fused attention kernel under autocast; see :mod:`convprof.memory.scratch`): the
    figure may be low or high there.
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
    unmodelled: tuple[str, ...] = ()  # modules whose kernels keep scratch not modelled

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
        fields["at_peak"] = tuple(json_object(fields.get("at_peak", {}), "memory split").items())
        fields["unmodelled"] = tuple(str(name) for name in fields.get("unmodelled", ()))
        return cls(**fields)
