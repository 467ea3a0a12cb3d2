"""Command line: ``convprof profile``, ``convprof check``, ``convprof diff``.

A thin front end over the library; with the pytest plugin it is the only place that prints.
Exit status: 0 all good; 1 a budget or tolerance is broken; 2 a usage or configuration error
(bad spec, shape, file, TOML, quantity, or a model that rejects its input), always one line on
stderr, never a traceback; 3 an error inside convprof itself (one line, the traceback with
``CONVPROF_TRACEBACK=1``), so that CI never mistakes a crash for a broken budget; 130 an
interrupt.

``profile`` and ``check`` import the module a ``package.module:callable`` spec names and call
it, as pytest imports test files: the current directory (and, for ``check``, the config file's
directory) comes first on the import path.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import textwrap
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from convprof import __version__
from convprof.ci import baseline, config
from convprof.ci.budget import Check, checks
from convprof.memory.fit import Fit, search_batch
from convprof.models.inputs import FLOATING, Input, floating_bytes, make, merge, parse
from convprof.rendering.columns import COLUMNS, check_columns, parse_columns
from convprof.rendering.diff import render_diff
from convprof.rendering.plot import plot
from convprof.rendering.render import FORMATS, render
from convprof.rendering.tables import rows
from convprof.report import OPTIMIZERS, Report, Timing
from convprof.report.diff import compare
from convprof.report.tokens import TokenCost, token_cost
from convprof.roofline import HARDWARE, PRECISIONS, machine
from convprof.units import format_shape, parse_bytes, parse_tolerance

if TYPE_CHECKING:
    import torch

    from convprof.models.build import Loaded

# torch is imported by the commands that profile, not here: `convprof --help`, `--version`,
# `diff` and argument errors answer at once.
_DTYPES = FLOATING
_PROFILE_EXAMPLES = """examples:
  convprof profile torchvision:mobilenet_v2                  the layer table at the weights' crop
  convprof profile torchvision:resnet50 --depth 1            one row per top-level block
  convprof profile torchvision:resnet18 --tree --depth 2     an outline, as torchinfo prints
  convprof profile mymodels:build --input 1,3,256,256        your own model (mymodels.py here)
  convprof profile transformers:llama-3-8b --past 2048       one decoding step after 2,048 tokens
  convprof profile torchvision:vit_b_16 --backward           a training step's MACs (dX and dW)
  convprof profile torchvision:resnet50 --optimizer adam --device cuda --fit 24GiB
                                                             the largest batch that fits in 24 GiB
  convprof profile torchvision:resnet50 --format json > report.json

"""
_EXIT_CODES = """exit status:
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


def _tolerance(text: str) -> float:
    try:
        return parse_tolerance(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _memory_size(text: str) -> int:
    try:
        size = parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"a memory size must be more than 0 bytes, got {text!r}")
    return size


def _columns(text: str) -> tuple[str, ...]:
    try:
        return parse_columns(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _machine(text: str) -> str:
    """The roofline spec as given, once checked: a preset takes the precision of the report's
    dtype, known only after profiling."""
    try:
        machine(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs printed as written; an option's default after its help, unless
    the help already says it or there is none to say (flags, options without a value)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default == argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def _wrap(text: str) -> str:
    return textwrap.fill(text, 88)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message, not the usage block."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        # no prefixes of options: "--tre" must not quietly mean --tree (nor a future option)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"convprof: error: {message}\n")


def _compute_options(parser: argparse.ArgumentParser) -> None:
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


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="convprof",
        description=_wrap(
            "Exact params, MACs and FLOPs of PyTorch models, per layer and in total. "
            "MACs = multiply-accumulates of convolutions, linear layers, matmuls and attention, "
            "bias excluded; FLOPs = 2 x MACs."
        ),
        epilog=_EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"convprof {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    prof = commands.add_parser(
        "profile",
        help="profile one model and print its layer table",
        description=_wrap(
            "Build a model from a spec, count it and print its layer table and totals. By default "
            "the model is built on meta and counted without arithmetic (the same numbers, in a "
            "fraction of the time); a model whose forward needs tensor values is then counted with "
            "a real forward pass in eval mode under no_grad, with a note on stderr. A "
            "'package.module:callable' spec is imported from the current directory first, which "
            "runs its code."
        ),
        epilog=_PROFILE_EXAMPLES + _EXIT_CODES,
    )
    prof.add_argument(
        "spec",
        help="'torchvision:NAME', 'transformers:NAME' (a directory with config.json, a model type "
        "such as llama, or a hub name; random weights, nothing but the config is downloaded) or "
        "'package.module:callable' (a function or class that returns the model); any of them may "
        "end with keyword arguments as Python literals, e.g. 'torchvision:resnet50(num_classes=10)'",
    )
    prof.add_argument(
        "--input",
        type=parse_input,
        action="append",
        metavar="[NAME=]SHAPE[:DTYPE]",
        help="an input such as 1,3,224,224, 1,128:int64 (token ids) or attention_mask=1,128:int64 "
        "(a keyword input); repeat for several (default for torchvision: the weights' evaluation "
        "crop; for transformers: 128 tokens, or the model's image, clip or audio size)",
    )
    prof.add_argument(
        "--past",
        type=int,
        metavar="N",
        help="language models: profile one decoding step after N cached tokens (a real key/value "
        "cache), and report the prefill of those N tokens beside it",
    )
    prof.add_argument("--dtype", choices=sorted(_DTYPES), default="float32", help="dtype of model and inputs")
    prof.add_argument(
        "--autocast",
        choices=["bfloat16", "float16"],
        help="mixed precision: the forward under torch.autocast to this dtype, as --device would "
        "run it (the weights stay in --dtype; for peak memory, half-precision copies of them are "
        "held through the forward)",
    )
    prof.add_argument("--format", choices=FORMATS, default="table", help="output format")
    prof.add_argument("--depth", type=int, metavar="N", help="roll rows up to N name components")
    prof.add_argument(
        "--tree",
        action="store_true",
        help="every module as an indented outline, containers with everything below them "
        "(--depth limits the outline)",
    )
    prof.add_argument(
        "--columns",
        type=_columns,
        metavar="KEYS",
        help=f"comma-separated columns to show, of: {', '.join(COLUMNS)}",
    )
    _compute_options(prof)
    prof.add_argument(
        "--memory", action="store_true", help="add bytes moved and MACs per byte (arithmetic intensity)"
    )
    prof.add_argument(
        "--roofline",
        type=_machine,
        metavar="MACHINE",
        help="mark rows memory- or compute-bound and give their share of the roofline time: a "
        f"balance in MACs/byte, or one of {', '.join(HARDWARE)} at the precision of --dtype "
        f"(or PRESET:PRECISION, e.g. h100:tf32; precisions {', '.join(PRECISIONS)})",
    )
    prof.add_argument(
        "--time",
        action="store_true",
        help="also run the model for real and measure each leaf layer (median and spread of "
        "--repeats passes, GMAC/s, GB/s; with --roofline the predicted time and measured / predicted)",
    )
    prof.add_argument("--repeats", type=int, default=10, metavar="N", help="timed passes for --time")
    prof.add_argument(
        "--backward",
        action="store_true",
        help="also count a training step's backward pass per layer (gradients w.r.t. inputs and "
        "weights, of the sum of the outputs), from the operators that run",
    )
    prof.add_argument(
        "--peak-memory",
        action="store_true",
        help="predict peak memory from tensor lifetimes, per layer and in total, without running "
        "(an inference forward; with --backward or --optimizer a training step), for the "
        "allocator of --device",
    )
    prof.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help="a training step's peak memory with this optimizer's state and update (implies "
        "--backward and --peak-memory; momentum is SGD with momentum 0.9)",
    )
    prof.add_argument(
        "--fit",
        type=_memory_size,
        metavar="SIZE",
        help="find the largest batch whose predicted peak fits in SIZE (e.g. 24GiB, 80GB), "
        "counted without arithmetic; the table is that batch's (implies --peak-memory)",
    )
    prof.add_argument(
        "--device",
        default="cpu",
        help="where a computing pass runs (cpu, cuda, cuda:1), and whose allocator --peak-memory "
        "predicts (CUDA rounds to 512-byte blocks); zero compute needs no device",
    )
    prof.add_argument(
        "--blocks", action="store_true", help="list separable blocks and inverted residuals instead of layers"
    )
    prof.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="also draw per-layer bars and a roofline scatter"
    )

    chk = commands.add_parser(
        "check",
        help="hold every configured model to its budget",
        description=_wrap(
            "Profile every [[tool.convprof.models]] entry of the config file and compare it "
            "with its limits and, with --baseline, with the recorded numbers. Specs are imported from "
            "the config file's directory and the current directory first."
        ),
        epilog=_EXIT_CODES,
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
        type=_tolerance,
        default=0.0,
        metavar="PCT",
        help="allowed growth over the baseline, a percentage: 2%% or 2 (both 2 percent; default 0%%)",
    )
    chk.add_argument("--write-baseline", type=Path, metavar="FILE", help="record the current numbers")
    chk.add_argument("--format", choices=("table", "markdown"), default="table", help="summary format")
    _compute_options(chk)

    calc = commands.add_parser(
        "conv",
        help="compare standard, grouped, depthwise and separable convolutions",
        description=_wrap(
            "Params, MACs (and with --memory, bytes moved) of the ways to map C_in to C_out "
            "channels with a K x K kernel on a 1 x C_in x S x S input: the tutorial's comparison for "
            "any shape. Nothing is computed."
        ),
        epilog=_EXIT_CODES,
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

    dif = commands.add_parser(
        "diff",
        help="what changed between two report or baseline files",
        description=_wrap(
            "Totals and changed layers between two single reports (profile --format json) "
            "or two baselines (check --write-baseline); Markdown is ready to post on a pull request."
        ),
        epilog=_EXIT_CODES,
    )
    dif.add_argument("old", type=Path, help="the earlier report or baseline (JSON)")
    dif.add_argument("new", type=Path, help="the later report or baseline (JSON)")
    dif.add_argument("--format", choices=("table", "markdown"), default="table", help="output format")
    dif.add_argument(
        "--tolerance",
        type=_tolerance,
        metavar="PCT",
        help="exit 1 when a total grew by more than this percentage: 2%% or 2 (both 2 percent)",
    )
    return parser


def _memory() -> int:
    """Physical memory in bytes (0 when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _inputs(
    chosen: Sequence[Input], dtype: str, compute: bool, id_limit: int | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    size = floating_bytes(chosen, dtype) if compute else 0
    memory = _memory()
    if memory and size > memory // 2:
        raise UsageError(
            f"the inputs take {size / 1e9:.1f} GB, more than half of this machine's memory "
            f"({memory / 1e9:.1f} GB): profile with --no-compute, which allocates nothing"
        )
    try:
        return make(chosen, dtype=dtype, compute=compute, id_limit=id_limit)
    except (RuntimeError, MemoryError) as exc:
        raise UsageError(
            f"cannot allocate inputs of {size / 1e9:.1f} GB ({str(exc).splitlines()[0]}): "
            "profile with --no-compute"
        ) from None


def _writable(path: Path, option: str) -> None:
    """Fail before any work when ``path`` cannot be written (missing folder, a directory, no
    permission), rather than after every model was profiled."""
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory")
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


class _NeedsValues(Exception):
    """A zero-compute pass of the automatic mode stopped: count with a real forward instead."""


@dataclass(frozen=True)
class _Profiled:
    report: Report
    tokens: TokenCost | None = None  # language models: the per-token figures
    timing: Timing | None = None  # --time: measured per layer


def _profile_spec(
    spec: str,
    given: Sequence[Input] | None,
    dtype: str = "float32",
    *,
    compute: bool | None = None,
    folders: Sequence[Path] = (),
    past: int | None = None,
    device: str = "cpu",
    repeats: int | None = None,
    backward: bool = False,
    memory: str | None = None,
    optimizer: str | None = None,
    batch: int | None = None,
    missing_input: str = "give --input",
    autocast: str | None = None,
) -> _Profiled:
    """Build the spec's model and profile it on made-up inputs: without arithmetic when
    ``compute`` is False, with a real forward when True, and when None (the default) without
    arithmetic first, then for real if the model needs tensor values. ``repeats`` measures
    each layer's time too (a real model, so a computing pass); ``backward`` counts a
    backward pass too; ``memory`` (a device) predicts peak memory, of a training step with
    ``optimizer``; ``batch`` replaces every input's first size; ``autocast`` (a dtype) runs the
    forward under mixed precision."""
    if repeats is not None:
        if compute is False:
            raise UsageError("--time runs the model for real: it cannot go with --no-compute")
        compute = True
    once = functools.partial(
        _profile_once,
        spec,
        given or (),
        dtype,
        folders=folders,
        past=past,
        device=device,
        repeats=repeats,
        backward=backward,
        memory=memory,
        optimizer=optimizer,
        batch=batch,
        missing_input=missing_input,
        autocast=autocast,
    )
    if compute is not None:
        return once(compute=compute)
    try:
        return once(compute=False, automatic=True)
    except _NeedsValues as exc:
        reason = str(exc)
    # a model that fails for real too gets that error alone; one that runs gets a note
    found = once(compute=True, repeat=True)
    print(f"convprof: note: {reason}; counted with a real forward pass instead", file=sys.stderr)
    return found


def _load(spec: str, compute: bool, folders: Sequence[Path], automatic: bool) -> Loaded:
    from convprof.models.build import SpecError
    from convprof.models.load import load

    try:
        loaded = load(spec, meta=not compute, folders=folders or (Path.cwd(),))
    except SpecError as exc:
        if automatic and " failed: " in str(exc):  # e.g. a builder that quantizes reads values:
            # build it for real; a bad spec fails there again, with that error alone
            reason = str(exc).splitlines()[0].split(" failed: ", 1)[-1]
            raise _NeedsValues(f"{spec} cannot be built on the meta device ({reason})") from None
        raise UsageError(str(exc)) from None
    if loaded.note and not automatic:
        print(f"convprof: note: {loaded.note}", file=sys.stderr)
    return loaded


def _run(
    model: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    compute: bool,
    automatic: bool,
    backward: bool = False,
    memory: str | None = None,
    optimizer: str | None = None,
    autocast: str | None = None,
) -> Report:
    from convprof.api import profile
    from convprof.record.errors import ForwardError, ValuesNeeded

    try:
        return profile(
            model,
            args,
            kwargs,
            compute=compute,
            backward=backward,
            memory=memory or False,
            optimizer=optimizer,
            autocast=autocast,
        )
    except ForwardError as exc:  # ValuesNeeded included
        first = str(exc).splitlines()[0]
        if automatic:  # whatever stopped the zero-compute pass, a real forward may not stop
            raise _NeedsValues(first.split("; profile with")[0]) from None
        hint = " (run without --no-compute)" if isinstance(exc, ValuesNeeded) else ""
        raise UsageError(first + hint) from None


def _token_ids(loaded: Loaded, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The token ids a language model was given: its main input, when that is integer."""
    if loaded.text is None or loaded.main != "input_ids":
        return None
    ids: torch.Tensor | None = kwargs.get("input_ids", args[0] if args else None)
    if ids is None or ids.dtype.is_floating_point or ids.dim() == 0:
        return None
    return ids


def _note_unknown_keywords(model: Any, chosen: Sequence[Input]) -> None:
    """Say so when a keyword input is not a parameter of the forward but goes to its
    ``**kwargs`` (transformers models take any name there and ignore most): a typo would
    otherwise pass unnoticed. A forward without ``**kwargs`` rejects the name itself."""
    import inspect

    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return
    for item in chosen:
        if item.name is not None and item.name not in parameters:
            print(
                f"convprof: note: {type(model).__name__}.forward has no parameter {item.name!r}; "
                "it was passed in its **kwargs",
                file=sys.stderr,
            )


def _profile_once(
    spec: str,
    given: Sequence[Input],
    dtype: str,
    *,
    compute: bool,
    folders: Sequence[Path],
    past: int | None = None,
    automatic: bool = False,
    repeat: bool = False,
    device: str = "cpu",
    repeats: int | None = None,
    backward: bool = False,
    memory: str | None = None,
    optimizer: str | None = None,
    batch: int | None = None,
    missing_input: str = "give --input",
    autocast: str | None = None,
) -> _Profiled:
    import torch

    from convprof.models.transformers import cache, cache_keyword
    from convprof.record.timing import measure

    loaded = _load(spec, compute, folders, automatic)
    if past is not None and not loaded.decoder:
        raise UsageError(
            f"--past needs a decoder-only language model ('transformers:' spec); {spec} is not one"
        )
    defaults = loaded.inputs or ()
    if past is not None and defaults:  # one new token after the cached ones
        defaults = (replace(defaults[0], shape=(defaults[0].shape[0], 1)),)
    chosen = merge(given, defaults, loaded.main)
    if not chosen:
        raise UsageError(f"no input shape for {spec!r}: {missing_input}")
    if batch is not None:
        chosen = tuple(
            replace(item, shape=(batch, *item.shape[1:])) if item.shape else item for item in chosen
        )
    model = loaded.model.to(getattr(torch, dtype))
    if not repeat:
        _note_unknown_keywords(model, chosen)
    torch.manual_seed(0)
    args, kwargs = _inputs(chosen, dtype, compute, loaded.id_limit)
    if compute and device != "cpu":
        try:
            where = torch.device(device)
            model = model.to(where)
        except (RuntimeError, AssertionError) as exc:
            raise UsageError(f"--device {device}: {str(exc).splitlines()[0]}") from None
        args = tuple(a.to(where) if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {k: v.to(where) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    ids = _token_ids(loaded, args, kwargs)
    prefill = None
    if past is not None:
        if ids is None:
            raise UsageError("--past needs integer token ids as the model's input (e.g. --input 1,1:int64)")
        (before,), _ = _inputs([Input((ids.shape[0], past), "int64")], dtype, compute, loaded.id_limit)
        prefill = _run(model, (), {"input_ids": before}, compute, automatic, autocast=autocast).total.macs
        kwargs[cache_keyword(model)] = cache(model, before if compute else before.to("meta"))
        kwargs.setdefault("use_cache", True)
    report = _run(model, args, kwargs, compute, automatic, backward, memory, optimizer, autocast)
    tokens = None
    if ids is not None and loaded.text is not None:
        tokens = token_cost(
            macs=report.total.macs,
            params=report.total.params,
            shape=loaded.text,
            batch=ids.shape[0] if ids.dim() > 1 else 1,
            new=ids.shape[-1],
            past=past or 0,
            prefill_macs=prefill,
            train_macs=report.total.train_macs if report.backward else None,
        )
    timing = None
    if repeats is not None:
        try:
            timing = measure(model, args, kwargs, repeats=repeats)
        except Exception as exc:  # it ran once already: a second failure is the model's
            raise UsageError(
                f"--time: the model failed when run again: {type(exc).__name__}: {exc}"
            ) from None
    return _Profiled(report, tokens, timing)


def _cmd_profile(args: argparse.Namespace) -> int:
    if args.depth is not None and args.depth < 0:
        raise UsageError("--depth must be 0 or more")
    if args.past is not None and args.past <= 0:
        raise UsageError("--past must be 1 or more")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise UsageError(f"--plot writes PNG files: give a name ending in .png, not {str(args.plot)!r}")
    if args.plot is not None:
        _writable(args.plot, "--plot")
    if args.optimizer is not None:
        args.backward = True
    peak = args.peak_memory or args.optimizer is not None or args.fit is not None
    if args.autocast is not None and args.time:
        raise UsageError("--time measures the model as it is: it does not go with --autocast")
    if peak and (args.time or args.blocks):
        clash = "--time" if args.time else "--blocks"
        raise UsageError(f"{clash} does not go with peak memory (--peak-memory, --optimizer, --fit)")
    if args.columns:
        try:
            check_columns(
                args.columns,
                roofline=args.roofline is not None,
                timing=args.time,
                backward=args.backward,
                peak=peak,
            )
        except ValueError as exc:
            raise UsageError(f"--columns: {exc}") from None
    if args.repeats < 1:
        raise UsageError("--repeats must be 1 or more")
    for option in ("tree", "columns"):
        if args.blocks and getattr(args, option):
            raise UsageError(f"--{option} shapes the layer table; --blocks lists blocks instead")
    memory = ("cuda" if args.device.startswith("cuda") else "cpu") if peak else None
    profile_at = functools.partial(
        _profile_spec,
        args.spec,
        args.input,
        args.dtype,
        compute=args.compute,
        past=args.past,
        device=args.device,
        repeats=args.repeats if args.time else None,
        backward=args.backward,
        memory=memory,
        optimizer=args.optimizer,
        autocast=args.autocast,
    )
    fit = None
    if args.fit is not None:
        if args.compute is None:  # shapes only: a real forward at the batches tried could be huge
            profile_at = functools.partial(profile_at, compute=False)
        try:
            fit = search_batch(lambda b: _peak_of(profile_at(batch=b)), args.fit)
            found = profile_at(batch=fit.batch if fit.batch else 1)
        except UsageError as exc:
            if args.compute is not None:
                raise
            reason = str(exc).removesuffix(" (run without --no-compute)").split("; profile with")[0]
            raise UsageError(
                f"{reason}; --fit searches without arithmetic: add --compute to search with real forwards"
            ) from None
    else:
        found = profile_at()
    report = found.report
    try:
        text = render(
            report,
            depth=args.depth,
            format=args.format,
            memory=args.memory,
            roofline=args.roofline,
            blocks=args.blocks,
            tokens=found.tokens,
            tree=args.tree,
            columns=args.columns,
            timing=found.timing,
        )
    except ValueError as exc:  # a column that needs an option not given
        raise UsageError(str(exc)) from None
    if fit is not None:
        text = _with_fit(text, fit, args.format)
    sys.stdout.write(text)
    if args.plot is not None:
        try:
            plot(report, args.plot, roofline=args.roofline, timing=found.timing)
        except (ImportError, OSError) as exc:
            raise UsageError(str(exc)) from None
        print(f"convprof: plot written to {args.plot}", file=sys.stderr)
    return 1 if fit is not None and not fit.batch else 0


def _peak_of(found: _Profiled) -> int:
    memory = found.report.memory
    assert memory is not None  # asked for
    return memory.peak_bytes


def _with_fit(text: str, fit: Fit, format: str) -> str:
    """The search's answer after the table (in JSON, as a ``fit`` object)."""
    if format == "json":
        data = json.loads(text)
        data["fit"] = fit.to_dict()
        return json.dumps(data, indent=2) + "\n"
    line = f"Fit:          {fit.describe()}"
    return text + (f"{line}  \n" if format == "markdown" else f"{line}\n")


def _summary_rows(name: str, found: Sequence[Check]) -> list[list[str]]:
    """One row per total limit; per layer pattern and metric, the module with least headroom."""
    worst: dict[tuple[str | None, str], tuple[Check, int]] = {}
    for check in found:
        key = (check.pattern, check.metric)
        best, count = worst.get(key, (check, 0))
        worst[key] = (check if check.headroom < best.headroom else best, count + 1)
    out = []
    for (pattern, metric), (check, count) in worst.items():
        label = (
            metric
            if pattern is None
            else f"{metric} [{check.scope}"
            + (f", worst of {count} matching {pattern!r}]" if count > 1 else "]")
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


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        entries = config.load(args.config)
        base = baseline.read(args.baseline) if args.baseline else {}
    except (config.ConfigError, baseline.BaselineError) as exc:
        raise UsageError(str(exc)) from None
    if args.write_baseline:
        _writable(args.write_baseline, "--write-baseline")
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
        report = _profile_spec(
            entry.model,
            entry.inputs,
            compute=args.compute,
            folders=folders,
            backward=entry.budget.needs_backward,
            memory=entry.budget.device if entry.budget.needs_memory else None,
            optimizer=entry.budget.optimizer,
            autocast=entry.budget.autocast,
            missing_input=f"give it an 'input' in its [[tool.convprof.models]] entry of {args.config}",
        ).report
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
            # FLOPs are 2 x MACs: a FLOPs row against the baseline would repeat the MACs row; a
            # training step is compared when both counted one (a max_train_macs budget), the
            # peak when both predicted one (a max_peak_bytes budget)
            held = base[entry.name]
            figures = {
                metric: (getattr(held.total, metric), getattr(report.total, metric))
                for metric in ("params", "macs")
            }
            if report.backward and held.backward:
                figures["train_macs"] = (held.total.train_macs, report.total.train_macs)
            if report.memory is not None and held.memory is not None:  # a max_peak_bytes budget on both
                figures["peak_bytes"] = (held.memory.peak_bytes, report.memory.peak_bytes)
            for metric, (old, new) in figures.items():
                limit = int(old * (1 + args.tolerance))
                check = Check("total", metric, new, max(limit, old))
                bad |= not check.ok
                table.append(
                    [
                        entry.name,
                        f"{metric} vs baseline {old:,}",
                        f"{new:,}",
                        f"{check.limit:,}",
                        f"{100 * check.headroom:.1f}%",
                        "ok" if check.ok else "FAIL",
                    ]
                )
        elif args.baseline:
            table.append([entry.name, "baseline", "", "", "", "not in baseline"])
        over += bad
    headers = ("Model", "Metric", "Actual", "Limit", "Headroom", "Status")
    if args.format == "table" and _colour(sys.stdout):
        table = [[*row[:-1], _paint(row[-1])] for row in table]
    sys.stdout.write(rows(headers, table, format=args.format))
    n = len(entries)
    sys.stdout.write(
        f"\n{over} of {n} model{'s' if n != 1 else ''} over budget.\n"
        if over
        else f"\n{'All ' if n > 1 else ''}{n} model{'s' if n != 1 else ''} within budget.\n"
    )
    if args.write_baseline:
        try:
            args.write_baseline.write_text(baseline.dumps(reports))
        except OSError as exc:
            raise UsageError(
                f"--write-baseline {args.write_baseline}: cannot write: {exc.strerror}"
            ) from None
        print(f"convprof: baseline written to {args.write_baseline}", file=sys.stderr)
    return 1 if over else 0


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


def _cmd_diff(args: argparse.Namespace) -> int:
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


def _cmd_conv(args: argparse.Namespace) -> int:
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


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "profile": _cmd_profile,
    "check": _cmd_check,
    "diff": _cmd_diff,
    "conv": _cmd_conv,
}


_VALUED = ("--input", "--tolerance", "--past")
# What a missing package is needed for, and how to get it.
_PACKAGES = {
    "torch": "profiling needs PyTorch, which is not installed: pip install torch (see the README "
    "for a CPU-only build)",
    "torchvision": "torchvision: specs need torchvision, which is not installed: pip install torchvision",
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
