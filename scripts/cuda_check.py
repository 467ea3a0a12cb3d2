"""Counts on CUDA equal the closed forms, torchvision's metadata and zero compute (run where a GPU exists).

On CUDA, ``F.scaled_dot_product_attention`` dispatches to the flash, memory-efficient or cuDNN
kernels, ``nn.MultiheadAttention`` to its fused fast path, recurrent layers to cuDNN and a
training step to the CUDA backward kernels of all of them: operators the CPU never runs, so
their formulas are only exercised here. The forward checks compare with closed forms and
torchvision's metadata; the training-step checks compare every layer's forward, dX and dW MACs
of the CUDA run with a zero-compute run of the same model (meta stand-ins, the CPU-tested
path), and the transformers sweep does the same over tests/hf_models.py. Prints one line per
check and exits 1 on any mismatch.

Usage: PYTHONPATH=src python scripts/cuda_check.py [--skip-zoo] [--device cpu (a dry run of the script)]
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_map

import convprof
from convprof.models.torchvision import torchvision_model, torchvision_weights

BACKENDS = (
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.MATH,
)


class SDPA(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v)


def mha(batch: int, lq: int, lk: int, e: int) -> int:
    return 2 * batch * lq * e * e + 2 * batch * lk * e * e + 2 * batch * lq * lk * e


def rows(report: convprof.Report) -> dict[str, tuple[int, int, int]]:
    """Leaf rows as (forward, dX, dW) MACs."""
    return {
        layer.name: (layer.macs, layer.grad_input_macs, layer.grad_weight_macs)
        for layer in report.layers
        if not layer.has_children
    }


class Checks:
    def __init__(self) -> None:
        self.failures = 0

    def line(self, ok: bool, label: str, detail: str) -> None:
        self.failures += not ok
        print(f"{'ok ' if ok else 'BAD'} {label}: {detail}", flush=True)

    def total(self, label: str, report: convprof.Report, macs: int, params: int | None = None) -> None:
        ok = (
            report.complete
            and report.total.macs == macs
            and (params is None or report.total.params == params)
        )
        self.line(
            ok,
            label,
            f"macs {report.total.macs} expected {macs}"
            f"{'' if report.complete else f' unexplained {report.unexplained}'}",
        )

    def step(
        self,
        label: str,
        model: nn.Module,
        args: Any,
        kwargs: dict[str, Any] | None = None,
        expected: tuple[int, int, int] | None = None,
    ) -> None:
        """A training step on CUDA against zero compute, layer by layer (and a closed form)."""
        try:
            cuda = convprof.profile(model, args, kwargs, backward=True)
        except Exception as exc:
            self.line(False, label, f"{type(exc).__name__}: {str(exc)[:300]}")
            return
        try:
            zero = convprof.profile(model, args, kwargs, backward=True, compute=False)
        except Exception as exc:
            # zero compute cannot run it (it reads values, or PyTorch's meta kernel refuses):
            # the CUDA run stands alone, checked for completeness and the closed form if any
            ok = cuda.complete and (expected is None or _triple(cuda) == expected)
            why = f"{type(exc).__name__}: {str(exc)[:120]}"
            self.line(ok, label, f"{_triple(cuda)} (no zero-compute run to compare: {why})")
            return
        mine, theirs = rows(cuda), rows(zero)
        names = sorted({*mine, *theirs})
        differ = [f"{k}: {mine.get(k)} vs {theirs.get(k)}" for k in names if mine.get(k) != theirs.get(k)]
        ok = cuda.complete and not differ and (expected is None or _triple(cuda) == expected)
        detail = f"(fwd, dX, dW) {_triple(cuda)}"
        if expected is not None:
            detail += f" expected {expected}"
        if differ:
            detail += f"; {len(differ)} rows differ from zero compute, e.g. {differ[:3]}"
        if not cuda.complete:
            detail += f"; unexplained {cuda.unexplained}"
        self.line(ok, label, detail)


def _triple(report: convprof.Report) -> tuple[int, int, int]:
    t = report.total
    return (t.macs, t.grad_input_macs, t.grad_weight_macs)


def forward_checks(checks: Checks, dev: torch.device) -> None:
    b, h, lq, lk, d = 2, 8, 128, 96, 64
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for backend in BACKENDS:
            q = torch.randn(b, h, lq, d, device=dev, dtype=dtype)
            k = torch.randn(b, h, lk, d, device=dev, dtype=dtype)
            try:
                with sdpa_kernel(backend):
                    report = convprof.profile(SDPA(), (q, k, k))
            except convprof.ForwardError as exc:
                print(f"skip sdpa {backend.name} {dtype}: {str(exc.__cause__)[:80]}")
                continue
            checks.total(f"sdpa {backend.name} {dtype}", report, 2 * b * h * lq * lk * d)
    x = torch.randn(4, 50, 256, device=dev)
    checks.total(
        "mha fast path",
        convprof.profile(nn.MultiheadAttention(256, 8, batch_first=True).to(dev), (x, x, x)),
        mha(4, 50, 50, 256),
    )
    layer = nn.TransformerEncoderLayer(256, 8, 512, batch_first=True).to(dev)
    checks.total(
        "encoder layer (modular path: a hook keeps it off the fused kernel)",
        convprof.profile(layer, x),
        mha(4, 50, 50, 256) + 2 * 200 * 256 * 512,
    )
    for name in ("resnet18", "mobilenet_v2", "convnext_tiny", "vit_b_16", "swin_t", "maxvit_t"):
        weights = torchvision_weights(name)
        loaded = torchvision_model(name)
        model, shape = loaded.model, loaded.inputs[0].shape
        for dtype in (torch.float32, torch.bfloat16):
            report = convprof.profile(model.to(dev, dtype), torch.randn(shape, device=dev, dtype=dtype))
            gmacs = round(report.total.macs / 1e9, 3)
            ok = report.complete and gmacs == weights.gmacs and report.total.params == weights.num_params
            checks.line(
                ok,
                f"{name} {dtype}",
                f"{gmacs} G vs {weights.gmacs}, {report.total.params} vs {weights.num_params} "
                f"{report.unexplained or ''}",
            )


def step_checks(checks: Checks, dev: torch.device) -> None:
    b, h, lq, lk, d = 2, 8, 128, 96, 64
    fwd = 2 * b * h * lq * lk * d  # Q K^T and P V
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for backend in BACKENDS:
            q = torch.randn(b, h, lq, d, device=dev, dtype=dtype, requires_grad=True)
            k = torch.randn(b, h, lk, d, device=dev, dtype=dtype, requires_grad=True)
            v = torch.randn(b, h, lk, d, device=dev, dtype=dtype, requires_grad=True)
            try:
                with sdpa_kernel(backend):
                    torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
            except RuntimeError as exc:
                print(f"skip step sdpa {backend.name} {dtype}: {str(exc)[:80]}")
                continue
            with sdpa_kernel(backend):
                # dQ, dK, dV and dP: four products, twice the forward
                checks.step(
                    f"step sdpa {backend.name} {dtype}", SDPA(), (q, k, v), expected=(fwd, 2 * fwd, 0)
                )
    x = torch.randn(4, 50, 256, device=dev)
    checks.step("step mha", nn.MultiheadAttention(256, 8, batch_first=True).to(dev), (x, x, x))
    checks.step("step encoder layer", nn.TransformerEncoderLayer(256, 8, 512, batch_first=True).to(dev), x)
    seq = torch.randn(10, 4, 32, device=dev)
    for cls in (nn.LSTM, nn.GRU, nn.RNN):
        for bidirectional in (False, True):
            rnn = cls(32, 64, num_layers=2, bidirectional=bidirectional).to(dev)
            checks.step(f"step {cls.__name__} bidirectional={bidirectional} (cuDNN)", rnn, seq)
    lstm = nn.LSTM(32, 64, proj_size=16).to(dev)
    checks.step("step LSTM proj_size=16 (cuDNN)", lstm, seq)
    for name in ("resnet18", "mobilenet_v2", "efficientnet_b0", "vit_b_16", "swin_t", "convnext_tiny"):
        loaded = torchvision_model(name)
        model, shape = loaded.model, loaded.inputs[0].shape
        for dtype in (torch.float32, torch.bfloat16):
            checks.step(
                f"step {name} {dtype}", model.to(dev, dtype), torch.randn(shape, device=dev, dtype=dtype)
            )
    frozen = torchvision_model("resnet18").model.to(dev)
    for p in frozen.parameters():
        p.requires_grad_(False)
    for p in frozen.fc.parameters():
        p.requires_grad_(True)
    checks.step("step resnet18 frozen but fc", frozen, torch.randn(2, 3, 224, 224, device=dev), expected=None)


def zoo_checks(checks: Checks, dev: torch.device) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import hf_models

    def move(t: Any, dtype: torch.dtype) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        return t.to(dev, dtype) if t.is_floating_point() else t.to(dev)

    for name, _kind, build, inputs in hf_models.entries():
        for dtype in (torch.float32, torch.bfloat16):
            try:
                model = build().to(dev, dtype)
                args, kwargs = tree_map(lambda t, d=dtype: move(t, d), inputs())
            except Exception as exc:
                print(f"skip zoo {name} {dtype}: {type(exc).__name__}: {str(exc)[:100]}")
                continue
            checks.step(f"zoo {name} {dtype}", model, args, kwargs)


def main() -> int:
    dev = torch.device(sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cuda")
    checks = Checks()
    sections: list[tuple[str, Callable[[Checks, torch.device], None]]] = [
        ("forward", forward_checks),
        ("training step", step_checks),
        ("transformers zoo, training step", zoo_checks),
    ]
    for title, section in sections:
        if title.startswith("transformers") and "--skip-zoo" in sys.argv:
            continue
        print(f"--- {title}", flush=True)
        try:
            section(checks, dev)
        except Exception:
            checks.failures += 1
            traceback.print_exc()
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    print(f"{checks.failures} failures; torch {torch.__version__} on {where}")
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main())
