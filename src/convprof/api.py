"""The entry point: ``profile(model, args, kwargs)`` = record, then count."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from convprof.count.counter import count
from convprof.record.autocast import DTYPES
from convprof.record.recorder import ForwardError, collector_paused, record
from convprof.report import OPTIMIZERS, Report


def _positional(args: Any) -> tuple[Any, ...]:
    if isinstance(args, torch.Tensor):
        return (args,)
    if type(args) is tuple:
        return args
    if isinstance(args, tuple) and hasattr(args, "_fields"):  # a PackedSequence is one input
        return (args,)
    raise TypeError(
        "convprof.profile: args must be a Tensor or a tuple of positional inputs, got "
        f"{type(args).__name__} (a named tuple such as a PackedSequence is one input)"
    )


def _shaped(
    input_size: Sequence[int] | Sequence[Sequence[int]], dtypes: Sequence[torch.dtype] | None, meta: bool
) -> tuple[torch.Tensor, ...]:
    """torchinfo's ``input_size=``: a tensor per shape, of ``dtypes`` (float32 by default):
    floating ones standard normal, integer ones zeros (token ids), booleans ones; on meta for
    a pass without arithmetic."""
    items: list[Any] = list(input_size)
    if _is_shape(items) and items:
        shapes = [tuple(int(size) for size in items)]
    elif items and all(_is_shape(item) for item in items):
        shapes = [tuple(int(size) for size in item) for item in items]
    else:
        raise TypeError(
            "convprof.profile: input_size must be a shape such as (1, 3, 224, 224) or a list of "
            f"shapes, got {input_size!r}"
        )
    kinds = list(dtypes) if dtypes is not None else [torch.float32] * len(shapes)
    if len(kinds) != len(shapes) or not all(isinstance(kind, torch.dtype) for kind in kinds):
        raise TypeError(
            f"convprof.profile: dtypes must be one torch dtype per input ({len(shapes)}), got {dtypes!r}"
        )
    tensors = []
    for shape, kind in zip(shapes, kinds, strict=True):
        if meta:
            tensors.append(torch.empty(shape, dtype=kind, device="meta"))
        elif kind.is_floating_point:
            tensors.append(torch.randn(shape, dtype=kind))
        else:
            tensors.append(
                torch.ones(shape, dtype=kind) if kind == torch.bool else torch.zeros(shape, dtype=kind)
            )
    return tuple(tensors)


def _given(
    args: Any,
    input_size: Sequence[int] | Sequence[Sequence[int]] | None,
    dtypes: Sequence[torch.dtype] | None,
    compute: bool | str,
) -> Any:
    """The inputs: ``args``, or those ``input_size`` makes."""
    if (args is None) == (input_size is None):
        raise TypeError(
            "convprof.profile: give the inputs (args) or their shapes (input_size=), one of the two"
        )
    if dtypes is not None and input_size is None:
        raise TypeError("convprof.profile: dtypes= are those of input_size=; pass input_size too")
    return args if input_size is None else _shaped(input_size, dtypes, meta=compute is False)


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list, torch.Size)) and all(
        type(size) is int and size >= 0 for size in value
    )


def profile(
    model: nn.Module,
    args: Any = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    input_size: Sequence[int] | Sequence[Sequence[int]] | None = None,
    dtypes: Sequence[torch.dtype] | None = None,
    compute: bool | str = True,
    backward: bool = False,
    loss: Callable[[Any], torch.Tensor] | None = None,
    memory: bool | str = False,
    optimizer: str | None = None,
    autocast: str | torch.dtype | None = None,
    parallel: Mapping[str, Any] | str | None = None,
    tp_plan: Callable[[nn.Module, Any], Any] | None = None,
    checkpoint: str | None = None,
    pp_split: Callable[[nn.Module, int, int], nn.Module] | None = None,
) -> Report:
    """Params, MACs and FLOPs of ``model(*args, **kwargs)``, per layer and in total.

    ``input_size=(1, 3, 224, 224)`` (or a list of shapes) instead of ``args`` makes the inputs,
    as torchinfo's ``summary`` does: float32 unless ``dtypes=[torch.long, ...]`` says otherwise,
    standard normal, integers zeros; on meta with ``compute=False``.

    One forward pass in eval mode under ``torch.no_grad()``; the model is left exactly as it
    was. ``args`` is a Tensor or a tuple of positional inputs, ``kwargs`` a dict of keyword
    inputs. A forward that raises gives :class:`ForwardError` naming the module that was
    running.

    ``compute=False`` runs the pass without arithmetic (shapes only, on meta stand-ins):
    the same counts at a cost that does not grow with the input, the model's weights neither
    copied nor moved, the caller's tensors untouched. A model or inputs on the meta device need
    no option. A forward that needs tensor values (``.item()``, ``nonzero``) then raises
    :class:`ValuesNeeded`. ``compute="auto"`` tries that first and, if the zero-compute pass
    stops for any reason (values needed; an operator PyTorch has no meta kernel for; a model
    that checks its tensors' device, such as ``torch.autocast(x.device.type)``), runs the real
    forward instead, whose own error is the one raised if it fails too (what the command line
    does by default).

    ``backward=True`` also counts a training step's backward pass, per layer, from the
    operators that really run: the gradient of ``loss(output)`` (by default the sum of every
    floating output) with respect to the parameters that require grad and the inputs that
    do. A frozen layer runs no weight gradient; the first layer no input gradient unless its
    input requires grad. The forward then runs with gradients enabled (still in eval mode),
    and no ``.grad`` is left on the model. See ``Layer.grad_input_macs``,
    ``Layer.grad_weight_macs`` and ``Totals.train_macs``.

    ``memory=True`` also predicts peak memory (``Report.memory``, ``Layer.peak_bytes``) from
    the lifetimes of the tensor storages the pass makes, zero compute included: of one
    inference forward, or with ``backward=True`` of a training step (forward in training
    mode, backward, gradients held) and, with ``optimizer`` (``"sgd"``, ``"momentum"``,
    ``"adam"`` or ``"adamw"``), the optimizer's state and update. The allocator predicted is
    the model's device's (a model on meta: CUDA's); ``memory="cuda"`` or ``"cpu"`` names it.

    ``autocast="bfloat16"`` (or ``"float16"``, or the torch dtype) runs the forward under mixed
    precision, as ``torch.autocast`` would on the device memory is predicted for (else the
    model's; on meta CUDA's), with and without arithmetic: the products in that dtype, the
    weights' copies in it held for the forward, float32 where the device's policy says. The
    backward and the optimizer's update run outside it, as in a training loop.

    ``parallel={"fsdp": 8, "tp": 2}`` (or ``"fsdp=8,tp=2"``) predicts one training step per
    rank of that plan (``backward=True`` needed; ``accum``, ``reshard``, ``param_dtype`` and
    ``reduce_dtype`` go in the same dict; ``checkpoint="blocks"`` checkpoints every repeated
    block, ``"selective"`` every block with torchtitan's op policy, a module pattern such as
    ``"model.layers.*.mlp"`` or a class name those modules; the recompute is counted apart in
    ``Totals.recompute_macs``), through PyTorch's own
    FSDP2 and tensor parallelism in a fake process group on fake tensors: nothing is computed
    or sent, and ``model`` is not touched (a copy is sharded). ``args`` are one rank's inputs
    for one micro-step. The report's rows and totals are the first rank's (its local shapes),
    and ``Report.ranks`` gives each class of ranks its peak memory, MACs and collectives.
    ``tp_plan`` is ``parallelize(model, mesh)`` for a model without a tensor-parallel plan of
    its own, ``pp_split`` is ``stage(model, index, count)`` (stage ``index``'s module of
    ``model``) for a pipeline of a model that is not a transformers decoder. See
    docs/parallel.md.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convprof.profile: model must be a torch.nn.Module, got {type(model).__name__}")
    positional = _positional(_given(args, input_size, dtypes, compute))
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise TypeError(
            f"convprof.profile: kwargs must be a dict of keyword inputs, got {type(kwargs).__name__}"
        )
    if loss is not None and not backward:
        raise TypeError("convprof.profile: loss is the loss of a backward pass; pass backward=True too")
    if loss is not None and not callable(loss):
        raise TypeError(f"convprof.profile: loss must be a function of the output, got {type(loss).__name__}")
    device = _memory_device(model, memory, optimizer, backward)
    if checkpoint is not None:
        if parallel is None:
            raise TypeError(
                "convprof.profile: checkpoint= is the activation checkpointing of parallel=; "
                "pass parallel too"
            )
        parallel = {**_plan_dict(parallel), "checkpoint": checkpoint}
    for name, function in (("tp_plan", tp_plan), ("pp_split", pp_split)):
        if function is not None and parallel is None:
            raise TypeError(f"convprof.profile: {name}= goes with parallel=; pass parallel too")
        if function is not None and not callable(function):
            raise TypeError(f"convprof.profile: {name} must be a function, got {function!r}")
    if parallel is not None:
        job = {
            "tensor_plan": tp_plan,
            "pp_split": pp_split,
            "loss": loss,
            "memory": device,
            "optimizer": optimizer,
        }
        return _parallel(model, positional, dict(kwargs), parallel, backward, autocast, job)
    options: dict[str, Any] = {"backward": backward, "loss": loss, "memory": device, "optimizer": optimizer}
    if autocast is not None:
        options["autocast"] = (_autocast_dtype(autocast), device or _memory_device(model, True, None, False))
    if compute == "auto":
        try:
            with collector_paused():
                return count(record(model, positional, dict(kwargs), compute=False, **options))
        except ForwardError:  # ValuesNeeded included: a real pass may not stop where meta did
            compute = True
    if not isinstance(compute, bool):
        raise TypeError(f"convprof.profile: compute must be True, False or 'auto', got {compute!r}")
    try:
        with collector_paused():
            return count(record(model, positional, dict(kwargs), compute=compute, **options))
    except ForwardError as exc:
        if positional and all(type(a) is int for a in positional):  # torchinfo's habit: a shape
            shape = ", ".join(map(str, positional))
            raise ForwardError(
                f"{exc}; args {positional} are ints: to profile at an input shape, pass "
                f"input_size=({shape}) or a tensor, e.g. convprof.profile(model, torch.randn({shape}))"
            ) from exc
        raise


def _autocast_dtype(autocast: str | torch.dtype) -> torch.dtype:
    """The lower-precision dtype ``autocast=`` names."""
    if isinstance(autocast, torch.dtype) and autocast in DTYPES.values():
        return autocast
    if isinstance(autocast, str) and autocast.removeprefix("torch.") in DTYPES:
        return DTYPES[autocast.removeprefix("torch.")]
    raise ValueError(
        f"convprof.profile: autocast must be a lower-precision dtype (bfloat16 or float16), got {autocast!r}"
    )


def _memory_device(model: nn.Module, memory: bool | str, optimizer: str | None, backward: bool) -> str | None:
    """The device whose allocator a peak is predicted for, or None for no peak."""
    if optimizer is not None:
        if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
            raise ValueError(
                f"convprof.profile: unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}"
            )
        if memory is False or not backward:
            raise TypeError(
                "convprof.profile: optimizer= is the optimizer of a training step's memory; "
                "pass memory=True and backward=True too"
            )
    if memory is False:
        return None
    if memory is True:
        tensor: torch.Tensor | None = next(iter(model.parameters()), None)
        if tensor is None:
            tensor = next(iter(model.buffers()), None)
        kind = tensor.device.type if tensor is not None else "cpu"
        return "cuda" if kind == "meta" else kind
    if memory not in ("cpu", "cuda"):
        raise ValueError(f"convprof.profile: memory must be True, False, 'cpu' or 'cuda', got {memory!r}")
    return memory


def _parallel(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    parallel: Mapping[str, Any] | str,
    backward: bool,
    autocast: str | torch.dtype | None,
    job: dict[str, Any],
) -> Report:
    """A distributed training step per rank class (see :mod:`convprof.parallel`); ``job``:
    the step's options, as :class:`convprof.parallel.run.Job` names them."""
    from convprof.parallel.plan import parse_plan
    from convprof.parallel.run import Job, profile_parallel

    if not backward:
        raise TypeError("convprof.profile: parallel= predicts a training step; pass backward=True too")
    if autocast is not None:
        raise TypeError(
            "convprof.profile: autocast= does not go with parallel= yet; FSDP2's mixed precision is "
            "the plan's param_dtype and reduce_dtype"
        )
    plan = parse_plan(parallel)
    with collector_paused():
        return profile_parallel(Job(model, args, kwargs, plan, **job))


def _plan_dict(parallel: Mapping[str, Any] | str) -> dict[str, Any]:
    """A plan as a dict of what it sets, whichever form it was given in."""
    from convprof.parallel.plan import Plan, parse_plan

    plan, default = parse_plan(parallel), Plan()
    return {
        name: getattr(plan, name)
        for name in plan.__dataclass_fields__
        if getattr(plan, name) != getattr(default, name)
    }
