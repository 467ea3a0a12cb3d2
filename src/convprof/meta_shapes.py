"""Output stand-ins for the hot operators of a zero-compute pass, without PyTorch's meta kernels.

PyTorch computes meta outputs for many operators through Python decompositions: a BatchNorm
takes about 0.75 ms, an in-place activation 1 ms, a LayerNorm 1.3 ms, far more than the
bookkeeping around them. In a zero-compute pass only shapes, dtypes and strides matter, and for
the few operators that dominate real networks they follow from the inputs directly. Each
function here returns the stand-in output or None, and None sends the operator to PyTorch's own
meta kernel, so an unusual call (mixed dtypes, a dtype argument, a non-float tensor) is never
guessed at. tests/test_zero_compute.py checks that counts match a computing pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

Shortcut = Callable[[torch._ops.OpOverload, tuple[Any, ...], dict[str, Any]], Any]
# (module, positional inputs) -> output; the module is typed Any as its attributes are read as
# the built-in layer declares them, which nn.Module's typing cannot say
ModuleShortcut = Callable[[Any, tuple[Any, ...]], Any]

_SAME_AS_INPUT = {
    # float in, same shape and dtype out, whatever the extra scalar arguments
    "add",
    "sub",
    "mul",
    "div",
    "relu",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "hardtanh",
    "hardswish",
    "hardsigmoid",
    "clamp",
    "clamp_min",
    "clamp_max",
    "neg",
    "exp",
    "sqrt",
    "rsqrt",
    "pow",
    "erf",
    "leaky_relu",
    "elu",
    "mish",
    "softplus",
    "abs",
    "reciprocal",
    "masked_fill",
    "roll",
}
_NORMS = {
    "native_batch_norm",
    "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training",
    "_batch_norm_with_update",
    "_batch_norm_no_update",
    "cudnn_batch_norm",
}


_META = torch.device("meta")


def _float(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype.is_floating_point


def _like(x: torch.Tensor) -> torch.Tensor:
    """``empty_like`` on meta, the cheap way for a contiguous tensor: PyTorch's own goes through
    a Python reference that works out the memory format (0.1 ms a call)."""
    if x.is_contiguous():
        return torch.empty(x.shape, dtype=x.dtype, device=_META)
    return torch.empty_like(x)


def _new(shape: Any, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=like.dtype, device=_META)


_INT = frozenset({int})


def _ints(value: Any, n: int) -> Sequence[int] | None:
    """A size argument (an int or a list of 1 or n ints) as n ints, else None."""
    if type(value) is tuple and len(value) == n and _INT.issuperset(map(type, value)):
        return value  # a module's own attribute (stride=(2, 2)): as it is
    items = [value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else []
    if not items or not all(type(v) is int for v in items):
        return None
    return items * n if len(items) == 1 else items if len(items) == n else None


def _elementwise(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    first = args[0] if args else None
    if not isinstance(first, torch.Tensor) or not _float(first) or kwargs.get("out") is not None:
        return None
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if func.__name__.endswith("_"):  # in place: the result is the first argument itself
        return first
    others = [
        t for t in tensors[1:] if not (func.__name__.startswith("masked_fill") and t.dtype == torch.bool)
    ]
    if any(t.dtype != first.dtype for t in others):
        return None  # type promotion: let PyTorch decide
    shapes = [t.shape for t in (first, *others)]
    if all(s == first.shape for s in shapes):
        return _like(first)
    shape = _broadcast(shapes)
    return None if shape is None else _new(shape, first)


def _broadcast(shapes: list[torch.Size]) -> list[int] | None:
    """The shape that ``shapes`` broadcast to (sizes aligned from the right, each 1 or the
    same), else None for PyTorch to refuse. ``torch.broadcast_shapes`` goes through a Python
    reference that costs 40 us a call (the ``x * scale`` of every squeeze-and-excitation)."""
    out: list[int] = []
    for axis in range(1, max(len(shape) for shape in shapes) + 1):
        size = 1
        for shape in shapes:
            if axis <= len(shape):
                other = shape[-axis]
                if type(other) is not int:
                    return None
                if other != 1:
                    if size != 1 and size != other:
                        return None
                    size = other
        out.append(size)
    out.reverse()
    return out


def _norm_outputs(
    func: torch._ops.OpOverload, x: torch.Tensor, stat_shape: tuple[int, ...], contiguous: bool = False
) -> Any:
    """The output and the saved statistics (mean and inverse std, which the backward pass
    reads), as PyTorch's meta kernels make them: in float32 for half-precision inputs; and the
    batch norms that return a reserve space give an empty uint8 one. A batch norm's output
    keeps its input's layout (channels last stays so), a layer norm's is contiguous."""
    stats = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    saved = [torch.empty(stat_shape, dtype=stats, device="meta") for _ in range(2)]
    if len(func._schema.returns) == 4:
        saved.append(torch.empty((0,), dtype=torch.uint8, device="meta"))
    return (_new(x.shape, x) if contiguous else _like(x), *saved)


def _batch_norm(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # one mean and one inverse std per channel, in training and in eval alike (on meta)
    x = args[0]
    if kwargs or not _batch_norm_fits(x, args[1:5]):
        return None
    return _norm_outputs(func, x, (x.shape[1],))


def _batch_norm_fits(x: Any, stats: Sequence[Any]) -> bool:
    """A float input of at least 2 dimensions, and weight, bias and running statistics (those
    given) one per channel; otherwise PyTorch says what is wrong."""
    if not _float(x) or x.dim() < 2:
        return False
    channels = (x.shape[1],)
    return not any(isinstance(t, torch.Tensor) and tuple(t.shape) != channels for t in stats)


def _layer_norm(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, normalized = args[0], args[1]
    if not _float(x) or kwargs or x.dim() < len(normalized) or not normalized:
        return None
    axis = x.dim() - len(normalized)
    # the trailing dimensions must be the normalized shape, and so must weight and bias
    if tuple(x.shape[axis:]) != tuple(normalized) or any(
        isinstance(t, torch.Tensor) and tuple(t.shape) != tuple(normalized) for t in args[2:4]
    ):
        return None
    return _norm_outputs(func, x, (*x.shape[:axis], *(1,) * len(normalized)), contiguous=True)


def _softmax(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    half_to_float = len(args) > 2 and args[2] is True
    dtype = kwargs.get("dtype")
    if not _float(args[0]) or half_to_float or dtype is not None:
        return None
    dim, rank = args[1], max(args[0].dim(), 1)
    if type(dim) is not int:
        return None
    if not -rank <= dim < rank:  # PyTorch's meta kernel lets this pass; its CPU kernel does not
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got {dim})"
        )
    return _like(args[0])


def _matmul(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # mm and addmm take 2-D operands, bmm and baddbmm 3-D ones of one batch; operands that do
    # not fit (a model given the wrong input) go to PyTorch's kernel, which says what is wrong
    added = func.__name__.startswith(("addmm", "baddbmm"))
    a, b = (args[1], args[2]) if added else (args[0], args[1])
    if not (_float(a) and _float(b)) or a.dtype != b.dtype or kwargs:
        return None
    rank = 3 if func.__name__.startswith(("bmm", "baddbmm")) else 2
    if a.dim() != rank or b.dim() != rank or a.shape[-1] != b.shape[-2] or a.shape[:-2] != b.shape[:-2]:
        return None
    shape = (*a.shape[:-1], b.shape[-1])
    if added and (not isinstance(args[0], torch.Tensor) or not _broadcasts_to(tuple(args[0].shape), shape)):
        return None
    return _new(shape, a)


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    return len(shape) <= len(target) and all(
        s in (1, t) for s, t in zip(reversed(shape), reversed(target), strict=False)
    )


def _grouped_mm(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # PyTorch's meta kernel accepts bf16 only, while the CPU and CUDA kernels run float32 too.
    # The four layouts of the operator: rows split among experts (2-D x 3-D), a batch of
    # experts (3-D x 3-D), the inner dimension split (2-D x 2-D, one output per group: the
    # weight gradient of the first layout) and columns split (3-D x 2-D). Like the kernel, the
    # output's rows are padded to 16 bytes.
    a, b = args[0], args[1]
    offs = kwargs["offs"] if "offs" in kwargs else (args[2] if len(args) > 2 else None)
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return None
    out_dtype = kwargs.get("out_dtype") or (args[4] if len(args) > 4 else None)
    if not (_float(a) and _float(b)) or a.dtype != b.dtype or out_dtype not in (None, a.dtype):
        return None
    if kwargs.keys() - {"offs", "out_dtype"} or (len(args) > 3 and args[3] is not None):
        return None  # a bias: left to PyTorch
    shape: tuple[int, ...]
    if a.shape[-1] != b.shape[-2] or (offs is None) != (a.dim() == 3 and b.dim() == 3):
        return None  # PyTorch's kernel says what does not fit
    if a.dim() == 2 and b.dim() == 3:
        shape = (a.shape[0], b.shape[-1])
    elif a.dim() == 3 and b.dim() == 3 and a.shape[0] == b.shape[0]:
        shape = (a.shape[0], a.shape[1], b.shape[-1])
    elif a.dim() == 2 and b.dim() == 2 and offs is not None:
        shape = (offs.shape[0], a.shape[0], b.shape[-1])
    elif a.dim() == 3 and b.dim() == 2:
        shape = (a.shape[1], b.shape[-1])
    else:
        return None
    align = max(1, 16 // a.element_size())
    row = -(-shape[-1] // align) * align
    strides = (row, 1) if len(shape) == 2 else (shape[1] * row, row, 1)
    return torch.empty_strided(shape, strides, dtype=a.dtype, device="meta")


def _cat(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    tensors, dim = args[0], (args[1] if len(args) > 1 else kwargs.get("dim", 0))
    first: torch.Tensor | None = tensors[0] if tensors else None
    if (
        first is None
        or not _float(first)
        or any(t.dtype != first.dtype or t.dim() != first.dim() for t in tensors)
    ):
        return None
    dim = dim % first.dim()
    shape = list(first.shape)
    if any(list(t.shape[:dim]) + list(t.shape[dim + 1 :]) != shape[:dim] + shape[dim + 1 :] for t in tensors):
        return None
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return torch.empty(shape, dtype=first.dtype, device="meta")


def _convolution(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding,
    # groups)
    if kwargs or len(args) < 9:
        return None
    return _conv_out(*args[:9])


def _conv_out(
    x: Any,
    w: Any,
    bias: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    transposed: Any,
    output_padding: Any,
    groups: Any,
) -> torch.Tensor | None:
    """The output of a convolution, or None for anything PyTorch would reject (its kernel then
    says what is wrong): out = (in + 2p - d(k-1) - 1) // s + 1, transposed (in-1)s - 2p + d(k-1)
    + op + 1. Sizes as ATen takes them (an int, or one or n ints for n spatial dimensions).
    A channels-last 2-D input gives a channels-last output, as the CPU and CUDA kernels make
    it (PyTorch's meta kernel makes it contiguous, which would send later operators down other
    paths than the device's, with other temporaries)."""
    if not (_float(x) and _float(w)) or x.dtype != w.dtype or x.dim() != w.dim():
        return None
    last = not x.is_contiguous() and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    if not (x.is_contiguous() or last):
        return None
    if type(groups) is not int or type(transposed) is not bool:
        return None
    n = x.dim() - 2
    sizes_given = (stride, padding, dilation, output_padding)
    stride, padding, dilation, output_padding = (_ints(size, n) for size in sizes_given)
    if stride is None or padding is None or dilation is None or output_padding is None:
        return None
    kernel = w.shape[2:]
    if groups < 1 or x.shape[1] != (w.shape[0] if transposed else w.shape[1] * groups):
        return None
    if (w.shape[0] % groups) or (
        bias is not None and tuple(bias.shape) != ((w.shape[1] * groups,) if transposed else (w.shape[0],))
    ):
        return None
    if transposed:
        channels = w.shape[1] * groups
        sizes = [
            (i - 1) * s - 2 * p + d * (k - 1) + o + 1
            for i, s, p, d, k, o in zip(
                x.shape[2:], stride, padding, dilation, kernel, output_padding, strict=True
            )
        ]
    else:
        channels = w.shape[0]
        sizes = [
            (i + 2 * p - d * (k - 1) - 1) // s + 1
            for i, s, p, d, k in zip(x.shape[2:], stride, padding, dilation, kernel, strict=True)
        ]
    if any(size <= 0 for size in sizes):
        return None
    if last:
        return torch.empty(
            (x.shape[0], channels, *sizes), dtype=x.dtype, device=_META, memory_format=torch.channels_last
        )
    return _new((x.shape[0], channels, *sizes), x)


def _reduce(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # mean.dim / sum.dim_IntList(input, dim, keepdim=False, *, dtype=None)
    x = args[0]
    if kwargs or len(args) > 3 or not _float(x) or x.dim() == 0:
        return None
    dims = args[1] if len(args) > 1 else None
    keep = bool(args[2]) if len(args) > 2 else False
    if dims is None or (isinstance(dims, (list, tuple)) and not dims):
        reduced = set(range(x.dim()))
    elif isinstance(dims, (list, tuple)) and all(type(d) is int and -x.dim() <= d < x.dim() for d in dims):
        reduced = {d % x.dim() for d in dims}
        if len(reduced) != len(dims):
            return None  # a dimension named twice: PyTorch refuses
    else:
        return None  # a dimension out of range: PyTorch says so
    shape = [1 if i in reduced else size for i, size in enumerate(x.shape) if keep or i not in reduced]
    return _new(shape, x)


def _adaptive_avg(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, size = args[0], args[1] if len(args) > 1 else None
    n = 2 if "2d" in func.__name__ else 3 if "3d" in func.__name__ else 1
    sizes = _ints(size, n)
    if kwargs or not _float(x) or sizes is None or x.dim() < n + 1 or not x.is_contiguous():
        return None
    return _new((*x.shape[:-n], *sizes), x)


def _pooled(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:  # the last window must start inside the input
        out -= 1
    return out


def _pool2d(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # max_pool2d_with_indices(x, kernel, stride=[], padding=0, dilation=1, ceil_mode=False)
    # avg_pool2d(x, kernel, stride=[], padding=0, ceil_mode=False, count_include_pad, divisor)
    x = args[0]
    if kwargs or not _float(x) or x.dim() not in (3, 4) or not x.is_contiguous():
        return None
    with_indices = func.__name__.startswith("max_pool2d_with_indices")
    kernel = _ints(args[1], 2)
    stride = _ints(args[2], 2) if len(args) > 2 and args[2] else kernel
    padding = _ints(args[3], 2) if len(args) > 3 else [0, 0]
    dilation = (_ints(args[4], 2) if len(args) > 4 else [1, 1]) if with_indices else [1, 1]
    ceil_at = 5 if with_indices else 4
    ceil = bool(args[ceil_at]) if len(args) > ceil_at else False
    if kernel is None or stride is None or padding is None or dilation is None:
        return None
    if any(2 * p > d * (k - 1) + 1 for k, p, d in zip(kernel, padding, dilation, strict=True)):
        return None  # PyTorch: padding at most half the (effective) kernel
    sizes = [
        _pooled(i, k, s, p, d, ceil)
        for i, k, s, p, d in zip(x.shape[-2:], kernel, stride, padding, dilation, strict=True)
    ]
    if any(size <= 0 for size in sizes):
        return None
    out = _new((*x.shape[:-2], *sizes), x)
    if with_indices:
        return out, torch.empty(out.shape, dtype=torch.int64, device="meta")
    return out


# Backward operators (a backward pass in zero compute). PyTorch's meta kernels for these run
# Python decompositions: 1.5 ms a BatchNorm backward, 2.2 ms a LayerNorm's, 0.4-1.7 ms an
# activation's, several times the forward's cost.
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
        and _float(t)
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
    return _like(grad)


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
        lambda: _like(x),
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
    return _masked(mask, lambda: _like(x), lambda: _like(weight), lambda: _like(bias))


def _convolution_backward(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # convolution_backward(grad_out, input, weight, bias_sizes, ...,  output_mask): dX like the
    # input, dW like the weight, dbias one per output channel
    grad, x, weight, bias_sizes, mask = args[0], args[1], args[2], args[3], args[10]
    tensors = (grad, x, weight)
    if not all(isinstance(t, torch.Tensor) and _float(t) and t.is_contiguous() for t in tensors):
        return None
    if len({t.dtype for t in tensors}) != 1 or (mask[2] and not bias_sizes):
        return None
    return _masked(
        mask,
        lambda: _like(x),
        lambda: _like(weight),
        lambda: torch.empty(tuple(bias_sizes), dtype=grad.dtype, device="meta"),
    )


_TABLE: dict[str, Shortcut] = {
    **{name: _elementwise for name in _SAME_AS_INPUT},
    **{f"{name}_": _elementwise for name in _SAME_AS_INPUT},
    **{name: _batch_norm for name in _NORMS},
    "native_layer_norm": _layer_norm,
    "_softmax": _softmax,
    "_safe_softmax": _softmax,
    "mm": _matmul,
    "addmm": _matmul,
    "bmm": _matmul,
    "baddbmm": _matmul,
    "cat": _cat,
    "_grouped_mm": _grouped_mm,
    "convolution": _convolution,
    "mean": _reduce,
    "sum": _reduce,
    "_adaptive_avg_pool2d": _adaptive_avg,
    "adaptive_avg_pool2d": _adaptive_avg,
    "max_pool2d_with_indices": _pool2d,
    "avg_pool2d": _pool2d,
    **{name: _grad_like_output for name in _GRAD_LIKE_OUTPUT},
    "native_batch_norm_backward": _batch_norm_backward,
    "native_layer_norm_backward": _layer_norm_backward,
    "convolution_backward": _convolution_backward,
}


# Module stand-ins. In a zero-compute pass the operators inside a quiet built-in layer are not
# recorded (a module formula counts the call from its input and output, or the layer runs only
# free operators: norms, activations), so the layer's forward need not run at all: its output
# follows from its input and attributes.
# Skipping it saves the Python dispatch of each operator inside (one for a convolution, two
# for a BatchNorm, four for a Linear on a 3-D input; 15-30 us each) and the layer's own Python.
# Each function takes the module and its positional inputs and returns what its forward would
# (the input itself where the forward returns it: in-place activations, Dropout in eval,
# Identity), or None for anything unusual, and then the real forward runs on meta. Only exact
# types are listed: a subclass may override forward.


def _meta_input(args: tuple[Any, ...]) -> torch.Tensor | None:
    x = args[0] if len(args) == 1 else None
    return x if isinstance(x, torch.Tensor) and x.is_meta and _float(x) else None


def _conv_module(module: Any, args: tuple[Any, ...]) -> Any:
    # Conv*d.forward: F.conv*d(x, weight, bias, stride, padding, dilation, groups); ConvTranspose
    # without output_size: F.conv_transpose*d(..., output_padding, groups, dilation). Both reach
    # aten.convolution with these arguments. The weight and bias are read from the module's
    # table: nn.Module.__getattr__ costs 1 us a read.
    x = _meta_input(args)
    if x is None or module.padding_mode != "zeros" or isinstance(module.padding, str):
        return None
    params = module._parameters
    weight, bias = params.get("weight"), params.get("bias")
    if weight is None or "bias" not in params:
        return None
    return _conv_out(
        x,
        weight,
        bias,
        module.stride,
        module.padding,
        module.dilation,
        module.transposed,
        module.output_padding if module.transposed else 0,
        module.groups,
    )


_BATCH_NORM_RANKS: dict[type, tuple[int, ...]] = {
    nn.BatchNorm1d: (2, 3),
    nn.BatchNorm2d: (4,),
    nn.BatchNorm3d: (5,),
}


def _batch_norm_module(module: Any, args: tuple[Any, ...]) -> Any:
    # in eval with running statistics (the pass's mode): normalised with those, same shape out;
    # without them (track_running_stats=False) it uses the batch's, which is left to PyTorch
    x = _meta_input(args)
    params, buffers = module._parameters, module._buffers
    if x is None or module.training or buffers.get("running_mean") is None:
        return None
    if x.dim() not in _BATCH_NORM_RANKS[type(module)]:
        return None  # its _check_input_dim raises, with its message
    stats = (params.get("weight"), params.get("bias"), buffers["running_mean"], buffers.get("running_var"))
    return _like(x) if _batch_norm_fits(x, stats) else None


def _linear_module(module: Any, args: tuple[Any, ...]) -> Any:
    # F.linear on (..., in) gives (..., out), contiguous (2-D: addmm; more: a view of an mm)
    x, weight, bias = _meta_input(args), module._parameters.get("weight"), module._parameters.get("bias")
    if x is None or not _float(weight) or weight.dim() != 2 or x.dtype != weight.dtype:
        return None
    if x.dim() < 1 or x.shape[-1] != weight.shape[1] or not x.is_contiguous():
        return None
    if bias is not None and (bias.dtype != x.dtype or tuple(bias.shape) != (weight.shape[0],)):
        return None
    return _new((*x.shape[:-1], weight.shape[0]), x)


def _activation_module(module: Any, args: tuple[Any, ...]) -> Any:
    # element-wise, float in, same shape and dtype out; in place: the input itself
    x = _meta_input(args)
    if x is None or getattr(module, "approximate", "none") not in ("none", "tanh"):  # GELU's check
        return None
    return x if getattr(module, "inplace", False) else _like(x)


_ADAPTIVE_RANKS: dict[type, int] = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}


def _adaptive_pool_module(module: Any, args: tuple[Any, ...]) -> Any:
    # batched (N, C, *spatial) in, (N, C, *output_size) out, a None keeping the input's size;
    # contiguous in, contiguous out (squeeze-and-excitation's pooling, a classifier's head)
    x, n = _meta_input(args), _ADAPTIVE_RANKS[type(module)]
    if x is None or x.dim() != n + 2 or not x.is_contiguous() or 0 in x.shape:
        return None
    size = module.output_size
    sizes = [size] * n if type(size) is int else list(size) if isinstance(size, (tuple, list)) else []
    if len(sizes) != n:
        return None
    out = [x.shape[2 + i] if s is None else s for i, s in enumerate(sizes)]
    if not all(type(s) is int and s > 0 for s in out):
        return None  # PyTorch says what is wrong
    return _new((*x.shape[:2], *out), x)


def _same_tensor_module(module: Any, args: tuple[Any, ...]) -> Any:
    # Identity returns its input, and so does Dropout when not training
    x = _meta_input(args)
    if x is None or module.training:
        return None
    return x


_MODULE_TABLE: dict[type, ModuleShortcut] = {
    **{cls: _conv_module for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d)},
    **{cls: _conv_module for cls in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)},
    **{cls: _batch_norm_module for cls in _BATCH_NORM_RANKS},
    nn.Linear: _linear_module,
    **{cls: _adaptive_pool_module for cls in _ADAPTIVE_RANKS},
    **{
        cls: _activation_module
        for cls in (
            nn.ReLU,
            nn.ReLU6,
            nn.Hardtanh,
            nn.Hardswish,
            nn.Hardsigmoid,
            nn.SiLU,
            nn.GELU,
            nn.Sigmoid,
            nn.Tanh,
            nn.LeakyReLU,
            nn.ELU,
            nn.Mish,
        )
    },
    nn.Identity: _same_tensor_module,
    nn.Dropout: _same_tensor_module,
}


def _own_methods(cls: type) -> tuple[tuple[str, Any], ...]:
    """The methods a layer class and its bases below nn.Module define, as they are now."""
    return tuple(
        (name, value)
        for base in cls.__mro__
        if base is not nn.Module and base is not object
        for name, value in vars(base).items()
        if callable(value)
    )


def _from_pytorch(methods: tuple[tuple[str, Any], ...]) -> bool:
    return all(str(getattr(value, "__module__", "")).startswith("torch.") for _, value in methods)


# The methods of each class with a stand-in, as PyTorch defines them: a stand-in does what those
# do, so a class patched before this import (a method defined outside PyTorch) or since (its
# forward replaced, as some pruning and quantization tools do) gets none.
_ORIGINAL_METHODS = {cls: methods for cls in _MODULE_TABLE if _from_pytorch(methods := _own_methods(cls))}


_METHOD_NAMES: dict[type, frozenset[str]] = {}


def shadows_its_class(module: nn.Module) -> bool:
    """Whether an instance holds an attribute named like a method of its class (a ``forward``
    of its own, as accelerate installs, or a patched ``_conv_forward``): it may not do what the
    class does, so its own forward runs. The class's method names are read once per class."""
    cls = type(module)
    names = _METHOD_NAMES.get(cls)
    if names is None:
        names = _METHOD_NAMES[cls] = frozenset(n for n in dir(cls) if callable(getattr(cls, n, None)))
    return not module.__dict__.keys().isdisjoint(names)


def module_shortcut_for(module_type: type) -> ModuleShortcut | None:
    """The stand-in for the forward of a module of exactly this type, if it has one and the
    class's methods are still PyTorch's own (a few microseconds: ask once per class)."""
    shortcut = _MODULE_TABLE.get(module_type)
    original = _ORIGINAL_METHODS.get(module_type)
    if shortcut is None or original is None or _own_methods(module_type) != original:
        return None
    return shortcut


# The caller's integer tensors up to this size stay real in a zero-compute pass: lengths,
# batch sizes, positions and masks steer control flow (pack_padded_sequence insists on real CPU
# lengths; a mask may be tested with .item()), and keeping them costs nothing.
STEERING_NUMEL = 4096


def steers(tensor: torch.Tensor) -> bool:
    """Whether a real tensor is data that may steer control flow: small integers (lengths,
    positions, ids), or a mask of up to CONSTANT_NUMEL elements, boolean or additive (float,
    at least 2-D, every value 0 or -inf or the dtype's lowest, and some not 0: an all-zero
    tensor may be an input, such as a dummy image that wants a gradient). ``nn.Transformer``
    compares a float mask with the causal one (``_detect_is_causal_mask``) and PyTorch's
    attention tests boolean masks; a mask's values say where attention goes, never how much
    it computes."""
    if (
        tensor.device.type != "cpu"
        or tensor.layout != torch.strided
        or tensor.is_nested
        or tensor.dtype.is_complex
        or tensor.is_quantized
    ):
        return False
    if tensor.dtype == torch.bool:
        return tensor.numel() <= CONSTANT_NUMEL
    if not tensor.dtype.is_floating_point:
        return tensor.numel() <= STEERING_NUMEL
    return (
        tensor.numel() <= CONSTANT_NUMEL
        and tensor.dim() >= 2
        and not tensor.requires_grad
        and _additive_mask(tensor)
    )


def _additive_mask(tensor: torch.Tensor) -> bool:
    lowest = torch.finfo(tensor.dtype).min
    if tensor.numel() == 0 or float(tensor.reshape(-1)[0]) not in (0.0, float("-inf"), lowest):
        return False  # data: decided by its first value, without reading the rest
    masked = (tensor == float("-inf")) | (tensor == lowest)
    return bool(masked.any()) and bool((masked | (tensor == 0)).all())


def _to_copy(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # Devices in a zero-compute pass: steering data moved to the meta device stays real (so the
    # model can still read it: pad_packed_sequence calls .cpu() on sorted indices), and a meta
    # tensor moved to a real device (a buffer moved to the device of real positions) stays meta.
    x, device = args[0], kwargs.get("device")
    if not isinstance(x, torch.Tensor) or device is None:
        return None
    to_meta = torch.device(device).type == "meta"
    if to_meta and not x.is_meta and steers(x) and kwargs.get("dtype") in (None, x.dtype):
        return x.clone()
    if to_meta and not x.is_meta and x.device.type == "cpu" and x.numel() <= CONSTANT_NUMEL:
        # what the model made real from steering data or constants (an all-ones mask turned
        # into booleans on its input's device) stays real too, in the dtype asked for
        return func(x, **{**kwargs, "device": "cpu"})
    if x.is_meta and not to_meta:
        return torch.empty_like(x, dtype=kwargs.get("dtype") or x.dtype, device="meta")
    return None


def _pack_padded(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # _pack_padded_sequence(input, lengths, batch_first) -> (data, batch_sizes). The lengths
    # are the caller's, real (they steer control flow); every output size follows from them.
    x, lengths = args[0], args[1]
    if lengths.is_meta or lengths.dim() != 1:
        return None
    steps = lengths.tolist()
    batch_sizes = [sum(1 for n in steps if n > t) for t in range(max(steps, default=0))]
    feature = x.shape[2:]
    data = torch.empty((sum(steps), *feature), dtype=x.dtype, device="meta")
    return data, torch.tensor(batch_sizes, dtype=torch.int64)


def _pad_packed(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # _pad_packed_sequence(data, batch_sizes, batch_first, padding_value, total_length)
    data, batch_sizes, batch_first, total = args[0], args[1], args[2], args[4]
    if batch_sizes.is_meta:
        return None
    sizes = batch_sizes.tolist()
    steps, batch = max(len(sizes), total), sizes[0] if sizes else 0
    lengths = [sum(1 for b in sizes if b > i) for i in range(batch)]
    shape = (batch, steps) if batch_first else (steps, batch)
    return torch.empty((*shape, *data.shape[1:]), dtype=data.dtype, device="meta"), torch.tensor(lengths)


# Constant tensors a model makes on its input's device up to this size stay real in a
# zero-compute pass (see _constant): 4M elements is a 16 MB float mask, made in about a ms.
CONSTANT_NUMEL = 1 << 22


def _constant(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # ones, and integer zeros, full and arange, on the meta device (a model making them on its
    # input's device) hold values known without any input: made real, they can steer control
    # flow as the caller's masks do. transformers' decoders make an all-ones attention mask
    # when none is given and test it with .item() (whether the causal mask can be skipped);
    # BART-style models, Longformer and others stopped there. An integer empty tensor gets its
    # values from the model's own writes of Python numbers, which then run for real too
    # (DETR-style detectors fill a table of feature-map sizes and check it with .item()).
    # Used with meta tensors they are made meta, as every real tensor is; large ones stay meta.
    device = kwargs.get("device")
    if device is None or torch.device(device).type != "meta":
        return None
    name, dtype = func._schema.name, kwargs.get("dtype")
    if dtype is None:  # the default: float, but integer for arange over integers
        floating = not (name == "aten::arange" and all(type(a) is int for a in args))
    else:
        floating = dtype.is_floating_point or dtype.is_complex
    if floating and name != "aten::ones":
        # float zeros and fills are initial states (an RNN's hidden state) that meet meta
        # tensors in device checks no operator shows: those stay meta; an all-ones float
        # tensor is a mask
        return None
    if name == "aten::arange":
        small = _small_range(args)
    else:  # ones(size), zeros(size), full(size, value), empty(size): sized before anything is made
        size = _ints(args[0], len(args[0])) if args and isinstance(args[0], (list, tuple)) else None
        small = size is not None and math.prod(size) <= CONSTANT_NUMEL
    return func(*args, **{**kwargs, "device": "cpu"}) if small else None


def literal(make: Callable[..., torch.Tensor], data: Any, kwargs: dict[str, Any]) -> torch.Tensor | None:
    """``torch.tensor`` or ``torch.as_tensor`` (``make``) of plain Python numbers on the meta
    device, made real when integer or boolean and at most CONSTANT_NUMEL elements, else None.

    Such a tensor is a table the model writes from sizes it knows (Grounding DINO and
    Deformable DETR turn their feature maps' sizes into one and check it with ``.item()``);
    PyTorch makes it below the dispatcher, so no operator shows it. Float ones stay meta, as
    float fills do (see _constant)."""
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    if device is None or torch.device(device).type != "meta" or not _plain(data, 0):
        return None
    if isinstance(dtype, torch.dtype) and (dtype.is_floating_point or dtype.is_complex):
        return None
    made = make(data, **{**kwargs, "device": "cpu"})
    if made.dtype.is_floating_point or made.dtype.is_complex or made.numel() > CONSTANT_NUMEL:
        return None
    return made


def _plain(data: Any, depth: int) -> bool:
    """Python numbers, or lists and tuples of them (no tensors, nothing deeper than 4)."""
    if isinstance(data, (bool, int, float)):
        return True
    if isinstance(data, (list, tuple)) and depth < 4:
        return all(_plain(item, depth + 1) for item in data)
    return False


def _small_range(args: tuple[Any, ...]) -> bool:
    """arange's arguments, plain numbers spanning at most CONSTANT_NUMEL steps (a size read
    from a meta tensor is a plain int)."""
    numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    if len(numbers) != len(args) or not numbers:
        return False
    start, end = (0, numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
    step = numbers[2] if len(numbers) > 2 else 1
    return step != 0 and abs((end - start) / step) <= CONSTANT_NUMEL


# Operators whose output sizes depend on the values of small real arguments: these see the
# arguments before any is made meta.
_WITH_VALUES: dict[str, Shortcut] = {
    "ones": _constant,
    "zeros": _constant,
    "full": _constant,
    "arange": _constant,
    "empty": _constant,
    "_to_copy": _to_copy,
    "_pack_padded_sequence": _pack_padded,
    "_pad_packed_sequence": _pad_packed,
}


def value_shortcut_for(func: torch._ops.OpOverload) -> Shortcut | None:
    """The stand-in for an operator that reads small real arguments (lengths), if it has one."""
    if func.namespace != "aten":
        return None
    return _WITH_VALUES.get(func._schema.name.removeprefix("aten::"))


def shortcut_for(func: torch._ops.OpOverload) -> Shortcut | None:
    """The stand-in function for an ATen operator, if it has one."""
    if func.namespace != "aten":
        return None
    return _TABLE.get(func._schema.name.removeprefix("aten::"))
