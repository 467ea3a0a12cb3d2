"""Roofline presets, bounds and times, and the table options that show memory, roofline and
blocks. Expected values are datasheet arithmetic and the tutorial's bytes, written out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convprof
from convprof.cli import main
from convprof.roofline import Machine, machine

X = torch.ones(1, 6, 4, 4)


def tutorial_pair() -> nn.Module:
    """Spec target for 'tests.test_roofline:tutorial_pair'."""
    return nn.Sequential(nn.Conv2d(6, 6, 2, groups=6, bias=False), nn.Conv2d(6, 10, 1, bias=False))


@pytest.mark.parametrize(
    ("spec", "dtype", "balance"),
    [
        ("h100", "bfloat16", 989.4e12 / 2 / 3.35e12),  # 147.7 MACs per byte: BF16 tensor cores
        ("h100", "float32", 66.9e12 / 2 / 3.35e12),  # 10.0: FP32, no tensor cores
        ("h100", None, 66.9e12 / 2 / 3.35e12),  # float32 unless told
        ("h100:tf32", "float32", 494.7e12 / 2 / 3.35e12),  # asked for: 73.8
        ("h100-fp32", "bfloat16", 66.9e12 / 2 / 3.35e12),  # the old name stays pinned to FP32
        ("a100", "float16", 312e12 / 2 / 2.039e12),  # 76.5
        ("a100", "float32", 19.5e12 / 2 / 2.039e12),  # 4.8
        ("t4", "float16", 65e12 / 2 / 320e9),  # 101.6
        ("t4", "qint8", 130e12 / 2 / 320e9),  # quantized: INT8 tensor cores, 203.1
        ("t4", "bfloat16", 8.1e12 / 2 / 320e9),  # a T4 has no BF16 peak: FP32
        ("xeon-8480", "float32", (56 * 2.0e9 * 2 * 16) / (8 * 38.4e9)),  # 11.7
        ("xeon-8480", "bfloat16", (56 * 2.0e9 * 512) / (8 * 38.4e9)),  # AMX: 186.7
        ("epyc-9654", "float32", (96 * 2.4e9 * 2 * 8) / (12 * 38.4e9)),  # 8.0
        ("epyc-9654", "int8", 4 * (96 * 2.4e9 * 2 * 8) / (12 * 38.4e9)),  # VNNI: 32.0
    ],
)
def test_preset_balances(spec: str, dtype: str | None, balance: float) -> None:
    assert machine(spec, dtype).balance == pytest.approx(balance)
    assert machine(spec.upper(), dtype) == machine(spec, dtype)


def test_the_precision_is_in_the_description() -> None:
    assert "FP32 66.9 TFLOP/s, for float32; HBM3 3.35 TB/s" in machine("h100", "float32").description
    assert "BF16 989.4 TFLOP/s, for bfloat16" in machine("h100", "bfloat16").description
    assert "FP32 8.1 TFLOP/s, no bf16 peak for bfloat16, FP32 used" in machine("t4", "bfloat16").description
    assert "TF32 494.7 TFLOP/s, as asked" in machine("h100:tf32").description
    with pytest.raises(ValueError, match="t4 has no tf32 peak"):
        machine("t4:tf32")
    with pytest.raises(ValueError, match="unknown precision 'fp4'"):
        machine("h100:fp4")


def test_the_report_dtype_picks_the_peak() -> None:
    """A float16 model on a T4 is held to the FP16 tensor-core roof, a float32 one to FP32."""
    half = convprof.profile(tutorial_pair().half(), X.half(), compute=False)
    assert half.dtype == "float16"
    assert "NVIDIA T4, FP16 65 TFLOP/s, for float16" in convprof.render(half, roofline="t4")
    single = convprof.profile(tutorial_pair(), X)
    assert single.dtype == "float32"
    assert "NVIDIA T4, FP32 8.1 TFLOP/s, for float32" in convprof.render(single, roofline="t4")


def test_balance_from_a_number_and_errors() -> None:
    assert machine("20").balance == 20
    for bad in ("fast", "0", "-3", "inf", "nan"):
        with pytest.raises(ValueError, match=r"MACs per byte.*h100"):
            machine(bad)


def test_bound_and_seconds() -> None:
    m = Machine("toy", macs_per_second=10.0, bytes_per_second=2.0)  # balance 5
    assert m.bound(100, 10) == "compute"  # 10 MACs/B >= 5: limited by 100 / 10 = 10 s of compute
    assert m.seconds(100, 10) == max(100 / 10, 10 / 2) == 10
    assert m.bound(100, 40) == "memory"  # 2.5 MACs/B: 40 / 2 = 20 s of traffic
    assert m.seconds(100, 40) == 20
    assert m.bound(0, 40) == "memory"  # a norm or activation only moves data
    assert m.bound(5, 0) == "compute"
    assert m.bound(0, 0) == ""


def test_memory_columns() -> None:
    report = convprof.profile(nn.Conv2d(6, 10, 2, bias=False), X)
    text = convprof.render(report, memory=True)
    header, _, row = text.splitlines()[:3]
    assert header.split()[-3:] == ["Share", "Bytes", "MACs/B"]
    assert row.split()[-2:] == ["1,704", "1.27"]  # 384 + 960 + 360 bytes; 2160 / 1704
    assert "Total bytes:  1,704 (1.70KB), 1.27 MACs per byte" in text
    assert "Bytes" not in convprof.render(report)  # off by default


def test_roofline_columns_with_a_balance() -> None:
    report = convprof.profile(tutorial_pair(), X)
    text = convprof.render(report, roofline=machine("0.5"))
    lines = text.splitlines()
    depthwise, pointwise = lines[2].split(), lines[3].split()
    # Depthwise: 216 MACs / 696 B = 0.31 < 0.5; pointwise: 540 / 816 = 0.66 >= 0.5.
    assert depthwise[-2:-1] == ["memory"] and pointwise[-2:-1] == ["compute"]
    # Relative time at balance 0.5 (0.5 MACs and 1 byte per unit): depthwise max(432, 696) = 696,
    # pointwise max(1080, 816) = 1080; shares of 1776.
    assert depthwise[-1] == f"{100 * 696 / 1776:.1f}%" == "39.2%"
    assert pointwise[-1] == f"{100 * 1080 / 1776:.1f}%" == "60.8%"
    assert "1 of 2 rows memory-bound: 28.6% of the MACs, 39.2% of the roofline time." in text
    # The depthwise row is the memory-bound one here.
    assert "1 depthwise row: 28.6% of the MACs, 39.2% of the roofline time." in text


def test_roofline_preset_gives_a_time_bound() -> None:
    report = convprof.profile(tutorial_pair(), X)
    text = convprof.render(report, roofline=machine("h100"))
    # Both rows are memory-bound on an H100: (696 + 816) bytes / 3.35e12 B/s = 0.451 ns.
    assert "2 of 2 rows memory-bound" in text
    assert f"{1512 / 3.35e12 * 1e9:.3g}" == "0.451"
    assert "lower bound 0.451 ns (no fusion)" in text


def test_blocks_table() -> None:
    report = convprof.profile(tutorial_pair(), X)
    text = convprof.render(report, blocks=True)
    row = text.splitlines()[2]
    assert row.split() == [
        "0",
        "+",
        "1",
        "separable",
        "6",
        ">",
        "10",
        "2x2",
        "/",
        "1",
        "84",
        "29%",  # 24 of 84 params in the depthwise conv
        "/",
        "71%",
        "756",
        "29%",  # 216 of 756 MACs
        "/",
        "71%",
        "2,160",
        "0.35x",
    ]
    assert "1 (1 separable, 0 inverted residual) hold 756 of 756 MACs (100.0%)" in text


def test_blocks_table_when_there_are_none() -> None:
    report = convprof.profile(nn.Conv2d(6, 10, 2), X)
    assert convprof.render(report, blocks=True).startswith("No depthwise-separable blocks")


def test_blocks_csv() -> None:
    report = convprof.profile(tutorial_pair(), X)
    header, row = convprof.render(report, blocks=True, format="csv").splitlines()
    data = dict(zip(header.split(","), row.split(","), strict=True))
    assert data["layers"] == "0;1"
    assert (data["macs"], data["standard_macs"], data["depthwise_macs"], data["pointwise_macs"]) == (
        "756",
        "2160",
        "216",
        "540",
    )


def test_cli_blocks_roofline_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    spec = "tests.test_roofline:tutorial_pair"
    assert main(["profile", spec, "--input", "1,6,4,4", "--blocks"]) == 0
    assert "separable" in capsys.readouterr().out
    assert main(["profile", spec, "--input", "1,6,4,4", "--roofline", "xeon-8480"]) == 0
    assert "balance 11.7 MACs/B" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["profile", spec, "--input", "1,6,4,4", "--roofline", "warp-drive"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown roofline 'warp-drive'" in err and len(err.splitlines()) == 1
    assert main(["profile", spec, "--input", "1,6,4,4", "--plot", "out.svg"]) == 2
    assert "name ending in .png" in capsys.readouterr().err


def test_cli_roofline_follows_dtype(capsys: pytest.CaptureFixture[str]) -> None:
    spec = "tests.test_roofline:tutorial_pair"
    assert main(["profile", spec, "--input", "1,6,4,4", "--roofline", "t4", "--dtype", "float16"]) == 0
    assert "NVIDIA T4, FP16 65 TFLOP/s, for float16" in capsys.readouterr().out
    assert main(["profile", spec, "--input", "1,6,4,4", "--roofline", "h100:tf32"]) == 0
    assert "TF32 494.7 TFLOP/s, as asked" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["profile", spec, "--roofline", "t4:tf32"])
    assert "t4 has no tf32 peak" in capsys.readouterr().err


def test_small_times_switch_to_microseconds() -> None:
    # the tutorial's depthwise conv moves 696 bytes: on a roofline of TB/s that is nanoseconds,
    # which a ms column showed as 0.000 on every row
    model = nn.Sequential(nn.Conv2d(6, 6, 2, groups=6, bias=False), nn.Conv2d(6, 10, 1, bias=False))
    report = convprof.profile(model, torch.ones(1, 6, 4, 4))
    timing = convprof.Timing(
        "cpu",
        3,
        40e-6,
        39e-6,
        45e-6,
        (convprof.LayerTime("0", 20e-6, 19e-6, 22e-6), convprof.LayerTime("1", 10e-6, 9e-6, 12e-6)),
    )
    text = convprof.render(report, roofline="xeon-8480", timing=timing)
    header, _, first, second = text.splitlines()[:4]
    assert "Roofline us" in header and "Measured us" in header and " ms" not in header
    assert "20.000" in first and "19.000-22.000" in first and "10.000" in second
    roofline = header.index("Roofline us")
    assert all(float(row[roofline : roofline + 11].strip()) > 0 for row in (first, second))
