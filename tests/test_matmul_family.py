"""Every matmul-like operator: MACs against a closed form written out here, and a complete report.

convprof's convention counts the multiply-accumulates of products that sum (matrix, vector and
dot products, contractions, distances with p = 2); an outer product multiplies without summing,
so it is free, as every elementwise product is. Several of these functions are decompositions
that PyTorch runs above the dispatcher (inner, tensordot, multi_dot, chain_matmul, matmul's 1-D
cases, einsum); their products arrive as mm, bmm, dot or mv. ``torch.linalg.vecdot``
decomposes into a multiplication and a sum, which count nothing: the recorder sees the call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convprof

Call = Callable[[], torch.Tensor]


def t(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


CASES: list[tuple[str, Call, int]] = [
    ("dot", lambda: torch.dot(t(7), t(7)), 7),
    ("vdot", lambda: torch.vdot(t(7), t(7)), 7),
    ("mv", lambda: torch.mv(t(3, 7), t(7)), 3 * 7),
    ("addmv", lambda: torch.addmv(t(3), t(3, 7), t(7)), 3 * 7),
    ("mm", lambda: torch.mm(t(2, 3), t(3, 4)), 2 * 3 * 4),
    ("addmm", lambda: torch.addmm(t(4), t(2, 3), t(3, 4)), 2 * 3 * 4),
    ("bmm", lambda: torch.bmm(t(5, 2, 3), t(5, 3, 4)), 5 * 2 * 3 * 4),
    ("baddbmm", lambda: torch.baddbmm(t(5, 2, 4), t(5, 2, 3), t(5, 3, 4)), 5 * 2 * 3 * 4),
    ("addbmm", lambda: torch.addbmm(t(2, 4), t(5, 2, 3), t(5, 3, 4)), 5 * 2 * 3 * 4),
    ("matmul 1-D @ 1-D", lambda: t(7) @ t(7), 7),
    ("matmul 2-D @ 1-D", lambda: t(3, 7) @ t(7), 3 * 7),
    ("matmul 1-D @ 2-D", lambda: t(7) @ t(7, 3), 7 * 3),
    ("matmul broadcast", lambda: t(6, 2, 3) @ t(3, 4), 6 * 2 * 3 * 4),
    ("inner 1-D", lambda: torch.inner(t(7), t(7)), 7),
    ("inner N-D", lambda: torch.inner(t(2, 3, 7), t(4, 7)), 2 * 3 * 4 * 7),
    ("tensordot", lambda: torch.tensordot(t(2, 3, 4), t(3, 4, 5), dims=2), 2 * 5 * 3 * 4),
    # multi_dot picks the cheaper order: (AB)C = 2*3*4 + 2*4*5 = 64, not A(BC) = 3*4*5 + 2*3*5 = 90
    ("linalg.multi_dot", lambda: torch.linalg.multi_dot([t(2, 3), t(3, 4), t(4, 5)]), 2 * 3 * 4 + 2 * 4 * 5),
    ("chain_matmul", lambda: torch.chain_matmul(t(2, 3), t(3, 4), t(4, 5)), 2 * 3 * 4 + 2 * 4 * 5),
    ("einsum", lambda: torch.einsum("bij,bjk->bik", t(2, 3, 4), t(2, 4, 5)), 2 * 3 * 4 * 5),
    # bilinear: each of the 2 x 5 outputs sums x1 (3) x W (3 x 4) x x2 (4): 12 products
    ("bilinear", lambda: F.bilinear(t(2, 3), t(2, 4), t(5, 3, 4)), 2 * 5 * 3 * 4),
    # cdist, p = 2: each of the 2 x 6 x 5 distances sums 3 squared differences
    ("cdist", lambda: torch.cdist(t(2, 6, 3), t(2, 5, 3)), 2 * 6 * 5 * 3),
    # conv_tbc: time 5 -> 4 (kernel 2), batch 2, 3 -> 4 channels: 4 x 2 x 4 outputs of 2 x 3
    ("conv_tbc", lambda: torch.conv_tbc(t(5, 2, 3), t(2, 3, 4), t(4)), 4 * 2 * 4 * 2 * 3),
    # vecdot: y broadcasts to (3, 4); each of the 3 outputs sums 4 products
    ("linalg.vecdot", lambda: torch.linalg.vecdot(t(3, 4), t(4)), 3 * 4),
    ("linalg.vecdot dim", lambda: torch.linalg.vecdot(t(2, 5, 3), t(2, 5, 3), dim=1), 2 * 5 * 3),
    # products that do not sum: free under the convention
    ("outer", lambda: torch.outer(t(3), t(4)), 0),
    ("addr", lambda: torch.addr(t(3, 4), t(3), t(4)), 0),
    ("kron", lambda: torch.kron(t(2, 2), t(3, 3)), 0),
]


class _Runs(nn.Module):
    def __init__(self, call: Call) -> None:
        super().__init__()
        self.call = call

    def forward(self) -> torch.Tensor:
        return self.call()


@pytest.mark.parametrize(("name", "call", "macs"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("compute", [True, False], ids=["computing", "zero-compute"])
def test_matmul_like_operator(name: str, call: Call, macs: int, compute: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # chain_matmul is deprecated
        report = convprof.profile(_Runs(call), (), compute=compute)
    assert report.total.macs == macs, name
    assert not report.unexplained, [u.op for u in report.unexplained]


def test_vecdot_is_put_back() -> None:
    original = torch.linalg.vecdot
    convprof.profile(_Runs(lambda: torch.linalg.vecdot(t(3, 4), t(3, 4))), ())

    class Raises(nn.Module):
        def forward(self) -> torch.Tensor:
            raise RuntimeError("no")

    with pytest.raises(convprof.ForwardError):
        convprof.profile(Raises(), ())
    assert torch.linalg.vecdot is original
