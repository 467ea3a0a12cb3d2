"""Predicted peak memory against the measured peak on the CPU, with the peers beside convprof.

Usage:
    python benchmarks/peak_memory.py [--models resnet18,gpt2,...] [--batch 2]

For each model and each of two passes (one inference forward under no_grad; a steady-state
training step with Adam), the measured peak comes from ``torch.profiler``'s allocation events
(tests/measured_memory.py: what existed before the pass plus the highest running sum of its
allocations). Beside it, each tool's figure and its error against the measurement:

- convprof without arithmetic (``compute=False``, the CLI's default) and with a real forward;
- PyTorch's MemTracker (``torch.distributed._tools.mem_tracker``), which runs the pass for real
  and reports its peak by category (it does not count the input);
- torchinfo's "Estimated Total Size" (input + forward/backward pass size + params), one figure
  for both passes, where it is installed (``pip install torchinfo``).

Prints a Markdown table (docs/memory.md has the current one). Nothing is timed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from measured_memory import OPTIMIZERS, inference_peak, loss_of, training_peak

import convprof

Built = tuple[nn.Module, tuple[Any, ...], dict[str, Any]]


def _torchvision(name: str, batch: int) -> Callable[[], Built]:
    def build() -> Built:
        import torchvision

        return getattr(torchvision.models, name)(), (torch.randn(batch, 3, 224, 224),), {}

    return build


def _hf(kind: str, batch: int) -> Callable[[], Built]:
    def build() -> Built:
        import transformers as hf

        ids = torch.randint(0, 1000, (batch, 128))
        if kind == "gpt2":
            config = hf.GPT2Config(
                n_embd=256, n_layer=4, n_head=4, vocab_size=1000, bos_token_id=0, eos_token_id=0
            )
            return hf.GPT2LMHeadModel(config), (), {"input_ids": ids}
        if kind == "bert":
            config = hf.BertConfig(
                hidden_size=256,
                num_hidden_layers=4,
                num_attention_heads=4,
                intermediate_size=1024,
                vocab_size=1000,
            )
            return hf.BertModel(config), (), {"input_ids": ids}
        config = hf.T5Config(d_model=256, d_ff=1024, num_layers=4, num_heads=4, vocab_size=1000, d_kv=64)
        return hf.T5ForConditionalGeneration(config), (), {"input_ids": ids, "decoder_input_ids": ids[:, :32]}

    return build


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(64, 256, num_layers=2, batch_first=True)
        self.head = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0])


def models(batch: int) -> dict[str, Callable[[], Built]]:
    vision = [
        "resnet18",
        "resnet50",
        "mobilenet_v2",
        "mobilenet_v3_large",
        "efficientnet_b0",
        "regnet_y_400mf",
        "shufflenet_v2_x1_0",
        "densenet121",
        "convnext_tiny",
        "vit_b_16",
    ]
    found = {name: _torchvision(name, batch) for name in vision}
    found.update({f"{kind} (transformers)": _hf(kind, batch) for kind in ("gpt2", "bert", "t5")})
    found["LSTM 2x256"] = lambda: (Recurrent(), (torch.randn(batch, 100, 64),), {})
    # PyTorch's own encoder: one fused operator per layer in inference
    found["TransformerEncoder 4x256"] = lambda: (
        nn.TransformerEncoder(
            nn.TransformerEncoderLayer(256, 8, 1024, batch_first=True), 4, enable_nested_tensor=False
        ),
        (torch.randn(batch, 256, 256),),
        {},
    )
    return found


def memtracker(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], training: bool) -> int | None:
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError:
        return None
    tracker = MemTracker()
    if training:
        model.train()
        opt = OPTIMIZERS["adam"](model.parameters())
        output = model(*args, **kwargs)
        loss_of(output).backward()
        opt.step()
        model.zero_grad(set_to_none=True)
        del output
        tracker.track_external(model, opt)
        with tracker:
            output = model(*args, **kwargs)
            loss_of(output).backward()
            opt.step()
            del output
        model.zero_grad(set_to_none=True)
    else:
        model.eval()
        tracker.track_external(model)
        with tracker, torch.no_grad():
            model(*args, **kwargs)
    total: int = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    return total


def torchinfo_estimate(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    try:
        import torchinfo
    except ImportError:
        return None
    try:
        stats = torchinfo.summary(model, input_data=list(args) or None, verbose=0, **kwargs)
    except Exception:  # torchinfo fails on some models: no figure rather than no table
        return None
    given = stats.total_input or sum(  # keyword inputs are not in torchinfo's input size
        t.numel() * t.element_size() for t in kwargs.values() if isinstance(t, torch.Tensor)
    )
    return int(given + stats.total_output_bytes + stats.total_param_bytes)


def _error(value: int | None, measured: int) -> str:
    return "n/a" if value is None else f"{100 * (value / measured - 1):+.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated names (default: all)")
    parser.add_argument("--batch", type=int, default=2)
    options = parser.parse_args()
    torch.manual_seed(0)
    table = models(options.batch)
    chosen = options.models.split(",") if options.models else list(table)
    print(
        f"Batch {options.batch}, float32, CPU ({torch.get_num_threads()} threads), "
        f"torch {torch.__version__}.\n"
    )
    print(
        "| model | pass | measured | convprof, zero compute | convprof, computing | MemTracker | torchinfo |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in chosen:
        model, args, kwargs = table[name]()
        estimate = torchinfo_estimate(model, args, kwargs)
        for training in (False, True):
            measured = (
                training_peak(model, args, kwargs, "adam")
                if training
                else inference_peak(model, args, kwargs)
            )
            options_ = {"memory": True, "backward": training, "optimizer": "adam" if training else None}
            try:
                zero = convprof.profile(model, args, kwargs, compute=False, **options_).memory
                zero_cell = _error(zero.peak_bytes if zero is not None else None, measured)
            except convprof.ValuesNeeded:  # a kernel zero compute cannot follow (the CPU's LSTM)
                zero_cell = "refused"
            real = convprof.profile(model, args, kwargs, compute=True, **options_).memory
            tracked = memtracker(model, args, kwargs, training)
            assert real is not None
            print(
                f"| {name} | {'Adam step' if training else 'inference'} | {measured / 2**20:,.1f} MiB | "
                f"{zero_cell} | {_error(real.peak_bytes, measured)} | "
                f"{_error(tracked, measured)} | {_error(estimate, measured)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
