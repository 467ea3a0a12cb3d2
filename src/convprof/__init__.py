"""convprof: exact params, MACs and FLOPs of PyTorch models, per layer and in total."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from convprof.api import profile
from convprof.budget import BudgetExceeded, assert_budget
from convprof.calculator import compare_convs
from convprof.formulas import register
from convprof.recorder import ForwardError, ValuesNeeded
from convprof.records import ModuleCall, OpCall, TensorMeta
from convprof.render import render
from convprof.report import CONVENTION, Block, Layer, Report, Totals, Unexplained

try:
    __version__ = version("convprof")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CONVENTION",
    "Block",
    "BudgetExceeded",
    "ForwardError",
    "Layer",
    "ModuleCall",
    "OpCall",
    "Report",
    "TensorMeta",
    "Totals",
    "Unexplained",
    "ValuesNeeded",
    "__version__",
    "assert_budget",
    "compare_convs",
    "profile",
    "register",
    "render",
]
