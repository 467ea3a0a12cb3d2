"""Products with a sparse operand: graph convolutions, pruned weights, ``torch.sparse.mm``.

Derivation. A sparse ``(n, k)`` matrix with ``s`` stored values times a dense ``(k, m)`` one:
each stored value ``a_ij`` multiplies row ``j`` of the dense matrix into row ``i`` of the
output, ``m`` multiply-accumulates, so ``s * m`` MACs whatever ``n`` and ``k`` are (a GCN's
adjacency with 5 values per row of a 2,708-node graph: 13,540 x F, where a dense count says
2,708 x 2,708 x F, 540 times more). A dense ``(n, k)`` times a sparse ``(k, m)``: each stored
``b_jk`` meets column ``j`` of the dense one, ``n * s``. Stacks (``bmm`` of 3-D COO tensors)
add up over the batch, which ``s`` already does. A block layout (BSR, BSC) stores whole
blocks, zeros in them included, and its kernels multiply them all: ``s`` counts every stored
scalar. The operators' own outputs (``aten.mm`` of a CSR tensor) are dense.

The product of two sparse tensors costs what their patterns make it (for each inner index,
the stored values of that column of one times those of the row of the other); the records
keep counts, not patterns, so that call is reported uncounted rather than guessed.
"""

from __future__ import annotations

from math import prod

from convprof.count.formulas.registry import Uncounted, register
from convprof.records import OpCall, TensorMeta


def sparse_product(a: TensorMeta, b: TensorMeta) -> int | None:
    """MACs of ``a @ b`` when either is sparse (a matrix, a stack, or ``b`` a vector), None when
    both are dense (the dense formula's case)."""
    if a.stored is None and b.stored is None:
        return None
    if a.stored is not None and b.stored is not None:
        raise Uncounted("sparse @ sparse")
    if a.stored is not None:
        return a.stored * (b.shape[-1] if len(b.shape) >= 2 else 1)
    assert b.stored is not None
    return (a.shape[-2] if len(a.shape) >= 2 else 1) * b.stored


def _product(call: OpCall, left: int) -> int:
    a, b = call.tensor(left), call.tensor(left + 1)
    macs = sparse_product(a, b)
    if macs is None:  # both dense: these operators are sparse kernels, but count them anyway
        return prod(a.shape[:-1]) * a.shape[-1] * (b.shape[-1] if len(b.shape) >= 2 else 1)
    return macs


@register("aten._sparse_addmm")  # torch.sparse.mm / torch.sparse.addmm(input, mat1, mat2)
@register("aten.sspaddmm")  # (input, mat1, mat2): a sparse result
def _sparse_addmm(call: OpCall) -> int:
    return _product(call, 1)


@register("aten._sparse_mm")
@register("aten.hspmm")  # (mat1, mat2): a hybrid result, rows of mat1 that have values
@register("aten.smm")
@register("aten._sparse_mm_reduce_impl")  # (csr, other, reduce): each product reduced, not summed
@register("aten._sparse_sparse_matmul")
def _sparse_mm(call: OpCall) -> int:
    return _product(call, 0)


@register("aten.sparse_sampled_addmm")
def _sampled(call: OpCall) -> int:
    # sparse_sampled_addmm(input (sparse CSR n x m), mat1 (n, k), mat2 (k, m)): mat1 @ mat2
    # only where input stores a value, a dot product of length k each.
    return _stored(call.tensor(0)) * call.tensor(1).shape[-1]


def _stored(tensor: TensorMeta) -> int:
    return tensor.numel if tensor.stored is None else tensor.stored
