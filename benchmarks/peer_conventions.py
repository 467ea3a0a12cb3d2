"""What each peer counts for the cases where conventions differ: bias, transposed conv, norms.

Usage: PYTHONPATH=<dir with the peers installed> python benchmarks/peer_conventions.py

The peers (thop, ptflops, fvcore, torchinfo) are never dependencies of convprof; install them
into a separate directory, e.g. ``pip install --no-deps --target /tmp/peers thop ptflops
fvcore torchinfo iopath yacs termcolor pyyaml tqdm portalocker``. Prints a Markdown table of
MACs (each peer's own unit converted to MACs where it reports FLOPs) for docs/conventions.md.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import convprof

CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "Conv2d(6,10,2), no bias, 1x6x4x4 (tutorial)": (lambda: nn.Conv2d(6, 10, 2, bias=False), (1, 6, 4, 4)),
    "Conv2d(6,10,2) with bias": (lambda: nn.Conv2d(6, 10, 2), (1, 6, 4, 4)),
    "ConvTranspose2d(4,2,3,stride=2), no bias, 1x4x7x7": (
        lambda: nn.ConvTranspose2d(4, 2, 3, stride=2, bias=False),
        (1, 4, 7, 7),
    ),
    "BatchNorm2d(8) + ReLU, 1x8x4x4": (lambda: nn.Sequential(nn.BatchNorm2d(8), nn.ReLU()), (1, 8, 4, 4)),
    "Linear(16,32) with bias, 1x16": (lambda: nn.Linear(16, 32), (1, 16)),
}


def quiet(fn: Callable[[], int]) -> int | str:
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return fn()
    except Exception as exc:  # a peer that fails on a case is a result too
        return f"error: {type(exc).__name__}"


def counts(build: Callable[[], nn.Module], shape: tuple[int, ...]) -> dict[str, int | str]:
    x = torch.randn(shape)
    out: dict[str, int | str] = {"convprof": convprof.profile(build().eval(), x).total.macs}

    def flop_counter() -> int:
        with FlopCounterMode(display=False) as mode, torch.no_grad():
            build().eval()(x)
        return mode.get_total_flops() // 2  # FLOPs = 2 x MACs

    out["FlopCounterMode"] = quiet(flop_counter)
    import thop

    out["thop"] = quiet(lambda: int(thop.profile(build().eval(), inputs=(x,), verbose=False)[0]))
    from ptflops import get_model_complexity_info

    out["ptflops"] = quiet(
        lambda: int(
            get_model_complexity_info(
                build().eval(), tuple(shape[1:]), as_strings=False, print_per_layer_stat=False
            )[0]
        )
    )
    from fvcore.nn import FlopCountAnalysis

    out["fvcore"] = quiet(lambda: int(FlopCountAnalysis(build().eval(), x).total()))  # one "flop" per MAC
    import torchinfo

    out["torchinfo"] = quiet(
        lambda: int(torchinfo.summary(build().eval(), input_data=x, verbose=0).total_mult_adds)
    )
    return out


def main() -> None:
    rows = {name: counts(*case) for name, case in CASES.items()}
    tools = list(next(iter(rows.values())))
    print("| case | " + " | ".join(tools) + " |")
    print("|---|" + "---:|" * len(tools))
    for name, row in rows.items():
        print(
            f"| {name} | "
            + " | ".join(f"{row[t]:,}" if isinstance(row[t], int) else str(row[t]) for t in tools)
            + " |"
        )


if __name__ == "__main__":
    main()
