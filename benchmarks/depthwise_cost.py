"""What depthwise convolutions cost against what their MACs suggest, measured.

Usage:
    python benchmarks/depthwise_cost.py [--model mobilenet_v2] [--batch 1] [--device cpu|cuda]
                                        [--dtype float32|bfloat16] [--repeats 50]

convprof gives every layer of the model its MACs and its bytes moved. This script then times
every leaf module on its own, replaying the input it saw in the forward pass (median of
``--repeats`` runs after warm-up), and measures this machine's two roofs: MACs per second of a
large matmul and bytes per second of a large copy. It prints, per conv kind (and norms and
activations together), the share of MACs, of bytes, of the roofline time on the measured
machine, and of the measured time, plus the MAC rate each kind reaches.

Read the shares, not the absolute times: layers run one by one in eager mode, without the
fusion a deployment compiler would do. Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torchvision
from torch import nn

import convprof
from convprof.roofline import Machine

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _timer(device: str) -> Callable[[Callable[[], Any], int], float]:
    def run(fn: Callable[[], Any], repeats: int) -> float:
        for _ in range(max(3, repeats // 10)):
            fn()
        samples = []
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    return run


def measure_machine(
    device: str, dtype: torch.dtype, timer: Callable[[Callable[[], Any], int], float]
) -> Machine:
    """This machine's roofs: a 4096^2 matmul (2048^2 on CPU) and a 256 MiB copy."""
    n = 4096 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with torch.no_grad():
        seconds = timer(lambda: a @ b, 10)
    macs_per_second = n**3 / seconds
    src = torch.empty(64 * 2**20, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    seconds = timer(lambda: dst.copy_(src), 10)
    bytes_per_second = 2 * src.numel() * 4 / seconds  # read + write
    return Machine("measured", macs_per_second, bytes_per_second, f"this {device}")


def leaf_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[Any, ...]]:
    """The positional inputs every leaf module saw in one forward pass (detached copies)."""
    seen: dict[str, tuple[Any, ...]] = {}
    handles = []
    for name, module in model.named_modules():
        if not any(True for _ in module.children()):

            def hook(mod: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                seen.setdefault(
                    name, tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)
                )

            handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="float32")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    dtype = _DTYPES[args.dtype]
    timer = _timer(args.device)
    model = torchvision.models.get_model(args.model).eval().to(args.device, dtype)
    x = torch.randn(args.batch, 3, 224, 224, device=args.device, dtype=dtype)
    report = convprof.profile(model, x)
    machine = measure_machine(args.device, dtype, timer)
    inputs = leaf_inputs(model, x)
    modules = dict(model.named_modules())
    groups: dict[str, list[float]] = {}  # kind -> [layers, macs, bytes, roofline s, measured s]
    for layer in report.layers:
        if layer.has_children or layer.name not in inputs or not layer.memory_bytes:
            continue
        module, args_in = modules[layer.name], inputs[layer.name]
        with torch.no_grad():
            seconds = timer(lambda module=module, args_in=args_in: module(*args_in), args.repeats)
        kind = layer.kind or ("linear" if layer.macs else "norm + activation")
        acc = groups.setdefault(kind, [0, 0, 0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += layer.macs
        acc[2] += layer.memory_bytes
        acc[3] += machine.seconds(layer.macs, layer.memory_bytes)
        acc[4] += seconds
    totals = [sum(g[i] for g in groups.values()) for i in range(5)]
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.machine()
    print(
        f"{args.model}, batch {args.batch}, {args.dtype}, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Measured roofs: {machine.macs_per_second / 1e9:.1f} GMAC/s "
        f"(matmul), {machine.bytes_per_second / 1e9:.1f} GB/s (copy); balance {machine.balance:.1f} MACs/B."
    )
    print()
    print("| kind | layers | MACs | bytes | roofline time | measured time | GMAC/s reached |")
    print("|---|---|---|---|---|---|---|")
    for kind, (count, macs, moved, roof, measured) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        rate = f"{macs / measured / 1e9:.1f}" if macs else ""
        print(
            f"| {kind} | {count} | {100 * macs / totals[1]:.1f}% | {100 * moved / totals[2]:.1f}% "
            f"| {100 * roof / totals[3]:.1f}% | {100 * measured / totals[4]:.1f}% | {rate} |"
        )
    print(
        f"| total | {int(totals[0])} | {totals[1] / 1e6:.1f}M | {totals[2] / 1e6:.1f}MB | "
        f"{1e3 * totals[3]:.2f} ms | {1e3 * totals[4]:.2f} ms | {totals[1] / totals[4] / 1e9:.1f} |"
    )


if __name__ == "__main__":
    main()
