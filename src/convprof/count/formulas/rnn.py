"""Recurrent layers: ``nn.RNN``, ``nn.LSTM`` (with ``proj_size``), ``nn.GRU`` and the three cells.

Derivation. At every time step, each layer and direction multiplies its input ``x_t`` (size
``I_l``) and its previous hidden state ``h_{t-1}`` (size ``H_out``) by the stacked gate weights:
``gates * H`` outputs, each a dot product of ``I_l`` plus one of ``H_out``, so

    MACs per step = gates * H * (I_l + H_out)  (+ H * P for the LSTM projection h = W_hr (o * tanh c))

with ``gates`` 1 for RNN, 4 for LSTM (input, forget, cell, output) and 3 for GRU (reset,
update, new; the new gate's ``r * (W_hn h + b_hn)`` still takes the full ``H x H`` product).
``H_out`` is ``proj_size`` when an LSTM projects, else ``H``; the first layer's input is
``input_size`` and every later layer's is ``H_out`` times the number of directions. Gate
nonlinearities, the elementwise cell update and biases are free under the convention.

Steps are the input's rows: ``seq_len * batch`` for a padded batch, and for a
``PackedSequence`` the packed data's first dimension, i.e. the real steps only (padding is not
computed). The count does not depend on which kernel runs (oneDNN, cuDNN or the composite
fallback that decomposes into one ``mm`` per step), so CPU, zero-compute and meta passes agree.
"""

from __future__ import annotations

from torch import nn

from convprof.count.formulas.registry import ModuleFormula, register, register_weight_part
from convprof.records import ModuleCall, OpCall

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def rnn_step_macs(
    input_size: int, hidden: int, gates: int, layers: int, directions: int = 1, proj_size: int = 0
) -> int:
    """MACs of one time step of a (stacked, possibly bidirectional) recurrent layer."""
    out = proj_size or hidden
    total = 0
    for layer in range(layers):
        layer_input = input_size if layer == 0 else out * directions
        total += gates * hidden * (layer_input + out) + hidden * proj_size
    return directions * total


def _int(call: ModuleCall, key: str) -> int:
    value = call.module.attr(key)
    if not isinstance(value, int):
        raise ValueError(f"{call.module.name}: {call.module.type_name} has no integer {key}")
    return value


def _steps(call: ModuleCall, input_size: int) -> int:
    """Rows of the input (the packed data of a PackedSequence is its first tensor)."""
    x = call.input("input", 0)
    if x is None or input_size <= 0:
        raise ValueError(f"{call.module.name}: {call.module.type_name} needs an input tensor")
    return x.numel // input_size


@register(nn.RNNBase)
def rnn_module(call: ModuleCall) -> int:
    mode = call.module.attr("mode")
    if mode not in _GATES:
        raise ValueError(f"{call.module.name}: unknown recurrent mode {mode!r}")
    input_size = _int(call, "input_size")
    step = rnn_step_macs(
        input_size,
        _int(call, "hidden_size"),
        _GATES[str(mode)],
        _int(call, "num_layers"),
        2 if call.module.attr("bidirectional") else 1,
        _int(call, "proj_size") if call.module.attr("proj_size") is not None else 0,
    )
    return _steps(call, input_size) * step


def cell_formula(gates: int) -> ModuleFormula:
    """One step for each input row: a cell is one layer, one direction, called per step."""

    def cell_module(call: ModuleCall) -> int:
        input_size = _int(call, "input_size")
        return _steps(call, input_size) * rnn_step_macs(input_size, _int(call, "hidden_size"), gates, 1)

    return cell_module


register(nn.RNNCell)(cell_formula(1))
register(nn.LSTMCell)(cell_formula(4))
register(nn.GRUCell)(cell_formula(3))


def _mkldnn_layer_forward(call: OpCall) -> int:
    # mkldnn_rnn_layer_backward(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, output,
    #   hy, cy, grad_output, grad_hy, grad_cy, reverse, mode, hidden_size, ...): one layer, one
    # direction of an LSTM run by oneDNN on CPU; weight_ih is (gates*H, I), weight_hh (gates*H, H)
    x, weight_ih, weight_hh = call.tensor(0), call.tensor(1), call.tensor(2)
    gates_h, input_size = weight_ih.shape
    steps = x.numel // input_size
    return steps * gates_h * (input_size + weight_hh.shape[1])


# The forward of one layer and direction, seen when an LSTM subclass with a forward of its
# own (no module formula then) runs on the CPU.
register("aten.mkldnn_rnn_layer")(_mkldnn_layer_forward)


@register("aten.mkldnn_rnn_layer_backward")
def _mkldnn_layer_backward(call: OpCall) -> int:
    # oneDNN computes every gradient of the layer, whether needed or not: dx_t and dh_{t-1}
    # (the forward's products again, with the transposed weights) and dW_ih, dW_hh (once more).
    # So on CPU the first layer's input gradient is computed, and counted, even when the input
    # needs none; a zero-compute pass, which runs the composite per-step products, leaves it out.
    return 2 * _mkldnn_layer_forward(call)


@register_weight_part("aten.mkldnn_rnn_layer_backward")
def _mkldnn_layer_backward_weight(call: OpCall) -> int:
    return _mkldnn_layer_forward(call)
