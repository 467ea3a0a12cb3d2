"""``convprof check``: every configured model held to its budget and, with a baseline, to the
numbers recorded before; a summary table, exit 1 when any is over."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convprof.ci import baseline, config
from convprof.ci.budget import Check, checks
from convprof.cli.options import EXIT_CODES, UsageError, compute_options, tolerance, wrap, writable
from convprof.cli.specs import Options, profile_spec
from convprof.rendering.tables import rows
from convprof.report import Report


def add_parser(commands: Any) -> None:
    chk = commands.add_parser(
        "check",
        help="hold every configured model to its budget",
        description=wrap(
            "Profile every [[tool.convprof.models]] entry of the config file and compare it "
            "with its limits and, with --baseline, with the recorded numbers. Specs are imported from "
            "the config file's directory and the current directory first."
        ),
        epilog=EXIT_CODES,
    )
    chk.add_argument(
        "--config",
        type=Path,
        default=Path("pyproject.toml"),
        help="TOML file with [[tool.convprof.models]] (default: pyproject.toml)",
    )
    chk.add_argument("--baseline", type=Path, help="baseline JSON to compare totals with")
    chk.add_argument(
        "--tolerance",
        type=tolerance,
        default=0.0,
        metavar="PCT",
        help="allowed growth over the baseline, a percentage: 2%% or 2 (both 2 percent; default 0%%)",
    )
    chk.add_argument("--write-baseline", type=Path, metavar="FILE", help="record the current numbers")
    chk.add_argument("--format", choices=("table", "markdown"), default="table", help="summary format")
    compute_options(chk)


def _summary_rows(name: str, found: Sequence[Check]) -> list[list[str]]:
    """One row per total limit (per rank class, for a parallel plan's); per layer pattern and
    metric, the module with least headroom."""
    worst: dict[tuple[str | None, str, str], tuple[Check, int]] = {}
    for check in found:
        key = (check.pattern, check.metric, check.scope if check.pattern is None else "")
        best, count = worst.get(key, (check, 0))
        worst[key] = (check if check.headroom < best.headroom else best, count + 1)
    out = []
    for (pattern, metric, _), (check, count) in worst.items():
        if pattern is None:
            label = metric if check.scope == "total" else f"{metric} [{check.scope}]"
        else:
            label = f"{metric} [{check.scope}" + (
                f", worst of {count} matching {pattern!r}]" if count > 1 else "]"
            )
        out.append(
            [
                name,
                label,
                f"{check.actual:,}",
                f"{check.limit:,}",
                f"{100 * check.headroom:.1f}%",
                "ok" if check.ok else "FAIL",
            ]
        )
    return out


def _baseline_rows(name: str, report: Report, held: Report, tolerance: float) -> tuple[list[list[str]], bool]:
    """The totals against the baseline's, and whether any grew past the tolerance. FLOPs are
    2 x MACs: a FLOPs row would repeat the MACs row; a training step is compared when both
    counted one (a max_train_macs budget), the peak when both predicted one (max_peak_bytes)."""
    figures = {
        metric: (getattr(held.total, metric), getattr(report.total, metric)) for metric in ("params", "macs")
    }
    if report.backward and held.backward:
        figures["train_macs"] = (held.total.train_macs, report.total.train_macs)
    if report.memory is not None and held.memory is not None:
        figures["peak_bytes"] = (held.memory.peak_bytes, report.memory.peak_bytes)
    table, bad = [], False
    for metric, (old, new) in figures.items():
        limit = int(old * (1 + tolerance))
        check = Check("total", metric, new, max(limit, old))
        bad |= not check.ok
        table.append(
            [
                name,
                f"{metric} vs baseline {old:,}",
                f"{new:,}",
                f"{check.limit:,}",
                f"{100 * check.headroom:.1f}%",
                "ok" if check.ok else "FAIL",
            ]
        )
    return table, bad


def run(args: argparse.Namespace) -> int:
    try:
        entries = config.load(args.config)
        base = baseline.read(args.baseline) if args.baseline else {}
    except (config.ConfigError, baseline.BaselineError) as exc:
        raise UsageError(str(exc)) from None
    if args.write_baseline:
        writable(args.write_baseline, "--write-baseline")
    folders = (args.config.parent, Path.cwd())
    table: list[list[str]] = []
    reports: dict[str, Report] = {}
    over = 0  # models with a broken limit, tolerance or coverage
    for i, entry in enumerate(entries, 1):
        print(
            f"convprof: [{i}/{len(entries)}] profiling {entry.name} ({entry.model})",
            file=sys.stderr,
            flush=True,
        )
        budget = entry.budget
        options = Options(
            folders=folders,
            backward=budget.needs_backward,
            memory=budget.device if budget.needs_memory or budget.parallel else None,
            optimizer=budget.optimizer,
            autocast=budget.autocast,
            parallel=budget.parallel,
            missing_input=f"give it an 'input' in its [[tool.convprof.models]] entry of {args.config}",
        )
        report = profile_spec(entry.model, entry.inputs, options, args.compute).report
        reports[entry.name] = report
        try:
            found = checks(report, entry.budget)
        except ValueError as exc:
            raise UsageError(f"{args.config}: model {entry.name!r}: {exc}") from None
        table.extend(_summary_rows(entry.name, found))
        bad = not all(c.ok for c in found)
        if not report.complete:
            ok = entry.budget.allow_incomplete
            bad |= not ok
            ops = ", ".join(u.op for u in report.unexplained)
            table.append([entry.name, "coverage", "incomplete", ops, "", "allowed" if ok else "FAIL"])
        if entry.name in base:
            compared, grew = _baseline_rows(entry.name, report, base[entry.name], args.tolerance)
            table += compared
            bad |= grew
        elif args.baseline:
            table.append([entry.name, "baseline", "", "", "", "not in baseline"])
        over += bad
    _summary(table, len(entries), over, args.format)
    if args.write_baseline:
        try:
            args.write_baseline.write_text(baseline.dumps(reports))
        except OSError as exc:
            raise UsageError(
                f"--write-baseline {args.write_baseline}: cannot write: {exc.strerror}"
            ) from None
        print(f"convprof: baseline written to {args.write_baseline}", file=sys.stderr)
    return 1 if over else 0


def _summary(table: list[list[str]], n: int, over: int, format: str) -> None:
    headers = ("Model", "Metric", "Actual", "Limit", "Headroom", "Status")
    if format == "table" and _colour(sys.stdout):
        table = [[*row[:-1], _paint(row[-1])] for row in table]
    sys.stdout.write(rows(headers, table, format=format))
    sys.stdout.write(
        f"\n{over} of {n} model{'s' if n != 1 else ''} over budget.\n"
        if over
        else f"\n{'All ' if n > 1 else ''}{n} model{'s' if n != 1 else ''} within budget.\n"
    )


def _colour(stream: Any) -> bool:
    """Colour on a terminal, unless NO_COLOR is set (https://no-color.org) or TERM is dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty())


def _paint(status: str) -> str:
    """FAIL in bold red, ok in green; tabulate measures cells without the escape codes."""
    if status == "FAIL":
        return f"\x1b[1;31m{status}\x1b[0m"
    if status == "ok":
        return f"\x1b[32m{status}\x1b[0m"
    return status
