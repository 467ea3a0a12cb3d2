"""Predicted peak memory against ``torch.cuda.max_memory_allocated()`` (run where a GPU exists).

On CUDA the caching allocator rounds every block to 512 bytes, ``torch.optim`` updates with
``foreach`` lists, attention runs fused kernels and cuDNN picks convolution algorithms whose
workspaces come from the same allocator: what convprof's CUDA prediction (``memory="cuda"``,
counted without arithmetic on the CPU) must match, less the workspaces its convention leaves
out. For each model, an inference forward and a steady-state Adam step are measured as
``max_memory_allocated()`` after ``reset_peak_memory_stats()`` (the model, its state and the
input already on the device), beside the prediction. Prints a Markdown table; exits 1 when a
prediction is more than ``--tolerance`` percent off.

Usage: PYTHONPATH=src python scripts/cuda_memory_check.py [--tolerance 5] [--device cpu (a dry run)]
       [--autocast bfloat16] (the forward under autocast: checks convprof's CUDA autocast policy)
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from measured_memory import OPTIMIZERS, inference_peak, loss_of, training_peak

import convprof


def cuda_peak(model: nn.Module, x: torch.Tensor, training: bool, autocast: torch.dtype | None = None) -> int:
    """max_memory_allocated() of one pass, after a warm-up pass (cuDNN's choice, the state);
    the forward under CUDA's autocast to ``autocast`` when given."""

    def region() -> Any:
        return torch.autocast("cuda", dtype=autocast) if autocast is not None else contextlib.nullcontext()

    if not training:
        model.eval()
        with torch.no_grad(), region():
            model(x)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad(), region():
            model(x)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    model.train()
    opt = OPTIMIZERS["adam"](model.parameters())
    for step in range(2):
        if step:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with region():
            output = model(x)
        loss_of(output).backward()
        opt.step()
        del output
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tolerance", type=float, default=5.0, help="percent")
    parser.add_argument(
        "--models", default="resnet18,resnet50,mobilenet_v2,efficientnet_b0,vit_b_16,convnext_tiny"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--autocast", choices=["bfloat16", "float16"], help="the forward under autocast")
    options = parser.parse_args()
    autocast = getattr(torch, options.autocast) if options.autocast else None
    import torchvision

    failed = 0
    print(f"| model | pass | measured ({options.device}) | predicted | error |\n|---|---|---:|---:|---:|")
    for name in options.models.split(","):
        for training in (False, True):
            torch.manual_seed(0)
            model = getattr(torchvision.models, name)()
            x = torch.randn(options.batch, 3, 224, 224)
            predicted = convprof.profile(
                model,
                x,
                memory="cuda" if options.device == "cuda" else "cpu",
                compute=False,
                backward=training,
                optimizer="adam" if training else None,
                autocast=autocast,
            ).memory
            assert predicted is not None
            if options.device == "cuda":
                model, x = model.cuda(), x.cuda()
                measured = cuda_peak(model, x, training, autocast)
            elif training:  # a dry run of the script: the CPU oracle of the tests
                measured = training_peak(model, (x,), autocast=autocast)
            else:
                measured = inference_peak(model, (x,), autocast=autocast)
            error = 100 * (predicted.peak_bytes / measured - 1)
            failed += abs(error) > options.tolerance
            step = "Adam step" if training else "inference"
            print(
                f"| {name} | {step} | {measured:,} | {predicted.peak_bytes:,} | {error:+.1f}% |", flush=True
            )
            del model, x
            if options.device == "cuda":
                torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
