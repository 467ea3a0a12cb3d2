"""``convprof conv``: the tutorial's comparison of convolutions, for any shape."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from convprof.cli.options import EXIT_CODES, UsageError, wrap
from convprof.rendering.tables import rows
from convprof.units import format_shape


def add_parser(commands: Any) -> None:
    calc = commands.add_parser(
        "conv",
        help="compare standard, grouped, depthwise and separable convolutions",
        description=wrap(
            "Params, MACs (and with --memory, bytes moved) of the ways to map C_in to C_out "
            "channels with a K x K kernel on a 1 x C_in x S x S input: the tutorial's comparison for "
            "any shape. Nothing is computed."
        ),
        epilog=EXIT_CODES,
    )
    calc.add_argument("--in", dest="in_channels", type=int, required=True, metavar="C", help="input channels")
    calc.add_argument(
        "--out", dest="out_channels", type=int, required=True, metavar="C", help="output channels"
    )
    calc.add_argument("--kernel", type=int, required=True, metavar="K", help="kernel size (K x K)")
    calc.add_argument("--size", type=int, required=True, metavar="S", help="input height and width")
    calc.add_argument("--groups", type=int, default=2, help="groups of the grouped convolution")
    calc.add_argument("--stride", type=int, default=1, help="stride of the K x K convolutions")
    calc.add_argument("--padding", type=int, default=0, help="zero padding of the K x K convolutions")
    calc.add_argument("--memory", action="store_true", help="add float32 bytes moved and MACs per byte")
    calc.add_argument("--format", choices=("table", "markdown"), default="table", help="output format")


def run(args: argparse.Namespace) -> int:
    from convprof.calculator import compare_convs

    try:
        found = compare_convs(
            args.in_channels,
            args.out_channels,
            args.kernel,
            args.size,
            groups=args.groups,
            stride=args.stride,
            padding=args.padding,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    cells = [
        [
            row.name,
            format_shape(row.output_shape),
            f"{row.params:,}",
            f"{row.macs:,}",
            f"{row.macs_ratio:.2f}",
        ]
        + ([f"{row.memory_bytes:,}", f"{row.intensity:.2f}"] if args.memory else [])
        for row in found
    ]
    headers: tuple[str, ...] = ("Convolution", "Output", "Params", "MACs", "vs standard")
    if args.memory:
        headers += ("Bytes", "MACs/B")
    sys.stdout.write(rows(headers, cells, format=args.format, right=frozenset(headers[2:])))
    sys.stdout.write(
        f"\nInput 1x{args.in_channels}x{args.size}x{args.size}, {args.kernel}x{args.kernel} kernel, "
        f"stride {args.stride}, padding {args.padding}, no bias. MACs exclude bias; FLOPs = 2 x MACs.\n"
    )
    return 0
