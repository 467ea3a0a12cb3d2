"""Products with a sparse operand: stored values times columns, never the dense count (issue 33).

Every expected count is written out by hand: a sparse (n, k) matrix with s stored values
times a dense (k, m) one does s * m multiply-accumulates (each stored a_ij meets row j of the
dense matrix), a dense (n, k) times a sparse (k, m) one n * s.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import convprof
from convprof.memory.lifetimes import UntrackedLayout
from convprof.record.errors import ValuesNeeded

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")

PATHS = [True, False, "auto"]


class Product(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.how == "matmul":
            return a @ b
        if self.how == "spmm":
            return torch.spmm(a, b)
        if self.how == "sparse.mm":
            return torch.sparse.mm(a, b)
        if self.how == "addmm":
            return torch.sparse.addmm(torch.zeros(a.shape[0], b.shape[1]), a, b)
        if self.how == "dense @ sparse":
            return b.T @ a
        raise AssertionError(self.how)


def _layout(dense: torch.Tensor, layout: str) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if layout == "coo":
            return dense.to_sparse()
        if layout == "bsr":
            return dense.to_sparse_bsr((2, 2))
        return dense.to_sparse_csr() if layout == "csr" else dense.to_sparse_csc()


@pytest.mark.parametrize("compute", PATHS)
@pytest.mark.parametrize("layout", ["coo", "csr", "csc"])
@pytest.mark.parametrize("how", ["matmul", "spmm", "sparse.mm", "addmm", "dense @ sparse"])
def test_identity_times_dense_is_stored_values_times_columns(
    how: str, layout: str, compute: bool | str
) -> None:
    # the case: a 100 x 100 identity stores 100 values; times a 100 x 8 matrix each
    # meets one row of 8: 100 * 8 = 800 MACs, where the dense count is 100 * 100 * 8 = 80,000.
    # b.T @ a: an 8 x 100 dense times the sparse 100 x 100, each stored value meets a column
    # of 8: 8 * 100 = 800 again.
    if how == "dense @ sparse" and layout == "csc":
        pytest.skip("PyTorch has no CPU kernel for strided @ CSC")
    report = convprof.profile(
        Product(how), (_layout(torch.eye(100), layout), torch.randn(100, 8)), compute=compute
    )
    assert (report.total.macs, report.complete) == (800, True)


@pytest.mark.parametrize("compute", [True, False])
def test_block_sparse_counts_every_stored_scalar(compute: bool) -> None:
    # BSR with 2 x 2 blocks stores whole blocks: an identity of 100 has 50 diagonal blocks of
    # 4 scalars, 200 stored; times 100 x 8: 200 * 8 = 1,600 MACs
    report = convprof.profile(
        Product("matmul"), (_layout(torch.eye(100), "bsr"), torch.randn(100, 8)), compute=compute
    )
    assert report.total.macs == 1600


class GraphConvolution(nn.Module):
    """Kipf and Welling's layer as pygcn writes it: adj @ (x @ W) + b."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(inputs, outputs))
        self.bias = nn.Parameter(torch.zeros(outputs))

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return torch.spmm(adj, torch.mm(x, self.weight)) + self.bias


class GCN(nn.Module):
    def __init__(self, features: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.gc1 = GraphConvolution(features, hidden)
        self.gc2 = GraphConvolution(hidden, classes)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.gc2(torch.relu(self.gc1(x, adj)), adj), dim=1)


def _chain(nodes: int) -> torch.Tensor:
    """A path graph with self-loops: nodes + (nodes - 1) stored values."""
    rows = list(range(nodes)) + list(range(nodes - 1))
    cols = list(range(nodes)) + list(range(1, nodes))
    return torch.sparse_coo_tensor(
        torch.tensor([rows, cols]), torch.ones(len(rows)), (nodes, nodes), check_invariants=True
    ).coalesce()


@pytest.mark.parametrize("compute", PATHS)
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_gcn_forward_and_training_step(layout: str, compute: bool | str) -> None:
    nodes, features, hidden, classes = 50, 20, 16, 4
    adj = _chain(nodes)
    stored = nodes + nodes - 1  # 99
    if layout == "csr":
        adj = _layout(adj.to_dense(), "csr")
    model = GCN(features, hidden, classes)
    x = torch.randn(nodes, features)
    # gc1: x @ W1 is 50 * 20 * 16 = 16,000, adj @ that 99 * 16 = 1,584
    # gc2: h @ W2 is 50 * 16 * 4 = 3,200, adj @ that 99 * 4 = 396
    report = convprof.profile(model, (x, adj), compute=compute, backward=True)
    rows = {layer.name: layer for layer in report.layers}
    assert (rows["gc1"].macs, rows["gc2"].macs) == (16_000 + 1_584, 3_200 + 396)
    # backward: gc2 sends its gradient through adj^T (99 * 4) and W2^T (50 * 4 * 16 = 3,200)
    # and forms W2's (16 x 50 @ 50 x 4 = 3,200); gc1 through adj^T (99 * 16 = 1,584, to x @ W1)
    # and forms W1's (20 x 50 @ 50 x 16 = 16,000); x wants no gradient
    assert (rows["gc2"].grad_input_macs, rows["gc2"].grad_weight_macs) == (396 + 3_200, 3_200)
    assert (rows["gc1"].grad_input_macs, rows["gc1"].grad_weight_macs) == (stored * 16, 16_000)
    assert report.complete


class SparseTimesSparse(nn.Module):
    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(a, a)


def test_sparse_times_sparse_is_reported_not_guessed() -> None:
    a = torch.eye(10).to_sparse()
    report = convprof.profile(SparseTimesSparse(), a)
    assert report.total.macs == 0 and not report.complete
    assert [u.op for u in report.unexplained] == ["aten._sparse_sparse_matmul.default (sparse @ sparse)"]
    with pytest.raises(ValuesNeeded, match="_sparse_sparse_matmul"):
        convprof.profile(SparseTimesSparse(), a, compute=False)


class SparseSum(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a + a) @ b  # a sparse result whose stored count the data decides


def test_zero_compute_stops_at_a_sparse_result_it_cannot_know() -> None:
    a, b = torch.eye(6).to_sparse(), torch.randn(6, 3)
    with pytest.raises(ValuesNeeded, match=r"aten\.add.*stored values depend on the data"):
        convprof.profile(SparseSum(), (a, b), compute=False)
    # a + a of the identity stores 6 values: 6 * 3 = 18 MACs, counted by the real pass auto runs
    assert convprof.profile(SparseSum(), (a, b), compute="auto").total.macs == 18


class Transposed(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a.t().float() @ b


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_zero_compute_keeps_stored_values_through_a_transpose(layout: str) -> None:
    # PyTorch's meta transpose of a COO tensor stores nothing: the stand-in keeps the 7 stored
    # values of the input (a 7 x 7 identity), times 5 columns: 35 MACs
    a = _layout(torch.eye(7, dtype=torch.float64), layout)
    report = convprof.profile(Transposed(), (a, torch.randn(7, 5)), compute=False)
    assert report.total.macs == 35


class Batched(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.bmm(a, b)


@pytest.mark.parametrize("compute", [True, False])
def test_batched_sparse_product(compute: bool) -> None:
    # 3 stored values over a batch of 2 (5 x 5 each), times 5 x 7 dense: 3 * 7 = 21 MACs
    a = torch.zeros(2, 5, 5)
    a[0, 0, 0], a[1, 2, 3], a[1, 4, 4] = 1.0, 1.0, 2.0
    assert (
        convprof.profile(Batched(), (a.to_sparse(), torch.randn(2, 5, 7)), compute=compute).total.macs == 21
    )


class Reduced(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(a, b, "sum")


def test_sparse_mm_with_a_reduction() -> None:
    # torch_geometric's CSR path: 12 stored values (a 12 x 12 identity) times 3 columns: 36
    a = _layout(torch.eye(12), "csr")
    assert convprof.profile(Reduced(), (a, torch.randn(12, 3))).total.macs == 36


class Buffered(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("adj", _layout(torch.eye(30), "csr"))
        self.linear = nn.Linear(6, 6, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adj @ self.linear(x)


@pytest.mark.parametrize("compute", PATHS)
def test_sparse_buffer_and_memory_refused(compute: bool | str) -> None:
    # linear: 30 * 6 * 6 = 1,080; the buffer's 30 stored values times 6 columns: 180
    model = Buffered()
    assert convprof.profile(model, torch.randn(30, 6), compute=compute).total.macs == 1080 + 180
    with pytest.raises(UntrackedLayout, match=r"not predicted for sparse tensors \(sparse_csr 30x30\)"):
        convprof.profile(model, torch.randn(30, 6), compute=compute, memory=True)
    assert model.adj.layout == torch.sparse_csr and not model._forward_hooks
