"""PyTorch's fused inference kernels for attention on the CPU, followed allocation by allocation.

In inference (eval, no gradients) ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``
run one operator each, ``_native_multi_head_attention`` and ``_transformer_encoder_layer_fwd``,
whose projections, attention matrix, norms and feed-forward product no operator shows. Their
CPU kernels (``aten/src/ATen/native/transformers/attention.cpp`` and ``transformer.cpp``) make
and free their tensors in a fixed order, which each function below writes out as a list of
allocations and frees; :func:`around` turns it into the (before, after) scratch of
:mod:`convprof.memory.scratch`. The orders were read from ``torch.profiler``'s memory events
(tests/test_fused_attention.py holds each to the measured peak).

For ``B`` sequences of ``T`` tokens of width ``D`` in ``H`` heads, the attention kernel makes
the packed projection (B x T x 3D), the biased and scaled q, k, v beside it (3 x B x H x T x
D/H, and the packed projection goes), the scores (B x H x T x T) and, with a mask, the mask as
booleans and a second score tensor (the masked softmax is not in place), then writes the
context into q's storage, copies it to (B, T, D) for the output projection, and frees q, k, v
last. The layer adds its two LayerNorms (each an output and a mean and reciprocal deviation
per token) and its feed-forward product (B x T x F, the activation fused into it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# (bytes, is an output) for an allocation; (-bytes, False) for a free
_Program = list[tuple[int, bool]]


def around(program: _Program) -> tuple[int, int]:
    """(bytes before the outputs, bytes beside them) of a kernel's program: the highest sum of
    the kernel's own tensors before its first output, and after it the highest sum of its own
    and outputs made so far, less all the outputs (the tracker adds those at once)."""
    own = outputs = before = 0
    beside = None
    for size, is_output in program:
        if is_output:
            outputs += size
        else:
            own += size
        if outputs == 0:
            before = max(before, own)
        else:
            beside = own + outputs if beside is None else max(beside, own + outputs)
    return before, max(0, (beside or 0) - outputs)


def alloc(size: int, output: bool = False) -> tuple[int, bool]:
    return size, output


def free(size: int) -> tuple[int, bool]:
    return -size, False


def _arg(args: tuple[Any, ...], index: int, default: Any) -> Any:
    return args[index] if len(args) > index else default


def _attention(
    x: torch.Tensor, heads: int, mask: Any, need_weights: bool, average: bool, inside_layer: bool
) -> tuple[_Program, int]:
    """The attention kernel's program, and its output's bytes (the caller frees or keeps it);
    ``inside_layer``: the encoder layer's call, whose output is not the layer's."""
    batch, tokens, width = x.shape
    size = x.element_size()
    btd = batch * tokens * width * size
    scores = batch * heads * tokens * tokens * size
    kept = need_weights and not average  # the weights returned are the softmax's result
    masked = isinstance(mask, torch.Tensor)
    steps = [alloc(3 * btd), alloc(3 * btd), free(3 * btd), alloc(scores, kept and not masked)]
    if masked:
        # the mask as booleans (an expanded mask made whole), then the softmax's own result
        steps += [alloc(mask.numel()), alloc(scores, kept), free(scores), free(mask.numel())]
    if not need_weights:
        steps.append(free(scores))
    steps += [alloc(btd), alloc(btd, not inside_layer), free(btd)]
    if need_weights and average:
        steps += [alloc(batch * tokens * tokens * size, True), free(scores)]
    steps.append(free(3 * btd))
    return steps, btd


def _mha(args: tuple[Any, ...], out: Any) -> tuple[int, int] | None:
    """``_native_multi_head_attention(query, key, value, embed_dim, num_head, qkv_weight,
    qkv_bias, proj_weight, proj_bias, mask, need_weights, average_attn_weights, mask_type)``."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.is_nested or x.dim() != 3 or not x.numel():
        return None
    steps, _ = _attention(
        x, int(args[4]), _arg(args, 9, None), bool(_arg(args, 10, True)), bool(_arg(args, 11, True)), False
    )
    return around(steps)


def _norm(x: torch.Tensor, output: bool) -> _Program:
    """``at::layer_norm``: its output, then a mean and a reciprocal deviation per token (in
    float, or double for double), freed as it returns."""
    stats = x[..., 0].numel() * max(x.element_size(), 4)
    return [
        alloc(x.numel() * x.element_size(), output),
        alloc(stats),
        alloc(stats),
        free(stats),
        free(stats),
    ]


def _encoder_layer(args: tuple[Any, ...], out: Any) -> tuple[int, int] | None:
    """``_transformer_encoder_layer_fwd(src, embed_dim, num_heads, qkv_weight, qkv_bias,
    proj_weight, proj_bias, use_gelu, norm_first, eps, norm_weight_1, norm_bias_1,
    norm_weight_2, norm_bias_2, ffn_weight_1, ffn_bias_1, ffn_weight_2, ffn_bias_2, mask,
    mask_type)``."""
    x = args[0] if args else None
    w1 = _arg(args, 14, None)
    if (
        not isinstance(x, torch.Tensor)
        or x.is_nested
        or x.dim() != 3
        or not x.numel()
        or not isinstance(w1, torch.Tensor)
    ):
        return None
    attention, btd = _attention(x, int(args[2]), _arg(args, 18, None), False, True, True)
    hidden = x.shape[0] * x.shape[1] * w1.shape[0] * x.element_size()
    if bool(args[8]):  # norm first: x + attn(norm1(x)), then that + ffn(norm2(that))
        steps = _norm(x, False) + attention + [free(btd)]  # norm1's output goes with the call
        steps += [*_norm(x, False), alloc(hidden), alloc(btd, True), free(hidden)]
        steps += [free(btd), free(btd)]  # norm2's output, then the attention's sum
    else:  # norm2(y + ffn(y)) for y = norm1(x + attn(x))
        steps = attention + _norm(x, False) + [free(btd)]
        steps += [alloc(hidden), alloc(btd), free(hidden)]
        steps += [*_norm(x, True), free(btd), free(btd)]
    return around(steps)


FUSED: dict[Any, Callable[[tuple[Any, ...], Any], tuple[int, int] | None]] = {
    torch.ops.aten._native_multi_head_attention.default: _mha,
    torch.ops.aten._transformer_encoder_layer_fwd.default: _encoder_layer,
}
