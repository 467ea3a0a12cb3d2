"""``convprof diff``: what changed between two reports or two baselines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from convprof.ci import baseline
from convprof.cli.options import EXIT_CODES, UsageError, tolerance, wrap
from convprof.rendering.diff import render_diff
from convprof.report.diff import compare


def add_parser(commands: Any) -> None:
    dif = commands.add_parser(
        "diff",
        help="what changed between two report or baseline files",
        description=wrap(
            "Totals and changed layers between two single reports (profile --format json) "
            "or two baselines (check --write-baseline); Markdown is ready to post on a pull request."
        ),
        epilog=EXIT_CODES,
    )
    dif.add_argument("old", type=Path, help="the earlier report or baseline (JSON)")
    dif.add_argument("new", type=Path, help="the later report or baseline (JSON)")
    dif.add_argument("--format", choices=("table", "markdown"), default="table", help="output format")
    dif.add_argument(
        "--tolerance",
        type=tolerance,
        metavar="PCT",
        help="exit 1 when a total grew by more than this percentage: 2%% or 2 (both 2 percent)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        old, new = baseline.read(args.old), baseline.read(args.new)
    except baseline.BaselineError as exc:
        raise UsageError(str(exc)) from None
    if (len(old) == 1) != (len(new) == 1):
        single, several = (args.old, args.new) if len(old) == 1 else (args.new, args.old)
        raise UsageError(
            f"{single} holds one model and {several} several: compare two single reports "
            "(profile --format json) or two baselines (check --write-baseline)"
        )
    depths = {
        (r.depth, path) for reports, path in ((old, args.old), (new, args.new)) for r in reports.values()
    }
    if len({depth for depth, _ in depths}) > 1:  # rows of a rolled-up report are groups
        described = ", ".join(
            f"{path} {'rows rolled up to --depth ' + str(depth) if depth is not None else 'every layer'}"
            for depth, path in sorted(depths, key=lambda item: str(item[1]))
        )
        raise UsageError(f"the reports' rows differ in kind ({described}): write both with the same --depth")
    if len(old) == 1 and len(new) == 1:  # two single reports: compare them whatever their names
        old = {next(iter(new)): next(iter(old.values()))}
    diffs = compare(old, new)
    sys.stdout.write(render_diff(diffs, format=args.format))
    if args.tolerance is None:
        return 0
    grown = [f"{d.model} {metric}" for d in diffs for metric in d.exceeded(args.tolerance)]
    for item in grown:
        print(f"convprof: {item} grew by more than {100 * args.tolerance:g}%", file=sys.stderr)
    return 1 if grown else 0
