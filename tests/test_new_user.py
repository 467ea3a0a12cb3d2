"""What a new user hits in the first hour: each case here once misled one (issue 25)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

import convprof
from tests.test_cli_misuse import assert_usage_error, run


def test_an_option_prefix_is_not_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    # "--tre" once meant --tree; a typo must be an error, not another option
    assert_usage_error(
        run(capsys, "profile", "torchvision:resnet18", "--tre"), "unrecognized arguments: --tre"
    )


def test_json_rolls_up_like_the_other_formats(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profile", "torchvision:mobilenet_v2", "--format", "json", "--depth", "1")
    assert code == 0
    data = json.loads(out)
    assert [layer["name"] for layer in data["layers"]] == ["", "features", "classifier"]
    # the totals stay the model's: 3,504,872 params, 300,774,272 MACs (torchvision's metadata)
    assert sum(layer["params"] for layer in data["layers"]) == data["total"]["params"] == 3_504_872
    assert sum(layer["macs"] for layer in data["layers"]) == data["total"]["macs"] == 300_774_272


def test_check_without_an_input_points_at_the_config_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "budgets.toml"
    config.write_text(
        '[[tool.convprof.models]]\nname = "pair"\nmodel = "tests.test_cli:tutorial_pair"\nmax_macs = 1000\n'
    )
    assert_usage_error(
        run(capsys, "check", "--config", str(config)),
        "no input shape for 'tests.test_cli:tutorial_pair'",
        f"give it an 'input' in its [[tool.convprof.models]] entry of {config}",
    )


def test_a_shape_given_as_args_gets_a_hint() -> None:
    with pytest.raises(
        convprof.ForwardError,
        match=r"pass a tensor, e\.g\. convprof\.profile\(model, torch\.randn\(1, 3, 224, 224\)\)",
    ):
        convprof.profile(torchvision.models.resnet18(), (1, 3, 224, 224))


def test_int_args_a_model_takes_are_fine() -> None:
    class Steps(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 4)

        def forward(self, steps: int) -> torch.Tensor:
            x = torch.ones(1, 4)
            for _ in range(steps):
                x = self.linear(x)
            return x

    assert convprof.profile(Steps(), (3,)).total.macs == 3 * 16
