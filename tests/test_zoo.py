"""The zoos people use, counted four ways (tests/zoo_check.py): FlopCounterMode on meta against
convprof on the CPU, with compute=False and on meta. scripts/zoo_sweep.py runs the same checks
and writes the table in docs/zoo.md.
"""

from __future__ import annotations

import pytest
from hf_defaults import Unsupported, entry, sweepable
from hf_models import entries
from zoo_check import check, timm_model

# These call .item() on a tensor (as FlopCounterMode on meta finds too), and the passes that
# lack the values refuse them with ValuesNeeded; the CPU pass counts them. DeBERTa reads only
# its integer inputs, which a zero-compute pass keeps real, so only the all-meta pass refuses.
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
    outcome = check("transformers", name, build, inputs, oracle_on_cpu=True)
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


# Every transformers model type at its default widths, two layers (tests/hf_defaults.py). The
# default run takes a sample that spans the families and the oracle's additions (FFTs for
# FNet, grouped expert products for OLMoE, triangular solves for Qwen3-Next's linear
# attention, values read on meta for DETR-style detectors) and the sweep's input makers
# (a vision tower fed patches and their grid, SigLIP 2's patches, whose embeddings call the
# untagged abs_, ConvNeXt's stages); every type runs under -m slow.
DEFAULTS_SAMPLE = [
    "gpt2",
    "t5",
    "vit",
    "wav2vec2",
    "fnet",
    "olmoe",
    "qwen3_next",
    "rt_detr",
    "qwen3_vl_vision",
    "siglip2_vision_model",
    "convnext",
]
# docs/zoo-transformers.md lists the types that are not built, and why: no count of convprof's
# differs from the oracle's or is incomplete.


# The sweep's inputs that the model itself rejects once it has values (a real pass).
INPUTS_REJECTED = {
    "step3p7": "the text holds no image tokens for the image it is given",
    "inkling2_vision": "its patches are rows of pixels, a layout the sweep does not make",
}


def _defaults_case(name: str, oracle: bool) -> None:
    pytest.importorskip("transformers")
    if name in INPUTS_REJECTED:
        pytest.skip(f"{name}: {INPUTS_REJECTED[name]}")
    try:
        build, inputs = entry(name)
    except Unsupported as exc:
        pytest.skip(f"{name}: {exc}")
    # the sweep's limits: real weights up to 2B parameters, the CPU pass up to 30 GMACs
    limits = {"max_real_params": 2 * 10**9, "max_cpu_macs": 3 * 10**10}
    outcome = check("transformers-defaults", name, build, inputs, oracle_on_cpu=True, **limits)
    assert not outcome.crashed, outcome.crashed
    assert outcome.status not in ("differs", "incomplete"), outcome.to_dict()
    if oracle:
        assert outcome.status in ("exact", "refused"), outcome.to_dict()
        assert outcome.flop_counter is not None, outcome.note
        passes = set(outcome.macs) | set(outcome.refused) | set(outcome.skipped)
        assert passes == {"cpu", "no_compute", "meta"}


@pytest.mark.parametrize("name", DEFAULTS_SAMPLE)
def test_transformers_default_configuration(name: str) -> None:
    _defaults_case(name, oracle=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(sweepable()))
def test_every_transformers_model_type(name: str) -> None:
    # a model too large for real weights whose oracle cannot run on meta has no count to
    # compare with (the docs list them); every count there is must agree and be complete
    _defaults_case(name, oracle=False)
