"""Profiling a model spec on made-up inputs, for ``profile`` and ``check``.

Builds the spec's model (on meta, or for real), makes its inputs, and profiles it: without
arithmetic first and for real if the model needs tensor values (with a note on stderr), or as
``--compute`` / ``--no-compute`` say. torch is imported here on first use, not when the CLI
starts.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convprof.cli.options import UsageError
from convprof.models.inputs import Input, floating_bytes, make, merge
from convprof.report import Report, Timing
from convprof.report.tokens import TokenCost, token_cost

if TYPE_CHECKING:
    import torch

    from convprof.models.build import Loaded


class _NeedsValues(Exception):
    """A zero-compute pass of the automatic mode stopped: count with a real forward instead."""


@dataclass(frozen=True)
class Profiled:
    report: Report
    tokens: TokenCost | None = None  # language models: the per-token figures
    timing: Timing | None = None  # --time: measured per layer


@dataclass(frozen=True)
class Options:
    """How to profile a spec (see :func:`profile_spec`)."""

    dtype: str = "float32"
    folders: Sequence[Path] = ()
    past: int | None = None
    device: str = "cpu"
    repeats: int | None = None
    backward: bool = False
    memory: str | None = None
    optimizer: str | None = None
    batch: int | None = None
    missing_input: str = "give --input"
    autocast: str | None = None
    parallel: str | None = None  # a plan, "fsdp=8,tp=2": a distributed training step per rank
    tp_plan: str | None = None  # "package.module:function", parallelize(model, mesh)
    pp_split: str | None = None  # "package.module:function", stage(model, index, count)


def profile_spec(
    spec: str, given: Sequence[Input] | None, options: Options, compute: bool | None = None
) -> Profiled:
    """Build the spec's model and profile it on made-up inputs: without arithmetic when
    ``compute`` is False, with a real forward when True, and when None (the default) without
    arithmetic first, then for real if the model needs tensor values. ``options.repeats``
    measures each layer's time too (a real model, so a computing pass); ``backward`` counts a
    backward pass too; ``memory`` (a device) predicts peak memory, of a training step with
    ``optimizer``; ``batch`` replaces every input's first size; ``autocast`` (a dtype) runs the
    forward under mixed precision."""
    if options.repeats is not None:
        if compute is False:
            raise UsageError("--time runs the model for real: it cannot go with --no-compute")
        compute = True
    if options.parallel is not None:  # built on meta: the step runs on fake tensors anyway
        compute = False
    once = functools.partial(_profile_once, spec, given or (), options)
    if compute is not None:
        return once(compute=compute)
    try:
        return once(compute=False, automatic=True)
    except _NeedsValues as exc:
        reason = str(exc)
    # a model that fails for real too gets that error alone; one that runs gets a note
    found = once(compute=True, repeat=True)
    print(f"convprof: note: {reason}; counted with a real forward pass instead", file=sys.stderr)
    return found


def _load(spec: str, compute: bool, folders: Sequence[Path], automatic: bool) -> Loaded:
    from convprof.models.build import SpecError
    from convprof.models.load import load

    try:
        loaded = load(spec, meta=not compute, folders=folders or (Path.cwd(),))
    except SpecError as exc:
        if automatic and " failed: " in str(exc):  # e.g. a builder that quantizes reads values:
            # build it for real; a bad spec fails there again, with that error alone
            reason = str(exc).splitlines()[0].split(" failed: ", 1)[-1]
            raise _NeedsValues(f"{spec} cannot be built on the meta device ({reason})") from None
        raise UsageError(str(exc)) from None
    if loaded.note and not automatic:
        print(f"convprof: note: {loaded.note}", file=sys.stderr)
    return loaded


def _run(
    model: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    compute: bool,
    automatic: bool,
    options: Options | None = None,
) -> Report:
    """``convprof.profile`` with the options' backward, memory, optimizer and autocast (none
    without ``options``); its errors as usage errors, or, in the automatic mode's zero-compute
    try, as the reason to count for real."""
    from convprof.api import profile
    from convprof.memory.lifetimes import UntrackedLayout
    from convprof.parallel.plan import PlanError
    from convprof.record.errors import ForwardError, ValuesNeeded

    options = options or Options()
    try:
        return profile(
            model,
            args,
            kwargs,
            compute=compute,
            backward=options.backward,
            memory=options.memory or False,
            optimizer=options.optimizer,
            autocast=options.autocast,
            parallel=options.parallel,
            tp_plan=_function("--tp-plan", options.tp_plan, options),
            pp_split=_function("--pp-split", options.pp_split, options),
        )
    except (PlanError, UntrackedLayout) as exc:
        raise UsageError(str(exc)) from None
    except TypeError as exc:  # profile()'s own refusals of what it was given (a detached output)
        if not str(exc).startswith("convprof"):
            raise
        raise UsageError(str(exc).removeprefix("convprof: ").removeprefix("convprof.profile: ")) from None
    except ForwardError as exc:  # ValuesNeeded included
        first = str(exc).splitlines()[0]
        if automatic:  # whatever stopped the zero-compute pass, a real forward may not stop
            raise _NeedsValues(first.split("; profile with")[0]) from None
        hint = " (run without --no-compute)" if isinstance(exc, ValuesNeeded) else ""
        raise UsageError(first + hint) from None


def _function(option: str, name: str | None, options: Options) -> Any:
    """The function an option names (``--tp-plan``, ``--pp-split``), imported as a model
    spec's module is."""
    if name is None:
        return None
    from convprof.models.build import SpecError
    from convprof.models.load import find_callable

    try:
        return find_callable(name, options.folders or (Path.cwd(),))
    except SpecError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _memory() -> int:
    """Physical memory in bytes (0 when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _inputs(
    chosen: Sequence[Input], dtype: str, compute: bool, id_limit: int | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    size = floating_bytes(chosen, dtype) if compute else 0
    memory = _memory()
    if memory and size > memory // 2:
        raise UsageError(
            f"the inputs take {size / 1e9:.1f} GB, more than half of this machine's memory "
            f"({memory / 1e9:.1f} GB): profile with --no-compute, which allocates nothing"
        )
    try:
        return make(chosen, dtype=dtype, compute=compute, id_limit=id_limit)
    except (RuntimeError, MemoryError) as exc:
        raise UsageError(
            f"cannot allocate inputs of {size / 1e9:.1f} GB ({str(exc).splitlines()[0]}): "
            "profile with --no-compute"
        ) from None


def _token_ids(loaded: Loaded, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The token ids a language model was given: its main input, when that is integer."""
    if loaded.text is None or loaded.main != "input_ids":
        return None
    ids: torch.Tensor | None = kwargs.get("input_ids", args[0] if args else None)
    if ids is None or ids.dtype.is_floating_point or ids.dim() == 0:
        return None
    return ids


def _check_positions(model: Any, length: int) -> None:
    """Refuse a context longer than a model's learned position table (GPT-2's 1,024, BERT's
    512): its real forward fails with an IndexError, where a pass without arithmetic would
    count it. The table is an embedding other than the token one, of as many rows as the
    configuration's positions (OPT's has 2 more); rotary and relative positions have none."""
    from torch import nn

    config = getattr(model, "config", None)
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(positions, int) or length <= positions:
        return
    tokens = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tables = [
        m
        for m in model.modules()
        if isinstance(m, nn.Embedding) and m is not tokens and positions <= m.num_embeddings <= positions + 2
    ]
    if tables:
        raise UsageError(
            f"{type(model).__name__} has learned positions for {positions:,} tokens; the input and any "
            f"--past make {length:,} (its real forward would fail): give at most {positions:,}"
        )


def _note_unknown_keywords(model: Any, chosen: Sequence[Input]) -> None:
    """Say so when a keyword input is not a parameter of the forward but goes to its
    ``**kwargs`` (transformers models take any name there and ignore most): a typo would
    otherwise pass unnoticed. A forward without ``**kwargs`` rejects the name itself."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return
    for item in chosen:
        if item.name is not None and item.name not in parameters:
            print(
                f"convprof: note: {type(model).__name__}.forward has no parameter {item.name!r}; "
                "it was passed in its **kwargs",
                file=sys.stderr,
            )


def _chosen(spec: str, loaded: Loaded, given: Sequence[Input], options: Options) -> tuple[Input, ...]:
    """The inputs to make: those given over the spec's defaults, one new token after a cache,
    every first size replaced by ``options.batch``."""
    if options.past is not None and not loaded.decoder:
        raise UsageError(
            f"--past needs a decoder-only language model ('transformers:' spec); {spec} is not one"
        )
    defaults = loaded.inputs or ()
    if options.past is not None and defaults:  # one new token after the cached ones
        defaults = (replace(defaults[0], shape=(defaults[0].shape[0], 1)),)
    chosen = merge(given, defaults, loaded.main)
    if not chosen:
        raise UsageError(f"no input shape for {spec!r}: {options.missing_input}")
    if options.batch is not None:
        chosen = tuple(
            replace(item, shape=(options.batch, *item.shape[1:])) if item.shape else item for item in chosen
        )
    return chosen


def _on_device(
    model: Any, args: tuple[Any, ...], kwargs: dict[str, Any], device: str
) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """The model and its inputs moved to ``--device``, for a computing pass."""
    import torch

    try:
        where = torch.device(device)
        model = model.to(where)
    except (RuntimeError, AssertionError) as exc:
        raise UsageError(f"--device {device}: {str(exc).splitlines()[0]}") from None
    args = tuple(a.to(where) if isinstance(a, torch.Tensor) else a for a in args)
    kwargs = {k: v.to(where) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    return model, args, kwargs


def _profile_once(
    spec: str,
    given: Sequence[Input],
    options: Options,
    *,
    compute: bool,
    automatic: bool = False,
    repeat: bool = False,
) -> Profiled:
    import torch

    from convprof.record.timing import measure

    loaded = _load(spec, compute, options.folders, automatic)
    chosen = _chosen(spec, loaded, given, options)
    model = loaded.model.to(getattr(torch, options.dtype))
    if not repeat:
        _note_unknown_keywords(model, chosen)
    torch.manual_seed(0)
    args, kwargs = _inputs(chosen, options.dtype, compute, loaded.id_limit)
    if compute and options.device != "cpu":
        model, args, kwargs = _on_device(model, args, kwargs, options.device)
    ids = _token_ids(loaded, args, kwargs)
    if ids is not None:
        _check_positions(model, ids.shape[-1] + (options.past or 0))
    prefill = None
    if options.past is not None:
        prefill = _cached(model, loaded, ids, kwargs, compute, automatic, options)
    report = _run(model, args, kwargs, compute, automatic, options)
    tokens = None
    # a parallel step's MACs are one rank's: per-token figures and the rule are the model's
    if ids is not None and loaded.text is not None and options.parallel is None:
        tokens = token_cost(
            macs=report.total.macs,
            params=report.total.params,
            shape=loaded.text,
            batch=ids.shape[0] if ids.dim() > 1 else 1,
            new=ids.shape[-1],
            past=options.past or 0,
            prefill_macs=prefill,
            train_macs=report.total.train_macs if report.backward else None,
        )
    timing = None
    if options.repeats is not None:
        try:
            # containers that compute something themselves are timed for that work too
            own = [layer.name for layer in report.layers if layer.has_children and layer.macs]
            timing = measure(model, args, kwargs, repeats=options.repeats, own=own)
        except Exception as exc:  # it ran once already: a second failure is the model's
            raise UsageError(
                f"--time: the model failed when run again: {type(exc).__name__}: {exc}"
            ) from None
    return Profiled(report, tokens, timing)


def _cached(
    model: Any,
    loaded: Loaded,
    ids: torch.Tensor | None,
    kwargs: dict[str, Any],
    compute: bool,
    automatic: bool,
    options: Options,
) -> int:
    """``--past``: the prefill of the cached tokens profiled (its MACs returned), and a real
    key/value cache of them put in ``kwargs`` for the decoding step."""
    from convprof.models.transformers import cache, cache_keyword

    if ids is None:
        raise UsageError("--past needs integer token ids as the model's input (e.g. --input 1,1:int64)")
    assert options.past is not None
    (before,), _ = _inputs(
        [Input((ids.shape[0], options.past), "int64")], options.dtype, compute, loaded.id_limit
    )
    prefill_options = Options(autocast=options.autocast)
    prefill = _run(model, (), {"input_ids": before}, compute, automatic, prefill_options).total.macs
    kwargs[cache_keyword(model)] = cache(model, before if compute else before.to("meta"))
    kwargs.setdefault("use_cache", True)
    return prefill
