"""Quantized layers: the ``quantized::`` Linear and convolution operators (static and dynamic,
fused with ReLU or not) and dynamically quantized recurrent layers.

Quantized kernels keep their weight and bias in a packed object that ``parameters()`` does not
list; the recorder records what it unpacks to (the weight's shape, in the float layout), so
the formulas are the float ones:

* Linear ``(..., in) -> (..., out)``: ``numel(output) * in`` MACs;
* convolution: ``N * prod(out_spatial) * numel(W)`` (transposed: the input positions instead),
  as derived in :mod:`convprof.count.formulas.conv`. A packed 1-D convolution's weight carries an
  extra unit dimension; ``numel(W)`` is the same either way.

A multiply-accumulate in int8 is still one multiply-accumulate: torchvision's quantized models
publish the same ``_ops`` as their float versions, and convprof matches them. Quantizing,
dequantizing and the quantized elementwise operators are free (:mod:`convprof.count.formulas.free`).
"""

from __future__ import annotations

from math import prod

from torch.ao.nn.quantized import dynamic as nnqd

from convprof.count.formulas.registry import register
from convprof.count.formulas.rnn import cell_formula, rnn_module
from convprof.records import OpCall, TensorMeta


def _packed_weight(call: OpCall) -> TensorMeta:
    packed = call.args[1]
    weight = packed[0] if isinstance(packed, tuple) and packed else None
    if not isinstance(weight, TensorMeta):
        raise TypeError(f"{call.op}: argument 1 is not a packed weight ({packed!r})")
    return weight


_LINEAR = (
    "linear",
    "linear_relu",
    "linear_leaky_relu",
    "linear_tanh",
    "linear_dynamic",
    "linear_relu_dynamic",
    "linear_dynamic_fp16",
    "linear_relu_dynamic_fp16",
    "linear_with_input_q_dq_qweight_dq_output_fp32",
    "linear_with_input_q_dq_qweight_dq_relu_output_fp32",
)
_CONV = (
    "conv1d",
    "conv1d_relu",
    "conv2d",
    "conv2d_relu",
    "conv2d_add",
    "conv2d_add_relu",
    "conv3d",
    "conv3d_relu",
)
_CONV_TRANSPOSE = ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")


def _linear(call: OpCall) -> int:
    # (input, packed (out, in), ...): each output element is a dot product of length in.
    return call.outputs[0].numel * _packed_weight(call).shape[1]


def _conv(call: OpCall) -> int:
    # (input, packed weight, ...): batched (N, C, *spatial) in and out.
    out = call.outputs[0].shape
    return out[0] * prod(out[2:]) * _packed_weight(call).numel


def _conv_transpose(call: OpCall) -> int:
    x = call.tensor(0).shape
    return x[0] * prod(x[2:]) * _packed_weight(call).numel


for _name in _LINEAR:
    register(f"quantized.{_name}")(_linear)
for _name in _CONV:
    register(f"quantized.{_name}")(_conv)
for _name in _CONV_TRANSPOSE:
    register(f"quantized.{_name}")(_conv_transpose)

# Dynamically quantized recurrent layers declare the same sizes as nn.LSTM / nn.GRU.
register(nnqd.modules.rnn.RNNBase)(rnn_module)
register(nnqd.RNNCell)(cell_formula(1))
register(nnqd.LSTMCell)(cell_formula(4))
register(nnqd.GRUCell)(cell_formula(3))
