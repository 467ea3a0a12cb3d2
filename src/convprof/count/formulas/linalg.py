"""Dense linear algebra that models run in their forward: triangular solves.

Linear-attention layers that work in chunks (the gated delta rule of Qwen3-Next and its kin)
invert a unit lower-triangular matrix per chunk by solving against it. Solving ``A X = B`` with
``A`` triangular of order ``n`` by substitution takes, for each of the ``k`` right-hand sides,
``x_i = (b_i - sum_{j<i} a_ij x_j) / a_ii``: ``0 + 1 + ... + (n - 1) = n (n - 1) / 2``
multiply-accumulates (the ``n`` divisions, absent for a unit diagonal, are not MACs). So a
batch of ``m`` solves costs ``m * k * n (n - 1) / 2``; ``left=False`` (``X A = B``) is the same
with ``B``'s rows as the right-hand sides. General solves and factorisations
(``linalg.solve``, ``cholesky``, ``qr``) have no formula and are reported.
"""

from __future__ import annotations

from math import prod

from convprof.count.formulas.registry import register
from convprof.records import OpCall


def triangular_solve_macs(out: tuple[int, ...], left: bool) -> int:
    """MACs of solving a triangular system for the solution's shape ``(*batch, rows, cols)``."""
    *batch, rows, cols = out
    n, k = (rows, cols) if left else (cols, rows)
    return prod(batch) * k * n * (n - 1) // 2


@register("aten.linalg_solve_triangular")
def _linalg_solve_triangular(call: OpCall) -> int:
    # linalg_solve_triangular(A, B, *, upper, left=True, unitriangular=False) -> X
    left = dict(call.kwargs).get("left", True)
    return triangular_solve_macs(call.outputs[0].shape, left is not False)


@register("aten.triangular_solve")
def _triangular_solve(call: OpCall) -> int:
    # triangular_solve(B, A, upper, transpose, unitriangular) -> (X, A): always A X = B
    return triangular_solve_macs(call.outputs[0].shape, True)
