"""A transformers model's inputs in a fake step: what fake tensors cannot tell it, and the
cache a training step with checkpointing does not keep.

transformers takes a fake tensor for a traced one (``is_tracing``) and then keeps every
attention mask, as a compiled graph must: an all-ones ``attention_mask`` and positions that
count up (one sequence per row) would, on real tensors, leave no mask at all and let PyTorch's
attention run causal, grouped-query attention without repeating keys and values. A step on fake
tensors would then predict the memory of a masked attention that the real run never makes (the
mask, and keys and values repeated per query head: 3% of the tiny Llama's peak in
tests/test_pipeline.py, more as the sequence and the heads per key grow). convprof reads the
answers from the caller's real inputs, before they are made fake: an all-ones mask is the same
as none to a transformers model, and is left out; positions that count up (or none given) are
told to the model's mask builder, which then makes no packed-sequence mask. Packed positions
and padding masks go in as given.

With activation checkpointing, transformers turns its key/value cache off
(``gradient_checkpointing_enable``: "use_cache=True is incompatible with gradient
checkpointing"), and so does convprof's ``checkpoint="blocks"`` unless the caller passes
``use_cache``: a cache would take a copy of every layer's keys and values in the forward, and
again in each recompute, held to the end of the backward (measured on real tensors: a
Llama layer of width 512 keeps 8 MiB more per 1,024 tokens).
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator, Mapping
from typing import Any, TypeGuard

import torch
from torch import nn


def _transformers(model: nn.Module) -> bool:
    return any(c.__module__.startswith("transformers.") for c in type(model).__mro__)


def _real(value: Any) -> TypeGuard[torch.Tensor]:
    """A tensor of the caller's with values to read: on a real device, integer or boolean."""
    return isinstance(value, torch.Tensor) and value.device.type != "meta" and not value.is_floating_point()


def known_values(model: nn.Module, kwargs: Mapping[str, Any], checkpointed: bool) -> dict[str, Any]:
    """``kwargs`` for a transformers model's fake step: without an all-ones
    ``attention_mask``, and with ``use_cache=False`` when its blocks are checkpointed."""
    given = dict(kwargs)
    if not _transformers(model):
        return given
    mask = given.get("attention_mask")
    if _real(mask) and bool(mask.all()):
        del given["attention_mask"]
    if checkpointed and "use_cache" in inspect.signature(model.forward).parameters:
        given.setdefault("use_cache", False)
    return given


@contextlib.contextmanager
def unpacked(model: nn.Module, kwargs: Mapping[str, Any]) -> Iterator[None]:
    """A transformers model's sequences known to be unpacked for the block, unless the
    caller's ``position_ids`` say they are packed."""
    masking = sys.modules.get("transformers.masking_utils")
    find = getattr(masking, "find_packed_sequence_indices", None)
    positions = kwargs.get("position_ids")
    if find is None or not _transformers(model) or (_real(positions) and find(positions) is not None):
        yield
        return
    masking.find_packed_sequence_indices = lambda position_ids: None  # type: ignore[union-attr]
    try:
        yield
    finally:
        masking.find_packed_sequence_indices = find  # type: ignore[union-attr]
