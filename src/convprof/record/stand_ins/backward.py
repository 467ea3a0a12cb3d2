"""Output stand-ins for the backward operators of a zero-compute training step.

PyTorch's meta kernels for these run Python decompositions: 1.5 ms a BatchNorm backward, 2.2 ms
a LayerNorm's, 0.4-1.7 ms an activation's, several times the forward's cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from convprof.record.stand_ins.shapes import Shortcut, is_float, same_as

_GRAD_LIKE_OUTPUT = (
    # (grad_output, self or output, ...) -> a gradient like grad_output
    "threshold_backward",
    "gelu_backward",
    "silu_backward",
    "sigmoid_backward",
    "tanh_backward",
    "hardswish_backward",
    "hardsigmoid_backward",
    "hardtanh_backward",
    "leaky_relu_backward",
    "elu_backward",
    "mish_backward",
    "softplus_backward",
    "_softmax_backward_data",
    "_log_softmax_backward_data",
)


def _plain_tensors(*tensors: Any) -> bool:
    """Float meta tensors, contiguous, of one shape and dtype: their gradients are contiguous
    tensors of that shape, whatever PyTorch's stride logic would make of other layouts."""
    first = tensors[0]
    return all(
        isinstance(t, torch.Tensor)
        and is_float(t)
        and t.is_contiguous()
        and t.shape == first.shape
        and t.dtype == first.dtype
        for t in tensors
    )


def _grad_like_output(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    grad, other = args[0], args[1]
    if kwargs or not _plain_tensors(grad, other):
        return None
    if func.__name__.startswith(("_softmax", "_log_softmax")) and args[3] != grad.dtype:
        return None  # a half-precision softmax computed in float: let PyTorch decide
    return same_as(grad)


def _masked(mask: Any, *made: Callable[[], torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
    return tuple(make() if wanted else None for wanted, make in zip(mask, made, strict=True))


def _batch_norm_backward(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # native_batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean,
    #                            save_invstd, train, eps, output_mask) -> (dX, dweight, dbias)
    grad, x, weight, mask = args[0], args[1], args[2], args[9]
    if not _plain_tensors(grad, x) or x.dim() < 2:
        return None
    stats = (x.shape[1],)
    dtype = weight.dtype if isinstance(weight, torch.Tensor) else x.dtype
    return _masked(
        mask,
        lambda: same_as(x),
        lambda: torch.empty(stats, dtype=dtype, device="meta"),
        lambda: torch.empty(stats, dtype=dtype, device="meta"),
    )


def _layer_norm_backward(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # native_layer_norm_backward(grad_out, input, normalized_shape, mean, rstd, weight, bias,
    #                            output_mask) -> (dX, dweight, dbias)
    grad, x, weight, bias, mask = args[0], args[1], args[5], args[6], args[7]
    if not _plain_tensors(grad, x):
        return None
    if (mask[1] and not isinstance(weight, torch.Tensor)) or (mask[2] and not isinstance(bias, torch.Tensor)):
        return None
    return _masked(mask, lambda: same_as(x), lambda: same_as(weight), lambda: same_as(bias))


def _convolution_backward(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # convolution_backward(grad_out, input, weight, bias_sizes, ...,  output_mask): dX like the
    # input, dW like the weight, dbias one per output channel
    grad, x, weight, bias_sizes, mask = args[0], args[1], args[2], args[3], args[10]
    tensors = (grad, x, weight)
    if not all(isinstance(t, torch.Tensor) and is_float(t) and t.is_contiguous() for t in tensors):
        return None
    if len({t.dtype for t in tensors}) != 1 or (mask[2] and not bias_sizes):
        return None
    return _masked(
        mask,
        lambda: same_as(x),
        lambda: same_as(weight),
        lambda: torch.empty(tuple(bias_sizes), dtype=grad.dtype, device="meta"),
    )


BACKWARD: dict[str, Shortcut] = {
    **{name: _grad_like_output for name in _GRAD_LIKE_OUTPUT},
    "native_batch_norm_backward": _batch_norm_backward,
    "native_layer_norm_backward": _layer_norm_backward,
    "convolution_backward": _convolution_backward,
}
