"""The backward pass: gradient operators and how their MACs split into input and weight.

A backward pass runs the operators autograd recorded for each forward operator. Their MACs
follow from the same products as the forward's:

* ``mm``, ``bmm``, ``addmm`` ... are counted by their ordinary op formulas. For a product
  ``Y = X W`` autograd runs ``dX = dY W^T`` and ``dW = X^T dY``: each has the forward's MACs,
  and each runs only when that operand needs a gradient (a frozen weight needs no ``dW``, an
  input that does not require grad no ``dX`` in the first layer).
* ``convolution_backward`` computes ``dX`` (a transposed convolution of ``dY`` with the
  weight) and ``dW`` (a convolution of ``X`` with ``dY``) as its ``output_mask`` asks; each has
  the forward convolution's MACs, groups included. (PyTorch's FlopCounterMode counts ``dW`` of
  a grouped convolution ``groups`` times too high, as if the groups were one dense
  convolution; pytorch/pytorch#183405 changes that.)
* Attention's gradient is four products, ``dV = P^T dO``, ``dP = dO V^T``, ``dQ = dS K`` and
  ``dK = dS^T Q``: per query head ``Lq Lk (2 D + 2 Dv)``, twice the forward. Unfused
  attention (what runs on meta tensors) runs them as ``bmm``. A fused kernel (CPU's flash
  attention, CUDA's flash and memory-efficient ones) also recomputes the scores ``Q K^T``
  from the saved log-sum-exp instead of keeping them; that recomputation is not counted,
  as a convolution's count does not depend on the algorithm that computes it, so the count is
  the same whichever kernel the device picks and a zero-compute pass agrees with a computing
  one. FlopCounterMode counts it (``Lq Lk (3 D + 2 Dv)``) when a fused kernel runs, so its
  figure for the same model differs between devices.

Which gradient an operator computes: ``convolution_backward`` says so itself (its weight part
is registered below). Any other counted operator that reads one of the model's parameters
computes the gradient of its other operand (``dX = dY W^T``), so it is an input gradient; one
that reads no parameter and produces a tensor shaped like a trainable parameter of its module
(up to a transpose) is a weight gradient (``dW = X^T dY``); the rest (attention, products of
activations) are input gradients. The remaining backward operators (norms, activations,
pooling, softmax and their like) are free under the convention, as their forwards are.
"""

from __future__ import annotations

from math import prod

from convprof.count.formulas.attention import kept_pairs
from convprof.count.formulas.conv import conv_macs
from convprof.count.formulas.registry import register, register_free, register_weight_part, weight_part
from convprof.records import OpCall, Shape


def _conv_forward(call: OpCall) -> int:
    # convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation,
    #                      transposed, output_padding, groups, output_mask)
    grad_out, x, weight = call.tensor(0), call.tensor(1), call.tensor(2)
    return conv_macs(x.shape, weight.shape, grad_out.shape, bool(call.args[7]))


def _mask(call: OpCall) -> tuple[bool, ...]:
    mask = call.args[10]
    return tuple(bool(m) for m in mask) if isinstance(mask, tuple) else (True, True, True)


@register("aten.convolution_backward")
def _conv_backward(call: OpCall) -> int:
    # dX and dW each cost one forward convolution: every product w * x of the forward is
    # met once more in each (dX[x] += w * dY[y], dW[w] += x * dY[y]).
    mask = _mask(call)
    return (int(mask[0]) + int(mask[1])) * _conv_forward(call)


@register_weight_part("aten.convolution_backward")
def _conv_backward_weight(call: OpCall) -> int:
    return _conv_forward(call) if _mask(call)[1] else 0


def sdpa_backward_macs(query: Shape, key: Shape, value: Shape) -> int:
    """Attention's gradient for ``(..., Lq, D)``, ``(..., Lk, D)``, ``(..., Lk, Dv)``: ``dV``
    and ``dP`` (``Lq Lk Dv`` each), ``dQ`` and ``dK`` (``Lq Lk D`` each), per query head; a
    fused kernel's recomputation of the scores is left out (see above)."""
    return prod(query[:-1]) * key[-2] * (2 * query[-1] + 2 * value[-1])


@register("aten._scaled_dot_product_flash_attention_backward")
@register("aten._scaled_dot_product_flash_attention_for_cpu_backward")
@register("aten._scaled_dot_product_efficient_attention_backward")
@register("aten._scaled_dot_product_cudnn_attention_backward")
@register("aten._scaled_dot_product_fused_attention_overrideable_backward")
def _sdpa_backward(call: OpCall) -> int:
    # (grad_out, query, key, value, ...) in every variant
    return sdpa_backward_macs(call.tensor(1).shape, call.tensor(2).shape, call.tensor(3).shape)


@register("higher_order.flex_attention_backward")
def _flex_attention_backward(call: OpCall) -> int:
    # (query, key, value, pairs): as sdpa_backward_macs, over the pairs the block mask keeps
    return kept_pairs(call) * (2 * call.tensor(0).shape[-1] + 2 * call.tensor(2).shape[-1])


def shape_key(shape: Shape) -> Shape:
    """A shape as a weight gradient's is matched with its parameter's: sizes sorted (a
    transpose), sizes of 1 dropped (``einsum`` and ``matmul`` compute ``dW`` as a batched
    product of one, ``(1, i, o)`` for an ``(i, o)`` parameter)."""
    return tuple(sorted(size for size in shape if size != 1))


def split(call: OpCall, macs: int, trainable: frozenset[Shape]) -> tuple[int, int]:
    """``(input, weight)`` gradient MACs of a backward operator whose formula gave ``macs``;
    ``trainable`` holds the shapes (``shape_key``) of the trainable parameters of the module that
    ran it."""
    part = weight_part(call.op)
    if part is not None:
        weight = part(call)
        return macs - weight, weight
    if not call.reads_weight and any(shape_key(out.shape) in trainable for out in call.outputs):
        return 0, macs
    return macs, 0


register_free(
    (
        "aten.native_batch_norm_backward",
        "aten.native_layer_norm_backward",
        "aten.native_group_norm_backward",
        "aten._weight_norm_interface_backward",
        "aten._weight_norm_differentiable_backward",
        "aten.cudnn_batch_norm_backward",
        "aten.miopen_batch_norm_backward",
        "aten._fused_rms_norm_backward",
        "aten._softmax_backward_data",
        "aten._log_softmax_backward_data",
        "aten.threshold_backward",
        "aten.gelu_backward",
        "aten.silu_backward",
        "aten.mish_backward",
        "aten.hardswish_backward",
        "aten.hardsigmoid_backward",
        "aten.hardtanh_backward",
        "aten.elu_backward",
        "aten.leaky_relu_backward",
        "aten.sigmoid_backward",
        "aten.tanh_backward",
        "aten.softplus_backward",
        "aten.log_sigmoid_backward",
        "aten.glu_backward",
        "aten._prelu_kernel_backward",
        "aten.native_dropout_backward",
        "aten.max_pool2d_with_indices_backward",
        "aten.max_pool3d_with_indices_backward",
        "aten.avg_pool2d_backward",
        "aten.avg_pool3d_backward",
        "aten._adaptive_avg_pool2d_backward",
        "aten._adaptive_avg_pool3d_backward",
        "aten.adaptive_max_pool2d_backward",
        "aten.adaptive_max_pool3d_backward",
        "aten.embedding_dense_backward",
        "aten.embedding_backward",
        "aten._embedding_bag_backward",
        "aten.select_backward",
        "aten.slice_backward",
        "aten.index_select_backward",
        "aten.unfold_backward",
        "aten.as_strided_backward",
        "aten.expand_backward",
        "aten.upsample_nearest2d_backward",
        "aten.upsample_bilinear2d_backward",
        "aten.upsample_bicubic2d_backward",
        "aten._upsample_nearest_exact2d_backward",
        "aten.grid_sampler_2d_backward",
        "aten.im2col_backward",
        "aten.col2im_backward",
        "aten.reflection_pad2d_backward",
        "aten.replication_pad2d_backward",
        "aten.mse_loss_backward",
        "aten.nll_loss_backward",
        "aten.nll_loss2d_backward",
        "aten.binary_cross_entropy_backward",
        "aten.smooth_l1_loss_backward",
        "aten.huber_loss_backward",
        "aten.l1_loss_backward",
    )
)
