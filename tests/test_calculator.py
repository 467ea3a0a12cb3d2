"""The conv calculator: real modules through the engine, checked against hand arithmetic."""

from __future__ import annotations

import pytest

from convprof.calculator import compare_convs
from convprof.cli import main


def test_reproduces_the_tutorial() -> None:
    rows = {r.name: (r.params, r.macs) for r in compare_convs(6, 10, 2, 4)}
    assert rows == {
        "standard": (10 * 6 * 2 * 2, 10 * 6 * 2 * 2 * 9),  # 240, 2,160 (3x3 output positions)
        "grouped (groups=2)": (10 * 3 * 2 * 2, 10 * 3 * 2 * 2 * 9),  # 120, 1,080
        "depthwise": (6 * 2 * 2, 6 * 2 * 2 * 9),  # 24, 216
        "pointwise": (10 * 6, 10 * 6 * 9),  # 60, 540
        "depthwise + pointwise": (24 + 60, 216 + 540),  # 84, 756
    }


def test_strided_padded_shape_and_the_mobilenet_ratio() -> None:
    # 32 -> 64 channels, 3x3, stride 2, padding 1 on 56x56: (56 + 2 - 3) // 2 + 1 = 28 per side.
    positions = 28 * 28
    rows = {r.name: r for r in compare_convs(32, 64, 3, 56, groups=4, stride=2, padding=1)}
    assert rows["standard"].macs == 64 * 32 * 9 * positions
    assert rows["grouped (groups=4)"].params == 64 * 8 * 9
    assert rows["depthwise"].output_shape == (1, 32, 28, 28)
    assert rows["pointwise"].macs == 64 * 32 * positions
    pair = rows["depthwise + pointwise"]
    assert (pair.params, pair.macs) == (32 * 9 + 64 * 32, (32 * 9 + 64 * 32) * positions)
    assert pair.macs_ratio == pytest.approx(1 / 64 + 1 / 9)  # the MobileNet paper's 1/N + 1/k^2


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"groups": 4}, "groups=4 must divide"),
        ({"padding": -1}, "padding must be 0 or more"),
        ({"stride": 0}, "stride must be at least 1"),
    ],
)
def test_rejects_impossible_shapes(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compare_convs(6, 10, 2, 4, **kwargs)
    with pytest.raises(ValueError, match="does not fit"):
        compare_convs(6, 10, 5, 4)


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conv", "--in", "6", "--out", "10", "--kernel", "2", "--size", "4"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[6].split() == ["depthwise", "+", "pointwise", "1x10x3x3", "84", "756", "0.35"]
    assert main(["conv", "--in", "6", "--out", "10", "--kernel", "2", "--size", "4", "--groups", "4"]) == 2
    assert (
        capsys.readouterr().err
        == "convprof: error: groups=4 must divide both in_channels=6 and out_channels=10\n"
    )


def test_memory_bytes() -> None:
    # float32: input 6*4*4 = 96 elements, output 10*3*3 = 90 (depthwise output 6*3*3 = 54).
    rows = {r.name: r.memory_bytes for r in compare_convs(6, 10, 2, 4)}
    assert rows == {
        "standard": (96 + 240 + 90) * 4,  # 1,704
        "grouped (groups=2)": (96 + 120 + 90) * 4,  # 1,224
        "depthwise": (96 + 24 + 54) * 4,  # 696
        "pointwise": (54 + 60 + 90) * 4,  # 816
        "depthwise + pointwise": 696 + 816,  # the intermediate is written, then read again
    }
    (standard,) = [r for r in compare_convs(6, 10, 2, 4) if r.name == "standard"]
    assert standard.intensity == pytest.approx(2160 / 1704)


def test_cli_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conv", "--in", "6", "--out", "10", "--kernel", "2", "--size", "4", "--memory"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-2:] == ["Bytes", "MACs/B"]
    assert lines[2].split()[-2:] == ["1,704", "1.27"]
