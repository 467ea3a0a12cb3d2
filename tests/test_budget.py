"""Budgets: assert_budget, layer patterns, coverage, and the report round trip.

The model is the tutorial's depthwise-separable pair behind a stem, with MACs by hand:
stem 1x1 conv 6->6 on 4x4: 16 * 36 = 576; depthwise 2x2: 9 * 24 = 216; pointwise: 9 * 60 = 540.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import convprof
from convprof.ci.budget import matches

STEM, DEPTHWISE, POINTWISE = 16 * 6 * 6, 9 * 6 * 4, 9 * 10 * 6
TOTAL = STEM + DEPTHWISE + POINTWISE  # 1,332
PARAMS = 36 + 24 + 60  # 120


def separable() -> nn.Module:
    block = nn.Sequential(nn.Conv2d(6, 6, 2, groups=6, bias=False), nn.Conv2d(6, 10, 1, bias=False))
    return nn.Sequential(nn.Conv2d(6, 6, 1, bias=False), block)


X = torch.ones(1, 6, 4, 4)


def test_within_budget_returns_the_report() -> None:
    report = convprof.assert_budget(separable(), X, max_macs=TOTAL, max_params="120", max_flops="2.664k")
    assert (report.total.macs, report.total.params, report.total.flops) == (TOTAL, PARAMS, 2 * TOTAL)


def test_broken_limits_are_listed_with_excess_and_top_layers() -> None:
    with pytest.raises(convprof.BudgetExceeded) as info:
        convprof.assert_budget(separable(), X, max_macs="1.2k", max_params=100)
    assert isinstance(info.value, AssertionError)
    message = str(info.value)
    over = TOTAL - 1200  # 132 = 11.0% of 1,200
    assert f"total: macs 1,332 > limit 1,200 (over by {over}, +11.0%)" in message
    assert "total: params 120 > limit 100 (over by 20, +20.0%)" in message
    # Costliest first: the stem (576 MACs, 43.2%), then the pointwise conv (540).
    lines = message.splitlines()
    top = lines.index("Layers with the most macs:")
    assert lines[top + 1] == "  0 (Conv2d): 576 macs (43.2%)"
    assert lines[top + 2] == "  1.1 (Conv2d): 540 macs (40.5%)"
    assert [v.metric for v in info.value.violations] == ["params", "macs"]


def test_layer_patterns_hold_each_matching_module_inclusively() -> None:
    # Module '1' (the separable block) costs 216 + 540 = 756 with its children.
    report = convprof.assert_budget(separable(), X, layers={"1": {"max_macs": 756}})
    assert report.total.macs == TOTAL
    with pytest.raises(convprof.BudgetExceeded, match=r"layer '1' \(limit for '1'\): macs 756 > limit 755"):
        convprof.assert_budget(separable(), X, layers={"1": {"max_macs": 755}})
    # '1.*' matches 1.0 (216) and 1.1 (540): only 1.1 breaks a 300 limit.
    with pytest.raises(convprof.BudgetExceeded) as info:
        convprof.assert_budget(separable(), X, layers={"1.*": {"max_macs": 300}})
    assert [(v.scope, v.actual) for v in info.value.violations] == [("1.1", 540)]


def test_pattern_matching_nothing_is_an_error_not_a_pass() -> None:
    with pytest.raises(ValueError, match=r"'features\.\*' matches no module of Sequential"):
        convprof.assert_budget(separable(), X, layers={"features.*": {"max_macs": "1G"}})
    # it names what the pattern may have meant: close names, else the top-level modules
    with pytest.raises(
        ValueError, match=r"'features' matches no module of Sequential; its top-level modules are 0, 1"
    ):
        convprof.assert_budget(separable(), X, layers={"features": {"max_macs": "1G"}})
    model = nn.Sequential()
    model.add_module("features", separable())
    with pytest.raises(ValueError, match=r"'featurs\.\*' matches no module .* did you mean .*'features'\?"):
        convprof.assert_budget(model, X, layers={"featurs.*": {"max_macs": "1G"}})


@pytest.mark.parametrize(
    "pattern,name,expected",
    [
        ("features.*", "features.3", True),
        ("features.*", "features.3.conv", False),
        ("features", "features", True),
        ("features.**", "features.3.conv.0", True),
        ("**.conv", "features.3.conv", True),
        ("**", "anything.at.all", True),
        ("layer?.0", "layer4.0", True),
        ("layer?.0", "layer4.1", False),
        ("*", "", False),
    ],
)
def test_matches(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


@pytest.mark.parametrize(
    "limits,message",
    [
        ({"max_macs": "3.5X"}, "cannot read quantity '3.5X'"),
        ({"max_macs": "lots"}, "cannot read quantity 'lots'"),
        ({"layers": {"0": {"max_mac": 1}}}, "unknown limit 'max_mac'"),
    ],
)
def test_bad_limits_are_value_errors(limits: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        convprof.assert_budget(separable(), X, **limits)  # type: ignore[arg-type]


class Spectral(nn.Module):
    """A linear solve: an operator with no formula (FFTs have one)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(2 * torch.eye(x.shape[-1]), x.unsqueeze(-1)).squeeze(-1)


def test_incomplete_report_fails_unless_allowed() -> None:
    model = nn.Sequential(nn.Linear(8, 8, bias=False), Spectral())
    with pytest.raises(convprof.BudgetExceeded, match="incomplete count: operators without a formula ran"):
        convprof.assert_budget(model, torch.randn(2, 8), max_macs="1G")
    report = convprof.assert_budget(model, torch.randn(2, 8), max_macs="1G", allow_incomplete=True)
    assert report.total.macs == 2 * 8 * 8


def test_report_round_trips_through_json() -> None:
    report = convprof.profile(separable(), X)
    again = convprof.Report.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report
    with pytest.raises(ValueError, match="schema"):
        convprof.Report.from_dict({"schema": 2})
    with pytest.raises(ValueError, match="malformed"):
        convprof.Report.from_dict({"schema": 1, "model": "x"})
