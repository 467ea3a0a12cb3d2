"""The training step (``profile(backward=True)``) against FlopCounterMode on meta, model by model.

Usage:
    python scripts/backward_sweep.py torchvision            # all classification models
    python scripts/backward_sweep.py timm [--sample 70]     # a random sample (seed 1)
    python scripts/backward_sweep.py transformers           # tests/hf_models.py's catalogue

Each line: the model, OK or DIFF (or ERR), convprof's train MACs with compute=False, the
oracle's (FlopCounterMode over forward and backward on a meta copy, its grouped-convolution dW
corrected as in tests/test_backward.py), seconds, and any operator convprof left unexplained.
An oracle that cannot run (a model that reads values on meta) is shown as such. Results of the
runs behind docs/training.md are quoted there.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_backward import flop_counter_train_macs

import convprof

Case = tuple[str, Callable[[], tuple[nn.Module, tuple[Any, ...], dict[str, Any]]]]


def _torchvision() -> Iterator[Case]:
    import torchvision

    from convprof.models.torchvision import torchvision_model

    for name in torchvision.models.list_models(module=torchvision.models):

        def build(name: str = name) -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
            loaded = torchvision_model(name)
            return loaded.model, (torch.zeros(loaded.inputs[0].shape),), {}

        yield name, build


def _timm(sample: int) -> Iterator[Case]:
    import timm

    random.seed(1)
    for name in random.sample(timm.list_models(), sample):

        def build(name: str = name) -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
            model = timm.create_model(name, pretrained=False)
            size = model.pretrained_cfg.get("input_size", (3, 224, 224))
            return model, (torch.zeros(1, *size),), {}

        yield name, build


def _transformers() -> Iterator[Case]:
    from hf_models import entries

    for name, _, builder, inputs in entries():

        def build(
            builder: Callable[[], nn.Module] = builder, inputs: Callable[[], Any] = inputs
        ) -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
            args, kwargs = inputs()
            return builder(), args, kwargs

        yield name, build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", choices=("torchvision", "timm", "transformers"))
    parser.add_argument("--sample", type=int, default=70, help="timm models to sample (seed 1)")
    args = parser.parse_args()
    cases = {"torchvision": _torchvision, "transformers": _transformers}.get(args.zoo)
    found = cases() if cases is not None else _timm(args.sample)
    for name, build in found:
        try:
            torch.manual_seed(0)
            model, inputs, kwargs = build()
            start = time.perf_counter()
            report = convprof.profile(model, inputs, kwargs, backward=True, compute=False)
            seconds = time.perf_counter() - start
        except Exception as exc:
            print(name, "ERR", type(exc).__name__, str(exc).splitlines()[0][:200], flush=True)
            continue
        try:
            oracle: int | str = flop_counter_train_macs(model, inputs, kwargs)
        except Exception as exc:
            oracle = f"oracle failed: {type(exc).__name__}"
        status = (
            "NO-ORACLE" if isinstance(oracle, str) else "OK" if report.total.train_macs == oracle else "DIFF"
        )
        missing = sorted({u.op for u in report.unexplained})
        print(name, status, report.total.train_macs, oracle, f"{seconds:.2f}s", missing, flush=True)


if __name__ == "__main__":
    main()
