"""Kernels' own scratch on the CPU: memory no operator shows, added where it moves a peak.

Seven kinds of scratch, invisible at the operator level, are large enough to move
a CPU peak, and are added (their sizes measured with ``torch.profiler``'s memory events):

- oneDNN's convolution (PyTorch's CPU path for float convolutions), given NCHW tensors, works
  in a blocked layout whose channels are padded to the vector width (16 floats with AVX-512,
  8 below it). It copies the input into that layout when it has at least one block of
  channels or a 1x1 kernel, the weight always (and a bias whose channels are not whole
  blocks); computes the output into a padded buffer of its own; frees the copies, and only
  then makes the output tensor and copies the result in. So for a moment the padded input,
  weight and output exist beside the input, then the padded output beside the output
  (:func:`_conv_scratch`). A channels-last convolution works in place. PyTorch takes its own
  path instead (``use_mkldnn`` in ConvUtils.h) for a float32 1x1 convolution without stride
  or dilation on one thread below a batch of 16, and for one of a single sample with a
  kernel of at most 3 in one dimension and at most 20,480 input values: it unfolds the input
  into a columns buffer (none for a 1x1 kernel without stride or padding) beside the output,
  or, with groups, convolves each group apart (a copy of its input slice) and concatenates
  (:func:`_native_conv_scratch`). Which path runs depends on this process's thread count:
  the prediction reads it.
- Its backward (``convolution_backward``) on oneDNN's path, for an input with whole blocks of
  channels or a 1x1 kernel, copies the gradient and the weight into the blocked layout and
  computes the input's gradient blocked, then copies it out; for the weights' gradient it
  copies the gradient again and the input, and computes it blocked beside the bias's; an
  expanded gradient (that of a sum) is made dense first, on either path
  (:func:`_conv_backward_scratch`). Measured exact at one thread, stride 1; left out: a
  per-thread reduction buffer oneDNN sometimes adds with more threads (up to the weight's
  size and 21 KB; no rule found), and what a strided one adds (a second input-sized buffer
  in some cases, none in others): within 0.1% on the CNNs' Adam steps of docs/memory.md.
  A depthwise kernel beyond 3x3 and a first layer's beyond 8x8 (ViT's patches) compute the
  weights' gradient with a GEMM and a buffer per thread instead of the blocked copies.
  Channels-last, it copies the weight only, but a depthwise kernel beyond 3x3 takes 256
  floats per channel and tap for the weights' gradient (:func:`_channels_last_backward`).
- ``native_layer_norm`` and its backward read the input contiguous: a norm over the channels
  of an NCHW tensor (a permuted view, ConvNeXt's) copies it, and an incoming gradient that
  is not dense (:func:`_layer_norm_scratch`).
- A CPU matrix product copies an operand that BLAS cannot read as it is (an expanded tensor,
  such as the gradient of a sum) into a dense temporary (:func:`_mm_scratch`).
- A CPU elementwise operator whose inputs differ in floating dtype copies the others into
  its result's dtype first (:func:`_promotion_scratch`): under autocast, every residual add
  of a bfloat16 product to a float32 stream.
- oneDNN's LSTM (PyTorch's CPU path for a float ``nn.LSTM``, one ``mkldnn_rnn_layer`` per
  layer and direction) reorders the weights and keeps a scratchpad of states and gates for the
  whole sequence while it runs; its backward keeps gradients of the weights in its own layout
  beside the ones it returns (:func:`_lstm_scratch`, :func:`_lstm_backward_scratch`). Their
  sizes follow oneDNN's layout rules (leading dimensions rounded up to 64 bytes, and off
  multiples of 1 KiB); the scratchpad's small constant part is fitted to measurements.
- The fused inference kernels of ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``
  make their projections, attention matrix, norms and feed-forward product inside one operator
  (:mod:`convprof.memory.fused`).

CUDA libraries' workspaces (cuDNN, cuBLAS) and other kernels' scratch (the CPU flash
attention's per-thread blocks) are left out, and the convention says so. One kernel's is
left out and named in the report (:func:`unmodelled`): oneDNN runs some dilated convolutions
with a GEMM-based kernel whose per-thread buffers follow no rule found. Measured (AVX-512, 16
to 256 channels, inputs 16 x 16 to 64 x 64): the forward from a dilation of 8 on inputs of
32 x 32 and more (its scratch 0.23x to 4.4x of the copies modelled), the backward from 12
(an unfolded input per thread, and more); at a dilation of 6 or less the copies above are
exact, so a convolution dilated beyond 6 is named. So is a fused attention kernel under
autocast, whose float32 program reads 0.99x (the attention) to 1.29x (the encoder layer).

Each rule gives (bytes before the output is made, bytes after it), both freed inside the
operator; :func:`kernel_scratch` picks the rule for an operator.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn

from convprof.memory.fused import FUSED, alloc, around, free


def kernel_scratch(func: Any, args: tuple[Any, ...], out: Any) -> tuple[int, int] | None:
    """The scratch a CPU kernel makes around its output (None: none that is modelled)."""
    rule = _SCRATCH.get(func)
    if rule is not None:
        return rule(args, out)
    if torch.Tag.pointwise in getattr(func, "tags", ()):  # a higher-order operator has none
        return _promotion_scratch(args, out)
    return None


_CONVOLUTIONS = {
    torch.ops.aten.convolution.default: 5,  # the dilation's argument
    torch.ops.aten._convolution.default: 5,
    torch.ops.aten.convolution_backward.default: 6,
}


def unmodelled(func: Any, args: tuple[Any, ...], autocast: bool = False) -> bool:
    """Whether a CPU operator runs a kernel whose scratch is not modelled (see the module
    docstring): a oneDNN convolution dilated beyond 6, or a fused attention kernel under
    autocast (its programs in :mod:`convprof.memory.fused` are float32's: under the CPU's
    autocast the attention casts query, key and value apart, projects them apart and keeps
    oneDNN's bfloat16 copies, and the encoder layer's products run in bfloat16 inside)."""
    if autocast and func in FUSED:
        return True
    at = _CONVOLUTIONS.get(func)
    if at is None or len(args) <= at or not (torch._C._has_mkldnn and torch.backends.mkldnn.enabled):
        return False
    dilation = args[at]
    return isinstance(dilation, (list, tuple)) and max(dilation, default=1) > 6


def unfollowed_kernel(modules: list[tuple[str, nn.Module]], device: str) -> str | None:
    """The first module whose kernel on ``device`` keeps memory that a zero-compute pass cannot
    see, and why (None: there is none). On meta a recurrent layer runs PyTorch's portable path,
    one small product per step; the CPU runs a float LSTM through oneDNN, whose reordered
    weights and scratchpad for the whole sequence (see the module docstring) the meta pass
    never makes (40-55% of the peak of an inference in measurements), and any other (GRU,
    RNN, an LSTM with a projection) with each layer's input projection made for the whole
    sequence at once. The figure needs a computing pass."""
    if device != "cpu":
        return None
    onednn = torch._C._has_mkldnn and torch.backends.mkldnn.enabled
    for name, module in modules:
        weight = getattr(module, "weight_ih_l0", None)
        if not isinstance(module, nn.RNNBase) or not isinstance(weight, torch.Tensor):
            continue
        kind = type(module).__name__
        if (
            onednn
            and isinstance(module, nn.LSTM)
            and module.proj_size == 0
            and weight.dtype in (torch.float32, torch.bfloat16)
        ):
            return (
                f"module '{name or '(root)'}' (nn.LSTM) runs on the CPU as oneDNN's LSTM, whose "
                "weights copies and scratchpad a pass without arithmetic does not see"
            )
        if weight.is_floating_point():
            # PyTorch's own CPU recurrence projects the whole sequence's inputs at once for
            # each layer and direction (steps x batch x gates x hidden, alive while the layer
            # runs); on meta it runs step by step: -13% on a two-layer bidirectional GRU
            return (
                f"module '{name or '(root)'}' (nn.{kind}) runs on the CPU with its input "
                "projections for the whole sequence at once, which a pass without arithmetic "
                "makes step by step"
            )
    return None


@functools.cache
def _vector_width() -> int:
    """Floats in one of this CPU's vector registers, as oneDNN blocks channels (read once)."""
    return 16 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 8


def _padded(channels: int) -> int:
    """Channels as oneDNN's blocked layout holds them: up to the vector width in floats."""
    block = _vector_width()
    return -(-channels // block) * block


def _conv_scratch(args: tuple[Any, ...], out: Any) -> tuple[int, int] | None:
    """oneDNN's copies (see the module docstring), before and after the output is made, for a
    float convolution in the default (NCHW) layout; channels-last and transposed ones, none."""
    if len(args) < 9:
        return None
    x, w, groups = args[0], args[1], args[8]
    if (
        not isinstance(x, torch.Tensor)
        or not isinstance(w, torch.Tensor)
        or not isinstance(out, torch.Tensor)
        or not x.is_floating_point()
        or x.dim() < 3
        or not x.is_contiguous()
        or args[6] is not False
        or type(groups) is not int
    ):
        return None
    if not _onednn_runs(x, w, args):
        return _native_conv_scratch(x, w, out, args)
    size = x.element_size()
    c_in, c_out, spatial_in, spatial_out = x.shape[1], out.shape[1], x[0, 0].numel(), out[0, 0].numel()
    kernel = w[0, 0].numel()
    blocked_input = c_in >= _padded(1) or kernel == 1  # a block of channels, or 1x1: reordered
    copy_in = x.shape[0] * _padded(c_in) * spatial_in * size if blocked_input else 0
    if groups > 1 and groups == c_in:  # depthwise: one padded block of groups
        copy_w = _padded(groups) * (c_out // groups) * kernel * size
    else:
        per_group = c_in // groups
        copy_w = _padded(c_out) * (_padded(per_group) if blocked_input else per_group) * kernel * size
    padded_out = out.shape[0] * _padded(c_out) * spatial_out * size
    # a bias whose channels are not whole blocks is copied padded, with 128 bytes more
    # (measured: 192 bytes for 1 to 16 channels, 576 for 100)
    copy_bias = _padded(c_out) * size + 128 if args[2] is not None and c_out % _padded(1) else 0
    return copy_bias + copy_in + copy_w + padded_out, padded_out


def _onednn_runs(x: torch.Tensor, w: torch.Tensor, args: tuple[Any, ...]) -> bool:
    """Whether PyTorch gives a CPU convolution to oneDNN (``use_mkldnn`` in ConvUtils.h): a
    float32 one unless it is 1x1 without stride or dilation on one thread below a batch of 16,
    or of one sample with a kernel of at most 3 in one dimension and at most 20,480 input
    values (counted over the first four dimensions, as PyTorch does). Other float types go to
    oneDNN where the CPU has their instructions: taken as so."""
    if not (torch._C._has_mkldnn and torch.backends.mkldnn.enabled):
        return False
    if x.dtype != torch.float32:
        return True
    stride, dilation, groups = args[3], args[5], args[8]
    batch, one_by_one = x.shape[0], w.shape[-1] == 1 and w.shape[-2] == 1
    strided = any(s != 1 for s in stride) if isinstance(stride, (list, tuple)) else stride != 1
    dilated = any(d != 1 for d in dilation) if isinstance(dilation, (list, tuple)) else dilation != 1
    if not (strided or dilated or batch >= 16 or not one_by_one or torch.get_num_threads() > 1):
        return False
    big_kernel = w.shape[-1] > 3 and w.shape[-2] > 3
    return groups > 1 or big_kernel or batch > 1 or math.prod(x.shape[:4]) > 20_480


def _native_conv_scratch(
    x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, args: tuple[Any, ...]
) -> tuple[int, int] | None:
    """PyTorch's own CPU convolution (see the module docstring): the unfolded input, beside
    the output, unless the kernel is 1x1 without stride or padding; with groups, each
    group's output and the last group's copy of its input slice (a slice of one sample is
    already whole) before the outputs are concatenated, then all of them beside it."""
    size = x.element_size()
    stride, padding, groups = args[3], args[4], args[8]
    kernel = w[0, 0].numel()
    unfolds = kernel != 1 or any(s != 1 for s in stride) or any(p != 0 for p in padding)
    if groups > 1:
        out_bytes = out.numel() * size
        slice_copy = x.numel() * size // groups if x.shape[0] > 1 else 0
        return out_bytes + slice_copy, out_bytes
    columns = x.shape[0] * x.shape[1] * kernel * out[0, 0].numel() * size if unfolds else 0
    return (0, columns) if columns else None


def _copy(tensor: Any, layout: torch.memory_format = torch.contiguous_format) -> int:
    """Bytes of the dense copy a kernel makes of a tensor it needs dense in ``layout`` (0: it
    is, or it is no tensor)."""
    if not isinstance(tensor, torch.Tensor) or tensor.is_contiguous(memory_format=layout):
        return 0
    return tensor.numel() * tensor.element_size()


def _conv_backward_scratch(args: tuple[Any, ...], out: Any) -> tuple[int, int] | None:
    """oneDNN's copies in a float32 convolution's backward (see the module docstring), for an
    input in the default layout (the input's gradient of a first layer's few channels,
    channels-last, other dtypes: none; PyTorch's own path: an expanded gradient's copy)."""
    if len(args) < 11 or not isinstance(out, (tuple, list)) or len(out) < 3:
        return None
    grad, x, w, groups, (dx, dw, db) = args[0], args[1], args[2], args[9], args[10]
    if (
        not all(isinstance(t, torch.Tensor) for t in (grad, x, w))
        or x.dtype != torch.float32
        or x.dim() != 4
        or args[7] is not False
        or type(groups) is not int
        or not (dx or dw)
        or (db and not dw)
    ):
        return None
    c_in, c_out, kernel, size = x.shape[1], grad.shape[1], w[0, 0].numel(), x.element_size()
    depthwise = groups > 1 and groups == c_in
    forward = (x, w, None, args[4], args[5], args[6], False, args[8], groups)
    few = c_in < 8 and kernel != 1  # a first layer's few channels: its input read as it is
    last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    if (few and dx) or not (last or x.is_contiguous()):
        return None  # not measured
    # the gradient in the input's layout: a copy of an expanded one (a sum's) or another layout
    dense = _copy(grad, torch.channels_last if last else torch.contiguous_format)
    if not _onednn_runs(x, w, forward):
        # PyTorch's own path: its results, and the gradient's copy beside them
        return (dense if dx else 0, dense) if dense else None
    if last:
        return around(_channels_last_backward(x, w, depthwise, (dx, dw, db), dense))
    blocked_grad = x.shape[0] * _padded(c_out) * grad[0, 0].numel() * size
    # below a block, channels go in blocks of 8 (12 -> 16, 8 as they are)
    inner = c_in if few else _padded(c_in) if c_in >= _padded(1) else -(-c_in // 8) * 8
    blocked_input = 0 if few else x.shape[0] * inner * x[0, 0].numel() * size
    if depthwise:
        blocked_weight = _padded(groups) * kernel * size
    else:  # grouped: each group's channels as they are (measured with 8, 16 and 48 a group)
        blocked_weight = _padded(c_out) * (inner if groups == 1 else c_in // groups) * kernel * size
    steps = [alloc(dense)]
    if dx:  # the gradient of the input, computed blocked, then copied out
        steps += [alloc(blocked_grad), alloc(blocked_weight), alloc(blocked_input)]
        steps += [free(blocked_weight), free(blocked_grad), alloc(x.numel() * size, True)]
        steps.append(free(blocked_input))
    bias, weight = c_out * size if db else 0, w.numel() * size
    if dw and ((depthwise and max(w.shape[-2:]) > 3) or (few and kernel > 64)):
        # oneDNN's weight gradient of a depthwise kernel beyond 3x3, or of a first layer's
        # kernel beyond 8x8 (ViT's 16x16 patches), works unblocked (GEMM) with a buffer per
        # thread: one sample's unfolded input and four weight gradients. A first layer's
        # splits the batch among the threads (measured); a depthwise one's was measured on one
        # thread (with two it is sometimes twice that, how the work is split not documented)
        threads = 1 if depthwise else min(torch.get_num_threads(), x.shape[0])
        per_thread = (c_in // groups) * kernel * grad[0, 0].numel() * size + 4 * weight
        unfolded = threads * per_thread + 256
        steps += [alloc(weight), alloc(unfolded), alloc(bias), free(unfolded)]
        steps += [alloc(bias, True), alloc(weight, True), free(weight), free(bias)]
    elif dw:  # the weights' gradient from the blocked gradient and input, then copied out
        steps += [alloc(blocked_grad), alloc(blocked_input), alloc(blocked_weight), alloc(bias)]
        steps += [free(blocked_input), free(blocked_grad), alloc(bias, True)]
        steps += [alloc(weight, True), free(blocked_weight), free(bias)]
    return around([*steps, free(dense)])


def _channels_last_backward(
    x: torch.Tensor, w: torch.Tensor, depthwise: bool, mask: tuple[bool, bool, bool], dense: int
) -> list[tuple[int, bool]]:
    """oneDNN's channels-last convolution backward, as measured (1 and 2 threads, 64 and 384
    channels, 1x1, 3x3, depthwise 3x3 and 7x7): no blocked copies, but copies of the weight
    (one kept through the call by a full 3x3 or larger kernel) and, for a depthwise kernel
    beyond 3x3, a buffer of 256 floats per channel and tap (ConvNeXt's: 19 MB at 384
    channels, whatever the batch and size) with 64 bytes per channel beside it."""
    dx, dw, db = mask
    size, weight = x.element_size(), w.numel() * w.element_size()
    kept = weight if not depthwise and w[0, 0].numel() > 1 else 0
    bias = w.shape[0] * size if db else 0
    steps = [alloc(kept), alloc(dense)]
    if dx:
        steps += [alloc(x.numel() * size, True), alloc(weight), free(weight)]
    if dw and depthwise and max(w.shape[-2:]) > 3:
        big, small = w.shape[0] * w[0, 0].numel() * 256 * size, w.shape[0] * 64 + 128
        steps += [alloc(big), alloc(small), alloc(bias), free(small), alloc(bias, True)]
        steps += [alloc(weight, True), alloc(weight), free(weight), free(big), free(bias)]
    elif dw:
        steps += [alloc(weight), alloc(bias), alloc(bias, True), alloc(weight, True)]
        steps += [alloc(weight), free(weight), free(weight), free(bias)]
    return [*steps, free(dense), free(kept)]


def _blas_reads(matrix: torch.Tensor) -> bool:
    """Whether BLAS can read a 2-D operand as it is: rows or columns contiguous."""
    rows, cols = matrix.shape
    return (matrix.stride(1) == 1 and matrix.stride(0) >= max(1, cols)) or (
        matrix.stride(0) == 1 and matrix.stride(1) >= max(1, rows)
    )


def _mm_scratch(args: tuple[Any, ...], out: Any) -> tuple[int, int] | None:
    """The dense copies of the operands BLAS cannot read (see the module docstring), made
    after the output; ``addmm``'s matrices are its second and third arguments."""
    matrices = args[-2:] if len(args) >= 2 else ()
    copies = sum(
        m.numel() * m.element_size()
        for m in matrices
        if isinstance(m, torch.Tensor) and m.layout is torch.strided and m.dim() == 2 and not _blas_reads(m)
    )
    return (0, copies) if copies else None


def _promotion_scratch(args: tuple[Any, ...], out: Any) -> tuple[int, int] | None:
    """A CPU elementwise operator whose floating inputs differ in dtype (a bfloat16 product
    added to a float32 residual, under autocast) first copies each input of another dtype than
    its result's into one of its own, beside the result (TensorIterator's common dtype)."""
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        return None
    copies = sum(
        a.numel() * out.element_size()
        for a in args
        if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dtype != out.dtype and a.dim() > 0
    )
    return (0, copies) if copies else None


def _leading(dim: int, size: int) -> int:
    """oneDNN's leading dimension for a matrix of ``dim`` elements of ``size`` bytes: rounded
    up to 64 bytes, and one more 64 bytes when it falls on a multiple of 256 elements (which
    would alias in the cache)."""
    per_line = 64 // size
    ld = -(-dim // per_line) * per_line
    return ld + per_line if ld % 256 == 0 else ld


def _lstm_shape(args: tuple[Any, ...]) -> tuple[int, int, int, int, int] | None:
    """(steps, batch, input size, hidden size, element bytes) of an
    ``mkldnn_rnn_layer`` call or its backward, from the input and the input-hidden weight."""
    x, w_ih = args[0], args[1]
    if not isinstance(x, torch.Tensor) or not isinstance(w_ih, torch.Tensor) or x.dim() != 3:
        return None
    # time-major whatever ``batch_first`` says: PyTorch transposes the input before the call
    return x.shape[0], x.shape[1], x.shape[2], w_ih.shape[0] // 4, x.element_size()


_LSTM_CONSTANT = 12 * 1024  # the scratchpad's part that depends on no size (measured: 8-16 KiB)


def _lstm_states(steps: int, batch: int, features: int, hidden: int, size: int, training: bool) -> int:
    """oneDNN's scratchpad for one LSTM layer: in inference the layer and iteration states of
    every step (twice: its input and its output rows), in training (where the states are in
    the workspace PyTorch returns) the gates of every step."""
    if training:
        return batch * steps * _leading(4 * hidden, size) * size + 2 * batch * hidden * size + _LSTM_CONSTANT
    return (
        2 * batch * (steps + 1) * (_leading(max(features, hidden), size) + hidden) * size
        + 5 * batch * hidden * size
        + _LSTM_CONSTANT
    )


def _lstm_scratch(args: tuple[Any, ...], out: Any) -> tuple[int, int] | None:
    """A forward ``mkldnn_rnn_layer``: the summed biases, the reordered weights (their gates
    padded: in inference each gate's rows to a multiple of 32 for the packed GEMM, in training
    to a leading dimension) and the scratchpad, all beside the outputs, which PyTorch makes
    first."""
    shape = _lstm_shape(args)
    if shape is None:
        return None
    steps, batch, features, hidden, size = shape
    training = bool(args[15]) if len(args) > 15 else False
    gates = _leading(4 * hidden, size) if training else 4 * (-(-hidden // 32) * 32)
    biases = 4 * hidden * size if args[12] else 0
    weights = gates * (features + hidden) * size
    return 0, biases + weights + _lstm_states(steps, batch, features, hidden, size, training)


def _lstm_backward_scratch(args: tuple[Any, ...], out: Any) -> tuple[int, int] | None:
    """A ``mkldnn_rnn_layer_backward``: the incoming gradients made dense, the summed biases,
    the weights reordered where a leading dimension is padded, the weights' and biases'
    gradients in oneDNN's layout, and the training scratchpad, beside the gradients it
    returns."""
    shape = _lstm_shape(args)
    if shape is None:
        return None
    steps, batch, features, hidden, size = shape
    gates = 4 * hidden
    biases = 2 * gates * size if args[17] else 0
    reordered = 0
    if _leading(features, size) != features:
        reordered += gates * _leading(features, size) * size
    if _leading(hidden, size) != hidden:
        reordered += 4 * _leading(hidden, size) * hidden * size
    gradients = _leading(gates, size) * (features + hidden) * size
    # the incoming gradients, dense: a copy of an expanded one (a sum's), zeros for a missing one
    incoming = 0
    for grad in args[10:13]:
        if grad is None:
            incoming += batch * hidden * size
        else:
            incoming += _copy(grad)
    states = _lstm_states(steps, batch, features, hidden, size, True)
    return 0, incoming + biases + reordered + gradients + states


def _layer_norm_scratch(args: tuple[Any, ...], out: Any) -> tuple[int, int] | None:
    """``native_layer_norm`` on the CPU reads its input contiguous: a permuted input (a
    channels-first norm, ConvNeXt's LayerNorm2d) is copied first and kept to the end."""
    copy = _copy(args[0]) if args else 0
    return (copy, copy) if copy else None


def _layer_norm_backward_scratch(args: tuple[Any, ...], out: Any) -> tuple[int, int] | None:
    """``native_layer_norm_backward``: the input copied as in the forward before the
    gradients are made, and the incoming gradient copied beside them when it is not dense."""
    if len(args) < 2:
        return None
    before, grad = _copy(args[1]), _copy(args[0])
    return (before, before + grad) if before or grad else None


_SCRATCH = {
    torch.ops.aten.convolution.default: _conv_scratch,
    torch.ops.aten._convolution.default: _conv_scratch,
    torch.ops.aten.convolution_backward.default: _conv_backward_scratch,
    torch.ops.aten.mm.default: _mm_scratch,
    torch.ops.aten.addmm.default: _mm_scratch,
    torch.ops.aten.mkldnn_rnn_layer.default: _lstm_scratch,
    torch.ops.aten.mkldnn_rnn_layer_backward.default: _lstm_backward_scratch,
    torch.ops.aten.native_layer_norm.default: _layer_norm_scratch,
    torch.ops.aten.native_layer_norm_backward.default: _layer_norm_backward_scratch,
    **FUSED,
}
