"""Sparse tensors in a zero-compute pass: stand-ins that keep the stored count, and the products.

A sparse input (a graph's adjacency in COO or CSR) becomes a meta sparse tensor of the same
layout, shape and number of stored values, so the count (stored values times columns, see
count.formulas.sparse) is the computing pass's. PyTorch has no meta kernels for products with
a sparse operand; their dense result follows from the shapes alone and is made here. A
product whose result is sparse (two sparse operands, ``sspaddmm``, ``hspmm``) stores as many
values as the data makes it: no stand-in, PyTorch's missing kernel stops the pass and a real
pass (``compute="auto"``) counts it.

PyTorch's meta kernels for sparse operators do not keep the stored count (the meta transpose
of a COO tensor stores nothing), so a sparse result is trusted only from the operators that
keep its pattern (transposes, copies, casts, scaling), remade here with the input's count;
any other stops the pass (ValuesNeeded) rather than count a product against a wrong number.
"""

from __future__ import annotations

from typing import Any

import torch

from convprof.memory.lifetimes import SPARSE
from convprof.record.errors import StandInUnknown
from convprof.record.stand_ins.shapes import META

# products with a dense result, and the position of their left operand
_PRODUCTS = {"mm": 0, "bmm": 0, "mv": 0, "_sparse_mm": 0, "addmm": 1, "addmv": 1, "_sparse_addmm": 1}


# operators whose sparse result stores what their sparse input does, in another shape or dtype
_KEEPS_PATTERN = frozenset(
    {"t", "transpose", "permute", "clone", "detach", "alias", "_to_copy", "neg", "mul", "div", "coalesce"}
)


def sparse_stand_in(tensor: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """A meta tensor storing what ``tensor`` stores (its layout and stored values), of
    ``like``'s shape and dtype (``tensor``'s own without it)."""
    shaped = tensor if like is None else like

    def meta(part: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.empty(part.shape, dtype=dtype or part.dtype, device=META)

    if tensor.layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(
            meta(tensor._indices()),
            meta(tensor._values(), shaped.dtype),
            shaped.shape,
            is_coalesced=tensor.is_coalesced(),
            check_invariants=False,  # meta indices have no values to check (and no warning)
        )
    rows = tensor.layout in (torch.sparse_csr, torch.sparse_bsr)
    return torch.sparse_compressed_tensor(
        meta(tensor.crow_indices() if rows else tensor.ccol_indices()),
        meta(tensor.col_indices() if rows else tensor.row_indices()),
        meta(tensor.values(), shaped.dtype),
        shaped.shape,
        layout=tensor.layout,
        check_invariants=False,
    )


def sparse_product(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The dense result of a product of a sparse and a dense meta tensor, else None."""
    left = _PRODUCTS.get(func._schema.name.removeprefix("aten::"))
    if left is None or len(args) < left + 2:
        return None
    a, b = args[left], args[left + 1]
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return None
    sparse_a, sparse_b = a.layout in SPARSE, b.layout in SPARSE
    if sparse_a == sparse_b or a.dim() < 2 or a.shape[-1] != b.shape[-2 if b.dim() >= 2 else 0]:
        return None  # both dense (not this stand-in's), both sparse, or shapes PyTorch refuses
    shape = (*a.shape[:-1], b.shape[-1]) if b.dim() >= 2 else tuple(a.shape[:-1])
    dense = b if sparse_a else a
    return torch.empty(shape, dtype=dense.dtype, device=META)


def sparse_result(func: torch._ops.OpOverload, args: tuple[Any, ...], out: Any) -> Any:
    """``out`` as the pass may use it: itself when it is dense or stores what it should; the
    result of an operator that keeps its input's pattern remade with the input's count (the
    meta transpose of a COO tensor stores none, a cast of a CSC one some other count); else
    StandInUnknown, which stops the pass."""
    if not isinstance(out, torch.Tensor) or out.layout not in SPARSE:
        return out
    sources = [a for a in args if isinstance(a, torch.Tensor) and a.layout in SPARSE]
    name = func._schema.name.removeprefix("aten::").rstrip("_")
    keeps = name in _KEEPS_PATTERN and len(sources) == 1
    if keeps and not (name == "coalesce" and not sources[0].is_coalesced()):
        source = sources[0]
        if out._nnz() == source._nnz():
            return out
        if out.layout == source.layout and out.dense_dim() == source.dense_dim() == 0:
            return sparse_stand_in(source, like=out)
    raise StandInUnknown(
        f"{func} makes a sparse tensor whose stored values depend on the data, which a "
        "zero-compute pass does not have"
    )
