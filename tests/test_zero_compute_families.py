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
