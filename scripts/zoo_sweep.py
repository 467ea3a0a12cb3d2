"""Sweep the model zoos people use: every timm architecture, a catalogue of transformers
architectures (tests/hf_models.py) and every transformers model type at its default widths
with two layers (tests/hf_defaults.py), each counted by FlopCounterMode on meta and by convprof on
the CPU, with compute=False and on meta (tests/zoo_check.py says what each status means).

    python scripts/zoo_sweep.py timm --out timm.jsonl [--shard 1/2] [--filter 'resnet*']
    python scripts/zoo_sweep.py transformers --out hf.jsonl
    python scripts/zoo_sweep.py transformers-defaults --out hfd.jsonl --shard 1/2 --max-params 2e9
    python scripts/zoo_sweep.py timm --out timm2.jsonl --redo timm.jsonl --max-cpu-macs 3e10
    python scripts/zoo_sweep.py table timm.jsonl timm2.jsonl hf.jsonl > table.md

Results are appended one JSON line per model, so an interrupted sweep resumes where it
stopped; ``--redo`` runs again, with larger limits, the models whose CPU or zero-compute pass
an earlier sweep skipped, that had no FlopCounterMode count or were not exact, and ``table``
keeps the last row of each model.
Models are built with random weights (``pretrained=False``), never downloaded.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hf_defaults import entry, sweepable
from hf_models import entries
from zoo_check import Inputs, Outcome, check, timm_model

from convprof.units import format_quantity


class ModelTimeout(BaseException):
    """Raised by the alarm; a BaseException so that no handler on the way swallows it."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise ModelTimeout


def timm_models(pattern: str) -> Iterator[tuple[str, Callable[[], torch.nn.Module], Callable[[], Inputs]]]:
    import timm

    for name in timm.list_models(pattern or "*"):
        yield name, *timm_model(name)


def hf_models(pattern: str) -> Iterator[tuple[str, Callable[[], torch.nn.Module], Callable[[], Inputs]]]:
    for name, _, build, inputs in entries():
        if fnmatch.fnmatch(name, pattern or "*"):
            yield name, build, inputs


Model = tuple[str, Callable[[], torch.nn.Module], Callable[[], Inputs]]


def hf_default_models(pattern: str) -> Iterator[Model]:
    """Every model type with a base model class; its configuration and inputs are worked out
    when the sweep reaches it (under the model's time limit), and a type the sweep cannot build
    becomes a "not built" row with the reason."""
    for name in sweepable():
        if fnmatch.fnmatch(name, pattern or "*"):
            get = functools.cache(functools.partial(entry, name))
            yield name, (lambda get=get: get()[0]()), (lambda get=get: get()[1]())


def sweep(args: argparse.Namespace) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    done = {json.loads(line)["name"] for line in out.read_text().splitlines()} if out.exists() else set()
    zoos = {"timm": timm_models, "transformers": hf_models, "transformers-defaults": hf_default_models}
    models = list(zoos[args.zoo](args.filter))
    if args.redo:
        earlier = [json.loads(line) for line in Path(args.redo).read_text().splitlines()]
        again = {
            row["name"]
            for row in earlier
            if row["skipped"] or row["flop_counter"] is None or row["status"] != "exact"
        }
        models = [m for m in models if m[0] in again]
    index, count = (int(v) for v in args.shard.split("/"))
    models = [m for i, m in enumerate(models) if i % count == index - 1]
    signal.signal(signal.SIGALRM, _alarm)
    for position, (name, build, inputs) in enumerate(models, 1):
        if name in done:
            continue
        start = time.perf_counter()
        signal.alarm(args.timeout)
        try:
            outcome = check(
                args.zoo,
                name,
                build,
                inputs,
                max_real_params=int(args.max_params),
                max_cpu_macs=int(args.max_cpu_macs),
                oracle_on_cpu=args.zoo.startswith("transformers"),
            )
        except ModelTimeout:
            outcome = Outcome(args.zoo, name, note=f"not built: over the sweep's {args.timeout} s limit")
            outcome.seconds = time.perf_counter() - start
        finally:
            signal.alarm(0)
        with out.open("a") as f:
            f.write(json.dumps(outcome.to_dict()) + "\n")
        print(f"[{position}/{len(models)}] {name}: {outcome.status} ({outcome.seconds:.1f} s)", flush=True)
    return 0


def _macs(macs: int | None) -> str:
    return "" if macs is None else format_quantity(macs, 3)


def _modes(row: dict[str, Any]) -> str:
    parts = []
    for mode in ("cpu", "no_compute", "meta"):
        if mode in row["macs"]:
            parts.append(mode)
        elif mode in row["refused"]:
            parts.append(f"{mode}: refused")
        elif mode in row["skipped"]:
            parts.append(f"{mode}: skipped")
    return ", ".join(parts)


def _why(row: dict[str, Any]) -> str:
    if row["crashed"]:
        return "; ".join(f"{m}: {e}" for m, e in row["crashed"].items())
    if row["incomplete"]:
        return "unexplained: " + ", ".join(sorted({op for ops in row["incomplete"].values() for op in ops}))
    if row["status"] == "differs":
        return f"convprof {row['macs']} vs FlopCounterMode {row['flop_counter']}"
    if row["refused"]:
        message = next(iter(row["refused"].values()))
        return message.split(": ", 1)[-1].split("; profile with")[0]
    if row["status"] == "not built":
        return row["note"].removeprefix("not built: ")
    return str(row["note"])  # where the oracle came from, or why there is none


def table(args: argparse.Namespace) -> int:
    latest = {}
    for path in args.files:
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            latest[(row["zoo"], row["name"])] = row  # a later sweep of the same model wins
    rows = list(latest.values())
    for zoo in dict.fromkeys(row["zoo"] for row in rows):
        mine = [row for row in rows if row["zoo"] == zoo]
        statuses = Counter(row["status"] for row in mine)
        summary = ", ".join(f"{n} {status}" for status, n in statuses.most_common())
        print(f"### {zoo}: {len(mine)} models: {summary}\n")
        if not args.all:
            mine = [row for row in mine if row["status"] != "exact" or row["skipped"]]
            print("Rows other than exact on all three passes:\n")
        print("| model | input | params | MACs (FlopCounterMode) | MACs (convprof) | passes | status | why |")
        print("|---|---|---|---|---|---|---|---|")
        for row in sorted(mine, key=lambda r: r["name"]):
            macs = sorted(set(row["macs"].values()))
            params = "" if row["params"] is None else f"{row['params']:,}"
            why = _why(row).replace("|", "\\|")
            print(
                f"| {row['name']} | {row['input']} | {params} | {_macs(row['flop_counter'])} | "
                f"{' / '.join(_macs(m) for m in macs)} | {_modes(row)} | {row['status']} | {why} |"
            )
        print()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for zoo in ("timm", "transformers", "transformers-defaults"):
        run = sub.add_parser(zoo, help=f"sweep {zoo}")
        run.set_defaults(zoo=zoo, func=sweep)
        run.add_argument("--out", required=True, help="JSON lines file (appended; resumes)")
        run.add_argument("--filter", default="", help="fnmatch pattern of model names")
        run.add_argument("--shard", default="1/1", help="K/N: every N-th model from the K-th")
        run.add_argument("--timeout", type=int, default=300, help="seconds per model (default 300)")
        run.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
        run.add_argument(
            "--max-params", type=float, default=4e8, help="real weights up to this (default 4e8)"
        )
        run.add_argument(
            "--max-cpu-macs", type=float, default=1e10, help="CPU pass up to this (default 1e10)"
        )
        run.add_argument(
            "--redo",
            metavar="JSONL",
            help="only models an earlier sweep skipped a pass of, had no oracle for or did not find exact",
        )
    show = sub.add_parser("table", help="Markdown table of sweep results")
    show.add_argument("files", nargs="+")
    show.add_argument("--all", action="store_true", help="every model, not only the rows worth reading")
    show.set_defaults(func=table)
    args = parser.parse_args()
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
