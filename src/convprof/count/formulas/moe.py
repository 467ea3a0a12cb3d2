"""Mixture of experts: the grouped matrix products that run all experts in one call.

``aten._grouped_mm(a, b, offs)`` multiplies groups of rows (or columns, or whole batches) by
their own expert's weight in one kernel; transformers' Mixtral, Qwen-MoE and their kin run
their experts through it, after sorting the tokens by expert (which is why ``histc``,
``bincount`` and integer division are free bookkeeping, :mod:`convprof.count.formulas.free`).

Derivation, with ``offs`` cutting one dimension into ``G`` groups that together cover it:

* ``a (M, K) @ b (G, K, N)``, rows of ``a`` split by ``offs``: ``sum_g M_g * K * N = M * K * N``;
* ``a (G, M, K) @ b (K, N)``, columns of ``b`` split: ``sum_g M * K * N_g = M * K * N``;
* ``a (M, K) @ b (K, N)``, the inner dimension split (one output per group):
  ``sum_g M * K_g * N = M * K * N``;
* ``a (G, M, K) @ b (G, K, N)``, no ``offs``: a batch, ``G * M * K * N``.

``offs`` holds values, and the record holds shapes only: rows past ``offs[-1]`` (which the
kernel leaves alone) would be counted. Every caller that sorts tokens by expert fills all rows,
so this is exact for them; the scaled (fp8) variant has the same shape rules.
"""

from __future__ import annotations

from convprof.count.formulas.registry import register
from convprof.records import OpCall


def grouped_mm_macs(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """MACs of ``_grouped_mm`` for the operand shapes ``a`` and ``b`` (2-D or 3-D each)."""
    batch = a[0] if len(a) == 3 and len(b) == 3 else 1
    m, k = a[-2], a[-1]
    return batch * m * k * b[-1]


@register("aten._grouped_mm")
@register("aten._scaled_grouped_mm")
def _grouped_mm(call: OpCall) -> int:
    return grouped_mm_macs(call.tensor(0).shape, call.tensor(1).shape)
