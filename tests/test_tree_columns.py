"""The tree view and the choice of columns (issue 11, item 6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convprof
from convprof.cli import main


class Stack(nn.Module):
    """A ModuleList that never runs itself, as transformers' decoders hold their layers."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, bias=False)  # 4x3x3x3 = 108 params; 1x4x6x6 out: 108 x 36 MACs
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.ReLU()) for _ in range(2)
        )  # each 16 params, 16 x 36 = 576 MACs
        self.head = nn.Linear(4, 2)  # 10 params, 8 MACs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean((2, 3)))


def report() -> convprof.Report:
    return convprof.profile(Stack(), torch.randn(1, 3, 8, 8))


def test_tree_outline_with_inclusive_figures() -> None:
    text = convprof.render(report(), tree=True, columns=["name", "params", "macs"])
    table = text.split("\n\n")[0].splitlines()
    width = len(table[1].split()[0])  # the first column's dashes
    lines = [line.rstrip() for line in table[2:]]
    total = 108 * 36 + 2 * 576 + 8
    assert [line.split()[-2:] for line in lines] == [
        [f"{108 + 32 + 10:,}", f"{total:,}"],  # the model, everything
        ["108", f"{108 * 36:,}"],
        ["16", "576"],  # blocks.0 with its conv and ReLU
        ["16", "576"],
        ["0", "0"],
        ["16", "576"],
        ["16", "576"],
        ["0", "0"],
        ["10", "8"],
    ]
    names = [line[:width].rstrip() for line in lines]
    assert names == [
        "Stack",
        "├─ stem",
        "├─ blocks.0",  # under the model: the ModuleList has no row of its own
        "│  ├─ 0",
        "│  └─ 1",
        "├─ blocks.1",
        "│  ├─ 0",
        "│  └─ 1",
        "└─ head",
    ]


def test_tree_depth_limits_the_outline() -> None:
    text = convprof.render(report(), tree=True, depth=1, columns=["name", "macs"])
    rows = text.split("\n\n")[0].splitlines()[2:]
    assert [row.split()[-1] for row in rows] == [f"{108 * 36 + 1160:,}", f"{108 * 36:,}", "8"]
    # blocks.0 and blocks.1 are two name components deep: not shown at depth 1, but counted
    assert len(rows) == 3


def test_columns_pick_and_order() -> None:
    text = convprof.render(report(), columns=["macs", "name", "flops"])
    header = text.splitlines()[0].split()
    assert header == ["MACs", "Layer", "FLOPs"]
    stem = next(line.split() for line in text.splitlines() if " stem " in f" {line} ")
    assert stem == [f"{108 * 36:,}", "stem", f"{2 * 108 * 36:,}"]


def test_roofline_column_is_a_time_share() -> None:
    text = convprof.render(report(), roofline="t4")
    assert "Time share" in text.splitlines()[0]


@pytest.mark.parametrize(
    "columns,message",
    [(["name", "nope"], "unknown column 'nope'"), (["name", "bound"], "needs a roofline")],
)
def test_bad_columns(columns: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        convprof.render(report(), columns=columns)


def test_cli_tree_and_columns(capsys: pytest.CaptureFixture[str]) -> None:
    spec = "tests.test_tree_columns:Stack"
    assert main(["profile", spec, "--input", "1,3,8,8", "--tree", "--columns", "name,params"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2].split() == ["Stack", "150"] and "├─ blocks.0" in out
    assert main(["profile", spec, "--input", "1,3,8,8", "--columns", "name,time"]) == 2
    assert "--columns: column 'time' needs a roofline machine" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["profile", spec, "--columns", "name,wat"])
    assert "unknown column 'wat'" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--tree"], ["--columns", "name,macs"]])
def test_layer_table_options_refuse_blocks(option: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    spec = "tests.test_tree_columns:Stack"
    assert main(["profile", spec, "--input", "1,3,8,8", "--blocks", *option]) == 2
    assert "--blocks lists blocks instead" in capsys.readouterr().err


def test_trainable_and_params_share_columns() -> None:
    # the tutorial's separable pair with the depthwise conv frozen: 24 frozen + 60 trainable
    model = nn.Sequential(nn.Conv2d(6, 6, 2, groups=6, bias=False), nn.Conv2d(6, 10, 1, bias=False))
    model[0].weight.requires_grad_(False)
    report = convprof.profile(model, torch.ones(1, 6, 4, 4))
    text = convprof.render(report, tree=True, columns=["name", "params", "trainable", "param_share"])
    rows = [line.split() for line in text.splitlines()[2:5]]
    assert rows == [
        ["Sequential", "84", "60", "100.0%"],
        ["├─", "0", "24", "0", f"{100 * 24 / 84:.1f}%"],
        ["└─", "1", "60", "60", f"{100 * 60 / 84:.1f}%"],
    ]
    assert "a column adds its children twice" in text
