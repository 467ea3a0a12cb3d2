"""A copy of the user's model to shard: its structure, with every tensor on the meta device.

The parallel step shards and runs a model, which changes it for good (FSDP2 replaces its
parameters and its class, tensor parallelism installs hooks), so it works on a copy, never on
the model it was given. The copy holds no data: each parameter, buffer and tensor attribute
is a meta tensor of the same shape, stride and dtype (``requires_grad`` kept), so copying a
model of any size costs next to nothing, and the user's tensors are neither read nor moved.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def _meta(tensor: torch.Tensor) -> torch.Tensor:
    made = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="meta")
    if isinstance(tensor, nn.Parameter):
        return nn.Parameter(made, requires_grad=tensor.requires_grad)
    return made.requires_grad_(tensor.requires_grad) if tensor.is_floating_point() else made


def _tensors(value: Any, depth: int, found: dict[int, torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        found.setdefault(id(value), value)
    elif depth < 4 and isinstance(value, (list, tuple, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            _tensors(item, depth + 1, found)


def meta_copy(model: nn.Module) -> nn.Module:
    """The model's structure with meta tensors (tied weights stay tied)."""
    found: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, value in vars(module).items():
            if name in ("_parameters", "_buffers"):
                found.update((id(t), t) for t in value.values() if t is not None)
            elif isinstance(value, (torch.Tensor, list, tuple, dict)) and not name.startswith("_forward"):
                _tensors(value, 0, found)
    memo: dict[int, Any] = {key: _meta(tensor) for key, tensor in found.items()}
    return copy.deepcopy(model, memo)
