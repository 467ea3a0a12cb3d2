"""What a checkpointed block's recompute runs under: checkpoint's ``context_fn`` for the
blocks a parallel plan checkpoints.

PyTorch's autograd engine runs a backward without the caller's function modes, so a
recompute would run other kernels than its forward (the device's attention, autocast's
casts), save other tensors, and fail checkpoint's own check: :func:`same_modes` enters the
forward's modes again around the recompute. :func:`selective` adds torchtitan's op-level
selective checkpointing: the outputs of the costly operators (matrix products, attention
kernels, a reduce-scatter) are kept from the forward, every second ``mm`` excepted, and
everything else (norms, activations, casts) runs again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

_ops = torch.ops.aten
# the operators whose outputs selective checkpointing keeps (the mm's every other time)
_KEPT = {
    _ops.mm.default,
    _ops._scaled_dot_product_efficient_attention.default,
    _ops._scaled_dot_product_flash_attention.default,
    _ops._scaled_dot_product_flash_attention_for_cpu.default,
    _ops._scaled_dot_product_cudnn_attention.default,
    torch.ops._c10d_functional.reduce_scatter_tensor.default,
}

Contexts = tuple[contextlib.AbstractContextManager[Any], contextlib.AbstractContextManager[Any]]


@contextlib.contextmanager
def _entered(modes: list[Any], inner: contextlib.AbstractContextManager[Any]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for mode in modes:
            stack.enter_context(mode)
        stack.enter_context(inner)
        yield


def same_modes() -> Contexts:
    """The forward as it is; the recompute under the function modes the forward ran under."""
    modes = list(torch.overrides._get_current_function_mode_stack())  # type: ignore[no-untyped-call]
    return contextlib.nullcontext(), _entered(modes, contextlib.nullcontext())


def selective() -> Contexts:
    """:func:`same_modes` with torchtitan's op-level policy: keep what :data:`_KEPT` makes, but
    every second ``mm`` of a block's forward (and of its recompute, counted alike)."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    counts = {"forward": 0, "recompute": 0}

    def policy(ctx: Any, func: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
        if func is _ops.mm.default:
            key = "recompute" if ctx.is_recompute else "forward"
            counts[key] += 1
            if counts[key] % 2 == 0:
                return CheckpointPolicy.PREFER_RECOMPUTE
        return CheckpointPolicy.MUST_SAVE if func in _KEPT else CheckpointPolicy.PREFER_RECOMPUTE

    forward, recompute = create_selective_checkpoint_contexts(policy)  # type: ignore[no-untyped-call]
    modes = list(torch.overrides._get_current_function_mode_stack())  # type: ignore[no-untyped-call]
    return forward, _entered(modes, recompute)
