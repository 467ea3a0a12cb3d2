"""The command line, through main(argv)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from convprof.cli import main


def tutorial_pair() -> nn.Module:
    """Spec target for 'tests.test_cli:tutorial_pair' (the seed's depthwise + pointwise)."""
    return nn.Sequential(nn.Conv2d(6, 6, 2, groups=6, bias=False), nn.Conv2d(6, 10, 1, bias=False))


def not_a_model() -> int:
    return 3


def test_profile_torchvision_default_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "torchvision:mobilenet_v2"]) == 0
    out = capsys.readouterr().out
    # The oracle is torchvision's MobileNet_V2_Weights.IMAGENET1K_V1 metadata, at 224x224.
    meta = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta
    totals = {
        line.split(":")[0]: int(line.split(":")[1].split("(")[0].replace(",", ""))
        for line in out.splitlines()
        if line.startswith(("Total params", "Total MACs", "Total FLOPs"))
    }
    assert totals["Total params"] == meta["num_params"] == 3_504_872
    assert round(totals["Total MACs"] / 1e9, 3) == meta["_ops"] == 0.301
    assert totals["Total FLOPs"] == 2 * totals["Total MACs"]
    assert "1x3x224x224" in out
    assert "features.1.conv.0.0" in out and "depthwise" in out


def test_profile_callable_spec_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "tests.test_cli:tutorial_pair", "--input", "1,6,4,4", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"]["params"] == 24 + 60
    assert data["total"]["macs"] == 216 + 540


def test_several_inputs_and_depth(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "tests.test_cli:tutorial_pair", "--input", "1x6x4x4", "--depth", "0"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2].split()[:2] == ["(root)", "Sequential"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["profile", "nonsense"], "is not 'package.module:callable'"),
        (["profile", "torchvision:no_such_net"], "optical flow model 'no_such_net'"),
        (["profile", "no_such_pkg.mod:f", "--input", "1"], "cannot import 'no_such_pkg.mod'"),
        (["profile", "tests.test_cli:missing", "--input", "1"], "has no attribute 'missing'"),
        (["profile", "tests.test_cli:not_a_model", "--input", "1"], "returned int, not a torch.nn.Module"),
        (["profile", "tests.test_cli:tutorial_pair"], "give --input"),
        (["profile", "torchvision:resnet18", "--input", "1,3,zz"], "bad input '1,3,zz'"),
        (["profile", "torchvision:resnet18", "--input", "0,3,4,4"], "bad input '0,3,4,4'"),
        (["profile", "tests.test_cli:tutorial_pair", "--input", "1,5,4,4"], "in module '0' (Conv2d)"),
        (["profile", "torchvision:resnet18", "--depth", "-1"], "--depth must be 0 or more"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        code = main(argv)
        raise SystemExit(code)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("convprof: error: ")


def test_python_dash_m() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "convprof",
            "profile",
            "tests.test_cli:tutorial_pair",
            "--input",
            "1,6,4,4",
            "--format",
            "csv",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines()[0].startswith("name,type,kind")
    assert torch.__version__  # the subprocess imported the same torch


def test_no_compute_builds_on_meta_and_says_how(capsys: pytest.CaptureFixture[str]) -> None:
    # RegNet's builder calls .tolist() on tensors, so it cannot run under torch.device("meta").
    meta = torchvision.models.RegNet_Y_400MF_Weights.IMAGENET1K_V1.meta
    assert main(["profile", "torchvision:regnet_y_400mf", "--no-compute", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["total"]["params"] == meta["num_params"]
    assert round(data["total"]["macs"] / 1e9, 3) == meta["_ops"]
    assert "convprof: note: torchvision:regnet_y_400mf cannot be built under torch.device('meta')" in err


def test_no_compute_refuses_value_dependent_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "tests.test_zero_compute:gated", "--input", "2,4", "--no-compute"]) == 2
    err = capsys.readouterr().err
    assert "needs real tensor values" in err and "(run without --no-compute)" in err
    assert main(["profile", "tests.test_zero_compute:gated", "--input", "2,4"]) == 0


def widened(channels: int = 6, *, bias: bool = False) -> nn.Module:
    """Spec target taking keyword arguments: 'tests.test_cli:widened(channels=8, bias=True)'."""
    return nn.Sequential(nn.Conv2d(6, channels, 1, bias=bias))


def test_spec_keyword_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """A spec passes keyword arguments to its builder: no wrapper needed."""
    assert main(["profile", "torchvision:resnet18(num_classes=10)", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # ResNet-18's 11,689,512 params with a 512 x 10 + 10 head instead of 512 x 1000 + 1000
    assert data["total"]["params"] == 11_689_512 - 513_000 + 5_130
    spec = "tests.test_cli:widened(channels=8, bias=True)"
    assert main(["profile", spec, "--input", "1,6,4,4", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["total"]["params"], data["total"]["macs"]) == (6 * 8 + 8, 6 * 8 * 16)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("torchvision:resnet18(10)", "give arguments by name"),
        ("torchvision:resnet18(num_classes=print)", "num_classes= must be a literal"),
        ("torchvision:resnet18(num_classes=)", "not NAME=VALUE"),
        ("torchvision:resnet18(bogus=1)", "unexpected keyword argument 'bogus'"),
        ("tests.test_cli:widened(width=3)", "unexpected keyword argument 'width'"),
    ],
)
def test_spec_argument_errors(spec: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", spec, "--input", "1,6,4,4"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_timm_specs(capsys: pytest.CaptureFixture[str]) -> None:
    # timm's resnet50 is torchvision's architecture: its weights' published 4.089 GMACs at 224
    assert main(["profile", "timm:resnet50", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"] == [[1, 3, 224, 224]] and round(report["total"]["macs"] / 1e9, 3) == 4.089
    # the pretrained configuration's input size (288 for efficientnet_b3), img_size when given
    assert main(["profile", "timm:efficientnet_b3", "--no-compute", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"] == [[1, 3, 288, 288]]
    assert main(["profile", "timm:vit_tiny_patch16_224(img_size=64,num_classes=10)", "--format", "json"]) == 0
    vit = json.loads(capsys.readouterr().out)
    # ViT-Tiny: patch embedding 3 x 16 x 16 x 192 + 192 = 147,648; class token 192; positions
    # (4 x 4 + 1) x 192 = 3,264; 12 blocks of two norms (384 each), qkv 192 x 576 + 576, proj
    # 192 x 192 + 192, fc1 192 x 768 + 768, fc2 768 x 192 + 192 = 444,864 each; final norm 384;
    # head 192 x 10 + 10 = 1,930
    assert vit["inputs"] == [[1, 3, 64, 64]]
    assert vit["total"]["params"] == 147_648 + 192 + 3_264 + 12 * 444_864 + 384 + 1_930
    assert main(["profile", "timm:resnt50"]) == 2
    assert capsys.readouterr().err.strip() == (
        "convprof: error: timm has no model 'resnt50'; did you mean resnet50, resnet50t, resnet50s?"
    )


def test_a_rolled_up_json_is_marked_and_diff_will_not_mix_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # rows rolled up to --depth 1 are groups: against a full report every one read as changed
    # or added (issue 35 #14)
    full, rolled = tmp_path / "full.json", tmp_path / "rolled.json"
    for path, extra in ((full, []), (rolled, ["--depth", "1"])):
        assert main(["profile", "torchvision:resnet18", "--no-compute", "--format", "json", *extra]) == 0
        path.write_text(capsys.readouterr().out)
    assert json.loads(rolled.read_text())["depth"] == 1 and "depth" not in json.loads(full.read_text())
    assert main(["diff", str(full), str(rolled)]) == 2
    assert "write both with the same --depth" in capsys.readouterr().err
    assert main(["diff", str(rolled), str(rolled)]) == 0
