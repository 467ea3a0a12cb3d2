"""Closed-form counts for linear layers, matrix products and attention, as arithmetic."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convprof


def test_linear_on_3d_input() -> None:
    report = convprof.profile(nn.Linear(16, 32), torch.randn(2, 5, 16))
    assert report.total.params == 16 * 32 + 32
    assert report.total.macs == (2 * 5) * 16 * 32


def test_bilinear() -> None:
    report = convprof.profile(nn.Bilinear(3, 4, 5), (torch.randn(7, 3), torch.randn(7, 4)))
    assert report.total.params == 5 * 3 * 4 + 5
    assert report.total.macs == 7 * 5 * 3 * 4


def test_functional_bilinear_in_custom_module() -> None:
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(5, 3, 4))

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return F.bilinear(a, b, self.w)

    report = convprof.profile(Custom(), (torch.randn(7, 3), torch.randn(7, 4)))
    assert report.total.macs == 7 * 5 * 3 * 4
    assert report.complete


class Products(nn.Module):
    """Every way to multiply matrices that the op-level formulas must see."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 6))
        self.b = nn.Parameter(torch.randn(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (4, 8)
        y = x @ self.w  # mm: 4*8*6
        y = torch.addmm(self.b, x, self.w) + y  # addmm: 4*8*6
        z = torch.einsum("bij,bjk->bik", x.view(2, 2, 8), self.w.expand(2, 8, 6))  # bmm: 2*2*8*6
        z = torch.baddbmm(z, x.view(2, 2, 8), self.w.expand(2, 8, 6))  # baddbmm: 2*2*8*6
        v = torch.mv(self.w, self.b)  # mv: 8*6
        d = torch.dot(self.b, self.b)  # dot: 6
        return y + z.reshape(4, 6) + v.sum() + d + F.linear(x, self.w.t()) + torch.matmul(x, self.w)


def test_matrix_products_in_custom_module() -> None:
    report = convprof.profile(Products(), torch.randn(4, 8))
    expected = 4 * 8 * 6 + 4 * 8 * 6 + 2 * 2 * 8 * 6 + 2 * 2 * 8 * 6 + 8 * 6 + 6 + 4 * 8 * 6 + 4 * 8 * 6
    assert report.total.macs == expected
    assert report.complete


def _mha(batch: int, lq: int, lk: int, e: int, kdim: int, vdim: int, extra: int = 0) -> int:
    projections = batch * lq * e * e + batch * lk * (kdim + vdim) * e + batch * lq * e * e
    return projections + 2 * batch * lq * (lk + extra) * e  # Q K^T and softmax(.) V


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(
    "kwargs,q_shape,kv_shape,expected",
    [
        ({"batch_first": True}, (2, 5, 16), (2, 7, 16), _mha(2, 5, 7, 16, 16, 16)),
        ({}, (5, 2, 16), (7, 2, 16), _mha(2, 5, 7, 16, 16, 16)),
        ({"kdim": 8, "vdim": 12, "batch_first": True}, (2, 5, 16), None, _mha(2, 5, 7, 16, 8, 12)),
        ({"add_bias_kv": True, "add_zero_attn": True}, (5, 2, 16), (7, 2, 16), _mha(2, 5, 7, 16, 16, 16, 2)),
        ({}, (5, 16), (7, 16), _mha(1, 5, 7, 16, 16, 16)),
    ],
)
def test_multihead_attention(
    kwargs: dict[str, object],
    q_shape: tuple[int, ...],
    kv_shape: tuple[int, ...] | None,
    expected: int,
    training: bool,
) -> None:
    mha = nn.MultiheadAttention(16, 4, **kwargs).train(training)  # type: ignore[arg-type]
    q = torch.randn(q_shape)
    if kv_shape is None:  # kdim/vdim differ from embed_dim
        k, v = torch.randn(2, 7, 8), torch.randn(2, 7, 12)
    else:
        k = v = torch.randn(kv_shape)
    report = convprof.profile(mha, (q, k, v))
    assert report.total.macs == expected
    assert report.total.params == sum(p.numel() for p in mha.parameters())


def test_self_attention_fast_path_equals_slow_path() -> None:
    # Eval + no_grad + batch_first self-attention takes torch._native_multi_head_attention.
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(3, 10, 32)
    report = convprof.profile(mha, (x, x, x))
    assert report.total.macs == _mha(3, 10, 10, 32, 32, 32)


def test_transformer_encoder_layer() -> None:
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True)
    x = torch.randn(2, 9, 32)
    expected = _mha(2, 9, 9, 32, 32, 32) + (2 * 9) * 32 * 64 * 2  # attention + two FFN linears
    eval_report = convprof.profile(layer.eval(), x)
    assert eval_report.total.macs == expected
    assert convprof.profile(layer.train(), x).total.macs == expected
    # The sub-layers are rows in every mode (convprof keeps PyTorch's fused path out of the pass).
    assert {"self_attn", "linear1", "linear2"} <= {row.name for row in eval_report.layers if row.macs}


class FusedEncoderLayer(nn.Module):
    """Calls the fused kernel that nn.TransformerEncoderLayer uses in inference, directly."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.layer
        return torch._transformer_encoder_layer_fwd(
            x,
            32,
            4,
            m.self_attn.in_proj_weight,
            m.self_attn.in_proj_bias,
            m.self_attn.out_proj.weight,
            m.self_attn.out_proj.bias,
            False,
            False,
            m.norm1.eps,
            m.norm1.weight,
            m.norm1.bias,
            m.norm2.weight,
            m.norm2.bias,
            m.linear1.weight,
            m.linear1.bias,
            m.linear2.weight,
            m.linear2.bias,
            None,
        )


def test_fused_encoder_layer_operator() -> None:
    report = convprof.profile(FusedEncoderLayer(), torch.randn(2, 9, 32))
    assert report.complete
    assert report.total.macs == _mha(2, 9, 9, 32, 32, 32) + (2 * 9) * 32 * 64 * 2


class SDPA(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[-2] == k.shape[-2])


@pytest.mark.parametrize(
    "q,k,v",
    [((2, 4, 10, 8), (2, 4, 10, 8), (2, 4, 10, 8)), ((2, 4, 10, 8), (2, 4, 12, 8), (2, 4, 12, 16))],
)
def test_scaled_dot_product_attention(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...]) -> None:
    report = convprof.profile(SDPA(), (torch.randn(q), torch.randn(k), torch.randn(v)))
    b, h, lq, d = q
    lk, dv = k[2], v[3]
    assert report.total.macs == b * h * lq * lk * d + b * h * lq * lk * dv
    assert report.complete


class Distances(nn.Module):
    """cdist of a batch of rows against 30 learned prototypes of 16 features."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.prototypes = nn.Parameter(torch.randn(30, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x, self.prototypes.expand(x.shape[0], 30, 16), p=self.p)


@pytest.mark.parametrize("compute", [True, False])
@pytest.mark.parametrize(
    ("p", "rows", "macs"),
    [
        (2.0, 8, 3 * 8 * 30 * 16),  # 3 batches x 8 x 30 distances, 16 squared differences each
        (2.0, 40, 3 * 40 * 30 * 16),  # beyond 25 rows PyTorch takes the matrix-product path
        (1.0, 8, 0),  # sums of |x - y|: no products, free under the convention
    ],
)
def test_cdist(p: float, rows: int, macs: int, compute: bool) -> None:
    report = convprof.profile(Distances(p), torch.randn(3, rows, 16), compute=compute)
    assert report.total.macs == macs and report.complete


class TimeBatchChannel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 8, 12))  # kernel 3, 8 -> 12 channels
        self.bias = nn.Parameter(torch.zeros(12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.conv_tbc(x, self.weight, self.bias, 1)


@pytest.mark.parametrize("compute", [True, False])
def test_conv_tbc(compute: bool) -> None:
    # 20 steps padded by 1 on each side, kernel 3: 20 outputs per sequence; 2 sequences x 12
    # channels, each output sums 3 x 8 products
    report = convprof.profile(TimeBatchChannel(), torch.randn(20, 2, 8), compute=compute)
    assert report.total.macs == 20 * 2 * 12 * 3 * 8 == 11_520 and report.complete
