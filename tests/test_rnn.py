"""Recurrent layers against closed forms written out here (formulas/rnn.py derives them).

Per time step, layer and direction: gates x H x (layer input + H_out) MACs, plus H x P for an
LSTM projection; gates are 1 (RNN), 4 (LSTM), 3 (GRU). Every case must give the same count on
real CPU tensors, with compute=False and on the meta device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.flop_counter import FlopCounterMode

import convprof


class CellLoop(nn.Module):
    """A cell stepped by hand over a (L, N, I) sequence, as decoders do."""

    def __init__(self, cell: nn.Module, hidden: int) -> None:
        super().__init__()
        self.cell, self.hidden = cell, hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state: Any = None
        for step in x:
            state = self.cell(step, state)
        return state[0] if isinstance(state, tuple) else state


# name: (build, input shape, expected MACs)
CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]] = {
    # 5 steps x batch 3 = 15 rows; 1 gate x 16 x (8 + 16)
    "rnn tanh": (lambda: nn.RNN(8, 16), (5, 3, 8), 15 * (1 * 16 * (8 + 16))),
    "rnn relu": (lambda: nn.RNN(8, 16, nonlinearity="relu"), (5, 3, 8), 15 * (1 * 16 * (8 + 16))),
    # two layers: the second reads the first's 16 outputs
    "lstm 2 layers": (
        lambda: nn.LSTM(8, 16, num_layers=2),
        (5, 3, 8),
        15 * (4 * 16 * (8 + 16) + 4 * 16 * (16 + 16)),
    ),
    "gru bidirectional batch_first": (
        lambda: nn.GRU(8, 16, bidirectional=True, batch_first=True),
        (3, 5, 8),
        15 * 2 * (3 * 16 * (8 + 16)),
    ),
    # H_out = proj_size 4; layer 2 reads 2 directions x 4; projection 16 x 4 per step
    "lstm proj bidirectional 2 layers": (
        lambda: nn.LSTM(8, 16, num_layers=2, proj_size=4, bidirectional=True),
        (5, 3, 8),
        15 * 2 * ((4 * 16 * (8 + 4) + 16 * 4) + (4 * 16 * (2 * 4 + 4) + 16 * 4)),
    ),
    "gru 3 layers bidirectional": (
        lambda: nn.GRU(4, 6, num_layers=3, bidirectional=True),
        (7, 2, 4),
        14 * 2 * (3 * 6 * (4 + 6) + 3 * 6 * (12 + 6) + 3 * 6 * (12 + 6)),
    ),
    "lstm unbatched": (lambda: nn.LSTM(8, 16), (5, 8), 5 * (4 * 16 * (8 + 16))),
    "rnn cell": (lambda: nn.RNNCell(8, 16), (3, 8), 3 * (1 * 16 * (8 + 16))),
    "lstm cell": (lambda: nn.LSTMCell(8, 16), (3, 8), 3 * (4 * 16 * (8 + 16))),
    "gru cell": (lambda: nn.GRUCell(8, 16), (3, 8), 3 * (3 * 16 * (8 + 16))),
    # 4 steps of batch 3 through one cell: 4 calls of one row
    "lstm cell loop": (lambda: CellLoop(nn.LSTMCell(8, 16), 16), (4, 3, 8), 4 * 3 * (4 * 16 * (8 + 16))),
}


@pytest.mark.parametrize("name", list(CASES))
def test_recurrent_layers_match_closed_form(name: str) -> None:
    build, shape, macs = CASES[name]
    torch.manual_seed(0)
    model = build()
    x = torch.randn(shape)
    params = sum(p.numel() for p in model.parameters())
    cpu = convprof.profile(model, x)
    zero = convprof.profile(model, x, compute=False)
    meta = convprof.profile(build().to("meta"), x.to("meta"))
    for report in (cpu, zero, meta):
        assert report.total.macs == macs
        assert report.total.params == params
        assert report.complete


@pytest.mark.parametrize("name", ["lstm 2 layers", "gru bidirectional batch_first", "rnn tanh"])
def test_recurrent_layers_match_flop_counter_on_meta(name: str) -> None:
    # On meta PyTorch decomposes the layer into one mm per step, which FlopCounterMode counts.
    build, shape, macs = CASES[name]
    model, x = build().to("meta"), torch.randn(shape, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert counter.get_total_flops() == 2 * macs


def test_packed_sequence_counts_the_real_steps() -> None:
    lstm = nn.LSTM(8, 16, batch_first=True)
    x = torch.randn(3, 5, 8)
    packed = pack_padded_sequence(x, torch.tensor([5, 3, 2]), batch_first=True)
    # 5 + 3 + 2 = 10 real steps, not 3 x 5 = 15
    expected = 10 * (4 * 16 * (8 + 16))
    assert convprof.profile(lstm, (packed,)).total.macs == expected


def test_zero_compute_leaves_the_recurrent_weights_real() -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(8, 16, num_layers=2)
    x = torch.randn(5, 3, 8)
    before = lstm(x)[0]
    convprof.profile(lstm, x, compute=False)
    assert all(not w.is_meta for w in lstm._flat_weights)
    assert all(not p.is_meta for p in lstm.parameters())
    assert torch.equal(lstm(x)[0], before)
