"""Counts on CUDA equal the closed forms and torchvision's metadata (run where a GPU exists).

On CUDA, ``F.scaled_dot_product_attention`` dispatches to the flash, memory-efficient or cuDNN
kernels and ``nn.MultiheadAttention`` to its fused fast path: operators the CPU never runs, so
their formulas are only exercised here. Prints one line per check and exits 1 on any mismatch.

Usage: PYTHONPATH=src python scripts/cuda_check.py
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import convprof
from convprof.zoo import torchvision_model, torchvision_weights


class SDPA(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v)


def mha(batch: int, lq: int, lk: int, e: int) -> int:
    return 2 * batch * lq * e * e + 2 * batch * lk * e * e + 2 * batch * lq * lk * e


def main() -> int:
    dev = torch.device("cuda")
    failures = 0

    def check(label: str, report: convprof.Report, macs: int, params: int | None = None) -> None:
        nonlocal failures
        ok = (
            report.complete
            and report.total.macs == macs
            and (params is None or report.total.params == params)
        )
        failures += not ok
        print(
            f"{'ok ' if ok else 'BAD'} {label}: macs {report.total.macs} expected {macs}"
            f"{'' if report.complete else f' unexplained {report.unexplained}'}",
            flush=True,
        )

    b, h, lq, lk, d = 2, 8, 128, 96, 64
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for backend in (
            SDPBackend.FLASH_ATTENTION,
            SDPBackend.EFFICIENT_ATTENTION,
            SDPBackend.CUDNN_ATTENTION,
            SDPBackend.MATH,
        ):
            q = torch.randn(b, h, lq, d, device=dev, dtype=dtype)
            k = torch.randn(b, h, lk, d, device=dev, dtype=dtype)
            try:
                with sdpa_kernel(backend):
                    report = convprof.profile(SDPA(), (q, k, k))
            except convprof.ForwardError as exc:
                print(f"skip sdpa {backend.name} {dtype}: {str(exc.__cause__)[:80]}")
                continue
            check(f"sdpa {backend.name} {dtype}", report, 2 * b * h * lq * lk * d)
    x = torch.randn(4, 50, 256, device=dev)
    check(
        "mha fast path",
        convprof.profile(nn.MultiheadAttention(256, 8, batch_first=True).to(dev), (x, x, x)),
        mha(4, 50, 50, 256),
    )
    layer = nn.TransformerEncoderLayer(256, 8, 512, batch_first=True).to(dev)
    check(
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
            failures += not ok
            print(
                f"{'ok ' if ok else 'BAD'} {name} {dtype}: {gmacs} G vs {weights.gmacs}, "
                f"{report.total.params} vs {weights.num_params} {report.unexplained or ''}",
                flush=True,
            )
    print(f"{failures} failures; torch {torch.__version__} on {torch.cuda.get_device_name()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
