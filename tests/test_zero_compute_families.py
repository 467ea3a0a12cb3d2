"""Families whose zero-compute pass used to stop: each now runs without arithmetic and gives the
computing pass's count, complete.

transformers' decoders make an all-ones attention mask on their input's device when none is
given and test it with ``.item()``; on meta that stopped every BART-style model, Longformer and
ConvBERT. Constant tensors made on meta (all-ones, and integer zeros, fills and ranges) now stay
real when small, as the caller's masks do, and so does what the model makes from them on its
input's device (the mask turned into booleans). The oracle is the same model's computing pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import convprof

SEQ2SEQ = {
    "vocab_size": 1000,
    "d_model": 32,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "max_position_embeddings": 64,
}
ENCODER = {
    "vocab_size": 1000,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def _bart() -> nn.Module:
    import transformers as hf

    return hf.BartModel(hf.BartConfig(**SEQ2SEQ))


def _mbart() -> nn.Module:
    import transformers as hf

    return hf.MBartModel(hf.MBartConfig(**SEQ2SEQ))


def _pegasus() -> nn.Module:
    import transformers as hf

    return hf.PegasusModel(hf.PegasusConfig(**SEQ2SEQ))


def _led() -> nn.Module:
    import transformers as hf

    positions = {"max_encoder_position_embeddings": 64, "max_decoder_position_embeddings": 64}
    return hf.LEDModel(hf.LEDConfig(**SEQ2SEQ, **positions, attention_window=8))


def _longformer() -> nn.Module:
    import transformers as hf

    return hf.LongformerModel(hf.LongformerConfig(**ENCODER, attention_window=8, max_position_embeddings=80))


def _convbert() -> nn.Module:
    import transformers as hf

    return hf.ConvBertModel(hf.ConvBertConfig(**ENCODER, embedding_size=32))


MODELS: dict[str, Callable[[], nn.Module]] = {
    "bart": _bart,
    "mbart": _mbart,
    "pegasus": _pegasus,
    "led": _led,
    "longformer": _longformer,
    "convbert": _convbert,
}


@pytest.mark.parametrize("name", list(MODELS))
def test_zero_compute_runs_and_counts_as_the_computing_pass(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    ids = torch.randint(3, 1000, (2, 16))
    kwargs: dict[str, Any] = {"input_ids": ids}
    if name in ("pegasus", "led"):  # no default decoder inputs
        kwargs["decoder_input_ids"] = ids
    zero = convprof.profile(model, (), kwargs, compute=False)
    real = convprof.profile(model, (), kwargs, compute=True)
    assert zero.complete and real.complete
    assert zero.total.macs == real.total.macs > 0
    assert [(r.name, r.macs) for r in zero.layers] == [(r.name, r.macs) for r in real.layers]


def test_a_large_constant_stays_meta() -> None:
    # 5M elements: beyond what is kept real (4M); the pass still runs, on meta
    class Big(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.ones(5 * 2**20, device=x.device).sum()

    report = convprof.profile(Big(), torch.randn(2), compute=False)
    assert report.complete


# nn.Transformer(32, 4, 2, 2, 64) on a 2 x 10 source and a 2 x 7 target, by hand (MACs):
#   encoder layer, 20 tokens: in_proj 20*32*96 = 61,440; scores and values 2 * (2*10*10*32)
#     = 12,800; out_proj 20*32*32 = 20,480; feed-forward 2 * 20*32*64 = 81,920: 176,640
#   decoder layer, 14 tokens: self-attention 14*32*96 + 2 * (2*7*7*32) + 14*32*32 = 63,616;
#     cross-attention 14*32*32 + 20*32*64 + 2 * (2*7*10*32) + 14*32*32 = 78,592;
#     feed-forward 2 * 14*32*64 = 57,344: 199,552
TRANSFORMER_MACS = 2 * 176_640 + 2 * 199_552  # 752,384


def _transformer_masks() -> dict[str, dict[str, torch.Tensor]]:
    padding = torch.zeros(2, 10, dtype=torch.bool)
    padding[0, 6:] = True
    target_padding = torch.zeros(2, 7, dtype=torch.bool)
    target_padding[1, 5:] = True
    return {
        # a float causal mask: nn.Transformer compares it with the causal one (.item())
        "causal tgt_mask": {"tgt_mask": nn.Transformer.generate_square_subsequent_mask(7)},
        "additive src_mask": {"src_mask": nn.Transformer.generate_square_subsequent_mask(10)},
        "memory padding": {"memory_key_padding_mask": padding},
        "target padding": {"tgt_key_padding_mask": target_padding},
        "src padding and src_mask": {
            "src_key_padding_mask": padding,
            "src_mask": torch.zeros(10, 10, dtype=torch.bool),
        },
    }


@pytest.mark.parametrize("case", list(_transformer_masks()))
def test_nn_transformer_with_masks(case: str) -> None:
    # The caller's masks (boolean, or float with only 0 and -inf) stay real in a zero-compute
    # pass, as its integer lengths do: nn.Transformer reads their values to pick its path.
    torch.manual_seed(0)
    model = nn.Transformer(32, 4, 2, 2, 64, batch_first=True).eval()
    masks = _transformer_masks()[case]
    before = {k: v.clone() for k, v in masks.items()}
    inputs = (torch.randn(2, 10, 32), torch.randn(2, 7, 32))
    if case == "src padding and src_mask":
        # both given: PyTorch's sparsity fast path is off, every position is computed; the
        # left-alignment check it makes first has no meta kernel, so zero compute refuses
        with pytest.raises(convprof.ValuesNeeded, match="_nested_tensor_from_mask_left_aligned"):
            convprof.profile(model, inputs, masks, compute=False)
        assert convprof.profile(model, inputs, masks).total.macs == TRANSFORMER_MACS
        return
    zero = convprof.profile(model, inputs, masks, compute=False)
    real = convprof.profile(model, inputs, masks)
    assert zero.complete and real.complete
    assert zero.total.macs == real.total.macs == TRANSFORMER_MACS
    assert all(torch.equal(before[k], masks[k]) for k in masks)


def test_what_stays_real_is_a_mask() -> None:
    from convprof.record.stand_ins.values import steers

    causal = nn.Transformer.generate_square_subsequent_mask(6)
    assert steers(causal)  # 0 and -inf
    assert steers(torch.full((4, 4), torch.finfo(torch.float16).min, dtype=torch.float16))
    assert steers(torch.zeros(1000, 2000, dtype=torch.bool))  # a padding mask may be large
    assert not steers(torch.randn(4, 4))  # data
    assert not steers(torch.zeros(1, 6, 4, 4))  # all zeros: may be an input (a dummy image)
    assert not steers(causal.clone().requires_grad_())
    assert not steers(torch.zeros(8))  # 1-D: a bias or a state, not a mask
    assert not steers(torch.zeros(4096, 1025))  # beyond the 4M elements kept real
    assert not steers(torch.arange(5000))  # integers: 4,096 at most


def test_a_table_of_sizes_filled_by_the_model() -> None:
    # DETR-style detectors (D-FINE, DEIMv2) fill an empty integer table with their feature
    # maps' sizes and check it with .item(); the table stays real and so do the writes.
    class Levels(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(8, 4)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            shapes = torch.empty((2, 2), dtype=torch.long, device=a.device)
            for level, x in enumerate((a, b)):
                shapes[level, 0], shapes[level, 1] = x.shape[-2], x.shape[-1]
            flat = torch.cat([a.flatten(2), b.flatten(2)], 2).transpose(1, 2)
            if bool((shapes[:, 0] * shapes[:, 1]).sum() != flat.shape[1]):
                raise ValueError("sizes do not add up")
            return self.proj(flat)

    inputs = (torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2))
    zero = convprof.profile(Levels(), inputs, compute=False)
    assert zero.complete
    assert zero.total.macs == convprof.profile(Levels(), inputs).total.macs == (16 + 4) * 8 * 4


def test_tolist_of_a_meta_tensor_is_a_refusal() -> None:
    # JetMoE's router calls tolist() on its expert counts: PyTorch speaks of "unallocated
    # storage", which is a value needed, so compute="auto" falls back to a real pass.
    class Router(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            first = self.gate(x).argmax(-1).tolist()[0]
            return x[: first + 1].sum()

    with pytest.raises(convprof.ValuesNeeded, match="Router"):
        convprof.profile(Router(), torch.randn(5, 4), compute=False)
    assert convprof.profile(Router(), torch.randn(5, 4), compute="auto").total.macs == 5 * 4 * 3


def test_tables_made_from_python_numbers_and_integer_buffers_stay_real() -> None:
    # Grounding DINO: torch.as_tensor(sizes, device=x.device) then .item() on a product of
    # it; EnCodec: its strides in an integer buffer, the padding computed from them.
    class Padded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 3, 4, stride=2)
            self.stride = nn.Buffer(torch.tensor(2), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            sizes = torch.as_tensor([(x.shape[-1], 1)], dtype=torch.long, device=x.device)
            if bool((sizes[:, 0] * sizes[:, 1]).sum() != x.shape[-1]):
                raise ValueError("sizes do not add up")
            extra = int(torch.tensor(x.shape[-1], device=x.device) % self.stride)
            return self.conv(nn.functional.pad(x, (0, extra)))

    model = Padded()
    before, makers = model.stride, (torch.tensor, torch.as_tensor)
    zero = convprof.profile(model, torch.randn(1, 2, 9), compute=False)
    # padded to 10: (10 - 4) / 2 + 1 = 4 positions x 3 outputs x 2 channels x 4 taps
    assert zero.complete and zero.total.macs == 4 * 3 * 2 * 4
    assert convprof.profile(model, torch.randn(1, 2, 9)).total.macs == zero.total.macs
    assert model.stride is before
    assert (torch.tensor, torch.as_tensor) == makers  # put back after the pass
