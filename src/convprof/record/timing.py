"""Measured time per layer: the roofline's estimate next to a measurement.

:func:`measure` runs the model for real, ``warmup`` times untimed and ``repeats`` times timed,
and times every call of every leaf module (a module without children) between its forward
hooks, summed per module and forward pass, and of each container named as computing
something itself (``nn.MultiheadAttention``'s products, an attention block's ``q @ k``: the
command line names those with MACs of their own), less the time of the timed modules it
calls; so is each of PyTorch's layers that run one fused operator in inference
(``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``, whose children then never run).
Separately, the same number of plain forward passes without hooks gives the
end-to-end time. The difference between that and the sum of the layers is what no timed
module accounts for: the Python between layers, the free operators a container runs itself
(a residual ``x + y``), and the hooks' own cost.

On the CPU each boundary is a ``time.perf_counter`` reading, with the thread count stated. On
CUDA each boundary records a CUDA event on the current stream and the device is synchronised
once per pass, after it: a layer's time is what the GPU spent from its first to its last
boundary, its kernels and, where the GPU waits for the CPU to launch them (small layers at a
small batch), that wait too: eager MobileNetV2 on an H200 is launch-bound up to batch 64, and
its leaf layers then sum to 1.3-1.45x its forward (docs/mobilenetv2.md). Events, unlike a
synchronisation at every boundary (a first version), add no host round trip to a layer whose
kernels keep the GPU busy.
The model runs in eval mode under ``no_grad``; its training flags and attributes are put back
afterwards (see :mod:`convprof.record.state`), but, as in any inference call, a buffer the model
writes in eval is written.
Timings are medians, with the fastest and slowest repeat as the spread.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from convprof.record.facts import has_children
from convprof.record.state import ModelState
from convprof.report import LayerTime, Timing


def _device(model: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> torch.device:
    tensors = [t for t in (*model.parameters(), *args, *kwargs.values()) if isinstance(t, torch.Tensor)]
    if any(t.is_meta for t in tensors):
        raise ValueError("measure() runs the model for real: it cannot time a model or inputs on meta")
    return next((t.device for t in tensors if t.device.type != "cpu"), torch.device("cpu"))


def measure(
    model: nn.Module,
    args: Any,
    kwargs: Mapping[str, Any] | None = None,
    *,
    repeats: int = 10,
    warmup: int = 3,
    own: Collection[str] = (),
) -> Timing:
    """Time ``model(*args, **kwargs)`` per leaf module and end to end (see the module
    docstring); also the modules named in ``own`` (containers that compute something
    themselves: attention's products in ``nn.MultiheadAttention``), each for its time less
    that of the timed modules it calls."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    args = (args,) if isinstance(args, torch.Tensor) else tuple(args)
    kwargs = dict(kwargs or {})
    device = _device(model, args, kwargs)
    cuda = device.type == "cuda"
    sync: Callable[[], None] = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    where = (
        f"cuda: {torch.cuda.get_device_name(device)}"
        if cuda
        else f"{device.type}, {torch.get_num_threads()} threads"
    )
    state = ModelState(list(model.modules()))
    state.set_eval()
    per_pass: list[dict[str, float]] = []
    forwards: list[float] = []
    clock = _event_clock(device) if cuda else _wall_clock()
    try:
        with torch.no_grad():
            for _ in range(warmup):
                model(*args, **kwargs)
            for _ in range(repeats):  # plain passes and timed passes in turn: the same conditions
                sync()
                start = time.perf_counter()
                model(*args, **kwargs)
                sync()
                forwards.append(time.perf_counter() - start)
                with leaf_hooks(model, clock.before, clock.after, own):
                    model(*args, **kwargs)
                sync()
                per_pass.append(clock.collect())
    finally:
        state.restore()
    names = list(dict.fromkeys(name for run in per_pass for name in run))
    layers = tuple(
        LayerTime(
            name,
            statistics.median(run.get(name, 0.0) for run in per_pass),
            min(run.get(name, 0.0) for run in per_pass),
            max(run.get(name, 0.0) for run in per_pass),
        )
        for name in names
    )
    return Timing(where, repeats, statistics.median(forwards), min(forwards), max(forwards), layers)


class _Clock:
    """Time between a timed module's hooks, less that of the timed modules it calls, summed
    per module over one pass. ``now`` stamps a boundary and ``seconds`` reads two stamps,
    only when the pass is collected: a CUDA event's time is known once the device has
    synchronised."""

    def __init__(self, now: Callable[[], Any], seconds: Callable[[Any, Any], float]) -> None:
        self.now = now
        self.seconds = seconds
        self.open: list[tuple[str, Any]] = []  # the timed calls running, outermost first
        self.calls: list[tuple[str, Any, Any, int]] = []  # (name, start, end, depth), as they end

    def before(self, name: str) -> None:
        self.open.append((name, self.now()))

    def after(self, name: str) -> None:
        while self.open and self.open[-1][0] != name:  # a call an exception left open
            self.open.pop()
        if self.open:
            _, start = self.open.pop()
            self.calls.append((name, start, self.now(), len(self.open)))

    def collect(self) -> dict[str, float]:
        # Calls end inside out: when one at depth d ends, the calls at depth d + 1 that ended
        # since the last one at depth d are the ones directly inside it.
        inside: dict[int, float] = {}
        spent: dict[str, float] = {}
        for name, start, end, depth in self.calls:
            span = self.seconds(start, end)
            spent[name] = spent.get(name, 0.0) + span - inside.pop(depth + 1, 0.0)
            inside[depth] = inside.get(depth, 0.0) + span
        self.calls = []
        return spent


def _wall_clock() -> _Clock:
    return _Clock(time.perf_counter, lambda start, end: end - start)


def _event_clock(device: torch.device) -> _Clock:
    """GPU time, from CUDA events on the device's current stream."""

    def now() -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        event.record(torch.cuda.current_stream(device))
        return event

    return _Clock(now, lambda start, end: start.elapsed_time(end) / 1000)


# PyTorch's layers that run one fused operator in inference: their work is their own then,
# not their children's (nn.TransformerEncoderLayer's linear1 is never called)
_FUSED_IN_INFERENCE = (nn.MultiheadAttention, nn.TransformerEncoderLayer)


@contextlib.contextmanager
def leaf_hooks(
    model: nn.Module, before: Callable[[str], None], after: Callable[[str], None], own: Collection[str] = ()
) -> Iterator[None]:
    """Call ``before(name)`` and ``after(name)`` around every call of the model's leaf modules
    (no children), of those named in ``own`` and of PyTorch's layers that fuse in inference;
    the hooks are removed on the way out, whatever happens."""
    names = {
        id(m): name
        for name, m in model.named_modules()
        if not has_children(m) or name in own or isinstance(m, _FUSED_IN_INFERENCE)
    }

    def pre(module: nn.Module, args: Any) -> None:
        name = names.get(id(module))
        if name is not None:
            before(name)

    def post(module: nn.Module, args: Any, *rest: Any) -> None:
        name = names.get(id(module))
        if name is not None:
            after(name)

    handles = [register_module_forward_pre_hook(pre)]
    try:
        handles.append(register_module_forward_hook(post, always_call=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
