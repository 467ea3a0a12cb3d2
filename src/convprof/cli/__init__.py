"""cli: the command line, ``convprof profile``, ``check``, ``diff`` and ``conv``.

A thin front end over the library; with the pytest plugin it is the only place that prints.
One module per command (``add_parser`` and ``run``), what they share in ``options``, profiling
a spec in ``specs``. May import every other package; nothing imports it.

Exit status: 0 all good; 1 a budget or tolerance is broken; 2 a usage or configuration error
(bad spec, shape, file, TOML, quantity, or a model that rejects its input), always one line on
stderr, never a traceback; 3 an error inside convprof itself (one line, the traceback with
``CONVPROF_TRACEBACK=1``), so that CI never mistakes a crash for a broken budget; 130 an
interrupt.

``profile`` and ``check`` import the module a ``package.module:callable`` spec names and call
it, as pytest imports test files: the current directory (and, for ``check``, the config file's
directory) comes first on the import path. torch is imported by the commands that profile, not
here: ``convprof --help``, ``--version``, ``diff`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from convprof import __version__
from convprof.cli import check, conv, diff, profile
from convprof.cli.options import EXIT_CODES, Parser, UsageError, wrap

__all__ = ["main"]

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "profile": profile.run,
    "check": check.run,
    "diff": diff.run,
    "conv": conv.run,
}


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="convprof",
        description=wrap(
            "Exact params, MACs and FLOPs of PyTorch models, per layer and in total. "
            "MACs = multiply-accumulates of convolutions, linear layers, matmuls and attention, "
            "bias excluded; FLOPs = 2 x MACs."
        ),
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"convprof {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")
    for command in (profile, check, conv, diff):
        command.add_parser(commands)
    return parser


_VALUED = ("--input", "--tolerance", "--past")
# What a missing package is needed for, and how to get it.
_PACKAGES = {
    "torch": "profiling needs PyTorch, which is not installed: pip install torch (see the README "
    "for a CPU-only build)",
    "torchvision": "torchvision: specs need torchvision, which is not installed: pip install torchvision",
    "timm": "timm: specs need timm, which is not installed: pip install timm",
}


def _join_dashed_values(argv: Sequence[str]) -> list[str]:
    """``--input -1,3,8,8`` as ``--input=-1,3,8,8``: argparse takes a value that starts with a
    dash for an option and says only "expected one argument"; joined, the value's own check
    explains what is wrong with it."""
    out: list[str] = []
    for word in argv:
        if out and out[-1] in _VALUED and word[:1] == "-" and word[1:2].isdigit():
            out[-1] = f"{out[-1]}={word}"
        else:
            out.append(word)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    words = _join_dashed_values(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args: Any = parser.parse_args(words)
    if args.command is None:  # bare `convprof`: say what it can do
        parser.print_help()
        return 2
    try:
        return _COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"convprof: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convprof: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name in _PACKAGES:  # not installed
            print(f"convprof: error: {_PACKAGES[exc.name]}", file=sys.stderr)
            return 2
        if os.environ.get("CONVPROF_TRACEBACK"):
            traceback.print_exc()
        where = "" if os.environ.get("CONVPROF_TRACEBACK") else " (CONVPROF_TRACEBACK=1 shows the traceback)"
        print(f"convprof: internal error: {type(exc).__name__}: {exc}{where}", file=sys.stderr)
        return 3
