"""convprof against a plain forward pass and the peers, each in a fresh process.

Usage:
    python benchmarks/bench_peers.py [--repeats 3] [--models resnet18,...] [--tools plain,...]
    python benchmarks/bench_peers.py --scale        # compute=False against input size and a big forward

Every (tool, model) pair runs ``--repeats`` times, each in a new Python process that builds the
model (untimed) and times the tool's *first* call, which is what a CI job pays. The table gives
the median seconds (imports and the build's garbage collection excluded), the ratio to the
plain ``torch.no_grad()`` forward measured the same way,
whether the tool's MACs agree with torchvision's ``_ops`` (rounded to 3 decimals, as published)
and the growth of the process's peak RSS during the call. The last row is the geometric mean of
the ratios. Timings are never asserted anywhere: read them as ratios measured side by side.

The peers (thop, ptflops, fvcore, torchinfo) are installed by this script into
``benchmarks/.peers`` with ``pip install --target``; they are never dependencies of convprof.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS = HERE / ".peers"
PEER_PACKAGES = [
    "thop",
    "ptflops",
    "fvcore",
    "torchinfo",
    "iopath",
    "yacs",
    "termcolor",
    "pyyaml",
    "tqdm",
    "portalocker",
]
MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "shufflenet_v2_x1_0",
    "convnext_tiny",
    "regnet_y_400mf",
    "densenet121",
    "vit_b_16",
    "swin_t",
    "inception_v3",
]
TOOLS = [
    "plain",
    "convprof",
    "convprof_no_compute",
    "flop_counter",
    "flop_counter_meta",
    "ptflops",
    "thop",
    "torchinfo",
    "fvcore",
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(tool: str, model_name: str, shape: list[int] | None) -> dict[str, Any]:
    """Runs in a fresh process: build the model, time the tool's first call."""
    import torch

    from convprof.models.torchvision import torchvision_model

    torch.manual_seed(0)
    meta = tool == "flop_counter_meta"
    loaded = torchvision_model(model_name, meta=meta)
    model = loaded.model.eval()
    shape = shape or list(loaded.inputs[0].shape)
    x = torch.randn(shape, device="meta" if meta else "cpu")
    _import(tool)  # imports are not part of the measured call
    # Building a model leaves garbage for Python's full collection (about 0.3 s with torchvision
    # loaded), which lands on whichever tool allocates next: a cost of the build, not the tool.
    gc.collect()
    rss_before = _rss_mb()
    start = time.perf_counter()
    macs = _run(tool, model, x)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "macs": macs, "rss_growth_mb": _rss_mb() - rss_before}


def _import(tool: str) -> None:
    import importlib

    name = {
        "convprof": "convprof",
        "convprof_no_compute": "convprof",
        "flop_counter": "torch.utils.flop_counter",
        "flop_counter_meta": "torch.utils.flop_counter",
        "thop": "thop",
        "ptflops": "ptflops",
        "fvcore": "fvcore.nn",
        "torchinfo": "torchinfo",
    }.get(tool)
    if name:
        importlib.import_module(name)


def _run(tool: str, model: Any, x: Any) -> float | None:
    import contextlib
    import io

    import torch

    if tool == "plain":
        with torch.no_grad():
            model(x)
        return None
    if tool in ("convprof", "convprof_no_compute"):
        import convprof

        return convprof.profile(model, x, compute=tool == "convprof").total.macs
    if tool in ("flop_counter", "flop_counter_meta"):
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
        return counter.get_total_flops() / 2
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        if tool == "thop":
            import thop

            return float(thop.profile(model, inputs=(x,), verbose=False)[0])
        if tool == "ptflops":
            from ptflops import get_model_complexity_info

            return float(
                get_model_complexity_info(
                    model, tuple(x.shape[1:]), as_strings=False, print_per_layer_stat=False
                )[0]
            )
        if tool == "fvcore":
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return float(analysis.total())
        if tool == "torchinfo":
            import torchinfo

            return float(torchinfo.summary(model, input_data=x, verbose=0).total_mult_adds)
    raise ValueError(tool)


def _spawn(tool: str, model: str, shape: list[int] | None = None) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PEERS), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, __file__, "--worker", tool, model]
    if shape:
        command += ["--shape", ",".join(map(str, shape))]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:80]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _install_peers() -> None:
    if not PEERS.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(PEERS),
                *PEER_PACKAGES,
            ],
            check=True,
        )


def compare(models: list[str], tools: list[str], repeats: int) -> str:
    from convprof.models.torchvision import torchvision_weights

    _install_peers()
    rows, ratios = [], {t: [] for t in tools if t != "plain"}
    exact = {t: 0 for t in tools}
    for model in models:
        gmacs = torchvision_weights(model).gmacs
        results: dict[str, dict[str, Any]] = {}
        for tool in tools:
            runs = [_spawn(tool, model) for _ in range(repeats)]
            good = [r for r in runs if "error" not in r]
            if not good:
                results[tool] = runs[0]
                continue
            results[tool] = {
                "seconds": statistics.median(r["seconds"] for r in good),
                "macs": good[0]["macs"],
                "rss_growth_mb": statistics.median(r["rss_growth_mb"] for r in good),
            }
            print(f"{model} {tool} {results[tool]['seconds']:.3f}s", file=sys.stderr, flush=True)
        plain = results["plain"]["seconds"]
        cells = [model, f"{plain * 1000:.0f} ms"]
        for tool in tools[1:]:
            r = results[tool]
            if "error" in r:
                cells.append(f"error: {r['error']}")
                continue
            ratio = r["seconds"] / plain
            ratios[tool].append(ratio)
            ok = r["macs"] is not None and round(r["macs"] / 1e9, 3) == gmacs
            exact[tool] += ok
            cells.append(f"{ratio:.2f}x {'=' if ok else 'x'} +{r['rss_growth_mb']:.0f}MB")
        rows.append(cells)
    header = ["model", "plain", *tools[1:]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]

    def geomean(values: list[float]) -> float:
        return math.exp(statistics.fmean(math.log(v) for v in values))

    geo = ["**geometric mean**", ""] + [
        f"**{geomean(ratios[t]):.2f}x** ({exact[t]}/{len(models)} exact)" if ratios[t] else ""
        for t in tools[1:]
    ]
    lines.append("| " + " | ".join(geo) + " |")
    return "\n".join(lines)


def scale(repeats: int) -> str:
    """compute=False cost against input size, and against the big forward it replaces."""
    small, big = [1, 3, 224, 224], [8, 3, 1024, 1024]
    lines = ["| measurement | seconds | peak RSS growth |", "|---|---:|---:|"]
    cases = [
        ("convprof compute=False, resnet50 1x3x224x224", "convprof_no_compute", "resnet50", small),
        ("convprof compute=False, resnet50 8x3x1024x1024", "convprof_no_compute", "resnet50", big),
        ("plain forward, resnet50 8x3x1024x1024", "plain", "resnet50", big),
        ("convprof, vit_h_14 built on meta, 1x3x518x518", "convprof_meta", "vit_h_14", None),
    ]
    for label, tool, model, shape in cases:
        runs = [_spawn(tool, model, shape) for _ in range(1 if tool == "plain" else repeats)]
        sec = statistics.median(r["seconds"] for r in runs)
        extra = f"{statistics.median(r['rss_growth_mb'] for r in runs):.0f} MB"
        if tool == "convprof_meta":
            extra += f" (whole process peak {statistics.median(r['peak_mb'] for r in runs):.0f} MB)"
        lines.append(f"| {label} | {sec:.3f} | {extra} |")
    return "\n".join(lines)


def _meta_worker(model_name: str) -> dict[str, Any]:
    import torch

    import convprof
    from convprof.models.torchvision import torchvision_model

    loaded = torchvision_model(model_name, meta=True)
    gc.collect()
    rss_before = _rss_mb()  # convprof is imported above: the zoo is part of it
    start = time.perf_counter()
    report = convprof.profile(loaded.model, torch.empty(loaded.inputs[0].shape, device="meta"))
    return {
        "seconds": time.perf_counter() - start,
        "macs": report.total.macs,
        "rss_growth_mb": _rss_mb() - rss_before,
        "peak_mb": _rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", nargs=2, metavar=("TOOL", "MODEL"))
    parser.add_argument("--shape")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--scale", action="store_true")
    args = parser.parse_args()
    if args.worker:
        tool, model = args.worker
        shape = [int(d) for d in args.shape.split(",")] if args.shape else None
        result = _meta_worker(model) if tool == "convprof_meta" else worker(tool, model, shape)
        print(json.dumps(result))
        return
    import platform

    import torch

    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}\n"
    )
    if args.scale:
        print(scale(args.repeats))
    else:
        print(compare(args.models.split(","), args.tools.split(","), args.repeats))


if __name__ == "__main__":
    main()
