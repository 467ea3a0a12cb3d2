"""What every command shares: the usage error, argparse's value types and formatting, and
the checks made before any work (a file that cannot be written)."""

from __future__ import annotations

import argparse
import re
import textwrap
from pathlib import Path
from typing import Any, NoReturn

from convprof.models.inputs import Input, parse
from convprof.rendering.columns import parse_columns
from convprof.roofline import machine
from convprof.units import parse_bytes, parse_tolerance

EXIT_CODES = """exit status:
  0    all good
  1    a budget, a baseline tolerance or coverage is broken
  2    usage or configuration error (one line on stderr)
  3    internal error of convprof (CONVPROF_TRACEBACK=1 shows the traceback)
  130  interrupted"""


class UsageError(Exception):
    """Anything that should end the command with status 2 and one line."""


def parse_input(text: str) -> Input:
    """``'1,3,224,224'``, ``'1,128:int64'`` or ``'attention_mask=1,128:int64'``."""
    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def tolerance(text: str) -> float:
    try:
        return parse_tolerance(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def memory_size(text: str) -> int:
    if re.fullmatch(r"\s*\.?\d[\d.eE+_]*\s*", text):  # "24": bytes, where 24 GiB was surely meant
        raise argparse.ArgumentTypeError(
            f"give a memory size with its unit, e.g. {text.strip()}GiB, got {text!r}"
        )
    try:
        size = parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"a memory size must be more than 0 bytes, got {text!r}")
    return size


def device(text: str) -> str:
    """A device a computing pass can run on: ``cpu``, ``cuda``, ``cuda:N`` (and PyTorch's
    ``mps``, ``xpu``); anything else would be ignored or fail deep inside PyTorch."""
    if not re.fullmatch(r"(cpu|cuda|mps|xpu)(:\d+)?", text.strip()):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use cpu, cuda or cuda:N (mps, xpu)")
    return text.strip()


def columns(text: str) -> tuple[str, ...]:
    try:
        return parse_columns(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def machine_spec(text: str) -> str:
    """The roofline spec as given, once checked: a preset takes the precision of the report's
    dtype, known only after profiling."""
    try:
        machine(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs printed as written; an option's default after its help, unless
    the help already says it or there is none to say (flags, options without a value)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default == argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def wrap(text: str) -> str:
    return textwrap.fill(text, 88)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message, not the usage block."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        # no prefixes of options: "--tre" must not quietly mean --tree (nor a future option)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"convprof: error: {message}\n")


def compute_options(parser: argparse.ArgumentParser) -> None:
    """``--no-compute`` / ``--compute``; neither: zero compute first, a real pass if needed."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--no-compute",
        dest="compute",
        action="store_const",
        const=False,
        help="only count without arithmetic (model built on meta); fail if the model needs values",
    )
    group.add_argument(
        "--compute",
        dest="compute",
        action="store_const",
        const=True,
        help="always run a real forward pass on random inputs",
    )
    parser.set_defaults(compute=None)


def writable(path: Path, option: str) -> None:
    """Fail before any work when ``path`` cannot be written (missing folder, a directory, no
    permission), rather than after every model was profiled."""
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory")
    if path.exists() and not path.is_file():  # a FIFO would block the open below until read
        raise UsageError(f"{option} {path}: not a regular file")
    if not path.parent.is_dir():
        raise UsageError(f"{option} {path}: folder {str(path.parent)!r} does not exist")
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write: {exc.strerror}") from None
    if not existed:
        path.unlink()
