"""Higher-order operators: FlexAttention and ``torch.cond``, which PyTorch hands a mode whole.

A higher-order operator reaches a dispatch mode as one call with functions among its arguments
(a score modification, a branch), with the mode popped, through a handler registered for the
mode's class (:func:`follow`; PyTorch stops at any other, naming it). Both operators compile
themselves with ``torch.compile``, whose frame hook would trace the handler's own code: the
handlers run with it disabled.

* ``flex_attention`` is recorded as one operator call, ``higher_order.flex_attention``, with
  the query, key and value and the number of query-key pairs its block mask keeps (summed over
  batch and heads, edge blocks clipped to the sequences): its formula counts the two products
  over those pairs only (see count.formulas.attention). Without a block mask every pair is
  kept. The computing pass then runs PyTorch's own implementation, whose operators (an
  unfused score matrix on the CPU) are not recorded: the device's kernel fuses them. A zero
  compute pass makes its outputs from shapes, as PyTorch's fake implementation does. Its
  backward (``flex_attention_backward``) is recorded the same way.
* ``cond`` runs the branch its predicate picks, with the mode back on the stack, so the branch
  is recorded as any code is. Zero compute has no predicate value: it stops, and a real pass
  (``compute="auto"``) counts the branch that runs.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch._compile import _disable_dynamo
from torch.utils._python_dispatch import _disable_current_modes

from convprof.record.errors import StandInUnknown
from convprof.record.tensors import meta_of
from convprof.records import OpCall, Plain

if TYPE_CHECKING:
    from convprof.record.session import Session

_META = torch.device("meta")
_LARGE_BLOCK = 1 << 30  # the block size of the block mask flex_attention makes when given none


@contextlib.contextmanager
def eager_flex(zero_compute: bool) -> Iterator[None]:
    """FlexAttention as the pass can follow it, for the pass only. ``flex_attention`` compiles
    its operator with ``torch.compile(fullgraph=True)``, which a dispatch mode on the stack
    makes skip every frame, and fail; its own debugging switch calls the operator directly
    instead (the same operator and arguments; only compilation is left out). In zero compute
    its device check, which turns meta tensors away before any operator runs, lets them pass
    (the CPU's refusal of a backward pass stays: that is a real limit), and the mask it makes
    when given none is made on meta, as the query is (the pass would keep its constant
    tensors real). A block mask of real tensors meets meta queries there, which PyTorch
    refuses: the pass stops, and a real one counts it."""
    module: Any = sys.modules.get("torch.nn.attention.flex_attention")
    names = ("_FLEX_ATTENTION_DISABLE_COMPILE_DEBUG", "_validate_device", "_create_empty_block_mask")
    if module is None or not all(hasattr(module, name) for name in names):
        yield
        return
    saved = {name: getattr(module, name) for name in names}
    validate, empty_mask = saved["_validate_device"], saved["_create_empty_block_mask"]

    def validate_device(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        if not query.is_meta:
            validate(query, key, value)

    def create_empty_block_mask(query: torch.Tensor, key: torch.Tensor) -> Any:
        with _disable_current_modes():
            return empty_mask(query, key)

    module._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True
    if zero_compute:
        module._validate_device = validate_device
        module._create_empty_block_mask = create_empty_block_mask
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def follow(mode: type[Session]) -> None:
    """Register the handlers for the session's class (once, at import: they serve that class
    only)."""
    from torch._higher_order_ops.cond import cond_op
    from torch._higher_order_ops.flex_attention import flex_attention, flex_attention_backward

    cond_op.py_impl(mode)(_disable_dynamo(_cond))
    for operator in (flex_attention, flex_attention_backward):
        operator.py_impl(mode)(_disable_dynamo(functools.partial(_flex, operator)))


def _cond(session: Session, pred: Any, true_fn: Any, false_fn: Any, operands: Any) -> Any:
    if isinstance(pred, torch.Tensor) and pred.is_meta:
        raise StandInUnknown("torch.cond's predicate is a value, which a zero-compute pass does not have")
    with _disable_current_modes():
        taken = bool(pred)
    branch = true_fn if taken else false_fn
    torch._C._push_on_torch_dispatch_stack(session)
    try:
        return branch(*operands)
    finally:
        torch._C._pop_torch_dispatch_stack(None)


def _flex(func: torch._ops.HigherOrderOperator, session: Session, *args: Any, **kwargs: Any) -> Any:
    backward = func.__name__ == "flex_attention_backward"
    # flex_attention(query, key, value, score_mod, block_mask, ...); its backward(query, key,
    # value, out, logsumexp, grad_out, grad_logsumexp, fw_graph, joint_graph, block_mask, ...)
    query, key, value = args[:3]
    block_mask = args[9] if backward else args[4]
    kept = kept_pairs(block_mask, query, key)
    if session.lifetimes is not None and session.lifetimes.device == "cpu":
        raise NotImplementedError(
            "peak memory with flex_attention on the CPU is not predicted: PyTorch's CPU path "
            "materializes its scores in operators a fused kernel does not run; predict it for "
            "cuda (memory='cuda', --device cuda)"
        )
    if session.meta is not None:
        out = _backward_stand_ins(query, key, value) if backward else _stand_ins(query, value)
    else:
        out = func(*args, **kwargs)
    call = OpCall(f"higher_order.{func.__name__}", (meta_of(query), meta_of(key), meta_of(value), kept))
    gradients = session.backward
    if gradients is not None and gradients.running:
        gradients.record_call(call)
    elif session.stack:
        session.stack[-1].ops.append(call)
    if session.lifetimes is not None:
        session.lifetimes.see(func, out, args, kwargs, session.owner())
    return out


def _stand_ins(query: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The output, log-sum-exp and row maxima PyTorch's fake implementation makes."""
    *rows, _ = query.shape
    out = torch.empty((*rows, value.shape[-1]), dtype=query.dtype, device=_META)
    return (
        out,
        torch.empty(rows, dtype=torch.float32, device=_META),
        torch.empty(rows, dtype=torch.float32, device=_META),
    )


def _backward_stand_ins(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> tuple[Any, ...]:
    """The gradients of query, key and value (and of no score-modification buffers)."""
    made = tuple(torch.empty(t.shape, dtype=t.dtype, device=_META) for t in (query, key, value))
    return (*made, ())


def kept_pairs(block_mask: tuple[Any, ...], query: torch.Tensor, key: torch.Tensor) -> Plain:
    """The query-key pairs a block mask keeps, over every batch member and query head: for each
    block row, its rows times the columns of the blocks listed in it (partial and full), the
    last block of each sequence clipped to its length. A mask given as meta tensors (made by
    the model in a zero-compute pass) holds no values to read: StandInUnknown."""
    # BlockMask.as_tuple(): seq lengths, kv_num_blocks, kv_indices, full_kv_num_blocks,
    # full_kv_indices, ... Q_BLOCK_SIZE, KV_BLOCK_SIZE, mask_mod
    counts, indices, full_counts, full_indices = block_mask[2:6]
    q_block, kv_block = block_mask[-3], block_mask[-2]
    batch, heads, q_len, _ = query.shape
    kv_len = key.shape[-2]
    if q_block >= _LARGE_BLOCK and kv_block >= _LARGE_BLOCK and full_counts is None:
        return batch * heads * q_len * kv_len  # flex_attention's own mask for "no mask": all
    listed = [(counts, indices), (full_counts, full_indices)]
    if any(t is not None and t.is_meta for pair in listed for t in pair):
        raise StandInUnknown(
            "flex_attention's block mask is made of meta tensors: the blocks it keeps are values, "
            "which a zero-compute pass does not have (make the mask outside the model, or pass it in)"
        )
    with _disable_current_modes():
        total = 0
        for number, where in listed:
            if number is None or where is None:
                continue
            columns = (kv_len - torch.arange(where.shape[-1]) * kv_block).clamp(0, kv_block)
            listed_here = torch.arange(where.shape[-1]) < number.unsqueeze(-1).long()
            per_row = (columns[where.long().clamp(0, where.shape[-1] - 1)] * listed_here).sum(-1)
            rows = (q_len - torch.arange(per_row.shape[-1]) * q_block).clamp(0, q_block)
            masked_batch, masked_heads = number.shape[0], number.shape[1]
            total += int((per_row * rows).sum()) * (batch // masked_batch) * (heads // masked_heads)
    return total
