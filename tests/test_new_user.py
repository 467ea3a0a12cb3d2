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
        match=r"pass input_size=\(1, 3, 224, 224\) or a tensor, e\.g\. convprof\.profile\(model, "
        r"torch\.randn\(1, 3, 224, 224\)\)",
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


@pytest.mark.parametrize(
    ("name", "params"),
    [
        # the parameter counts their publishers state (tied embeddings once)
        ("llama-3-8b", 8_030_261_248),
        ("llama-3-70b", 70_553_706_496),
        ("mistral-7b", 7_241_732_096),
        ("qwen2-7b", 7_615_616_512),
        ("gemma-2b", 2_506_172_416),
        ("gemma-7b", 8_537_680_896),
        ("gpt2-medium", 354_823_168),
        ("gpt2-large", 774_030_080),
        ("gpt2-xl", 1_557_611_200),
    ],
)
def test_well_known_models_need_no_network(name: str, params: int) -> None:
    from convprof.models.load import load

    model = load(f"transformers:{name}", meta=True).model
    assert sum(p.numel() for p in model.parameters()) == params


def test_a_hub_name_offline_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    from convprof.models import transformers as hf
    from convprof.models.build import SpecError

    asked: list[dict[str, object]] = []

    def from_pretrained(name: str, **options: object) -> None:
        asked.append(options)
        raise OSError("not cached")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", from_pretrained)
    monkeypatch.setattr(hf, "_hub_reachable", lambda seconds=3.0: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(
        SpecError, match=r"the hub cannot be reached \(no network\?\).*llama-3-8b.*HF_HUB_OFFLINE"
    ):
        hf.configuration("someone/some-model")
    assert asked == [{"local_files_only": True}]  # the cache only: no retries against the network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpecError, match="not in the local cache, and HF_HUB_OFFLINE is set"):
        hf.configuration("someone/some-model")


def test_profile_help_shows_examples_that_parse(capsys: pytest.CaptureFixture[str]) -> None:
    import shlex

    from convprof.cli import _parser

    with pytest.raises(SystemExit):
        _parser().parse_args(["profile", "--help"])
    text = capsys.readouterr().out
    examples = [line.split(">")[0] for line in text.splitlines() if line.startswith("  convprof profile ")]
    assert len(examples) >= 6
    for example in examples:
        words = shlex.split(example.split("   ")[0])  # the command, before its explanation
        assert _parser().parse_args(words[1:]).command == "profile", example
