"""Which attention kernel the device would run, for a zero-compute pass that predicts memory.

``F.scaled_dot_product_attention`` picks a kernel by device: on meta tensors it always runs its
math decomposition, which materialises the attention matrix (batch x heads x queries x keys)
and, in a training step, saves it for backward. The CPU and CUDA run fused kernels that keep
only the output and one log-sum-exp per query row. The MACs are the same either way (the
formulas count a fused kernel's scores once), but the memory is not: a long-context peak on
meta would be the matrix's. So a zero-compute pass that predicts memory asks what the target
device would choose and runs that kernel's meta implementation instead:

- CPU: PyTorch's own choice (``torch._fused_sdp_choice``), made on small CPU tensors of the
  same dtype, ranks, broadcasting and head sizes (the rules look at nothing else); its flash
  kernel when chosen (no dropout, dense inputs), else the math path.
- CUDA: for half precision without a mask its flash kernel (grouped-query attention too), else the
  memory-efficient kernel (float32, masks as a float bias, dropout, values of another head size
  than the queries', as DeepSeek's attention has), which keeps as little;
  the math path beyond head size 256, where neither runs, and for float32 grouped-query
  attention (``enable_gqa``), which the memory-efficient kernel does not take.
"""

from __future__ import annotations

from typing import Any

import torch

_FLASH = 1  # torch.nn.attention.SDPBackend.FLASH_ATTENTION


def _small(tensor: torch.Tensor, head: bool = True) -> torch.Tensor:
    """A CPU tensor of the same rank and dtype whose sizes keep what the kernel choice reads:
    ones stay ones (broadcasting), the head size stays (``head``: the last size of a query,
    key or value; a mask's last is the keys'), every other size becomes 2."""
    last = tensor.dim() - 1 if head else -1
    sizes = [s if s <= 2 or i == last else 2 for i, s in enumerate(tensor.shape)]
    small = torch.empty(sizes, dtype=tensor.dtype)
    # a mask that requires grad rules the flash kernel out
    return small.requires_grad_() if tensor.requires_grad and small.is_floating_point() else small


def _abstract(tensor: torch.Tensor, device: str) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return tensor.is_meta or (device == "cuda" and isinstance(tensor, FakeTensor))


def backend(device: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """``"flash_cpu"``, ``"efficient"`` or None (the math path) for a call of
    ``F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale,
    enable_gqa)`` on meta tensors. Call it with no mode active (it makes CPU tensors)."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    given = dict(zip(names, args, strict=False)) | kwargs
    q, k, v = given.get("query"), given.get("key"), given.get("value")
    mask = given.get("attn_mask")
    tensors = [t for t in (q, k, v) if isinstance(t, torch.Tensor)]
    if len(tensors) != 3 or set(given) - set(names):
        return None
    gqa = bool(given.get("enable_gqa", False))
    # meta tensors always; fake tensors (a parallel step's) for CUDA: on the CPU they run
    # the CPU's own choice already
    if not all(_abstract(t, device) and t.dim() == 4 and not t.is_nested for t in tensors):
        return None
    if mask is not None and not (isinstance(mask, torch.Tensor) and _abstract(mask, device)):
        return None
    assert q is not None and k is not None and v is not None
    if device == "cuda":
        if max(q.shape[-1], v.shape[-1]) > 256:
            return None
        if q.dtype in (torch.float16, torch.bfloat16) and mask is None and q.shape[-1] == v.shape[-1]:
            return "flash"
        return None if gqa else "efficient"
    choice = torch._fused_sdp_choice(
        _small(q),
        _small(k),
        _small(v),
        _small(mask, head=False) if mask is not None else None,
        float(given.get("dropout_p", 0.0)),
        bool(given.get("is_causal", False)),
        scale=given.get("scale"),
        enable_gqa=gqa,
    )
    return "flash_cpu" if choice == _FLASH else None


def run(kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """The chosen kernel on the meta tensors, as scaled_dot_product_attention would call it."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    given = dict(zip(names, args, strict=False)) | kwargs
    q, k, v, mask = given["query"], given["key"], given["value"], given.get("attn_mask")
    dropout, causal, scale = (
        float(given.get("dropout_p", 0.0)),
        bool(given.get("is_causal", False)),
        given.get("scale"),
    )
    if kind == "flash_cpu":
        out: torch.Tensor = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, dropout, causal, attn_mask=mask, scale=scale
        )[0]
        return out
    if kind == "flash":  # CUDA's, on meta: takes no mask (the choice made sure there is none)
        out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, dropout, causal, scale=scale)[0]
        return out
    if mask is not None and mask.dtype == torch.bool:  # as the dispatcher converts it: a float bias
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device)
    needs_lse = q.requires_grad or k.requires_grad or v.requires_grad
    out = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, mask, needs_lse and torch.is_grad_enabled(), dropout, causal, scale=scale
    )[0]
    return out
