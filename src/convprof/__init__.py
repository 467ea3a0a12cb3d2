"""convprof: exact params, MACs and FLOPs of PyTorch models, per layer and in total.

The names whose modules need torch are imported on first use (PEP 562), so that ``import
convprof`` and the pytest plugin, which pytest loads in every session of an environment where
convprof is installed, do not import torch until something is profiled. The rest (reports,
budgets, rendering) is plain Python and imported at once; importing rendering also hands the
renderer to the results, so that ``str(report)`` shows the table (see
:mod:`convprof.report.results`). Where everything lives: docs/architecture.md.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from convprof.ci.budget import BudgetExceeded, assert_budget
from convprof.records import ModuleCall, OpCall, TensorMeta
from convprof.rendering.render import render
from convprof.report import (
    CONVENTION,
    Block,
    Layer,
    LayerTime,
    Report,
    Sizes,
    Timing,
    Totals,
    Unexplained,
)

if TYPE_CHECKING:
    from convprof.api import profile
    from convprof.calculator import compare_convs
    from convprof.count.formulas import register
    from convprof.record.errors import ForwardError, ValuesNeeded
    from convprof.record.timing import measure

try:
    __version__ = version("convprof")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {
    "profile": "convprof.api",
    "compare_convs": "convprof.calculator",
    "register": "convprof.count.formulas",
    "ForwardError": "convprof.record.errors",
    "ValuesNeeded": "convprof.record.errors",
    "measure": "convprof.record.timing",
}

__all__ = [
    "CONVENTION",
    "Block",
    "BudgetExceeded",
    "ForwardError",
    "Layer",
    "LayerTime",
    "ModuleCall",
    "OpCall",
    "Report",
    "Sizes",
    "TensorMeta",
    "Timing",
    "Totals",
    "Unexplained",
    "ValuesNeeded",
    "__version__",
    "assert_budget",
    "compare_convs",
    "measure",
    "profile",
    "register",
    "render",
]


def __getattr__(name: str) -> Any:
    home = _LAZY.get(name)
    if home is None:
        raise AttributeError(f"module 'convprof' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
