"""Profile every torchvision classification model and compare with its weights' metadata.

Usage: python scripts/torchvision_sweep.py [NAME ...] [--markdown]

Each model is built as its DEFAULT weights imply (without downloading them) and profiled on
real CPU tensors at the weights' evaluation crop. A row passes when the parameter count equals
``meta["num_params"]`` and ``round(macs / 1e9, 3) == meta["_ops"]``. Exit 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torchvision

import convprof
from convprof.models.torchvision import torchvision_model, torchvision_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    names = args.names or torchvision.models.list_models(module=torchvision.models)
    rows, failures = [], 0
    for name in names:
        weights = torchvision_weights(name)
        torch.manual_seed(0)
        loaded = torchvision_model(name)
        model, shapes = loaded.model, [s.shape for s in loaded.inputs]
        start = time.perf_counter()
        report = convprof.profile(model, tuple(torch.randn(shape) for shape in shapes))
        seconds = time.perf_counter() - start
        gmacs = round(report.total.macs / 1e9, 3)
        ok = report.total.params == weights.num_params and gmacs == weights.gmacs and report.complete
        failures += not ok
        rows.append(
            (
                name,
                " + ".join("x".join(map(str, shape)) for shape in shapes),
                report.total.params,
                weights.num_params,
                gmacs,
                weights.gmacs,
                "yes" if ok else "NO",
                f"{seconds:.2f}",
            )
        )
        if not args.markdown:
            print(*rows[-1], sep="\t", flush=True)
    if args.markdown:
        print("| model | input | params | meta num_params | GMACs | meta _ops | exact | seconds |")
        print("|---|---|---:|---:|---:|---:|---|---:|")
        for row in rows:
            print("| " + " | ".join(f"{c:,}" if isinstance(c, int) else str(c) for c in row) + " |")
    print(f"{len(rows) - failures} of {len(rows)} exact", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
