"""Output stand-ins for the hot forward operators of a zero-compute pass, without PyTorch's meta kernels.

PyTorch computes meta outputs for many operators through Python decompositions: a BatchNorm
takes about 0.75 ms, an in-place activation 1 ms, a LayerNorm 1.3 ms, far more than the
bookkeeping around them. In a zero-compute pass only shapes, dtypes and strides matter, and for
the few operators that dominate real networks they follow from the inputs directly. Each
function here returns the stand-in output or None, and None sends the operator to PyTorch's own
meta kernel, so an unusual call (mixed dtypes, a dtype argument, a non-float tensor) is never
guessed at. tests/test_zero_compute.py checks that counts match a computing pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch._prims_common import suggest_memory_format

from convprof.record.stand_ins.backward import BACKWARD
from convprof.record.stand_ins.shapes import META, Shortcut, empty, int_sizes, is_float, same_as

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


def _elementwise(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    first = args[0] if args else None
    if not isinstance(first, torch.Tensor) or not is_float(first) or kwargs.get("out") is not None:
        return None
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if func._schema.name.endswith("_"):  # in place: the result is the first argument itself
        # (the schema's name: an overload's own, "silu_.default", ends otherwise)
        return first
    others = [
        t for t in tensors[1:] if not (func.__name__.startswith("masked_fill") and t.dtype == torch.bool)
    ]
    if any(t.dtype != first.dtype for t in others):
        return None  # type promotion: let PyTorch decide
    shapes = [t.shape for t in (first, *others)]
    if all(s == first.shape for s in shapes):
        return same_as(first)
    shape = _broadcast(shapes)
    if shape is None or any(t.shape == tuple(shape) and not t.is_contiguous() for t in (first, *others)):
        # PyTorch lays the result out as its full-size operands are (ConvNeXt's layer scale
        # times a permuted block output is channels-last): its own meta kernel works that out
        return None
    return empty(shape, first)


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
    return (empty(x.shape, x) if contiguous else same_as(x), *saved)


def _batch_norm(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # one mean and one inverse std per channel, in training and in eval alike (on meta)
    x = args[0]
    if kwargs or not batch_norm_fits(x, args[1:5]):
        return None
    return _norm_outputs(func, x, (x.shape[1],))


def batch_norm_fits(x: Any, stats: Sequence[Any]) -> bool:
    """A float input of at least 2 dimensions, and weight, bias and running statistics (those
    given) one per channel; otherwise PyTorch says what is wrong."""
    if not is_float(x) or x.dim() < 2:
        return False
    channels = (x.shape[1],)
    return not any(isinstance(t, torch.Tensor) and tuple(t.shape) != channels for t in stats)


def _group_norm(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # native_group_norm(input, weight, bias, N, C, HxW, group, eps) -> (out, mean, rstd). Not
    # only faster: PyTorch's meta kernel returns a contiguous output where the CPU keeps a
    # channels-last input's layout, and the convolution after it would then be charged the
    # copies oneDNN makes of an NCHW input (+29% on GroupNorm -> SiLU -> Conv, channels last)
    x = args[0]
    if kwargs or len(args) != 8 or not is_float(x) or x.dim() < 2 or x.is_nested:
        return None
    n, channels, _, groups = args[3], args[4], args[5], args[6]
    if not all(type(v) is int for v in (n, channels, groups)) or x.shape[:2] != (n, channels):
        return None
    if any(isinstance(t, torch.Tensor) and tuple(t.shape) != (channels,) for t in args[1:3]):
        return None
    # the CPU kernel's layout: PyTorch's suggest_memory_format, which reads the strides of
    # size-1 dimensions too (a batch of one whose strides are not in order goes back to NCHW)
    out = torch.empty(x.shape, dtype=x.dtype, device=META, memory_format=suggest_memory_format(x))
    return out, empty((n, groups), x), empty((n, groups), x)


def _layer_norm(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, normalized = args[0], args[1]
    if not is_float(x) or kwargs or x.dim() < len(normalized) or not normalized:
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
    if not is_float(args[0]) or half_to_float or dtype is not None:
        return None
    dim, rank = args[1], max(args[0].dim(), 1)
    if type(dim) is not int:
        return None
    if not -rank <= dim < rank:  # PyTorch's meta kernel lets this pass; its CPU kernel does not
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got {dim})"
        )
    return same_as(args[0])


def _matmul(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # mm and addmm take 2-D operands, bmm and baddbmm 3-D ones of one batch; operands that do
    # not fit (a model given the wrong input) go to PyTorch's kernel, which says what is wrong
    added = func.__name__.startswith(("addmm", "baddbmm"))
    a, b = (args[1], args[2]) if added else (args[0], args[1])
    if not (is_float(a) and is_float(b)) or a.dtype != b.dtype or kwargs:
        return None
    rank = 3 if func.__name__.startswith(("bmm", "baddbmm")) else 2
    if a.dim() != rank or b.dim() != rank or a.shape[-1] != b.shape[-2] or a.shape[:-2] != b.shape[:-2]:
        return None
    shape = (*a.shape[:-1], b.shape[-1])
    if added and (not isinstance(args[0], torch.Tensor) or not _broadcasts_to(tuple(args[0].shape), shape)):
        return None
    return empty(shape, a)


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
    if not (is_float(a) and is_float(b)) or a.dtype != b.dtype or out_dtype not in (None, a.dtype):
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
        or not is_float(first)
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
    return conv_out(*args[:9])


def conv_out(
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
    if not (is_float(x) and is_float(w)) or x.dtype != w.dtype or x.dim() != w.dim():
        return None
    last = not x.is_contiguous() and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    if not (x.is_contiguous() or last):
        return None
    if type(groups) is not int or type(transposed) is not bool:
        return None
    n = x.dim() - 2
    sizes_given = (stride, padding, dilation, output_padding)
    stride, padding, dilation, output_padding = (int_sizes(size, n) for size in sizes_given)
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
            (x.shape[0], channels, *sizes), dtype=x.dtype, device=META, memory_format=torch.channels_last
        )
    return empty((x.shape[0], channels, *sizes), x)


def _reduce(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # mean.dim / sum.dim_IntList(input, dim, keepdim=False, *, dtype=None)
    x = args[0]
    if kwargs or len(args) > 3 or not is_float(x) or x.dim() == 0:
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
    return empty(shape, x)


def _adaptive_avg(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, size = args[0], args[1] if len(args) > 1 else None
    n = 2 if "2d" in func.__name__ else 3 if "3d" in func.__name__ else 1
    sizes = int_sizes(size, n)
    if kwargs or not is_float(x) or sizes is None or x.dim() < n + 1 or not x.is_contiguous():
        return None
    return empty((*x.shape[:-n], *sizes), x)


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
    if kwargs or not is_float(x) or x.dim() not in (3, 4) or not x.is_contiguous():
        return None
    with_indices = func.__name__.startswith("max_pool2d_with_indices")
    kernel = int_sizes(args[1], 2)
    stride = int_sizes(args[2], 2) if len(args) > 2 and args[2] else kernel
    padding = int_sizes(args[3], 2) if len(args) > 3 else [0, 0]
    dilation = (int_sizes(args[4], 2) if len(args) > 4 else [1, 1]) if with_indices else [1, 1]
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
    out = empty((*x.shape[:-2], *sizes), x)
    if with_indices:
        return out, torch.empty(out.shape, dtype=torch.int64, device="meta")
    return out


_TABLE: dict[str, Shortcut] = {
    **{name: _elementwise for name in _SAME_AS_INPUT},
    **{f"{name}_": _elementwise for name in _SAME_AS_INPUT},
    **{name: _batch_norm for name in _NORMS},
    "native_layer_norm": _layer_norm,
    "native_group_norm": _group_norm,
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
    **BACKWARD,
}


def shortcut_for(func: torch._ops.OpOverload) -> Shortcut | None:
    """The stand-in function for an ATen operator, if it has one."""
    if func.namespace != "aten":
        return None
    return _TABLE.get(func._schema.name.removeprefix("aten::"))
