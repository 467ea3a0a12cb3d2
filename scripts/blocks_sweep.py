"""Separable blocks and inverted residuals convprof finds in every torchvision classification
model (built on meta at its weights' input size), as a Markdown table for docs/torchvision.md.

Usage: python scripts/blocks_sweep.py   (about a minute)
"""

from __future__ import annotations

import warnings

import torch
import torchvision
from torchvision.models import list_models

import convprof
from convprof.models.load import load


def main() -> None:
    warnings.filterwarnings("ignore")  # torchvision's init-weights notices
    print("| model | separable | inverted residual | share of MACs | cost vs std (min - max) |")
    print("|---|---:|---:|---:|---|")
    without = []
    for name in list_models(module=torchvision.models):
        loaded = load(f"torchvision:{name}", meta=True)
        inputs = tuple(torch.empty(s.shape, device="meta") for s in loaded.inputs or ())
        report = convprof.profile(loaded.model, inputs)
        if not report.blocks:
            without.append(name)
            continue
        kinds = [b.kind for b in report.blocks]
        share = sum(b.macs for b in report.blocks) / report.total.macs
        costs = [b.cost_vs_standard for b in report.blocks]
        print(
            f"| {name} | {kinds.count('separable')} | {kinds.count('inverted_residual')} | "
            f"{100 * share:.1f}% | {min(costs):.2f} - {max(costs):.2f} |"
        )
    print()
    print(f"No blocks ({len(without)} models): {', '.join(without)}.")


if __name__ == "__main__":
    main()
