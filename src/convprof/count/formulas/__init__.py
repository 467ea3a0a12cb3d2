"""Cost formulas: the registry and the built-in families, registered on import.

A formula is a small pure function of a record (a module call or an operator call) to MACs,
registered by module type or operator with the same public :func:`register` a user calls; one
file per family (conv, linear, attention, rnn, fft, linalg, moe, quantized, sparse, the backward's
split, and ``free``: what costs nothing under the convention). Imports ``records`` only.
"""

from __future__ import annotations

from convprof.count.formulas import (
    attention,
    backward,
    conv,
    fft,
    free,
    linalg,
    linear,
    moe,
    quantized,
    rnn,
    sparse,
)
from convprof.count.formulas.registry import (
    ModuleFormula,
    OpClass,
    OpFormula,
    Uncounted,
    classify,
    is_quiet,
    module_formula,
    moves_memory,
    op_formula,
    register,
)

__all__ = [
    "ModuleFormula",
    "OpClass",
    "OpFormula",
    "Uncounted",
    "attention",
    "backward",
    "classify",
    "conv",
    "fft",
    "free",
    "is_quiet",
    "linalg",
    "linear",
    "module_formula",
    "moe",
    "moves_memory",
    "op_formula",
    "quantized",
    "register",
    "rnn",
    "sparse",
]
