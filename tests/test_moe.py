"""Mixture of experts: ``aten._grouped_mm`` layouts and a transformers Mixtral, against closed forms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convprof
from convprof.record.stand_ins.operators import shortcut_for


class Grouped(nn.Module):
    def __init__(self, offs: list[int] | None) -> None:
        super().__init__()
        self.offs = offs

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        offs = None if self.offs is None else torch.tensor(self.offs, dtype=torch.int32)
        return torch._grouped_mm(a, b, offs=offs)


# name: (a shape, b shape, offs, MACs); rows of 8 floats: the kernels want 16-byte strides
LAYOUTS = {
    # 12 token rows split 5 / 4 / 3 among 3 experts, each (8 -> 8): sum_g M_g x 8 x 8
    "rows among experts (2d x 3d)": ((12, 8), (3, 8, 8), [5, 9, 12], (5 + 4 + 3) * 8 * 8),
    # a batch of 3 experts, 4 rows each
    "batch of experts (3d x 3d)": ((3, 4, 8), (3, 8, 8), None, 3 * 4 * 8 * 8),
    # the inner dimension 16 split 8 / 8: one (4 x 8) output per group, sum_g 4 x K_g x 8
    "inner dimension (2d x 2d)": ((4, 16), (16, 8), [8, 16], 4 * (8 + 8) * 8),
    # the 16 columns of b split 8 / 8 between 2 groups of a
    "columns among experts (3d x 2d)": ((2, 4, 8), (8, 16), [8, 16], 4 * 8 * (8 + 8)),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_grouped_mm_layouts(name: str) -> None:
    a_shape, b_shape, offs, macs = LAYOUTS[name]
    # CPU runs grouped products in any float type; contiguous last dims as CUDA requires
    a, b = torch.randn(a_shape), torch.randn(b_shape)
    report = convprof.profile(Grouped(offs), (a, b))
    assert report.total.macs == macs
    assert report.complete


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "groups"),
    [
        ((12, 8), (3, 8, 8), 3),
        ((12, 8), (3, 8, 6), 3),  # 6 columns: the kernel pads each output row to 16 bytes
        ((3, 4, 8), (3, 8, 8), 0),
        ((3, 4, 8), (3, 8, 12), 0),
        ((4, 16), (16, 8), 2),  # the weight gradient of the first layout
        ((4, 24), (24, 6), 2),
        ((2, 4, 8), (8, 16), 2),
    ],
    ids=["2d x 3d", "2d x 3d padded", "3d x 3d", "3d x 3d padded", "2d x 2d", "2d x 2d padded", "3d x 2d"],
)
def test_grouped_mm_stand_in_matches_pytorch_meta_kernel(
    a_shape: tuple[int, ...], b_shape: tuple[int, ...], groups: int
) -> None:
    # PyTorch's meta kernel takes bf16 only; the stand-in must agree with it there, and give the
    # same shapes in float32, which only the stand-in takes on meta.
    op = torch.ops.aten._grouped_mm.default
    shortcut = shortcut_for(op)
    assert shortcut is not None
    offs = torch.empty(groups, dtype=torch.int32, device="meta") if groups else None
    a = torch.empty(a_shape, dtype=torch.bfloat16, device="meta")
    b = torch.empty(b_shape, dtype=torch.bfloat16, device="meta").mT.contiguous().mT  # column major
    mine = shortcut(op, (a, b, offs), {})
    theirs = op(a, b, offs)
    assert (mine.shape, mine.dtype, mine.stride()) == (theirs.shape, theirs.dtype, theirs.stride())
    single = shortcut(op, (a.float(), b.float(), offs), {})
    assert (single.shape, single.dtype) == (theirs.shape, torch.float32)


def test_mixtral_counts_router_and_top_k_experts() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.MixtralConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
    )
    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(config).eval()
    ids = torch.randint(0, 100, (1, 16))
    tokens, hidden, ffn, head_dim = 16, 32, 64, 8
    attention = (
        tokens * hidden * (4 * head_dim)  # q_proj: 4 heads
        + 2 * tokens * hidden * (2 * head_dim)  # k_proj, v_proj: 2 key-value heads
        + tokens * (4 * head_dim) * hidden  # o_proj
        + 4 * tokens * tokens * (head_dim + head_dim)  # scores and mixing, per query head
    )
    router = tokens * hidden * 4
    experts = tokens * 2 * (3 * hidden * ffn)  # top-2 experts, each w1, w3 (h -> f) and w2 (f -> h)
    expected = 2 * (attention + router + experts) + tokens * hidden * 100  # + lm_head
    for compute in (True, False):
        report = convprof.profile(model, (), {"input_ids": ids}, compute=compute)
        assert report.total.macs == expected
        assert report.complete, report.unexplained
