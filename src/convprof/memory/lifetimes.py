"""Storage lifetimes: which tensor storages exist at each moment of a pass, for peak memory.

Memory is held by storages, not tensors: views, ``detach()``, in-place results and tied
weights share one, and a storage is freed when the last tensor (or autograd's saved copy of
it) that uses it goes away. The recorder shows every operator's outputs to :meth:`Lifetimes.see`;
an output whose storage is new (not one of the operator's inputs', not one already known) is
an allocation, and a weak reference with a callback on the storage's Python object notes the
moment it is freed. PyTorch keeps one Python object per storage for as long as the storage
lives (its "PyObject preservation"), so the callback runs when the memory is given back, on
real and meta tensors alike: a zero-compute pass's stand-ins live and die as the real tensors
would.

Kernels' own scratch is invisible at the operator level. Two kinds are large enough to move
a CPU peak, and are added (their sizes measured with ``torch.profiler``'s memory events):

- oneDNN's convolution (PyTorch's CPU path for float convolutions), given NCHW tensors, works
  in a blocked layout whose channels are padded to the vector width (16 floats with AVX-512,
  8 below it). It copies the input into that layout when it has at least one block of
  channels, and the weight always; computes the output into a padded buffer of its own; frees
  the copies, and only then makes the output tensor and copies the result in. So for a moment
  the padded input, weight and output exist beside the input, then the padded output beside
  the output (:func:`_conv_scratch`). A channels-last convolution works in place.
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

CUDA libraries' workspaces (cuDNN, cuBLAS) and other kernels' scratch (the CPU flash
attention's per-thread blocks) are left out, and the convention says so.

Time is a tick counter: one tick per allocation or free. The result is :class:`MemoryTrace`,
plain integers that :mod:`convprof.memory.peak` turns into a peak, its categories and the peak of
every module call. This module touches no hooks and no dispatch mode; it only watches what it
is shown.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from convprof.records import MemoryTrace


def _tensors(value: Any, depth: int, seen: set[int]) -> Any:
    """Every tensor in ``value``: in containers and in plain objects' attributes, 8 deep."""
    if isinstance(value, torch.Tensor):
        yield value
        return
    if depth > 8 or id(value) in seen or isinstance(value, (str, bytes, int, float, bool, type, nn.Module)):
        return
    seen.add(id(value))
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, (list, tuple, set)):
        items = value
    elif hasattr(value, "__dict__") and not callable(value):
        items = vars(value).values()
    else:
        return
    for item in items:
        yield from _tensors(item, depth + 1, seen)


def tensors_in(value: Any) -> list[torch.Tensor]:
    """Every tensor in ``value``, its containers and its plain objects' attributes."""
    return list(_tensors(value, 0, set()))


def _storage(tensor: torch.Tensor) -> torch.UntypedStorage | None:
    """A dense tensor's storage; None for layouts without one (sparse, nested, wrappers)."""
    if tensor.layout is not torch.strided or tensor.is_nested:
        return None
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return None


class Lifetimes:
    """Allocations and frees of storages during one pass, in order (see the module docstring).

    ``role`` names what a storage is when that is known when it is seen or later
    (:meth:`mark`): ``parameter``, ``buffer``, ``input``, ``optimizer`` (state), ``gradient``;
    every other storage is classified by when it was made and freed (see :mod:`convprof.memory.peak`).
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.sizes: list[int] = []
        self.roles: list[str] = []
        self.owners: list[int] = []  # index of the module call that made it, -1: none
        self.made: list[int] = []
        self.freed: list[int] = []  # -1 while alive
        self.ticks = 0
        self.marks: dict[str, int] = {}
        # id(storage) -> (weak reference, index); the reference is checked on every read, so a
        # storage that died and whose id a new one took reads as unknown
        self._known: dict[int, tuple[weakref.ref[torch.UntypedStorage], int]] = {}
        self._open = True

    def _index(self, storage: torch.UntypedStorage) -> int | None:
        entry = self._known.get(id(storage))
        if entry is None or entry[0]() is not storage:
            return None
        return entry[1]

    def _add(self, storage: torch.UntypedStorage, role: str, owner: int) -> int:
        index = len(self.sizes)
        self.sizes.append(int(storage.nbytes()))
        self.roles.append(role)
        self.owners.append(owner)
        self.made.append(self.ticks)
        self.freed.append(-1)
        self.ticks += 1

        def gone(_: Any, index: int = index) -> None:
            if self._open and self.freed[index] < 0:
                self.freed[index] = self.ticks
                self.ticks += 1

        self._known[id(storage)] = (weakref.ref(storage, gone), index)
        return index

    def hold(self, value: Any, role: str) -> None:
        """Storages that exist before the pass (parameters, buffers, inputs, optimizer state):
        each once, under the first role given. Inputs are looked for inside the objects that
        hold them too (a transformers key/value cache), as the pass's copy of them does."""
        for tensor in tensors_in(value):
            storage = _storage(tensor)
            if storage is not None and self._index(storage) is None:
                self._add(storage, role, -1)

    def see(self, func: Any, out: Any, args: tuple[Any, ...], kwargs: dict[str, Any], owner: int) -> None:
        """An operator's outputs: each new storage among them is an allocation made by call
        ``owner``. A view, an in-place or ``out=`` result shares an input's storage and is none."""
        scratch = None
        if self.device == "cpu":
            rule = _SCRATCH.get(func)
            if rule is not None:
                scratch = rule(args, out)
            elif torch.Tag.pointwise in func.tags:
                scratch = _promotion_scratch(args, out)
        if scratch is not None:
            self._transient(scratch[0], owner)
        inputs: set[int] | None = None
        for tensor in (out,) if isinstance(out, torch.Tensor) else tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = _storage(tensor)
            if storage is None or self._index(storage) is not None:
                continue
            if inputs is None:
                inputs = {
                    id(s)
                    for a in tree_leaves((args, kwargs))
                    if isinstance(a, torch.Tensor) and (s := _storage(a)) is not None
                }
            if id(storage) not in inputs:
                self._add(storage, "", owner)
        if scratch is not None:
            self._transient(scratch[1], owner)

    def _transient(self, size: int, owner: int) -> None:
        """Scratch a kernel makes and frees inside one operator, after its output."""
        if size:
            self.sizes.append(size)
            self.roles.append("")
            self.owners.append(owner)
            self.made.append(self.ticks)
            self.freed.append(self.ticks + 1)
            self.ticks += 2

    def mark(self, name: str) -> None:
        """A phase boundary (``forward``, ``backward``, ``step``): the tick it ends at."""
        self.marks[name] = self.ticks

    def role(self, value: Any, role: str) -> None:
        """Give the known storages of ``value``'s tensors a role (the gradients, once returned)."""
        for tensor in tree_leaves(value):
            if isinstance(tensor, torch.Tensor):
                storage = _storage(tensor)
                index = self._index(storage) if storage is not None else None
                if index is not None and not self.roles[index]:
                    self.roles[index] = role

    def close(self, calls: list[tuple[int, int]], optimizer: str | None) -> MemoryTrace:
        """Stop watching (late frees are not events of the pass) and hand over the facts;
        ``calls`` is the (open, close) tick of every module call, in call order. The block is
        the predicted device's allocator's (CUDA's rounds every block up to 512 bytes)."""
        self._open = False
        self._known.clear()
        return MemoryTrace(
            sizes=tuple(self.sizes),
            roles=tuple(self.roles),
            owners=tuple(self.owners),
            made=tuple(self.made),
            freed=tuple(self.freed),
            ticks=self.ticks,
            marks=tuple(sorted(self.marks.items(), key=lambda item: item[1])),
            calls=tuple(calls),
            block=512 if self.device == "cuda" else 1,
            optimizer=optimizer,
            device=self.device,
        )


def unfollowed_kernel(modules: list[tuple[str, nn.Module]], device: str) -> str | None:
    """The first module whose kernel on ``device`` keeps memory that a zero-compute pass cannot
    see, and why (None: there is none). On meta an LSTM runs PyTorch's portable path, one small
    product per step; the CPU runs a float one through oneDNN, whose reordered weights and
    scratchpad for the whole sequence (see the module docstring) the meta pass never makes:
    40-55% of the peak of an inference in measurements, so the figure needs a computing pass."""
    if device != "cpu" or not (torch._C._has_mkldnn and torch.backends.mkldnn.enabled):
        return None
    for name, module in modules:
        weight = getattr(module, "weight_ih_l0", None)
        if (
            isinstance(module, nn.LSTM)
            and module.proj_size == 0
            and isinstance(weight, torch.Tensor)
            and weight.dtype in (torch.float32, torch.bfloat16)
        ):
            return (
                f"module '{name or '(root)'}' (nn.LSTM) runs on the CPU as oneDNN's LSTM, whose "
                "weights copies and scratchpad a pass without arithmetic does not see"
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
    size = x.element_size()
    c_in, c_out, spatial_in, spatial_out = x.shape[1], out.shape[1], x[0, 0].numel(), out[0, 0].numel()
    blocked_input = c_in >= _padded(1)  # at least one block of channels: reordered
    copy_in = x.shape[0] * _padded(c_in) * spatial_in * size if blocked_input else 0
    kernel = w[0, 0].numel()
    if groups > 1 and groups == c_in:  # depthwise: one padded block of groups
        copy_w = _padded(groups) * (c_out // groups) * kernel * size
    else:
        per_group = c_in // groups
        copy_w = _padded(c_out) * (_padded(per_group) if blocked_input else per_group) * kernel * size
    padded_out = out.shape[0] * _padded(c_out) * spatial_out * size
    return copy_in + copy_w + padded_out, padded_out


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
        if isinstance(m, torch.Tensor) and m.dim() == 2 and not _blas_reads(m)
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
        elif isinstance(grad, torch.Tensor) and not grad.is_contiguous():
            incoming += grad.numel() * grad.element_size()
    states = _lstm_states(steps, batch, features, hidden, size, True)
    return 0, incoming + biases + reordered + gradients + states


_SCRATCH = {
    torch.ops.aten.convolution.default: _conv_scratch,
    torch.ops.aten._convolution.default: _conv_scratch,
    torch.ops.aten.mm.default: _mm_scratch,
    torch.ops.aten.addmm.default: _mm_scratch,
    torch.ops.aten.mkldnn_rnn_layer.default: _lstm_scratch,
    torch.ops.aten.mkldnn_rnn_layer_backward.default: _lstm_backward_scratch,
}
