"""The zoos people use, counted four ways (tests/zoo_check.py): FlopCounterMode on meta against
convprof on the CPU, with compute=False and on meta. scripts/zoo_sweep.py runs the same checks
and writes the table in docs/zoo.md.
"""

from __future__ import annotations

import pytest
from hf_models import entries
from zoo_check import check, timm_model

# These call .item() on a tensor (as FlopCounterMode on meta finds too), and the passes that
# lack the values refuse them with ValuesNeeded; the CPU pass counts them. DeBERTa reads only
# its integer inputs, which a zero-compute pass keeps real, so only the all-meta pass refuses;
# BART's and Marian's decoders read a float tensor.
NEEDS_VALUES = {
    "deberta-v2": {"meta"},
}
HF = {name: (build, inputs) for name, _, build, inputs in entries()}


def test_catalogue_covers_the_families() -> None:
    pytest.importorskip("transformers")
    kinds = {kind for _, kind, _, _ in entries()}
    assert kinds >= {"encoder", "decoder", "encoder-decoder", "vision", "speech", "moe", "state-space"}
    assert len(HF) >= 25


@pytest.mark.parametrize("name", sorted(HF))
def test_transformers_architecture(name: str) -> None:
    build, inputs = HF[name]
    outcome = check("transformers", name, build, inputs)
    assert not outcome.crashed, outcome.crashed
    assert not outcome.incomplete, outcome.incomplete
    assert outcome.status == ("refused" if name in NEEDS_VALUES else "exact"), outcome.to_dict()
    assert "cpu" in outcome.macs
    if name in NEEDS_VALUES:
        assert set(outcome.refused) == NEEDS_VALUES[name]
    else:
        assert set(outcome.macs) == {"cpu", "no_compute", "meta"}


TIMM_SAMPLE = [
    "mobilenetv4_conv_small",
    "efficientnet_b0",
    "convnext_atto",
    "regnetx_002",
    "vit_tiny_patch16_224",
    "swin_tiny_patch4_window7_224",
    "levit_128s",
    "coatnet_nano_rw_224",
    "mobilevitv2_050",
    "efficientvit_b0",
    "ghostnetv2_100",
    "resnet18d",
]


def _timm_case(name: str) -> None:
    pytest.importorskip("timm")
    outcome = check("timm", name, *timm_model(name))
    assert not outcome.crashed, outcome.crashed
    assert outcome.status in ("exact", "refused"), outcome.to_dict()


@pytest.mark.parametrize("name", TIMM_SAMPLE)
def test_timm_sample(name: str) -> None:
    _timm_case(name)


def _all_timm() -> list[str]:
    try:
        import timm
    except ImportError:
        return []
    return list(timm.list_models())


@pytest.mark.slow
@pytest.mark.parametrize("name", _all_timm())
def test_every_timm_architecture(name: str) -> None:
    _timm_case(name)
