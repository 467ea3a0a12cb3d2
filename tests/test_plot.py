"""Plots are real PNG files of the documented size; without matplotlib the error says what to
install."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import convprof
from convprof.cli import main
from convprof.rendering.plot import DPI, HEIGHT, TOP, WIDTH, figure, plot
from convprof.roofline import machine

pytest.importorskip("matplotlib")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_mobilenet(tmp_path: Path) -> None:
    report = convprof.profile(torchvision.models.mobilenet_v2(), torch.ones(1, 3, 224, 224), compute=False)
    out = plot(report, tmp_path / "mnv2.png", roofline=machine("xeon-8480"))
    assert png_size(out) == (WIDTH * DPI, HEIGHT * DPI) == (1200, 1200)
    assert out.stat().st_size > 20_000  # bars and points, not an empty canvas


def test_plot_without_memory_or_convs(tmp_path: Path) -> None:
    report = convprof.profile(nn.Sequential(nn.Flatten(), nn.Linear(96, 2)), torch.ones(1, 6, 4, 4))
    assert png_size(plot(report, tmp_path / "tiny.png")) == (1200, 1200)


def test_cli_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "pair.png"
    argv = ["profile", "tests.test_roofline:tutorial_pair", "--input", "1,6,4,4", "--plot", str(target)]
    assert main(argv) == 0
    assert png_size(target) == (1200, 1200)
    assert f"plot written to {target}" in capsys.readouterr().err


def test_missing_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    report = convprof.profile(nn.Linear(2, 2), torch.ones(1, 2))
    with pytest.raises(ImportError, match=r"pip install 'convprof\[plot\]'"):
        plot(report, tmp_path / "x.png")
    argv = [
        "profile",
        "tests.test_roofline:tutorial_pair",
        "--input",
        "1,6,4,4",
        "--plot",
        str(tmp_path / "y.png"),
    ]
    assert main(argv) == 2
    assert "convprof[plot]" in capsys.readouterr().err
    assert not (tmp_path / "y.png").exists()


def test_figure_layout() -> None:
    """One layer index for the bar panels, params on a log scale, the costliest layers named,
    the machine's two roofs, one legend for the figure (not over the bars)."""
    import matplotlib.pyplot as plt

    report = convprof.profile(torchvision.models.mobilenet_v2(), torch.ones(1, 3, 224, 224), compute=False)
    drawn = figure(report, roofline="xeon-8480")
    try:
        macs, params, roof = drawn.axes
        assert macs.get_shared_x_axes().joined(macs, params)
        assert params.get_yscale() == "log" and macs.get_yscale() == "linear"
        leaves = [layer for layer in report.layers if layer.macs or layer.params]
        assert len(macs.patches) == len(params.patches) == len(leaves)  # one bar per layer, same index
        # the costliest layers are named, those that would sit on a name already placed left
        # out; no two names overlap and none is cut at the figure's edge (issue 25)
        names = [text.get_text() for text in macs.texts]
        assert len(names) == TOP and max(leaves, key=lambda layer: layer.macs).name in names
        drawn.canvas.draw()
        renderer = drawn.canvas.get_renderer()
        for panel in (macs, params, roof):
            boxes = [text.get_window_extent(renderer) for text in panel.texts]
            assert all(
                drawn.bbox.contains(box.x0, box.y0) and drawn.bbox.contains(box.x1, box.y1) for box in boxes
            )
            assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        # the scatter names its costliest points too (beside the two roofs' labels)
        assert max(leaves, key=lambda layer: layer.macs).name in {text.get_text() for text in roof.texts}
        memory_roof, compute_roof = roof.get_lines()
        balance = (56 * 2.0e9 * 2 * 16) / (8 * 38.4e9)  # FP32 peak / bandwidth, MACs per byte
        assert memory_roof.get_xdata()[1] == pytest.approx(balance) == compute_roof.get_xdata()[0]
        assert compute_roof.get_ydata()[0] == pytest.approx(56 * 2.0e9 * 2 * 16)
        assert not macs.get_legend() and not params.get_legend() and len(drawn.legends) == 1
    finally:
        plt.close(drawn)


def test_measured_against_predicted_panel(tmp_path: Path) -> None:
    """With a measurement and a machine, a fourth panel puts each leaf layer's measured time
    against its roofline time (issue 12: measured vs predicted, coloured by kind)."""
    import matplotlib.pyplot as plt

    from convprof.record.timing import measure

    model = nn.Sequential(nn.Conv2d(3, 8, 3, groups=1), nn.Conv2d(8, 8, 3, groups=8), nn.ReLU())
    x = torch.randn(1, 3, 32, 32)
    report, timing = convprof.profile(model, x), measure(model, x, repeats=2, warmup=1)
    drawn = figure(report, roofline="xeon-8480", timing=timing)
    try:
        assert len(drawn.axes) == 4
        panel = drawn.axes[3]
        assert sum(len(c.get_offsets()) for c in panel.collections) == 3  # three leaf layers
        assert panel.get_xscale() == panel.get_yscale() == "log"
        assert "measured against predicted" in panel.get_title()
    finally:
        plt.close(drawn)
    assert len(figure_axes(report)) == 3  # without a measurement: no fourth panel
    assert png_size(plot(report, tmp_path / "m.png", roofline="t4", timing=timing)) == (1200, 1200)


def figure_axes(report: convprof.Report) -> list[object]:
    import matplotlib.pyplot as plt

    drawn = figure(report, roofline="t4")
    try:
        return list(drawn.axes)
    finally:
        plt.close(drawn)


def test_the_bars_add_up_to_the_total_on_a_vit() -> None:
    # ViT-B/16's attention is nn.MultiheadAttention's own compute (a container: out_proj is its
    # child); leaf bars alone summed to 11.27G of 17.56G (issue 35)
    import matplotlib.pyplot as plt

    report = convprof.profile(torchvision.models.vit_b_16(), torch.ones(1, 3, 224, 224), compute=False)
    drawn = figure(report)
    try:
        heights = sum(patch.get_height() for patch in drawn.axes[0].patches)
        assert heights == pytest.approx(report.total.macs, rel=1e-9)
        # its names are four times MobileNetV2's: none overlaps another or runs past its panel
        # (a fixed spacing between named bars let them overlap; issue 35 #16)
        drawn.canvas.draw()
        renderer = drawn.canvas.get_renderer()
        for panel in drawn.axes[:2]:
            boxes = [text.get_window_extent(renderer) for text in panel.texts]
            edges = panel.get_window_extent(renderer)
            assert len(boxes) >= 3
            assert all(edges.x0 <= box.x0 and box.x1 <= edges.x1 for box in boxes)
            assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    finally:
        plt.close(drawn)
