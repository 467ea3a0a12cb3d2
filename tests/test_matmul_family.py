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
    # triangular solves by substitution: n (n - 1) / 2 MACs per right-hand side (x_i needs
    # the i products a_ij x_j, j < i); 2 batches x 3 right-hand sides of order 4: 2*3*6
    (
        "linalg.solve_triangular",
        lambda: torch.linalg.solve_triangular(t(2, 4, 4).tril() + 4 * torch.eye(4), t(2, 4, 3), upper=False),
        2 * 3 * (4 * 3 // 2),
    ),
    # X A = B: B's 5 rows are the right-hand sides, order 3 (3 products each)
    (
        "solve_triangular left=False",
        lambda: torch.linalg.solve_triangular(
            t(3, 3).triu() + 3 * torch.eye(3),
            t(5, 3),
            upper=True,
            left=False,
        ),
        5 * 3,
    ),
    (
        "solve_triangular unit",
        lambda: torch.linalg.solve_triangular(t(4, 4).tril(), t(4, 2), upper=False, unitriangular=True),
        2 * 6,
    ),
    (
        "triangular_solve",
        lambda: torch.triangular_solve(t(4, 2), t(4, 4).triu() + 4 * torch.eye(4)).solution,
        2 * 6,
    ),
    # a list of products (_foreach_mm): the sum of each pair's, 2*3*6 + 4*5*2
    (
        "_foreach_mm",
        lambda: torch._foreach_mm([t(2, 3), t(4, 5)], [t(3, 6), t(5, 2)])[0],
        2 * 3 * 6 + 4 * 5 * 2,
    ),
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


# FFTs, 5 N log2 N real FLOPs per complex transform of N points (FLOPs = 2 x MACs), half for
# real data; N is the product of the transformed sizes
FFTS: list[tuple[str, Call, int]] = [
    # 4 complex transforms of 256 points: 4 x 5 x 256 x 8 / 2
    ("fft complex", lambda: torch.fft.fft(torch.randn(4, 256, dtype=torch.complex64)), 4 * 5 * 256 * 8 // 2),
    # fft of real data: half a complex transform each
    ("fft real", lambda: torch.fft.fft(t(4, 256)), 4 * 5 * 256 * 8 // 4),
    ("rfft", lambda: torch.fft.rfft(t(4, 256)), 4 * 5 * 256 * 8 // 4),
    ("irfft", lambda: torch.fft.irfft(torch.randn(4, 129, dtype=torch.complex64)), 4 * 5 * 256 * 8 // 4),
    # a 3-D transform of 2 x 8 x 16 = 256 points (fftn of real data casts it to complex first)
    ("fftn", lambda: torch.fft.fftn(t(2, 8, 16)), 5 * 256 * 8 // 2),
    # 2 transforms of 8 x 16 = 128 points, log2 128 = 7
    ("fft2", lambda: torch.fft.fft2(torch.randn(2, 8, 16, dtype=torch.complex64)), 2 * 5 * 128 * 7 // 2),
    # STFT of 1,000 samples, n_fft 64, hop 16, centred (reflection-padded to 1,064): 63 frames
    # of 64 real points, log2 64 = 6
    (
        "stft",
        lambda: torch.stft(t(1000), 64, hop_length=16, window=torch.hann_window(64), return_complex=True),
        63 * 5 * 64 * 6 // 4,
    ),
]


@pytest.mark.parametrize(("name", "call", "macs"), FFTS, ids=[c[0] for c in FFTS])
@pytest.mark.parametrize("compute", [True, False], ids=["computing", "zero-compute"])
def test_fft(name: str, call: Call, macs: int, compute: bool) -> None:
    report = convprof.profile(_Runs(call), (), compute=compute)
    assert report.total.macs == macs, name
    assert not report.unexplained


def test_fft_of_an_odd_length_uses_its_log() -> None:
    # 3 real transforms of 100 points: 3 x 2.5 x 100 x log2(100) = 4,982.9 FLOPs, 2,491 MACs
    report = convprof.profile(_Runs(lambda: torch.fft.rfft(t(3, 100))), (), compute=False)
    assert report.total.macs == round(3 * 100 * 1.25 * 6.643856189774724) == 2_491


def test_fnet_counts_its_fourier_mixing() -> None:
    import transformers as hf

    sizes = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128}
    config = hf.FNetConfig(vocab_size=1000, max_position_embeddings=64, **sizes)
    model = hf.FNetModel(config)
    ids = torch.randint(0, 1000, (2, 64))
    # per layer: fftn over (sequence, hidden) of 64 x 64 = 4,096 points of 2 x 64 x 64 complex
    # numbers (real hidden states cast to complex): 2.5 x 8,192 x log2 4,096 = 245,760 MACs,
    # then the feed-forward 64 -> 128 -> 64 on 128 tokens; the embeddings' 64 x 64 projection
    # of 128 tokens and the pooler's 64 x 64 on the first token of each sequence
    fourier = round(2.5 * 2 * 64 * 64 * 12)
    feed_forward = 2 * 64 * (64 * 128 + 128 * 64)
    expected = 2 * (fourier + feed_forward) + 2 * 64 * 64 * 64 + 2 * 64 * 64
    for compute in (True, False):
        report = convprof.profile(model, (), {"input_ids": ids}, compute=compute)
        assert report.total.macs == expected == 5_218_304
        assert not report.unexplained


PLACEMENT: list[tuple[str, Call]] = [
    ("index_add_", lambda: t(4, 3).index_add_(0, torch.tensor([0, 2]), t(2, 3))),
    ("index_copy", lambda: t(4, 3).index_copy(0, torch.tensor([0, 2]), t(2, 3))),
    ("masked_scatter", lambda: t(2, 3).masked_scatter(torch.tensor([[True, False, True]] * 2), t(4))),
    # Python's bitwise operators on masks reach the dispatcher as __or__ and __and__, untagged
    ("mask | mask", lambda: (t(2, 3) > 0) | (t(2, 3) < 0)),
    ("mask & mask", lambda: (t(2, 3) > 0) & (t(2, 3) < 0)),
    # list operators of optimizers and FSDP2's casts: as free as the operator they apply
    ("_foreach_copy_", lambda: torch._foreach_copy_([t(2), t(3)], [t(2), t(3)])[0]),
    ("_foreach_addcmul_", lambda: torch._foreach_addcmul_([t(2)], [t(2)], [t(2)])[0]),
    ("_foreach_zero_", lambda: (torch._foreach_zero_(x := [t(2)]), x[0])[1]),
]


@pytest.mark.parametrize(("name", "call"), PLACEMENT, ids=[c[0] for c in PLACEMENT])
def test_placement_is_free_and_explained(name: str, call: Call) -> None:
    # additions and copies into place: no products, 0 MACs, and the report is complete
    report = convprof.profile(_Runs(call), ())
    assert report.total.macs == 0 and not report.unexplained, name


def test_a_packed_lstm_is_complete() -> None:
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class Packed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(8, 16, batch_first=True)

        def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            return pad_packed_sequence(self.rnn(packed)[0], batch_first=True)[0]

    report = convprof.profile(Packed(), (t(3, 5, 8), torch.tensor([5, 3, 2])))
    # the real steps only: 5 + 3 + 2 = 10, each 4 gates x 16 x (8 + 16)
    assert report.total.macs == 10 * 4 * 16 * (8 + 16)
    assert not report.unexplained
