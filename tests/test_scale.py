"""Exactness at scale: every torchvision weights entry outside detection (classification,
segmentation, video, optical flow; 139 with torchvision 0.29) built on meta at the input its
weights imply matches its published ``num_params`` and ``_ops`` (GMACs). About 20 s here."""

from __future__ import annotations

import pytest
import torch

import convprof
from convprof.models.torchvision import Weights, all_weights, torchvision_model

ENTRIES = all_weights()


def test_every_family_is_covered() -> None:
    families = {w.family for w in ENTRIES}
    assert families == {"classification", "segmentation", "video", "optical_flow"}
    assert len({w.model for w in ENTRIES if w.family == "classification"}) == 80


@pytest.mark.parametrize("weights", ENTRIES, ids=lambda w: w.name)
def test_weights_entry_on_meta(weights: Weights) -> None:
    loaded = torchvision_model(weights.model, weights.name.split(".", 1)[1], meta=True)
    assert all(p.is_meta for p in loaded.model.parameters())
    report = convprof.profile(loaded.model, tuple(torch.empty(s, device="meta") for s in weights.inputs))
    assert report.complete, report.unexplained
    assert report.total.params == weights.num_params
    assert round(report.total.macs / 1e9, 3) == weights.gmacs
