"""FlexAttention and torch.cond: higher-order operators, counted on every path (issue 33).

Expected counts are written out by hand. FlexAttention computes Q K^T and P V over the
query-key pairs of the blocks its mask keeps: pairs * (E + Ev) MACs, E the query and key head
size, Ev the value's; its backward (dQ, dK, dV and dP, as for scaled_dot_product_attention)
pairs * (2 E + 2 Ev).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.attention.flex_attention as flex_module
from torch import nn
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import convprof
from convprof.record.errors import ValuesNeeded

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Flex(nn.Module):
    def __init__(self, block_mask: object = None, gqa: bool = False) -> None:
        super().__init__()
        self.block_mask = block_mask
        self.gqa = gqa

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        def relative(
            score: torch.Tensor, b: object, h: object, qi: torch.Tensor, ki: torch.Tensor
        ) -> torch.Tensor:
            return score + (qi - ki)  # a score_mod: elementwise, free

        out = flex_attention(q, k, v, score_mod=relative, block_mask=self.block_mask, enable_gqa=self.gqa)
        assert isinstance(out, torch.Tensor)
        return out


def _causal(b: object, h: object, qi: torch.Tensor, ki: torch.Tensor) -> torch.Tensor:
    return qi >= ki


@pytest.mark.parametrize("compute", [True, False, "auto"])
def test_flex_attention_without_a_mask_is_dense(compute: bool | str) -> None:
    # grouped-query: 8 query heads over 2 key heads, 64 queries, 80 keys, E = 32, Ev = 16;
    # every pair per query head: 1 * 8 * 64 * 80 = 40,960 pairs, * (32 + 16) = 1,966,080
    q, k, v = torch.randn(1, 8, 64, 32), torch.randn(1, 2, 80, 32), torch.randn(1, 2, 80, 16)
    report = convprof.profile(Flex(gqa=True), (q, k, v), compute=compute)
    assert (report.total.macs, report.complete) == (1_966_080, True)


@pytest.mark.parametrize("compute", [True, "auto"])
def test_flex_attention_counts_the_blocks_a_causal_mask_keeps(compute: bool | str) -> None:
    # 300 positions in blocks of 128: query blocks of 128, 128 and 44 rows. A causal mask
    # keeps key blocks {0}, {0, 1} and {0, 1, 2} (the last clipped to 44 columns):
    # 128 * 128 + 128 * 256 + 44 * 300 = 16,384 + 32,768 + 13,200 = 62,352 pairs per head;
    # batch 2 * 4 heads: 498,816 pairs, * (16 + 8) = 11,971,584 (dense: 17,280,000)
    mask = create_block_mask(_causal, None, None, 300, 300, device="cpu")
    q, v = torch.randn(2, 4, 300, 16), torch.randn(2, 4, 300, 8)
    report = convprof.profile(Flex(mask), (q, q, v), compute=compute)
    assert (report.total.macs, report.complete) == (11_971_584, True)


def test_zero_compute_refuses_a_mask_it_cannot_read() -> None:
    mask = create_block_mask(_causal, None, None, 300, 300, device="cpu")
    q = torch.randn(1, 1, 300, 16)
    with pytest.raises(ValuesNeeded, match="block_mask"):
        convprof.profile(Flex(mask), (q, q, q), compute=False)


def test_flex_attention_training_step_in_zero_compute() -> None:
    # the CPU refuses FlexAttention's backward; zero compute counts it: 40,960 pairs (as
    # above) * (2 * 32 + 2 * 16) = 3,932,160 for the query's gradient
    q = torch.randn(1, 8, 64, 32, requires_grad=True)
    k, v = torch.randn(1, 2, 80, 32), torch.randn(1, 2, 80, 16)
    report = convprof.profile(Flex(gqa=True), (q, k, v), compute=False, backward=True)
    assert report.total.macs == 1_966_080
    assert report.total.train_macs == 1_966_080 + 3_932_160


def test_flex_attention_memory_on_the_cpu_is_refused_and_nothing_is_left_behind() -> None:
    debug, validate = flex_module._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG, flex_module._validate_device
    q = torch.randn(1, 2, 16, 8)
    with pytest.raises(convprof.ForwardError, match="flex_attention on the CPU is not predicted"):
        convprof.profile(Flex(), (q, q, q), memory="cpu")
    # on cuda: q (query, key and value: one tensor of 2 * 16 * 8 floats, 1,024 bytes), the
    # output (1,024) and two float32 rows of statistics (2 * 16 floats, 128 bytes, each rounded
    # up to the allocator's 512-byte block): 1,024 + 1,024 + 2 * 512 = 3,072 bytes
    report = convprof.profile(Flex(), (q, q, q), compute=False, memory="cuda")
    assert report.memory is not None and report.memory.peak_bytes == 3_072
    assert flex_module._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG is debug
    assert flex_module._validate_device is validate


def test_transformers_flex_attention_llama() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    ids = torch.randint(0, 100, (2, 200))
    config._attn_implementation = "sdpa"
    dense = convprof.profile(transformers.LlamaForCausalLM(config).eval(), ids).total.macs
    config._attn_implementation = "flex_attention"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = convprof.profile(transformers.LlamaForCausalLM(config).eval(), ids, compute="auto")
    # SDPA counts every pair of the causal 200 x 200: 2 * 4 * 200 * 200 * (16 + 16) per layer
    # = 10,240,000. FlexAttention's causal mask in blocks of 128 keeps 128 * 128 + 72 * 200 =
    # 30,784 pairs per head, 2 * 4 * 30,784 * 32 = 7,880,704: 2,359,296 less per layer
    assert dense - report.total.macs == 2 * 2_359_296
    assert report.complete


class Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.small = nn.Linear(8, 8, bias=False)
        self.large = nn.Linear(8, 32, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def small(x: torch.Tensor) -> torch.Tensor:
            return self.small(x).sum(-1)

        def large(x: torch.Tensor) -> torch.Tensor:
            return self.large(x).sum(-1)

        out = torch.cond(x.sum() > 0, small, large, (x,))
        assert isinstance(out, torch.Tensor)
        return out


@pytest.mark.parametrize("sign, macs, layer", [(1.0, 2 * 8 * 8, "small"), (-1.0, 2 * 8 * 32, "large")])
def test_cond_counts_the_branch_that_ran(sign: float, macs: int, layer: str) -> None:
    # 2 rows through Linear(8, 8) (128 MACs) or Linear(8, 32) (512 MACs), not the larger of
    # the two as torch.utils.flop_counter counts
    x = torch.full((2, 8), sign)
    report = convprof.profile(Branches(), x, compute="auto")
    assert report.total.macs == macs
    assert {row.name: row.macs for row in report.layers}[layer] == macs


def test_cond_in_zero_compute_names_the_predicate() -> None:
    with pytest.raises(ValuesNeeded, match=r"torch\.cond.s predicate"):
        convprof.profile(Branches(), torch.ones(2, 8), compute=False)
