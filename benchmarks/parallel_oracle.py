"""convprof's parallel step per rank against real multi-process runs, and the anchors beside it.

Usage:
    python benchmarks/parallel_oracle.py [CASE ...] [--markdown]

For each case of tests/parallel_models.py (default: all), the real run is
``torchrun --nproc_per_node N tests/parallel_oracle.py CASE OUT adamw anchors`` with gloo on
the CPU (``OMP_NUM_THREADS=1``), and the prediction is ``convprof.profile(..., parallel=...)``
on the same model, input and plan. Per rank class, the table gives:

- measured: the real rank's peak (least of 6 steps after a warm-up), every allocation, and
  ``dispatched``: without gloo's own allocations (see tests/parallel_oracle.py);
- convprof: the prediction and its error against ``dispatched`` (and what gloo adds on top);
- FSDPMemTracker: PyTorch's tracker over one real step after the warm-up (FSDP plans only);
- DeepSpeed ZeRO-3: ``estimate_zero3_model_states_mem_needs``' closed form,
  ``4 x largest layer + 18 x params / ranks`` bytes (model states only, no activations);
- Megatron: ``16 x params / ranks`` of model states (fp32 AdamW, sharded as ZeRO-3 would)
  plus Megatron's activation formula per layer (Korthikanti et al. 2022, no recompute):
  ``s b h (34 + 5 a s / h)`` bytes, with tensor parallelism ``s b h (10 + 24 / t + 5 a s / (h t))``
  (Llama cases; the formula assumes 2-byte activations, these run in fp32 and bf16); neither
  closed form is given for a pipeline's stages;
- whether every collective (kind, phase, group, count, payload) matched, and how long the
  prediction took.

Timings are of this machine; nothing here is asserted (tests/test_parallel.py holds the test
cases to 1%).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import parallel_models  # noqa: E402
import parallel_oracle  # noqa: E402

import convprof  # noqa: E402


def _real(case: str, world: int) -> dict[int, dict[str, Any]]:
    out = Path(tempfile.mkdtemp())
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    done = subprocess.run(
        [
            torchrun,
            "--nproc_per_node",
            str(world),
            str(ROOT / "tests/parallel_oracle.py"),
            case,
            str(out),
            "adamw",
            "anchors",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=900,
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return {r: json.loads((out / f"rank{r}.json").read_text()) for r in range(world)}


def _deepspeed(model: torch.nn.Module, ranks: int) -> int:
    params = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return 4 * largest + 18 * params // ranks


def _megatron(model: torch.nn.Module, case: parallel_models.Case, x: torch.Tensor) -> int | None:
    config = getattr(model, "config", None)
    if config is None or getattr(config, "num_local_experts", None):  # a dense template
        return None
    s, b = x.shape[1], x.shape[0]
    h, a, layers = config.hidden_size, config.num_attention_heads, config.num_hidden_layers
    t = int(case.parallel.get("tp", 1))
    per_layer = (
        s * b * h * (34 + 5 * a * s / h) if t == 1 else s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    )
    ranks = case.world
    return int(16 * sum(p.numel() for p in model.parameters()) // ranks + layers * per_layer)


def _pct(value: float | None, truth: int) -> str:
    if value is not None and value < 0:
        return "refuses (a module runs twice in the step)"
    return "" if value is None else f"{value:,.0f} ({100 * (value - truth) / truth:+.1f}%)"


def row(name: str) -> list[list[str]]:
    case = parallel_models.CASES[name]
    real = _real(name, case.world)
    torch.manual_seed(0)
    model, x = case.build(), case.input()
    start = time.perf_counter()
    report = convprof.profile(model, x, **case.profile_options())
    seconds = time.perf_counter() - start
    staged = "pp" in case.parallel  # the closed forms below are of a whole model per rank
    rows = []
    # the worst routing is every rank's bound; the real run realises it on rank 0 alone
    worst = case.parallel.get("routing") == "worst"
    for rank in report.ranks:
        oracle = real[rank.rank]
        equal = all(
            {(c.kind, c.phase, c.group): (c.count, c.bytes) for c in rank.collectives}
            == parallel_oracle.logged(real[r]["collectives"])
            for r in (rank.ranks[:1] if worst else rank.ranks)
        )
        truth = oracle["dispatched"]
        rows.append(
            [
                name,
                report.plan or "",
                "rank 0 (every token to its experts)" if worst else rank.name,
                f"{oracle['peak']:,}",
                f"{truth:,}",
                _pct(rank.peak_bytes, truth),
                f"{oracle['peak'] - truth:+,}",
                _pct(oracle.get("fsdp_mem_tracker"), truth),
                "" if staged else _pct(_deepspeed(model, case.world), truth),
                "" if staged else _pct(_megatron(model, case, x), truth),
                "yes" if equal else "NO",
                f"{seconds:.1f} s",
            ]
        )
    return rows


HEADERS = [
    "case",
    "plan",
    "ranks",
    "measured (all)",
    "measured (dispatched)",
    "convprof",
    "gloo adds",
    "FSDPMemTracker",
    "DeepSpeed ZeRO-3",
    "Megatron",
    "collectives equal",
    "prediction",
]


def main() -> None:
    names = [a for a in sys.argv[1:] if not a.startswith("--")] or list(parallel_models.CASES)
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    print("\n".join(lines), flush=True)
    for name in names:
        for cells in row(name):
            lines.append("| " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
