"""One model, four counts: FlopCounterMode on meta (the oracle) and convprof on the CPU, with
compute=False and on meta. Shared by scripts/zoo_sweep.py and the zoo tests.

A model is *exact* when every convprof count equals FlopCounterMode's MACs (its FLOPs / 2) and
every report is complete; *refused* when a zero-compute or meta pass raised ValuesNeeded (the
model reads tensor values) while the others were exact; a *crash* is any other exception from
convprof, which is a bug. FlopCounterMode counts convolutions, matrix products and attention
kernels, which is the whole convention except operators it does not know (``_grouped_mm``,
``mv``): where it cannot run, the convprof counts must agree with each other. FFTs, triangular
solves, distances (``cdist``), the CPU's fused attention kernel, the grouped products of
mixture-of-experts layers and oneDNN's LSTM layers (on the CPU), which it does not count
either, are given to it here (``ORACLE_FLOPS``, written from the convention's statement and
the operators' shapes, not from convprof's code), so that FNet, chunked linear attention,
vision towers, MoE models and speech codecs have an oracle.
"""

from __future__ import annotations

import gc
import math
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
from convprof.models.build import build

Inputs = tuple[tuple[Any, ...], dict[str, Any]]


def _fft_flops(numbers: int, shape: tuple[int, ...], dims: Any, per_number: float) -> int:
    points = math.prod(shape[d] for d in dims)
    # FLOPs = 2 x MACs, the MACs rounded per call as a count of operations is
    return 2 * round(per_number * numbers * math.log2(points)) if points > 1 else 0


def _c2c(x: Any, dim: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return _fft_flops(math.prod(x), x, dim, 2.5)  # 5 N log2 N FLOPs per N complex points


def _r2c(x: Any, dim: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return _fft_flops(math.prod(x), x, dim, 1.25)  # real input: half the numbers


def _c2r(x: Any, dim: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return _fft_flops(math.prod(out_shape), out_shape, dim, 1.25)  # real output


def _grouped_mm(a: Any, b: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # every output element sums a[-1] products; when both operands are 2-D the groups split
    # that inner dimension instead, one (M, N) output per group
    groups = out_shape[0] if len(a) == 2 and len(b) == 2 else 1
    return 2 * math.prod(out_shape) * a[-1] // groups


def _solve_triangular(a: Any, b: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # substitution: the i-th unknown of each right-hand side needs i products, 0..n-1, so
    # (n - 1) / 2 per solution element on average, whichever side A is on
    return 2 * math.prod(out_shape) * (a[-1] - 1) // 2


def _rnn_layer(x: Any, w_ih: Any, w_hh: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # oneDNN's LSTM layer on the CPU (FlopCounterMode on meta sees the per-step products):
    # each step multiplies the input by W_ih and the state by W_hh, one vector each
    steps = math.prod(x) // w_ih[1]
    return 2 * steps * (math.prod(w_ih) + math.prod(w_hh))


def _euclidean_dist(x1: Any, x2: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # torch.cdist with p = 2: every distance sums M squared differences (codebook lookups)
    return 2 * math.prod(out_shape) * x1[-1]


def _cpu_attention(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # the CPU's fused attention kernel (nn.MultiheadAttention with need_weights=False, SDPA),
    # which FlopCounterMode has no formula for: Q K^T (S products of E per query row) and the
    # weighted sum of V (S products per output element)
    rows = math.prod(query[:-1])
    return 2 * rows * key[-2] * (query[-1] + value[-1])


ORACLE_FLOPS = {
    torch.ops.aten._fft_c2c: _c2c,
    torch.ops.aten._fft_r2c: _r2c,
    torch.ops.aten._fft_c2r: _c2r,
    torch.ops.aten._grouped_mm: _grouped_mm,
    torch.ops.aten.linalg_solve_triangular: _solve_triangular,
    torch.ops.aten.mkldnn_rnn_layer: _rnn_layer,
    torch.ops.aten._euclidean_dist: _euclidean_dist,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
}


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
    oracle_on_cpu: bool = False,
) -> Outcome:
    """Count ``builder()`` on ``make_inputs()`` four ways; nothing raised escapes.

    Real weights are built only up to ``max_real_params`` (memory) and the CPU pass runs only
    up to ``max_cpu_macs`` (time); what is skipped is said in ``skipped``. With
    ``oracle_on_cpu``, a model that FlopCounterMode cannot run on meta (it reads values) is
    counted by FlopCounterMode on the real CPU model instead, which is right for eager
    attention (it misses some fused attention kernels on the CPU), and the note says so.
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
                if oracle_on_cpu and outcome.flop_counter is None:
                    on_cpu, failed = _flop_counter(model, args, kwargs)
                    if on_cpu is not None:
                        outcome.flop_counter = on_cpu
                        outcome.note = "FlopCounterMode on the CPU (it cannot run on meta)"
                    else:
                        outcome.note += f"; on the CPU too: {failed}"
            del model
    gc.collect()
    outcome.seconds = time.perf_counter() - start
    return outcome


def _flop_counter(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int | None, str]:
    """FlopCounterMode's MACs on meta, under no_grad; with grad enabled when that fails (its module
    tracker asserts on some models, CaiT and PiT among them, under no_grad); in bfloat16 when
    PyTorch's meta kernel of ``_grouped_mm`` (mixture-of-experts layers) refuses float32, as it
    does: the count does not depend on the element type."""
    failures: list[str] = []
    for half in (False, True):
        refused_float32 = any("BFloat16" in f for f in failures)
        if half and not (refused_float32 and all(p.is_meta for p in model.parameters())):
            break
        inputs = (args, kwargs)
        if half:
            model.to(torch.bfloat16)
            inputs = tree_map_only(
                torch.Tensor, lambda t: t.to(torch.bfloat16) if t.is_floating_point() else t, inputs
            )
        try:
            for grad in (False, True):
                torch.manual_seed(0)
                try:
                    counter = FlopCounterMode(display=False, custom_mapping=ORACLE_FLOPS)
                    with counter, torch.set_grad_enabled(grad):
                        model(*inputs[0], **inputs[1])
                    note = "FlopCounterMode on meta in bfloat16 (for _grouped_mm)" if half else ""
                    return counter.get_total_flops() // 2, note
                except Exception as exc:
                    failures.append(("in bfloat16: " if half else "") + _short(exc))
        finally:
            if half:
                model.to(torch.float32)
    return None, f"FlopCounterMode on meta failed: {'; '.join(dict.fromkeys(failures))}"


def _count(
    outcome: Outcome,
    mode: str,
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    compute: bool = True,
) -> None:
    torch.manual_seed(0)  # the same noise as the oracle's pass (VITS samples its durations)
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
