"""Zero compute's real tensors: what stays real because it steers control flow.

Lengths, masks, small integer tables and constants the model makes hold values known without
any input; kept real, they let the model read them (``.item()``, ``tolist()``) as it would,
while everything else is meta. The operators here see their arguments before any is made meta.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from convprof.record.stand_ins.shapes import Shortcut, int_sizes

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
        size = int_sizes(args[0], len(args[0])) if args and isinstance(args[0], (list, tuple)) else None
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
