"""Linear layers and matrix products: ``nn.Linear``, ``nn.Bilinear`` and the ATen products that
``F.linear``, ``x @ w``, ``torch.matmul`` and ``torch.einsum`` lower to.

Derivation. A product of an ``(n, k)`` by a ``(k, m)`` matrix computes ``n * m`` outputs of
``k`` products each: ``n * k * m`` MACs; a batch of ``b`` such products, ``b * n * k * m``.
``nn.Linear`` applies a ``(out, in)`` weight to every row of the input: ``rows * in * out`` with
``rows * out`` the output's element count. The bias add is excluded by the convention.

``nn.Bilinear`` computes ``y_k = sum_ij x1_i A_kij x2_j``: PyTorch forms the outer product of
``x1`` and ``x2`` (elementwise, not MACs) and contracts it with ``A`` seen as ``(out, in1*in2)``,
so ``rows * out * in1 * in2`` MACs.

The module formulas read the declared sizes (``in_features``), not the weight parameter, which
a parametrization replaces by a computed tensor. On a nested input (a batch of sequences of
different lengths) ``numel`` counts real elements only, and ``aten.linear`` reaches the
dispatcher whole (dense inputs are decomposed into ``addmm``/``mm`` first).
"""

from __future__ import annotations

from math import prod

from torch import nn

from convprof.count.formulas.registry import register
from convprof.count.formulas.sparse import sparse_product
from convprof.records import ModuleCall, OpCall, TensorMeta


def _size(call: ModuleCall, attr: str) -> int:
    value = call.module.attr(attr)
    if not isinstance(value, int) or not call.outputs:
        raise ValueError(f"{call.module.name}: {call.module.type_name} needs an integer {attr} and an output")
    return value


@register(nn.Linear)
def linear_module(call: ModuleCall) -> int:
    # rows * out == numel(output); each output element is a dot product of length in_features.
    in_features = _size(call, "in_features")
    return call.outputs[0].numel * in_features


@register(nn.Bilinear)
def bilinear_module(call: ModuleCall) -> int:
    in1, in2 = _size(call, "in1_features"), _size(call, "in2_features")
    return call.outputs[0].numel * in1 * in2


@register("aten.linear")
def _linear(call: OpCall) -> int:
    # linear(input, weight (out, in), bias): each output element is a dot product of length in.
    return call.outputs[0].numel * call.tensor(1).shape[1]


def matmul_macs(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """MACs of ``a @ b`` for matrices or equally batched stacks ``(..., n, k) @ (..., k, m)``."""
    *batch, n, k = a
    m = b[-1]
    return prod(batch) * n * k * m


@register("aten.mm")
@register("aten.bmm")
@register("aten._int_mm")
@register("aten._scaled_mm")  # (a, b, scale_a, scale_b, ...): fp8 products, scales are free
def _mm(call: OpCall) -> int:
    return _product(call.tensor(0), call.tensor(1))


def _product(a: TensorMeta, b: TensorMeta) -> int:
    """A product whose operands may be sparse (a COO or CSR tensor reaches ``aten.mm``)."""
    sparse = sparse_product(a, b)
    return matmul_macs(a.shape, b.shape) if sparse is None else sparse


@register("aten.matmul")
def _matmul(call: OpCall) -> int:
    # torch.matmul is decomposed into mm / bmm before the dispatcher, except on a tensor
    # subclass that takes it whole: a jagged nested tensor's attention (its SDPA's math path
    # multiplies (heads, length, dim) by (heads, dim, length) per sequence). Counted per
    # member of the batch (a dense operand, a weight, meets each), over the broadcast leading
    # dimensions.
    a, b = call.tensor(0), call.tensor(1)
    lefts, rights = a.sequences, b.sequences
    if len(lefts) == 1:
        lefts *= len(rights)
    elif len(rights) == 1:
        rights *= len(lefts)
    elif len(lefts) != len(rights):
        raise ValueError(f"{call.op}: batches of {len(lefts)} and {len(rights)} sequences")
    return sum(_broadcast_product(x, y) for x, y in zip(lefts, rights, strict=True))


def _broadcast_product(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    if len(a) == 1 or len(b) == 1:  # a vector on either side: one dot product per other row
        return prod(a) if len(b) == 1 else prod(b)
    batch = [max(i, j) for i, j in zip(a[-3::-1], b[-3::-1], strict=False)]
    longer = a if len(a) > len(b) else b
    extra = longer[: len(longer) - 2 - len(batch)]
    return prod(extra) * prod(batch) * a[-2] * a[-1] * b[-1]


@register("aten._foreach_mm")
def _foreach_mm(call: OpCall) -> int:
    # _foreach_mm(self: Tensor[], mat2: Tensor[]): one product per pair of the two lists
    lefts, rights = call.args[0], call.args[1]
    assert isinstance(lefts, tuple) and isinstance(rights, tuple)
    return sum(
        matmul_macs(a.shape, b.shape)
        for a, b in zip(lefts, rights, strict=True)
        if isinstance(a, TensorMeta) and isinstance(b, TensorMeta)
    )


@register("aten.addmm")
@register("aten.baddbmm")
@register("aten._addmm_activation")
def _addmm(call: OpCall) -> int:
    # addmm(bias, mat1, mat2): the bias is excluded.
    return _product(call.tensor(1), call.tensor(2))


@register("aten.addbmm")
def _addbmm(call: OpCall) -> int:
    # addbmm(input, batch1, batch2) sums the b products into one matrix; the sum is the accumulate.
    return matmul_macs(call.tensor(1).shape, call.tensor(2).shape)


@register("aten.mv")
def _mv(call: OpCall) -> int:
    sparse = sparse_product(call.tensor(0), call.tensor(1))
    return prod(call.tensor(0).shape) if sparse is None else sparse


@register("aten.addmv")
def _addmv(call: OpCall) -> int:
    sparse = sparse_product(call.tensor(1), call.tensor(2))
    return prod(call.tensor(1).shape) if sparse is None else sparse


@register("aten.dot")
@register("aten.vdot")
def _dot(call: OpCall) -> int:
    return call.tensor(0).numel


@register("aten.linalg_vecdot")
def _vecdot(call: OpCall) -> int:
    # linalg.vecdot(x, y, dim): x and y broadcast against each other, and every output element
    # sums the products along dim: one multiply-accumulate per element of the broadcast shape.
    # PyTorch decomposes it into a multiplication and a sum above the dispatcher, where no
    # operator shows it; the recorder sees the call itself (see its _Composites).
    a, b = call.tensor(0).shape, call.tensor(1).shape
    rank = max(len(a), len(b))
    a, b = (1,) * (rank - len(a)) + a, (1,) * (rank - len(b)) + b
    return int(prod(max(i, j) for i, j in zip(a, b, strict=True)))


def _expand(shape: tuple[int, ...], dims: tuple[int, ...]) -> list[int]:
    out = list(shape)
    for d in sorted(dims):
        out.insert(d, 1)
    return out


@register("aten._trilinear")
def _trilinear(call: OpCall) -> int:
    # F.bilinear lowers to _trilinear(x1, A, x2, expand1, expand2, expand3, sumdim): the three
    # operands are unsqueezed at their expand dims, broadcast, multiplied, and summed over
    # sumdim. Every output element therefore contracts prod(sizes of the summed dims).
    expanded = [_expand(call.tensor(i).shape, _ints(call.args[3 + i])) for i in range(3)]
    full = [max(sizes) for sizes in zip(*expanded, strict=True)]
    return call.outputs[0].numel * int(prod(full[d] for d in _ints(call.args[6])))


def _ints(value: object) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, int) for v in value):
        raise TypeError(f"expected a list of ints, got {value!r}")
    return tuple(int(v) for v in value)


@register("aten._cdist_forward")
@register("aten._euclidean_dist")
def _cdist(call: OpCall) -> int:
    # cdist(x1 (..., P, M), x2 (..., R, M), p): each of the P x R distances sums M terms. For
    # p = 2 each term is a product, (x - y)^2, or x . y on the matrix-product path PyTorch takes
    # beyond 25 rows: M multiply-accumulates per distance. Other p sum |x - y|^p, raised
    # elementwise, with no products to accumulate: free under the convention.
    if call.op.startswith("aten._cdist_forward") and call.args[2] != 2:
        return 0
    return call.outputs[0].numel * call.tensor(0).shape[-1]
