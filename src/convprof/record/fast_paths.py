"""Zero compute on the CPU: attention layers take the fused inference kernel the CPU would.

In inference ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` call one fused
operator (``_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``) when their
inputs are CPU or CUDA tensors and a list of conditions holds; on meta stand-ins they never
do, and run their other path, whose tensors the CPU kernel does not make (a lone attention
read 0.62x of the measured peak). For a zero-compute pass that predicts the CPU's memory,
:func:`follow_fast_paths` gives each such layer a forward that checks PyTorch's conditions as
the CPU would see them and, where they hold, calls the fused operator on the stand-ins (its
meta kernel gives the shapes; :mod:`convprof.memory.fused` its memory). The conditions are
PyTorch's (``torch/nn/modules/activation.py``, ``transformer.py``), held to the real CPU's
choice by tests/test_fused_attention.py. A computing pass under convprof's autocast needs the
same forwards: its autocast is a function mode, which PyTorch's layers take for a reason not
to fuse, where the CPU's own autocast is none (``torch.is_autocast_enabled()`` asks CUDA's).

``nn.TransformerEncoder`` given a padding mask in inference makes nested tensors of the
tokens the mask keeps, a shape only values give: the pass stops with :class:`ValuesNeeded`.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from convprof.record.errors import StandInUnknown


def _plain(*tensors: Any) -> bool:
    """No tensor of a subclass with a ``__torch_function__`` of its own (PyTorch's
    has_torch_function, without the modes: convprof's own are not the user's)."""
    return all(t is None or type(t) in (torch.Tensor, nn.Parameter) for t in tensors)


def _no_grad_needed(*tensors: Any) -> bool:
    return not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in tensors)


def _canonical(
    padding: Any, mask: Any, dtype: torch.dtype, padding_name: str, mask_name: str
) -> tuple[Any, Any]:
    """The padding mask and the attention mask as the layers make them before the fused call
    (PyTorch's ``_canonical_mask``: a boolean mask becomes an additive one of ``dtype``)."""
    return (
        F._canonical_mask(
            mask=padding,
            mask_name=padding_name,
            other_type=F._none_or_dtype(mask),
            other_name=mask_name,
            target_type=dtype,
        ),
        F._canonical_mask(
            mask=mask,
            mask_name=mask_name,
            other_type=None,
            other_name="",
            target_type=dtype,
            check_other=False,
        ),
    )


def _mha_fused(m: Any, query: Any, key: Any, value: Any, key_padding_mask: Any, attn_mask: Any) -> bool:
    """Whether ``nn.MultiheadAttention.forward`` calls the fused operator (PyTorch's list)."""
    float_mask = any(
        isinstance(k, torch.Tensor) and torch.is_floating_point(k) for k in (attn_mask, key_padding_mask)
    )
    if float_mask or not torch.backends.mha.get_fastpath_enabled() or not isinstance(query, torch.Tensor):
        return False
    if query.dim() != 3 or query is not key or key is not value or query.is_nested:
        return False
    if m.in_proj_weight is None or m.in_proj_bias is None or query.dtype != m.in_proj_weight.dtype:
        return False
    if query.dtype != m.in_proj_bias.dtype or m.training or m.num_heads % 2 or not m.batch_first:
        return False
    if m.bias_k is not None or m.bias_v is not None or m.add_zero_attn or not m._qkv_same_embed_dim:
        return False
    tensors = (query, m.in_proj_weight, m.in_proj_bias, m.out_proj.weight, m.out_proj.bias)
    return not torch.is_autocast_enabled() and _plain(*tensors) and _no_grad_needed(*tensors)


def _mha_forward(m: Any) -> Any:
    real = functools.partial(type(m).forward, m)

    def forward(
        query: Any,
        key: Any,
        value: Any,
        key_padding_mask: Any = None,
        need_weights: bool = True,
        attn_mask: Any = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> Any:
        if not _mha_fused(m, query, key, value, key_padding_mask, attn_mask):
            return real(
                query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
            )
        padding, mask = _canonical(key_padding_mask, attn_mask, query.dtype, "key_padding_mask", "attn_mask")
        merged, kind = m.merge_masks(mask, padding, query)
        out, weights = torch._native_multi_head_attention(
            query, key, value, m.embed_dim, m.num_heads, m.in_proj_weight, m.in_proj_bias,
            m.out_proj.weight, m.out_proj.bias, merged, need_weights, average_attn_weights, kind,
        )  # fmt: skip
        return out, weights if need_weights else None  # the CPU returns no weights, meta an empty tensor

    return forward


def _layer_fused(m: Any, src: Any, src_mask: Any, padding: Any) -> bool:
    """Whether ``nn.TransformerEncoderLayer.forward`` calls the fused operator (PyTorch's list;
    convprof's own hooks are not the user's, and its no-op hook is left off in such a pass)."""
    attn = m.self_attn
    if not isinstance(src, torch.Tensor) or not torch.backends.mha.get_fastpath_enabled() or src.dim() != 3:
        return False
    if m.training or not attn.batch_first or attn.in_proj_bias is None or not attn._qkv_same_embed_dim:
        return False
    if not m.activation_relu_or_gelu or m.norm1.eps != m.norm2.eps or attn.num_heads % 2 or src.is_nested:
        return False
    if torch.is_autocast_enabled() or any(
        len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules()
    ):
        return False
    tensors: tuple[Any, ...] = (src, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight)
    tensors += (attn.out_proj.bias, m.norm1.weight, m.norm1.bias, m.norm2.weight, m.norm2.bias)
    tensors += (m.linear1.weight, m.linear1.bias, m.linear2.weight, m.linear2.bias)
    return _plain(*tensors) and _no_grad_needed(*tensors)


def _layer_forward(m: Any) -> Any:
    real = functools.partial(type(m).forward, m)

    def forward(
        src: Any, src_mask: Any = None, src_key_padding_mask: Any = None, is_causal: bool = False
    ) -> Any:
        padding, mask = _canonical(
            src_key_padding_mask, src_mask, src.dtype, "src_key_padding_mask", "src_mask"
        )
        if not _layer_fused(m, src, mask, padding):
            return real(src, src_mask, src_key_padding_mask, is_causal)
        attn = m.self_attn
        merged, kind = attn.merge_masks(mask, padding, src)
        return torch._transformer_encoder_layer_fwd(
            src, attn.embed_dim, attn.num_heads, attn.in_proj_weight, attn.in_proj_bias,
            attn.out_proj.weight, attn.out_proj.bias, m.activation_relu_or_gelu == 2, m.norm_first,
            m.norm1.eps, m.norm1.weight, m.norm1.bias, m.norm2.weight, m.norm2.bias,
            m.linear1.weight, m.linear1.bias, m.linear2.weight, m.linear2.bias, merged, kind,
        )  # fmt: skip

    return forward


def _encoder_forward(m: Any) -> Any:
    real = functools.partial(type(m).forward, m)

    def forward(src: Any, mask: Any = None, src_key_padding_mask: Any = None, is_causal: Any = None) -> Any:
        first = m.layers[0] if len(m.layers) else None
        if (
            src_key_padding_mask is not None
            and mask is None
            and getattr(m, "use_nested_tensor", False)
            and first is not None
            and not first.training
            and torch.backends.mha.get_fastpath_enabled()
            and isinstance(src, torch.Tensor)
            and src.dim() == 3
            and not torch.is_autocast_enabled()
            and _no_grad_needed(src, *first.parameters())
        ):
            raise StandInUnknown(
                "in inference its layers run on nested tensors of the tokens src_key_padding_mask "
                "keeps, whose sizes are the mask's values"
            )
        return real(src, mask, src_key_padding_mask, is_causal)

    return forward


_FUSED: dict[type[nn.Module], Any] = {
    nn.MultiheadAttention: _mha_forward,
    nn.TransformerEncoderLayer: _layer_forward,
}


def _keeps_forward(module: nn.Module, cls: type[nn.Module]) -> bool:
    """Whether ``module`` is ``cls`` or a subclass that keeps its forward; read statically, as
    some classes (TorchScript's) make ``forward`` when it is looked up on the class."""
    return isinstance(module, cls) and inspect.getattr_static(type(module), "forward") is cls.forward


def follow_fast_paths(named: list[tuple[str, nn.Module]], fused: bool, nested: bool) -> list[nn.Module]:
    """Give PyTorch's transformer encoders (of its classes, or subclasses that keep their
    forward, with no forward of the instance's own), when ``nested``, a forward that stops
    where nested tensors would be made and, when ``fused`` (the pass predicts the CPU's
    memory), its attention layers one that takes the CPU's fused path on meta stand-ins;
    return those modules (the caller takes the forwards away)."""
    makers: dict[type[nn.Module], Any] = {nn.TransformerEncoder: _encoder_forward} if nested else {}
    if fused:
        makers.update(_FUSED)
    followed = []
    for _, module in named:
        # PyTorch's class, or a subclass that keeps its forward (and so its fused path)
        make = next((m for cls, m in makers.items() if _keeps_forward(module, cls)), None)
        if make is not None and "forward" not in module.__dict__:
            module.__dict__["forward"] = make(module)
            followed.append(module)
    return followed
