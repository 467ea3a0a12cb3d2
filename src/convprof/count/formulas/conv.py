"""Convolution family: ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d`` (and their Lazy and
user subclasses that keep PyTorch's forward, through the MRO) and the ``aten.convolution``
operator behind ``F.conv*``.

Derivation. The weight of a convolution is ``(C_out, C_in/g, *k)``; every output element
``(n, c_out, *p)`` sums ``C_in/g * prod(k)`` products, so

    MACs = N * C_out * prod(out_spatial) * (C_in/g) * prod(k) = N * prod(out_spatial) * numel(W)

A transposed convolution's weight is ``(C_in, C_out/g, *k)``; every *input* element scatters
one kernel slice of ``C_out/g * prod(k)`` products into the output, so

    MACs = N * C_in * prod(in_spatial) * (C_out/g) * prod(k) = N * prod(in_spatial) * numel(W)

Padding, padding mode, stride and dilation enter only through the spatial sizes; the bias is
excluded by the convention. The module formula takes the weight's shape from the module's
declared sizes, not from its parameters: under ``weight_norm``, ``spectral_norm`` or any other
parametrization the weight is computed on each call and is no parameter of the conv itself.
Output positions that read only padding still count, as in ``torch.utils.flop_counter`` and
torchvision's published figures.
"""

from __future__ import annotations

from math import prod

from torch import nn

from convprof.count.formulas.registry import register
from convprof.records import ModuleCall, OpCall, Shape


def conv_macs(x: Shape, weight: Shape, out: Shape, transposed: bool) -> int:
    """MACs of one convolution call given input, weight and output shapes.

    ``x`` and ``out`` may be batched ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``.
    """
    spatial = len(weight) - 2
    positions = x if transposed else out
    batch = prod(positions[: len(positions) - spatial - 1])
    return batch * prod(positions[len(positions) - spatial :]) * prod(weight)


@register(nn.modules.conv._ConvNd)
def conv_module(call: ModuleCall) -> int:
    spec, x = call.module.conv, call.input("input")
    if spec is None or x is None or not call.outputs:
        raise ValueError(f"{call.module.name}: a convolution call needs an input tensor and an output")
    return conv_macs(x.shape, spec.weight_shape, call.outputs[0].shape, spec.transposed)


def _conv_op(call: OpCall) -> int:
    # aten.convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    x, weight, transposed = call.tensor(0), call.tensor(1), call.args[6]
    return conv_macs(x.shape, weight.shape, call.outputs[0].shape, bool(transposed))


for _op in ("aten.convolution", "aten._convolution", "aten.convolution_overrideable"):
    register(_op)(_conv_op)


@register("aten.conv_tbc")
def _conv_tbc(call: OpCall) -> int:
    # conv_tbc(input (T, B, C_in), weight (K, C_in, C_out), bias, pad): a 1-D convolution in
    # time-batch-channel layout; each of the T_out x B x C_out outputs sums K x C_in products.
    kernel, channels_in, _ = call.tensor(1).shape
    return call.outputs[0].numel * kernel * channels_in
