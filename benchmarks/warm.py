"""Warm, steady-state cost of profiling: every tool called again and again in one process,
interleaved, against a plain forward pass; and where convprof's own time goes.

Usage:
    python benchmarks/warm.py [--rounds 7] [--models mobilenet_v3_large,...] [--breakdown]

bench_peers.py times each tool's *first* call in a fresh process, which is what a CI job pays;
its plain forward then carries one-time set-up (oneDNN, the allocator) that hides most of a
profiler's own cost. Here every tool is warmed up twice, then called ``--rounds`` times in
turn (plain, convprof, compute=False, FlopCounterMode on CPU and on meta, ptflops with its aten
backend, thop, torchinfo), so each sees the same machine state. The table gives each tool's
median time as a ratio to the plain forward's median, with the spread (min-max of the ratios
per round). Timings are never asserted anywhere.

``--breakdown`` splits convprof's cost per forward into stages, each measured the same way:
a TorchDispatchMode that does nothing (the floor of watching every operator), global module
hooks that do nothing (the floor of watching every module), convprof's recording alone, and
the counting; divided by the operators and module calls of one forward, in microseconds.
The peers come from benchmarks/.peers (bench_peers.py installs them there).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MODELS = [
    "mobilenet_v3_large",
    "regnet_y_400mf",
    "efficientnet_b0",
    "timm:mobilenetv4_conv_small",
    "resnet50",
    "vit_b_16",
]
TOOLS = ["plain", "convprof", "zero", "fcm_cpu", "fcm_meta", "ptflops_aten", "thop", "torchinfo"]


def _build(name: str) -> tuple[Any, Any, Any, Any]:
    """The model on the CPU and on meta, and an input for each."""
    import torch

    from convprof.zoo import torchvision_model

    if name.startswith("timm:"):
        import timm

        cpu = timm.create_model(name.removeprefix("timm:"), pretrained=False).eval()
        with torch.device("meta"):
            meta = timm.create_model(name.removeprefix("timm:"), pretrained=False).eval()
        shape: tuple[int, ...] = (1, *cpu.pretrained_cfg["input_size"])
    else:
        cpu = torchvision_model(name).model.eval()
        loaded = torchvision_model(name, meta=True)
        meta = loaded.model.eval()
        shape = loaded.inputs[0].shape  # type: ignore[index]
    return cpu, torch.randn(shape), meta, torch.empty(shape, device="meta")


def _tools(cpu: Any, x: Any, meta: Any, xm: Any) -> dict[str, Callable[[], Any]]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import convprof

    def plain() -> None:
        with torch.no_grad():
            cpu(x)

    def fcm(model: Any, inp: Any) -> Callable[[], Any]:
        def run() -> Any:
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(inp)
            return counter.get_total_flops() // 2

        return run

    tools: dict[str, Callable[[], Any]] = {
        "plain": plain,
        "convprof": lambda: convprof.profile(cpu, x).total.macs,
        "zero": lambda: convprof.profile(cpu, x, compute=False).total.macs,
        "fcm_cpu": fcm(cpu, x),
        "fcm_meta": fcm(meta, xm),
    }
    quiet = io.StringIO()
    try:
        from ptflops import get_model_complexity_info

        def ptflops_aten() -> Any:
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                return get_model_complexity_info(
                    cpu, tuple(x.shape[1:]), as_strings=False, print_per_layer_stat=False, backend="aten"
                )[0]

        tools["ptflops_aten"] = ptflops_aten
    except ImportError:
        pass
    try:
        import thop

        def run_thop() -> Any:
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                return thop.profile(cpu, inputs=(x,), verbose=False)[0]

        tools["thop"] = run_thop
    except ImportError:
        pass
    try:
        import torchinfo

        tools["torchinfo"] = lambda: torchinfo.summary(cpu, input_data=x, verbose=0).total_mult_adds
    except ImportError:
        pass
    return tools


def _timed(tools: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    for run in tools.values():  # warm up: first-call set-up is bench_peers.py's business
        run()
        run()
    times: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(rounds):
        for name, run in tools.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def compare(models: list[str], rounds: int) -> str:
    lines = []
    header = None
    for name in models:
        tools = _tools(*_build(name))
        times = _timed(tools, rounds)
        plain = times["plain"]
        if header is None:
            header = ["model", "plain", *[t for t in TOOLS if t in tools and t != "plain"]]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        cells = [name, f"{1e3 * statistics.median(plain):.1f} ms"]
        for tool in header[2:]:
            if tool not in times:
                cells.append("")
                continue
            ratios = [t / p for t, p in zip(times[tool], plain, strict=True)]
            ratio = statistics.median(times[tool]) / statistics.median(plain)
            cells.append(f"{ratio:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def breakdown(models: list[str], rounds: int) -> str:
    """Per forward: the floors (a no-op dispatch mode, no-op module hooks), recording, counting."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Watch(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            Watch.ops += 1
            return func(*args, **(kwargs or {}))

    lines = [
        "| model | ops | module calls | plain | no-op dispatch mode | no-op module hooks | record (compute) "
        "| count | record (zero) | per op + module call, compute | zero |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in models:
        lines.append(_stages(name, rounds, Watch))
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def _stages(name: str, rounds: int, watch: Any) -> str:
    import torch
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    from convprof.counter import count
    from convprof.recorder import record

    cpu, x, _, _ = _build(name)
    calls = [0]

    def seen(*_: Any) -> None:
        calls[0] += 1

    handle = register_module_forward_pre_hook(seen)
    with torch.no_grad(), watch():
        watch.ops = 0
        cpu(x)
    handle.remove()
    ops, modules = watch.ops, calls[0]

    def plain() -> None:
        with torch.no_grad():
            cpu(x)

    def mode() -> None:
        with torch.no_grad(), watch():
            cpu(x)

    def hooks() -> None:
        pre = register_module_forward_pre_hook(lambda *a: None)
        post = register_module_forward_hook(lambda *a: None, always_call=True)
        try:
            plain()
        finally:
            pre.remove()
            post.remove()

    trace = record(cpu, (x,), {})
    stages = {
        "plain": plain,
        "mode": mode,
        "hooks": hooks,
        "record": lambda: record(cpu, (x,), {}),
        "count": lambda: count(trace),
        "zero": lambda: record(cpu, (x,), {}, compute=False),
    }
    med = {k: statistics.median(v) for k, v in _timed(stages, rounds).items()}
    base = med["plain"]
    per = (med["record"] + med["count"] - base) / (ops + modules) * 1e6
    per_zero = (med["zero"] + med["count"]) / (ops + modules) * 1e6
    cells = [
        name,
        str(ops),
        str(modules),
        f"{1e3 * base:.1f} ms",
        f"+{1e3 * (med['mode'] - base):.1f} ms ({1e6 * (med['mode'] - base) / ops:.0f} us/op)",
        f"+{1e3 * (med['hooks'] - base):.1f} ms ({1e6 * (med['hooks'] - base) / modules:.0f} us/call)",
        f"+{1e3 * (med['record'] - base):.1f} ms",
        f"{1e3 * med['count']:.1f} ms",
        f"{1e3 * med['zero']:.1f} ms",
        f"{per:.0f} us",
        f"{per_zero:.0f} us",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args()
    from bench_peers import PEERS, _install_peers

    _install_peers()
    sys.path.insert(0, str(PEERS))
    import platform

    import torch

    models = args.models.split(",")
    machine = platform.processor() or platform.machine()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {machine}, "
        f"median of {args.rounds} interleaved rounds after 2 warm-up calls\n"
    )
    print(breakdown(models, args.rounds) if args.breakdown else compare(models, args.rounds))


if __name__ == "__main__":
    main()
