"""PyTorch's fused inference kernels for attention on the CPU (issue 34 #2): the memory of
``_native_multi_head_attention`` and ``_transformer_encoder_layer_fwd``, on both paths, against
the peak measured from torch.profiler's memory events, and zero compute's choice of kernel
against the real CPU's."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from measured_memory import inference_peak
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import convprof
from convprof.memory.fused import around
from convprof.memory.lifetimes import UntrackedLayout
from convprof.record.errors import ValuesNeeded
from convprof.record.fast_paths import _layer_fused, _mha_fused

MHA = torch.ops.aten._native_multi_head_attention.default
LAYER = torch.ops.aten._transformer_encoder_layer_fwd.default


class SelfAttention(nn.Module):
    """An attention layer called as models call it, with the masks made inside."""

    def __init__(
        self, width: int, heads: int, padding: bool = False, causal: bool = False, **kw: Any
    ) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.padding, self.causal, self.kw = padding, causal, kw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        kw = dict(self.kw)
        if self.padding:
            kw["key_padding_mask"] = torch.zeros(batch, tokens, dtype=torch.bool)
        if self.causal:
            kw["attn_mask"] = torch.ones(tokens, tokens, dtype=torch.bool).triu(1)
        out: torch.Tensor = self.attn(x, x, x, **kw)[0]
        return out


def test_the_attention_kernels_program_by_hand() -> None:
    # 4 sequences of 256 tokens of width 256 in 8 heads, float32, no weights returned:
    # BTD = 4 x 256 x 256 x 4 = 1 MiB; the scores 4 x 8 x 256 x 256 x 4 = 8 MiB.
    # Before the output: the packed projection and q, k, v (6 MiB), then q, k, v and the
    # scores (3 + 8 = 11 MiB); beside it, q, k, v and the context's copy (4 MiB).
    x = torch.empty(4, 256, 256, device="meta")
    args = (x, x, x, 256, 8, None, None, None, None, None, False, True, None)
    assert MHA in convprof.memory.scratch._SCRATCH
    assert convprof.memory.scratch._SCRATCH[MHA](args, None) == (11 * 2**20, 4 * 2**20)
    # a program: 10 own, an output of 5 beside 3 own, then 7 own beside it
    assert around([(10, False), (-10, False), (3, False), (5, True), (4, False)]) == (10, 7)


CASES = {
    "mha": lambda: SelfAttention(256, 8, need_weights=False),
    "mha-weights": lambda: SelfAttention(256, 8),
    "mha-weights-per-head": lambda: SelfAttention(96, 6, average_attn_weights=False),
    "mha-padding": lambda: SelfAttention(128, 4, padding=True, need_weights=False),
    "mha-causal-weights": lambda: SelfAttention(128, 4, causal=True),
    "layer-post-relu": lambda: nn.TransformerEncoderLayer(256, 8, 1024, batch_first=True),
    "layer-pre-gelu": lambda: nn.TransformerEncoderLayer(
        256, 8, 512, batch_first=True, norm_first=True, activation="gelu"
    ),
    "encoder": lambda: nn.TransformerEncoder(
        nn.TransformerEncoderLayer(256, 8, 1024, batch_first=True), 2, enable_nested_tensor=False
    ),
}
SHAPES = {
    "mha-weights-per-head": (3, 100, 96),
    "mha-padding": (2, 300, 128),
    "mha-causal-weights": (2, 300, 128),
}


@pytest.mark.parametrize("compute", [True, False], ids=["computing", "zero-compute"])
@pytest.mark.parametrize("case", list(CASES))
def test_inference_peak_is_the_measured_one(case: str, compute: bool) -> None:
    torch.manual_seed(0)
    model = CASES[case]().eval()
    x = torch.randn(
        *SHAPES.get(case, (4, 256, 256) if case in ("mha", "mha-weights", "encoder") else (2, 200, 256))
    )
    measured = inference_peak(model, (x,))
    predicted = convprof.profile(model, x, memory=True, compute=compute).memory
    assert predicted is not None
    assert predicted.peak_bytes == measured


def test_rows_and_macs_agree_with_the_layer_by_layer_pass() -> None:
    # The memory pass runs the fused layer (its sub-layers not called); the totals are the same
    layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True).eval()
    x = torch.randn(2, 10, 64)
    plain = convprof.profile(layer, x)
    for compute in (True, False):
        fused = convprof.profile(layer, x, memory=True, compute=compute)
        assert fused.total.macs == plain.total.macs
        assert {r.name: r for r in fused.layers}[""].macs == plain.total.macs  # the layer its own row
    assert not layer._forward_pre_hooks and "forward" not in layer.self_attn.__dict__


class Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[Any] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.add(func)
        return func(*args, **(kwargs or {}))


def _mha_calls(m: nn.MultiheadAttention, q: Any, k: Any, kw: dict[str, Any], grad: bool) -> tuple[bool, bool]:
    with torch.set_grad_enabled(grad), Ops() as ops:
        m(q, k, k, **kw)
    with torch.set_grad_enabled(grad):
        chosen = _mha_fused(m, q, k, k, kw.get("key_padding_mask"), kw.get("attn_mask"))
    return MHA in ops.ops, chosen


MHA_CONFIGS = {
    "plain": ({}, {}, False),
    "weights": ({}, {"need_weights": True}, False),
    "bool-mask": ({}, {"attn_mask": torch.ones(6, 6, dtype=torch.bool).tril()}, False),
    "float-mask": ({}, {"attn_mask": torch.zeros(6, 6)}, False),
    "cross": ({}, {"cross": True}, False),
    "training": ({"train": True}, {}, False),
    "sequence-first": ({"batch_first": False}, {}, False),
    "odd-heads": ({"heads": 3}, {}, False),
    "no-bias": ({"bias": False}, {}, False),
    "kdim": ({"kdim": 8, "vdim": 8}, {}, False),
    "bias-kv": ({"add_bias_kv": True}, {}, False),
    "grad": ({}, {}, True),
}


@pytest.mark.parametrize("config", list(MHA_CONFIGS))
def test_zero_compute_chooses_the_kernel_the_cpu_does(config: str) -> None:
    built, kw, grad = MHA_CONFIGS[config]
    built = dict(built)
    train, heads = built.pop("train", False), built.pop("heads", 2)
    m = nn.MultiheadAttention(12, heads, batch_first=built.pop("batch_first", True), **built).train(train)
    kw = dict(kw)
    x = torch.randn(2, 6, 12)
    other = torch.randn(2, 6, 12) if kw.pop("cross", False) else x
    if built.get("kdim"):
        other = torch.randn(2, 6, 8)
    ran, chosen = _mha_calls(m, x, other, kw, grad)
    assert ran == chosen
    assert ran == (config in ("plain", "weights", "bool-mask"))


@pytest.mark.parametrize("config", ["plain", "training", "odd-heads", "hooked", "eps", "grad"])
def test_zero_compute_chooses_the_layer_kernel_the_cpu_does(config: str) -> None:
    layer = nn.TransformerEncoderLayer(12, 3 if config == "odd-heads" else 2, 24, batch_first=True)
    layer.train(config == "training")
    if config == "eps":
        layer.norm2.eps = 1e-3
    if config == "hooked":
        layer.linear1.register_forward_hook(lambda *a: None)
    x = torch.randn(2, 6, 12)
    with torch.set_grad_enabled(config == "grad"), Ops() as ops:
        layer(x)
    with torch.set_grad_enabled(config == "grad"):
        assert _layer_fused(layer, x, None, None) == (LAYER in ops.ops) == (config == "plain")


class Padded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.encoder(x, src_key_padding_mask=padding)
        return out


def test_an_encoder_on_nested_tensors_is_refused() -> None:
    # In inference a TransformerEncoder given a padding mask runs its layers on nested tensors
    # of the tokens the mask keeps: a shape only the mask's values give, and storages that a
    # nested tensor does not show. Zero compute stops; a memory prediction refuses.
    model = Padded().eval()
    x, padding = torch.randn(2, 5, 16), torch.zeros(2, 5, dtype=torch.bool)
    padding[1, 3:] = True
    with pytest.raises(ValuesNeeded, match=r"'encoder' \(TransformerEncoder\).*nested tensors"):
        convprof.profile(model, (x, padding), compute=False)
    with pytest.raises(UntrackedLayout, match=r"'encoder' \(TransformerEncoder\).*not predicted for nested"):
        convprof.profile(model, (x, padding), memory=True)
    # (the MACs of the tokens kept: tests/test_any_model.py)
    assert "forward" not in model.encoder.__dict__


@pytest.mark.parametrize("compute", [True, False], ids=["computing", "zero-compute"])
@pytest.mark.parametrize("case", ["mha", "layer-post-relu"])
def test_under_autocast_the_fused_kernels_run_and_are_named(case: str, compute: bool) -> None:
    # The CPU's autocast does not stop the fused path (torch.is_autocast_enabled() asks about
    # CUDA): convprof ran the unfused one (0.63x on the attention), without a word. Now the
    # fused kernel runs in the prediction too, and as its internals under autocast follow no
    # program here, the layer is named as not modelled.
    torch.manual_seed(0)
    model = CASES[case]().eval()
    x = torch.randn(4, 256, 256) if case == "mha" else torch.randn(2, 200, 256)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), Ops() as ops:
        model(x)
    seen = ops.ops
    report = convprof.profile(model, x, memory=True, compute=compute, autocast=torch.bfloat16)
    assert report.memory is not None
    assert (MHA in seen) if case == "mha" else (LAYER in seen)
    assert report.memory.unmodelled == (("attn",) if case == "mha" else ("",))
    assert "Not modelled: the scratch of the CPU kernels in " + ("attn" if case == "mha" else "(root)") in (
        convprof.render(report, memory=True)
    )
    measured = inference_peak(model, (x,), autocast=torch.bfloat16)
    assert 0.95 < report.memory.peak_bytes / measured < 1.35  # the float32 programs: 0.99x, 1.29x


class Attention(nn.MultiheadAttention):
    """A subclass that keeps PyTorch's forward, and so its fused path on the CPU."""


def test_a_subclass_that_keeps_the_forward_is_followed() -> None:
    torch.manual_seed(0)
    model = SelfAttention(256, 8, need_weights=False)
    model.attn = Attention(256, 8, batch_first=True)
    model.eval()
    x = torch.randn(4, 256, 256)
    measured = inference_peak(model, (x,))
    predicted = convprof.profile(model, x, memory=True, compute=False).memory
    assert predicted is not None and predicted.peak_bytes == measured
    assert "forward" not in model.attn.__dict__


def test_a_fused_layer_is_the_leaf_of_what_ran() -> None:
    # In a CPU memory pass an encoder layer in eval runs one kernel, its children none: its
    # traffic is its input and output (2 x 4 x 64 x 128 floats, 131,072 bytes each) and every
    # weight below it (self_attn 3 x 128 x 128 + 384 and out_proj 128 x 128 + 128, linear1
    # 128 x 512 + 512, linear2 512 x 128 + 128, two norms 2 x 256: 198,272 floats), and its
    # output is the pass's activation, where its children's were.
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(128, 4, 512, batch_first=True).eval()
    x = torch.randn(4, 64, 128)
    report = convprof.profile(model, x, memory=True, compute=False)
    layers = {layer.name: layer for layer in report.layers}
    assert not layers["self_attn.out_proj"].calls  # the fused kernel ran
    assert layers[""].memory_bytes == report.total.memory_bytes == 2 * 131_072 + 4 * 198_272
    assert report.sizes.activation_bytes == 131_072
    # unfused (no memory pass) the children are the leaves; MultiheadAttention's forward uses
    # out_proj's weights itself, so it reads them: q, k, v and the output (4 x 131,072) and
    # 3 x 128 x 128 + 384 + 128 x 128 + 128 = 66,048 floats
    unfused = convprof.profile(model, x, compute=False)
    layers = {layer.name: layer for layer in unfused.layers}
    assert layers[""].memory_bytes == 0 and not layers["self_attn.out_proj"].calls
    assert layers["self_attn"].memory_bytes == 4 * 131_072 + 4 * 66_048
