"""Command line: ``convprof profile SPEC --input 1,3,224,224``.

A thin front end over :func:`convprof.profile` and :func:`convprof.render`; together with the
pytest plugin it is the only place that prints. Usage errors (bad spec, bad shape, a model that
rejects the input) exit 2 with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

import torch

from convprof.api import profile
from convprof.recorder import ForwardError
from convprof.render import FORMATS, render
from convprof.zoo import SpecError, load

_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


def parse_shape(text: str) -> tuple[int, ...]:
    """``'1,3,224,224'`` or ``'1x3x224x224'`` -> ``(1, 3, 224, 224)``; positive sizes only."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(
            f"bad shape {text!r}: expected positive integers separated by commas, e.g. 1,3,224,224"
        )
    return shape


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message, not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"convprof: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convprof", description="Params, MACs and FLOPs of PyTorch models.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    prof = commands.add_parser("profile", help="profile one model and print its layer table")
    prof.add_argument(
        "spec", help="'torchvision:NAME' or 'package.module:callable' (called with no arguments)"
    )
    prof.add_argument(
        "--input",
        type=parse_shape,
        action="append",
        metavar="SHAPE",
        help="input shape such as 1,3,224,224; repeat for several inputs "
        "(default for torchvision: the weights' evaluation crop)",
    )
    prof.add_argument(
        "--dtype",
        choices=sorted(_DTYPES),
        default="float32",
        help="dtype of the model and inputs (default float32)",
    )
    prof.add_argument("--format", choices=FORMATS, default="table")
    prof.add_argument("--depth", type=int, metavar="N", help="roll rows up to N name components")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        model, default_shape = load(args.spec)
    except SpecError as exc:
        print(f"convprof: error: {exc}", file=sys.stderr)
        return 2
    shapes = args.input or ([default_shape] if default_shape else None)
    if not shapes:
        print(f"convprof: error: --input is required for {args.spec!r}", file=sys.stderr)
        return 2
    if args.depth is not None and args.depth < 0:
        print("convprof: error: --depth must be 0 or more", file=sys.stderr)
        return 2
    dtype = _DTYPES[args.dtype]
    model = model.to(dtype)
    inputs = tuple(torch.randn(shape, dtype=dtype) for shape in shapes)
    try:
        report = profile(model, inputs)
    except ForwardError as exc:
        print(f"convprof: error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    sys.stdout.write(render(report, depth=args.depth, format=args.format))
    return 0
