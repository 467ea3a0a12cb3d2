"""Attention: ``nn.MultiheadAttention``, ``F.scaled_dot_product_attention`` and the fused
fast-path operators that PyTorch substitutes in inference.

Derivation. With ``E`` the embedding size (``heads * head_dim``), ``Lq`` query and ``Lk`` key
positions per batch element:

* input projections: ``Lq * E * E`` for queries, ``Lk * kdim * E`` and ``Lk * vdim * E`` for
  keys and values (per batch element; tokens = batch * length);
* scores ``Q K^T``: each of ``heads * Lq * Lk`` scores is a dot product of ``head_dim``:
  ``Lq * Lk * E``;
* mixing ``softmax(S) V``: each of ``heads * Lq * head_dim`` outputs sums ``Lk`` products:
  ``Lq * Lk * E``;
* output projection: ``Lq * E * E``.

Softmax, scaling, masking and dropout are elementwise and free. A causal mask does not reduce
the count (dense kernels compute the masked half too), as in ``torch.utils.flop_counter``.
FlexAttention's block mask does: its kernel skips the blocks the mask drops, so the products
are counted over the query-key pairs of the blocks it keeps (``torch.utils.flop_counter``
counts every pair whatever the mask).
``nn.MultiheadAttention`` has a module formula because its implementation depends on the mode:
eval under ``no_grad`` runs one fused ``aten._native_multi_head_attention`` whose internals no
dispatch mode sees, training runs ``F.linear`` and ``bmm``. The formula gives the same count
for both. A nested batch (``nn.TransformerEncoder`` with a padding mask drops the padding) is
counted sequence by sequence over its real tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

from torch import nn

from convprof.count.formulas.registry import register
from convprof.records import ModuleCall, OpCall, TensorMeta


def mha_macs(
    batch: int, q_len: int, k_len: int, embed: int, kdim: int, vdim: int, extra_keys: int = 0
) -> int:
    """MACs of multi-head attention with input and output projections.

    ``extra_keys`` counts key positions appended after projection (``add_bias_kv``,
    ``add_zero_attn``): they enlarge the score matrix but need no projection.
    """
    q_tokens, k_tokens = batch * q_len, batch * k_len
    projections = q_tokens * embed * embed + k_tokens * (kdim + vdim) * embed + q_tokens * embed * embed
    attended = batch * q_len * (k_len + extra_keys) * embed
    return projections + 2 * attended


def _seq(shape: tuple[int, ...], batch_first: bool) -> tuple[int, int]:
    """(batch, length) of an MHA input: (L, E) unbatched, else (N, L, E) or (L, N, E)."""
    if len(shape) == 2:
        return 1, shape[0]
    return (shape[0], shape[1]) if batch_first else (shape[1], shape[0])


@register(nn.MultiheadAttention)
def multihead_attention_module(call: ModuleCall) -> int:
    info = call.module
    query, key = call.input("query", 0), call.input("key", 1)
    embed, kdim, vdim = info.attr("embed_dim"), info.attr("kdim"), info.attr("vdim")
    if query is None or key is None:
        raise ValueError(f"{info.name}: MultiheadAttention needs query and key tensors")
    if not isinstance(embed, int) or not isinstance(kdim, int) or not isinstance(vdim, int):
        raise ValueError(f"{info.name}: MultiheadAttention without integer embed_dim/kdim/vdim")
    batch_first = bool(info.attr("batch_first")) or bool(query.parts)
    extra = int(info.param("bias_k") is not None) + int(bool(info.attr("add_zero_attn")))
    return _per_sequence(query, key, batch_first, lambda b, q, k: mha_macs(b, q, k, embed, kdim, vdim, extra))


def _per_sequence(
    query: TensorMeta, key: TensorMeta, batch_first: bool, macs: Callable[[int, int, int], int]
) -> int:
    """``macs(batch, q_len, k_len)`` summed over a nested batch's sequences (one dense batch
    otherwise): attention is quadratic in length, so a nested batch is not one long sequence."""
    total = 0
    for q_shape, k_shape in zip(query.sequences, key.sequences, strict=True):
        batch, q_len = _seq(q_shape, batch_first)
        _, k_len = _seq(k_shape, batch_first)
        total += macs(batch, q_len, k_len)
    return total


@register("aten._native_multi_head_attention")
def _native_mha(call: OpCall) -> int:
    # (query, key, value, embed_dim, num_head, qkv_weight, ...): batch-first (N, L, E) inputs.
    query, key = call.tensor(0), call.tensor(1)
    embed = query.shape[-1]
    return _per_sequence(query, key, True, lambda b, q, k: mha_macs(b, q, k, embed, embed, embed))


@register("aten._transformer_encoder_layer_fwd")
def _encoder_layer(call: OpCall) -> int:
    # The fused nn.TransformerEncoderLayer fast path: self-attention, then a two-layer MLP
    # whose first weight (ffn_weight_1, argument 14) is (F, E).
    src = call.tensor(0)
    embed, hidden = src.shape[-1], call.tensor(14).shape[0]
    attention = _per_sequence(src, src, True, lambda b, q, k: mha_macs(b, q, k, embed, embed, embed))
    # tokens = numel / embed: the real tokens of a nested batch
    return attention + 2 * (src.numel // embed) * embed * hidden


def sdpa_macs(query: tuple[int, ...], key: tuple[int, ...], value: tuple[int, ...]) -> int:
    """``softmax(Q K^T) V`` for ``(..., Lq, D)``, ``(..., Lk, D)``, ``(..., Lk, Dv)``.

    Counted per query head, so grouped-query attention (fewer key heads) is exact too.
    """
    rows = prod(query[:-1])
    return rows * key[-2] * (query[-1] + value[-1])


@register("aten._scaled_dot_product_flash_attention_for_cpu")
@register("aten._scaled_dot_product_flash_attention")
@register("aten._scaled_dot_product_efficient_attention")
@register("aten._scaled_dot_product_cudnn_attention")
@register("aten._scaled_dot_product_fused_attention_overrideable")
@register("aten._scaled_dot_product_attention_math")
def _sdpa(call: OpCall) -> int:
    return sdpa_macs(call.tensor(0).shape, call.tensor(1).shape, call.tensor(2).shape)


def kept_pairs(call: OpCall) -> int:
    """The query-key pairs a FlexAttention call computes, as the recorder read them from its
    block mask (args: query, key, value, pairs; see record.higher_order)."""
    pairs = call.args[3]
    if not isinstance(pairs, int):
        raise TypeError(f"{call.op}: expected the kept query-key pairs, got {pairs!r}")
    return pairs


@register("higher_order.flex_attention")
def _flex_attention(call: OpCall) -> int:
    # FlexAttention: Q K^T and P V over the pairs its block mask keeps, as its kernel skips
    # the blocks the mask drops (every pair without a mask: the count of
    # scaled_dot_product_attention). Blocks the mask keeps partly count whole, as the kernel
    # computes them before the mask; the last block of a sequence counts its real positions.
    # score_mod's arithmetic is elementwise: free.
    return kept_pairs(call) * (call.tensor(0).shape[-1] + call.tensor(2).shape[-1])
