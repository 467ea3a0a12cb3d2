"""One model, four counts: FlopCounterMode on meta (the oracle) and convprof on the CPU, with
compute=False and on meta. Shared by scripts/zoo_sweep.py and the zoo tests.

A model is *exact* when every convprof count equals FlopCounterMode's MACs (its FLOPs / 2) and
every report is complete; *refused* when a zero-compute or meta pass raised ValuesNeeded (the
model reads tensor values) while the others were exact; a *crash* is any other exception from
convprof, which is a bug. FlopCounterMode counts convolutions, matrix products and attention
kernels, which is the whole convention except operators it does not know (``_grouped_mm``,
``mv``): where it cannot run, the convprof counts must agree with each other.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map_only
from torch.utils.flop_counter import FlopCounterMode

import convprof
from convprof import ValuesNeeded
from convprof.zoo import build

Inputs = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass
class Outcome:
    zoo: str
    name: str
    input: str = ""
    params: int | None = None
    flop_counter: int | None = None  # MACs = FlopCounterMode FLOPs / 2, on meta
    macs: dict[str, int] = field(default_factory=dict)  # mode -> convprof MACs
    incomplete: dict[str, list[str]] = field(default_factory=dict)  # mode -> unexplained ops
    refused: dict[str, str] = field(default_factory=dict)  # mode -> ValuesNeeded message
    crashed: dict[str, str] = field(default_factory=dict)  # mode -> exception
    skipped: dict[str, str] = field(default_factory=dict)  # mode -> why it did not run
    note: str = ""
    seconds: float = 0.0

    @property
    def status(self) -> str:
        if self.crashed:
            return "crash"
        if not self.macs:
            return "not built" if self.note else "skipped"
        reference = self.flop_counter if self.flop_counter is not None else next(iter(self.macs.values()))
        if any(m != reference for m in self.macs.values()):
            return "differs"
        if self.incomplete:
            return "incomplete"
        return "refused" if self.refused else "exact"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def to_meta(inputs: Inputs) -> Inputs:
    return tree_map_only(torch.Tensor, lambda t: t.to("meta"), inputs)


def timm_model(name: str) -> tuple[Callable[[], nn.Module], Callable[[], Inputs]]:
    """A timm architecture with random weights and its default input (1 x its config's size)."""
    import timm

    cfg = timm.get_pretrained_cfg(name)
    size = tuple(cfg.input_size) if cfg is not None and cfg.input_size else (3, 224, 224)

    def build() -> nn.Module:
        made: nn.Module = timm.create_model(name, pretrained=False)
        return made

    def inputs() -> Inputs:
        return (torch.randn(1, *size),), {}

    return build, inputs


def check(
    zoo: str,
    name: str,
    builder: Callable[[], nn.Module],
    make_inputs: Callable[[], Inputs],
    *,
    max_real_params: int = 400_000_000,
    max_cpu_macs: int = 10**10,
) -> Outcome:
    """Count ``builder()`` on ``make_inputs()`` four ways; nothing raised escapes.

    Real weights are built only up to ``max_real_params`` (memory) and the CPU pass runs only
    up to ``max_cpu_macs`` (time); what is skipped is said in ``skipped``.
    """
    start = time.perf_counter()
    outcome = Outcome(zoo, name)
    try:
        args, kwargs = make_inputs()
        meta_args, meta_kwargs = to_meta((args, kwargs))
        outcome.input = ", ".join(
            "x".join(map(str, t.shape)) for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)
        )
        meta_model = build(builder, meta=True).model.eval()
    except Exception as exc:
        outcome.note = f"not built: {_short(exc)}"
        outcome.seconds = time.perf_counter() - start
        return outcome
    outcome.params = sum(p.numel() for p in meta_model.parameters())
    outcome.flop_counter, outcome.note = _flop_counter(meta_model, meta_args, meta_kwargs)
    _count(outcome, "meta", meta_model, meta_args, meta_kwargs)
    del meta_model
    if outcome.params > max_real_params:
        reason = f"{outcome.params / 1e6:.0f}M params: not built with real weights"
        outcome.skipped.update(cpu=reason, no_compute=reason)
    else:
        try:
            torch.manual_seed(0)
            model = builder().eval()
        except Exception as exc:
            outcome.skipped.update(cpu=_short(exc), no_compute=_short(exc))
        else:
            _count(outcome, "no_compute", model, args, kwargs, compute=False)
            expected = outcome.flop_counter or max(outcome.macs.values(), default=0)
            if expected > max_cpu_macs:
                outcome.skipped["cpu"] = f"{expected / 1e9:.1f} GMACs: over the sweep's CPU budget"
            else:
                _count(outcome, "cpu", model, args, kwargs)
            del model
    gc.collect()
    outcome.seconds = time.perf_counter() - start
    return outcome


def _flop_counter(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int | None, str]:
    """FlopCounterMode's MACs on meta, under no_grad; with grad enabled when that fails (its module
    tracker asserts on some models, CaiT and PiT among them, under no_grad)."""
    failure = ""
    for grad in (False, True):
        try:
            with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(grad):
                model(*args, **kwargs)
            return counter.get_total_flops() // 2, ""
        except Exception as exc:
            failure = failure or _short(exc)
    return None, f"FlopCounterMode on meta failed: {failure}"


def _count(
    outcome: Outcome,
    mode: str,
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    compute: bool = True,
) -> None:
    try:
        report = convprof.profile(model, args, kwargs, compute=compute)
    except ValuesNeeded as exc:
        outcome.refused[mode] = _short(exc)
        return
    except Exception as exc:
        outcome.crashed[mode] = _short(exc)
        return
    outcome.macs[mode] = report.total.macs
    if not report.complete:
        outcome.incomplete[mode] = sorted({u.op for u in report.unexplained})
