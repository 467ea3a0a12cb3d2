"""Fake tensors for a distributed step: shapes, dtypes and devices, no data and no arithmetic.

A parallel step runs PyTorch's own FSDP2 and tensor parallelism, which need tensors on a real
device type: FSDP2 refuses meta parameters, and its all-gather buffers must live where the
parameters do. ``FakeTensorMode`` gives that on the CPU device at the cost of a meta tensor
(convprof's own zero-compute stand-ins cannot: they are meta tensors, which FSDP2 refuses, and
they clash with fake tensors). The model, sharded on meta, is materialised here as fake
tensors (``to_empty``), and the caller's inputs are made fake (real ones copied by shape only).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._pytree import tree_map


class Fake:
    """The mode of one step, and what it makes."""

    def __init__(self) -> None:
        # non-fake inputs allowed: the tensors PyTorch's parallel code makes itself (its
        # meshes, constant tables) meet the fake ones
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)

    def materialise(self, model: nn.Module) -> None:
        """The model's meta tensors as fake CPU tensors, in place (``to_empty``)."""
        with self.mode:
            model.to_empty(device="cpu")

    def inputs(self, value: Any) -> Any:
        """``value`` with every tensor made a fake CPU tensor of its shape, stride and dtype."""

        def fake(item: Any) -> Any:
            if not isinstance(item, torch.Tensor):
                return item
            with self.mode:
                made = torch.empty_strided(item.shape, item.stride(), dtype=item.dtype, device="cpu")
            return made.requires_grad_(item.requires_grad) if made.is_floating_point() else made

        return tree_map(fake, value)


@contextlib.contextmanager
def fake_tensors() -> Iterator[Fake]:
    """A :class:`Fake` whose mode is on for the block (so the step runs on fake tensors).
    ``FakeTensorMode`` logs a traceback for every meta kernel that raises; the error goes on
    to convprof, which names the module, so the log is kept quiet for the block."""
    fake = Fake()
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    disabled, logger.disabled = logger.disabled, True
    try:
        with fake.mode:
            yield fake
    finally:
        logger.disabled = disabled
