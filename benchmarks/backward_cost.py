"""What a profile with a backward pass costs, against a plain forward and backward.

Usage:
    python benchmarks/backward_cost.py

In one process, each variant warmed up twice, then 7 rounds in turn; medians. Columns: a plain
forward + backward of the model (what a training step computes, without the optimizer),
convprof's zero-compute forward count, zero-compute forward + backward, FlopCounterMode over
forward + backward on a meta copy (the copy included, as tests/test_backward.py makes it), and
convprof's computing forward + backward. The results are in docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_backward import flop_counter_train_macs

import convprof


def variants(model: torch.nn.Module, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    return {
        "plain fwd+bwd": lambda: model.eval()(x).sum().backward(),
        "zero fwd": lambda: convprof.profile(model, x, compute=False),
        "zero fwd+bwd": lambda: convprof.profile(model, x, compute=False, backward=True),
        "FlopCounterMode meta fwd+bwd": lambda: flop_counter_train_macs(model, (x,)),
        "computing fwd+bwd": lambda: convprof.profile(model, x, compute=True, backward=True),
    }


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of 7 rounds")
    print()
    for i, name in enumerate(["mobilenet_v3_large", "resnet50", "vit_b_16"]):
        model = torchvision.models.get_model(name)
        runs = variants(model, torch.randn(1, 3, 224, 224))
        times: dict[str, list[float]] = {key: [] for key in runs}
        for _ in range(2):
            for run in runs.values():
                run()
        for _ in range(7):
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
        if i == 0:
            print("| model | " + " | ".join(runs) + " |")
            print("|---|" + "---:|" * len(runs))
        medians = [statistics.median(times[key]) * 1e3 for key in runs]
        print(f"| {name} | " + " | ".join(f"{m:.0f} ms" for m in medians) + " |")


if __name__ == "__main__":
    main()
