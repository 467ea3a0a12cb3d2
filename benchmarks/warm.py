"""Warm, steady-state cost of profiling: every tool called again and again in one process,
interleaved, against a plain forward pass; and where convprof's own time goes.

Usage:
    python benchmarks/warm.py [--rounds 7] [--models mobilenet_v3_large,...]
                              [--breakdown | --phases | --floor | --idle]

bench_peers.py times each tool's *first* call in a fresh process, which is what a CI job pays;
its plain forward then carries one-time set-up (oneDNN, the allocator) that hides most of a
profiler's own cost. Here every tool is warmed up twice, then called ``--rounds`` times in
turn (plain, convprof, compute=False, FlopCounterMode on CPU and on meta, ptflops with its aten
backend, thop, torchinfo), so each sees the same machine state. The table gives each tool's
median time as a ratio to the plain forward's median, with the spread (min-max of the ratios
per round). Timings are never asserted anywhere.

``--phases`` wraps convprof's own functions (the hooks, the Python part of the dispatch mode,
the module records, the stand-ins, the model's state, counting) with timers and gives each
one's time per profile, for computing and zero-compute profiles; what ``record`` spends
outside them is the model's own Python and PyTorch's calls into the mode and hooks.

``--floor`` is the table of the overhead targets: per model, in the same rounds, the design's
floor (a dispatch mode that only forwards operators, popped inside the modules convprof treats
as quiet, and module hooks that do nothing), convprof computing and what it adds above that
floor, zero compute, and FlopCounterMode on meta with how many times slower it is than zero
compute. ``--idle`` measures one module call that does nothing (Identity, Dropout in eval,
Flatten) inside a profile.

``--breakdown`` splits convprof's cost per forward into stages, each measured the same way:
a TorchDispatchMode that does nothing (the floor of watching every operator), global module
hooks that do nothing (the floor of watching every module), convprof's recording alone, and
the counting; divided by the operators and module calls of one forward, in microseconds.
The peers come from benchmarks/.peers (bench_peers.py installs them there).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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

    from convprof.models.torchvision import torchvision_model

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


def _tools(model: Any, x: Any, meta: Any, xm: Any) -> dict[str, Callable[[], Any]]:
    """Each tool with its own copy of the model: ptflops leaves forward hooks on the modules
    it profiled and thop two buffers on every module (``total_ops``, ``total_params``), which
    slowed every later call of every tool on a shared model (convprof's zero compute on
    mobilenetv4_conv_small from 28 ms to 54 ms)."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import convprof

    own = {tool: copy.deepcopy(model) for tool in TOOLS if tool != "fcm_meta"}

    plain_model = own["plain"]

    def plain() -> None:
        with torch.no_grad():
            plain_model(x)

    def fcm(model: Any, inp: Any) -> Callable[[], Any]:
        def run() -> Any:
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(inp)
            return counter.get_total_flops() // 2

        return run

    tools: dict[str, Callable[[], Any]] = {
        "plain": plain,
        "convprof": lambda: convprof.profile(own["convprof"], x).total.macs,
        "zero": lambda: convprof.profile(own["zero"], x, compute=False).total.macs,
        "fcm_cpu": fcm(own["fcm_cpu"], x),
        "fcm_meta": fcm(meta, xm),
    }
    quiet = io.StringIO()
    try:
        from ptflops import get_model_complexity_info

        def ptflops_aten() -> Any:
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                return get_model_complexity_info(
                    own["ptflops_aten"],
                    tuple(x.shape[1:]),
                    as_strings=False,
                    print_per_layer_stat=False,
                    backend="aten",
                )[0]

        tools["ptflops_aten"] = ptflops_aten
    except ImportError:
        pass
    try:
        import thop

        def run_thop() -> Any:
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                return thop.profile(own["thop"], inputs=(x,), verbose=False)[0]

        tools["thop"] = run_thop
    except ImportError:
        pass
    try:
        import torchinfo

        tools["torchinfo"] = lambda: (
            torchinfo.summary(own["torchinfo"], input_data=x, verbose=0).total_mult_adds
        )
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
            cells.append(_ratio(times[tool], plain))
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def _ratio(times: list[float], plain: list[float]) -> str:
    """The median as a ratio to the plain forward's median, and the spread of the ratios per
    round (min-max)."""
    ratios = [t / p for t, p in zip(times, plain, strict=True)]
    ratio = statistics.median(times) / statistics.median(plain)
    return f"{ratio:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


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

    from convprof.count.counter import count
    from convprof.record.recorder import record

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


def floor(models: list[str], rounds: int) -> str:
    """What convprof's design costs before it records anything, against what it costs.

    The design watches operators with a Python dispatch mode, popped inside the modules whose
    operators need no watching (``quiet``: convolutions, norms, activations), and sees every
    module call through two global hooks. The floor is that and nothing more: a dispatch mode
    that only forwards each operator, popped and pushed back by hooks that do nothing else, in
    the very modules convprof would pop it in. No profiler built this way can be cheaper.
    """
    lines = [
        "| model | module calls | ops outside quiet modules | plain | floor | convprof | above the floor "
        "| zero | FlopCounterMode on meta | FlopCounterMode meta / zero |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in models:
        lines.append(_floor_row(name, rounds))
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def _floor_row(name: str, rounds: int) -> str:
    import torch
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
    from torch.utils._python_dispatch import TorchDispatchMode

    import convprof
    from convprof.record.dataflow import roles as _roles
    from convprof.record.session import _stack_pop, _stack_push

    class Forward(TorchDispatchMode):
        ops = 0

        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            return False

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            Forward.ops += 1
            return func(*args, **(kwargs or {}))

    from torch.utils.flop_counter import FlopCounterMode

    cpu, x, meta, xm = _build(name)
    quiet = {id(module) for path, module in cpu.named_modules() if _roles(path, module)[1]}
    mode = Forward()
    popped: list[Any] = []
    calls = [0]

    def pre(module: Any, args: Any) -> None:
        calls[0] += 1
        if id(module) in quiet and not popped:
            _stack_pop(None)
            popped.append(module)

    def post(module: Any, args: Any, *rest: Any) -> None:
        if popped and popped[-1] is module:
            popped.pop()
            _stack_push(mode)

    def plain() -> None:
        with torch.no_grad():
            cpu(x)

    def watched() -> None:
        handles = [
            register_module_forward_pre_hook(pre),
            register_module_forward_hook(post, always_call=True),
        ]
        try:
            with torch.no_grad(), mode:
                cpu(x)
        finally:
            for handle in handles:
                handle.remove()

    with torch.no_grad(), mode:
        cpu(x)
    everything, Forward.ops, calls[0] = Forward.ops, 0, 0
    watched()
    outside, module_calls = Forward.ops, calls[0]

    def fcm_meta() -> None:
        with FlopCounterMode(display=False), torch.no_grad():
            meta(xm)

    tools = {
        "plain": plain,
        "floor": watched,
        "convprof": lambda: convprof.profile(cpu, x),
        "zero": lambda: convprof.profile(cpu, x, compute=False),
        "fcm_meta": fcm_meta,
    }
    times = _timed(tools, rounds)
    plain_times = times["plain"]
    cells = [name, str(module_calls), f"{outside} of {everything}"]
    cells.append(f"{1e3 * statistics.median(plain_times):.1f} ms")
    cells += [_ratio(times[tool], plain_times) for tool in ("floor", "convprof")]
    # convprof's own cost: what it adds to the floor, per round, over that round's plain forward
    above = [(c - f) / p for c, f, p in zip(times["convprof"], times["floor"], plain_times, strict=True)]
    cells.append(f"{statistics.median(above):.2f}x ({min(above):.2f}-{max(above):.2f})")
    cells += [_ratio(times["zero"], plain_times), _ratio(times["fcm_meta"], plain_times)]
    faster = [m / z for m, z in zip(times["fcm_meta"], times["zero"], strict=True)]
    cells.append(f"{statistics.median(faster):.1f}x ({min(faster):.1f}-{max(faster):.1f})")
    return "| " + " | ".join(cells) + " |"


def idle(rounds: int) -> str:
    """What one module call that does nothing costs a profile: a chain of 400 modules of one
    kind (Identity, Dropout in eval, Flatten) after a Linear, against the Linear alone, each
    profiled in turn; the difference over 400, in microseconds (median, min-max of rounds)."""
    import torch
    from torch import nn
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    import convprof

    x = torch.randn(1, 64)
    lines = [
        "| module | plain, us a call | no-op global hooks (the floor), us a call | computing, us a call "
        "| zero compute, us a call |",
        "|---|---:|---:|---:|---:|",
    ]

    def plain(model: Any) -> None:
        with torch.no_grad():
            model(x)

    def hooked(model: Any) -> None:
        handles = [
            register_module_forward_pre_hook(lambda *_: None),
            register_module_forward_hook(lambda *_: None, always_call=True),
        ]
        try:
            plain(model)
        finally:
            for handle in handles:
                handle.remove()

    kinds = (("nn.Identity", nn.Identity), ("nn.Dropout (eval)", nn.Dropout), ("nn.Flatten", nn.Flatten))
    for label, make in kinds:
        base = nn.Sequential(nn.Linear(64, 64)).eval()
        chain = nn.Sequential(nn.Linear(64, 64), *[make() for _ in range(400)]).eval()
        tools = {
            "base_plain": functools.partial(plain, base),
            "chain_plain": functools.partial(plain, chain),
            "base_hooked": functools.partial(hooked, base),
            "chain_hooked": functools.partial(hooked, chain),
            "base": functools.partial(convprof.profile, base, x),
            "chain": functools.partial(convprof.profile, chain, x),
            "base_zero": functools.partial(convprof.profile, base, x, compute=False),
            "chain_zero": functools.partial(convprof.profile, chain, x, compute=False),
        }
        times = _timed(tools, rounds)
        cells = [label]
        for suffix in ("_plain", "_hooked", "", "_zero"):
            pairs = zip(times["chain" + suffix], times["base" + suffix], strict=True)
            per = [1e6 * (c - b) / 400 for c, b in pairs]
            cells.append(f"{statistics.median(per):.1f} ({min(per):.1f}-{max(per):.1f})")
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


PHASES = [
    ("record.session", "Session.__torch_dispatch__", "dispatch (Python part)"),
    ("record.session", "Session.pre_hook", "pre-hooks"),
    ("record.session", "Session.post_hook", "post-hooks"),
    ("record.recorder", "read_info", "module records"),
    ("record.zero_compute", "stand_in", "stand-ins"),
    ("record.state", "ModelState.__init__", "state snapshot"),
    ("record.state", "ModelState.point_at", "point at stand-ins"),
    ("record.state", "ModelState.restore", "state restore"),
    ("api", "count", "count"),
    ("api", "record", "record (all of it)"),
]


def phases(models: list[str], rounds: int) -> str:
    """Milliseconds per profile in each of convprof's own functions (see the docstring)."""
    import importlib

    import convprof

    timers: dict[str, float] = {}
    for module, path, label in PHASES:
        owner: Any = importlib.import_module(f"convprof.{module}")
        *outer, attr = path.split(".")
        for part in outer:
            owner = getattr(owner, part)
        original = getattr(owner, attr)

        def timed(*a: Any, _original: Any = original, _label: str = label, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(*a, **k)
            finally:
                timers[_label] = timers.get(_label, 0.0) + time.perf_counter() - start

        setattr(owner, attr, timed)
    lines = [
        "| model | mode | profile | " + " | ".join(label for *_, label in PHASES) + " |",
        "|---|---|---:|" + "---:|" * len(PHASES),
    ]
    for name in models:
        cpu, x, _, _ = _build(name)
        for compute in (True, False):
            for _ in range(2):
                convprof.profile(cpu, x, compute=compute)
            timers.clear()
            start = time.perf_counter()
            for _ in range(rounds):
                convprof.profile(cpu, x, compute=compute)
            total = (time.perf_counter() - start) / rounds
            cells = [f"{1e3 * timers.get(label, 0.0) / rounds:.2f}" for *_, label in PHASES]
            lines.append(
                f"| {name} | {'compute' if compute else 'zero'} | {1e3 * total:.1f} | "
                + " | ".join(cells)
                + " |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--phases", action="store_true")
    parser.add_argument("--floor", action="store_true")
    parser.add_argument("--idle", action="store_true", help="the cost of one module call that does nothing")
    args = parser.parse_args()
    from bench_peers import PEERS, _install_peers

    _install_peers()
    sys.path.insert(0, str(PEERS))
    import platform

    import torch

    models = args.models.split(",")
    machine = platform.processor() or platform.machine()
    how = (
        f"mean of {args.rounds} profiles after 2 warm-up calls, per model and mode"
        if args.phases
        else f"median of {args.rounds} interleaved rounds after 2 warm-up calls"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {machine}, {how}\n")
    if args.phases:
        print(phases(models, args.rounds))
    elif args.floor:
        print(floor(models, args.rounds))
    elif args.idle:
        print(idle(args.rounds))
    else:
        print(breakdown(models, args.rounds) if args.breakdown else compare(models, args.rounds))


if __name__ == "__main__":
    main()
