"""A training step with the model's own gradient checkpointing (issue 34): reentrant and not,
on both paths, against hand arithmetic for the MACs and the measured peak for memory."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from measured_memory import training_peak
from torch import nn
from torch.utils.checkpoint import checkpoint

import convprof


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(16, 64)
        self.down = nn.Linear(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


class Checkpointed(nn.Module):
    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.stem = nn.Linear(16, 16)
        self.blocks = nn.ModuleList(Block() for _ in range(2))
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=self.reentrant)
        return x


# 4 rows: the stem 4 x 16 x 16 = 1,024; each block's up and down 4 x 16 x 64 = 4,096 each
FORWARD = 1_024 + 2 * (4_096 + 4_096)
# the stem's weight gradient only (x wants none): 1,024; each block's two layers, input and
# weight gradients: 4 x 4,096
BACKWARD = 1_024 + 2 * 4 * 4_096


@pytest.mark.parametrize("compute", [True, False])
@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_recompute_is_counted_apart(reentrant: bool, compute: bool) -> None:
    report = convprof.profile(Checkpointed(reentrant), torch.randn(4, 16), compute=compute, backward=True)
    assert (report.total.macs, report.total.train_macs) == (FORWARD, FORWARD + BACKWARD)
    # reentrant checkpointing runs each block's forward again (8,192 each); the non-reentrant
    # one stops when the last saved tensor is back, before the block's last product
    assert report.total.recompute_macs == (2 * 8_192 if reentrant else 2 * 4_096)
    # the forward's outputs once, the recompute's not again: the stem's 4 x 16 and each
    # block's up (4 x 64) and down (4 x 16) floats
    assert report.sizes.activation_bytes == 4 * (4 * 16 + 2 * (4 * 64 + 4 * 16))


def test_reentrant_step_leaves_grads_and_hooks_as_they_were() -> None:
    model = Checkpointed(True)
    fired: list[str] = []
    model.stem.weight.register_post_accumulate_grad_hook(lambda p: fired.append("hook"))
    before = torch.ones(16, 16)
    model.stem.weight.grad = before
    convprof.profile(model, torch.randn(4, 16), backward=True, memory=True)
    assert model.stem.weight.grad is before and model.blocks[0].up.weight.grad is None
    assert fired == []
    model(torch.randn(4, 16)).sum().backward()  # the hook is still there
    assert fired == ["hook"]


def _qwen3(reentrant: bool) -> tuple[nn.Module, torch.Tensor]:
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    config = transformers.Qwen3Config(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        use_cache=False,
    )
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(config)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    return model, torch.randint(0, 100, (2, 32))


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated")
@pytest.mark.parametrize("compute", [True, False], ids=["computing", "zero-compute"])
@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_transformers_gradient_checkpointing(reentrant: bool, compute: bool) -> None:
    model, ids = _qwen3(reentrant)
    measured = training_peak(model, (ids,), {}, optimizer="adam")
    options: dict[str, Any] = {"backward": True, "memory": True, "optimizer": "adam"}
    report = convprof.profile(model, ids, compute=compute, **options)
    # per decoder layer on 64 tokens: q and o projections 64 x 64 x 64 = 262,144 each, k and v
    # 64 x 64 x 32 = 131,072 each, attention 2 x 4 heads x 32 x 32 x (16 + 16) = 262,144, the
    # MLP's gate, up and down 64 x 64 x 128 = 524,288 each: 2,621,440. Reentrant checkpointing
    # runs both layers again; the non-reentrant one stops before down_proj, the last product
    layer = 2 * 262_144 + 2 * 131_072 + 262_144 + 3 * 524_288
    assert report.total.recompute_macs == 2 * (layer if reentrant else layer - 524_288)
    assert report.memory is not None
    # the recompute entered the forward's modes again, and the attention they patch is back
    assert torch.nn.functional.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention
    error = report.memory.peak_bytes / measured - 1
    assert abs(error) <= 0.01, f"predicted {report.memory.peak_bytes:,}, measured {measured:,}"
