"""``convprof profile``: one model's layer table, from a spec."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from convprof.cli.options import (
    EXIT_CODES,
    UsageError,
    columns,
    compute_options,
    device,
    machine_spec,
    memory_size,
    parse_input,
    wrap,
    writable,
)
from convprof.cli.specs import Options, Profiled, profile_spec
from convprof.memory.fit import Fit, search_batch
from convprof.models.inputs import FLOATING
from convprof.rendering.columns import COLUMNS, check_columns
from convprof.rendering.plot import plot
from convprof.rendering.render import FORMATS, render
from convprof.report import OPTIMIZERS
from convprof.roofline import HARDWARE, PRECISIONS

_EXAMPLES = """examples:
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


def add_parser(commands: Any) -> None:
    prof = commands.add_parser(
        "profile",
        help="profile one model and print its layer table",
        description=wrap(
            "Build a model from a spec, count it and print its layer table and totals. By default "
            "the model is built on meta and counted without arithmetic (the same numbers, in a "
            "fraction of the time); a model whose forward needs tensor values is then counted with "
            "a real forward pass in eval mode under no_grad, with a note on stderr. A "
            "'package.module:callable' spec is imported from the current directory first, which "
            "runs its code."
        ),
        epilog=_EXAMPLES + EXIT_CODES,
    )
    _model_options(prof)
    _table_options(prof)
    compute_options(prof)
    _cost_options(prof)
    _parallel_options(prof)
    prof.add_argument(
        "--blocks", action="store_true", help="list separable blocks and inverted residuals instead of layers"
    )
    prof.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="also draw per-layer bars and a roofline scatter"
    )


def _model_options(prof: argparse.ArgumentParser) -> None:
    """What to profile: the spec, its inputs, dtype and precision."""
    prof.add_argument(
        "spec",
        help="'torchvision:NAME', 'transformers:NAME' (a directory with config.json, a model type "
        "such as llama, or a hub name; random weights, nothing but the config is downloaded), "
        "'timm:NAME' (random weights, at its configuration's input size) or "
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
    prof.add_argument(
        "--dtype", choices=sorted(FLOATING), default="float32", help="dtype of model and inputs"
    )
    prof.add_argument(
        "--autocast",
        choices=["bfloat16", "float16"],
        help="mixed precision: the forward under torch.autocast to this dtype, as --device would "
        "run it (the weights stay in --dtype; for peak memory, half-precision copies of them are "
        "held through the forward)",
    )


def _table_options(prof: argparse.ArgumentParser) -> None:
    """How to show it: format, roll-up, outline, columns."""
    prof.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="output format; csv gives plain numbers, of --columns when given, with --time's and "
        "--roofline's times; json with --depth is marked rolled up (convprof diff compares like with like)",
    )
    prof.add_argument("--depth", type=int, metavar="N", help="roll rows up to N name components")
    prof.add_argument(
        "--tree",
        action="store_true",
        help="every module as an indented outline, containers with everything below them "
        "(--depth limits the outline)",
    )
    prof.add_argument(
        "--columns",
        type=columns,
        metavar="KEYS",
        help=f"comma-separated columns to show, of: {', '.join(COLUMNS)}",
    )


def _cost_options(prof: argparse.ArgumentParser) -> None:
    """What else to count or predict: bytes, roofline, time, backward, peak memory, fit."""
    prof.add_argument(
        "--memory", action="store_true", help="add bytes moved and MACs per byte (arithmetic intensity)"
    )
    prof.add_argument(
        "--roofline",
        type=machine_spec,
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
        type=memory_size,
        metavar="SIZE",
        help="find the largest batch whose predicted peak fits in SIZE (e.g. 24GiB, 80GB), "
        "counted without arithmetic; the table is that batch's (implies --peak-memory)",
    )
    prof.add_argument(
        "--device",
        default="cpu",
        type=device,
        help="where a computing pass runs (cpu, cuda, cuda:1), and whose allocator --peak-memory "
        "predicts (CUDA rounds to 512-byte blocks); zero compute needs no device",
    )


def _parallel_options(prof: argparse.ArgumentParser) -> None:
    """A distributed training step, per rank (docs/parallel.md)."""
    prof.add_argument(
        "--parallel",
        metavar="PLAN",
        help="predict one training step per rank of a parallel plan, e.g. fsdp=8,tp=2 or "
        "pp=2,fsdp=4,schedule=gpipe (dimensions pp, dp, fsdp, tp, ep; options such as microbatches, "
        "schedule, reshard, param_dtype, routing: docs/parallel.md), through PyTorch's FSDP2, tensor, "
        "pipeline and expert parallelism in a fake process group: peak memory, MACs and collectives "
        "per rank class (implies --backward and --peak-memory; --input is one rank's micro-batch)",
    )
    prof.add_argument(
        "--accum",
        type=int,
        metavar="K",
        help="with --parallel: K micro-steps per optimizer step (gradient accumulation)",
    )
    prof.add_argument(
        "--checkpoint",
        metavar="blocks|selective|PATTERN",
        help="with --parallel: activation checkpointing (its forward runs again in the backward; the "
        "recompute's MACs are shown apart) of every repeated block, every block with torchtitan's op "
        "policy (selective), or the modules a name pattern (* for one part) or class names",
    )
    prof.add_argument(
        "--tp-plan",
        metavar="MODULE:FUNCTION",
        help="with --parallel tp=N: a function parallelize(model, mesh) for a model without a "
        "tensor-parallel plan of its own (transformers models have one)",
    )
    prof.add_argument(
        "--pp-split",
        metavar="MODULE:FUNCTION",
        help="with --parallel pp=N: a function stage(model, index, count) returning stage index's "
        "module, for a model convprof cannot cut itself (it cuts transformers decoders)",
    )


def _parallel_plan(args: argparse.Namespace) -> str | None:
    """The plan text with --accum in it, or None without --parallel."""
    if args.parallel is None:
        for option in ("accum", "tp_plan", "pp_split", "checkpoint"):
            if getattr(args, option) is not None:
                raise UsageError(f"--{option.replace('_', '-')} goes with --parallel")
        return None
    clash = next((o for o in ("time", "blocks", "autocast") if getattr(args, o)), None)
    if clash is not None:
        raise UsageError(f"--{clash} does not go with --parallel")
    if args.accum is not None and args.accum < 1:
        raise UsageError("--accum must be 1 or more")
    extra = (f",accum={args.accum}" if args.accum is not None else "") + (
        f",checkpoint={args.checkpoint}" if args.checkpoint else ""
    )
    return str(args.parallel) + extra


def _check_options(args: argparse.Namespace, peak: bool) -> None:
    """Options that do not go together, or values out of range: one line each."""
    if args.depth is not None and args.depth < 0:
        raise UsageError("--depth must be 0 or more")
    if args.past is not None and not 1 <= args.past <= MAX_PAST:
        raise UsageError(f"--past must be 1 to {MAX_PAST:,} tokens")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise UsageError(f"--plot writes PNG files: give a name ending in .png, not {str(args.plot)!r}")
    if args.plot is not None:
        writable(args.plot, "--plot")
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
    if not 1 <= args.repeats <= MAX_REPEATS:
        raise UsageError(f"--repeats must be 1 to {MAX_REPEATS:,}")
    for option in ("tree", "columns"):
        if args.blocks and getattr(args, option):
            raise UsageError(f"--{option} shapes the layer table; --blocks lists blocks instead")


# Beyond these a command only runs forever or overflows PyTorch's sizes: 10,000 timed passes
# is hours of a large model; 2**40 cached tokens is a thousand times any context there is.
MAX_REPEATS = 10_000
MAX_PAST = 2**40


def run(args: argparse.Namespace) -> int:
    parallel = _parallel_plan(args)
    if args.optimizer is not None or parallel is not None:
        args.backward = True
    peak = args.peak_memory or args.optimizer is not None or args.fit is not None or parallel is not None
    _check_options(args, peak)
    memory = ("cuda" if args.device.startswith("cuda") else "cpu") if peak else None
    options = Options(
        dtype=args.dtype,
        past=args.past,
        device=args.device,
        repeats=args.repeats if args.time else None,
        backward=args.backward,
        memory=memory,
        optimizer=args.optimizer,
        autocast=args.autocast,
        parallel=parallel,
        tp_plan=args.tp_plan,
        pp_split=args.pp_split,
    )
    fit = None
    if args.fit is not None:
        fit, found = _fit(args, options)
    else:
        found = profile_spec(args.spec, args.input, options, args.compute)
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


def _fit(args: argparse.Namespace, options: Options) -> tuple[Fit, Profiled]:
    """``--fit``: the largest batch whose peak fits, searched without arithmetic unless
    ``--compute`` says otherwise (a real forward at the batches tried could be huge), and the
    profile at that batch."""
    compute = False if args.compute is None else args.compute

    def at(batch: int) -> Profiled:
        return profile_spec(args.spec, args.input, replace(options, batch=batch), compute)

    try:
        fit = search_batch(lambda b: _peak_of(at(b)), args.fit)
        return fit, at(fit.batch if fit.batch else 1)
    except UsageError as exc:
        if args.compute is not None:
            raise
        reason = str(exc).removesuffix(" (run without --no-compute)").split("; profile with")[0]
        raise UsageError(
            f"{reason}; --fit searches without arithmetic: add --compute to search with real forwards"
        ) from None


def _peak_of(found: Profiled) -> int:
    """The peak to fit: the report's, or with a parallel plan its highest rank's."""
    if found.report.ranks:
        return max(rank.peak_bytes for rank in found.report.ranks)
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
