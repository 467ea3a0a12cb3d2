"""Rendering: rows add up to the totals, depth roll-ups, formats, determinism, golden table."""

from __future__ import annotations

import csv
import io
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from torch import nn

import convprof
from convprof import roofline
from convprof.cli import main
from convprof.units import format_quantity, parse_quantity

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CONVPROF_UPDATE_GOLDEN") == "1"  # set to rewrite golden files


def separable() -> nn.Module:
    """The tutorial's depthwise-separable pair inside a named block."""
    block = nn.Sequential(
        nn.Conv2d(6, 6, 2, groups=6, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 10, 1, bias=False),
    )
    return nn.Sequential(block, nn.Flatten(), nn.Linear(90, 2))


@pytest.fixture
def report() -> convprof.Report:
    return convprof.profile(separable(), torch.ones(1, 6, 4, 4))


def test_golden_table(report: convprof.Report) -> None:
    # The golden file's numbers are the tutorial's: 24/216 depthwise, 60/540 pointwise;
    # BatchNorm 6+6 params; Linear 90*2 + 2 params and 90*2 MACs. They are asserted below
    # independently of the file, which pins the layout.
    text = convprof.render(report)
    path = GOLDEN / "separable_table.txt"
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text()
    rows = {layer.name: layer for layer in report.layers}
    assert (rows["0.0"].params, rows["0.0"].macs) == (24, 216)
    assert (rows["0.3"].params, rows["0.3"].macs) == (60, 540)
    assert (rows["2"].params, rows["2"].macs) == (90 * 2 + 2, 90 * 2)
    assert report.total.macs == 216 + 540 + 180


def test_golden_roofline_and_blocks_tables(report: convprof.Report) -> None:
    # Bytes (float32): depthwise (96 + 24 + 54) * 4 = 696; BatchNorm (54 + 12 + 54) * 4 = 480;
    # ReLU 2 * 54 * 4 = 432; pointwise (54 + 60 + 90) * 4 = 816; Flatten 0 (a view);
    # Linear (90 + 182 + 2) * 4 = 1,096. Asserted here; the golden files pin the layout.
    bytes_by_row = {layer.name: layer.memory_bytes for layer in report.layers}
    assert bytes_by_row == {"": 0, "0": 0, "0.0": 696, "0.1": 480, "0.2": 432, "0.3": 816, "1": 0, "2": 1096}
    assert report.total.memory_bytes == 3520
    (block,) = report.blocks
    assert (block.name, block.layers, block.macs, block.standard_macs) == ("0", ("0.0", "0.3"), 756, 2160)
    for name, text in (
        ("separable_roofline.txt", convprof.render(report, roofline=roofline.machine("1"))),
        ("separable_blocks.txt", convprof.render(report, blocks=True, memory=True)),
    ):
        path = GOLDEN / name
        if UPDATE:
            path.write_text(text)
        assert text == path.read_text(), name


def test_rows_add_up_to_totals(report: convprof.Report) -> None:
    assert sum(layer.params for layer in report.layers) == report.total.params == 24 + 12 + 60 + 182
    assert sum(layer.macs for layer in report.layers) == report.total.macs
    for depth in range(4):
        rolled = report.rollup(depth)
        assert sum(r.params for r in rolled) == report.total.params
        assert sum(r.macs for r in rolled) == report.total.macs


def test_rollup_by_prefix(report: convprof.Report) -> None:
    rows = {r.name: r for r in report.rollup(1)}
    assert list(rows) == ["", "0", "1", "2"]
    assert (rows["0"].macs, rows["0"].params) == (216 + 540, 24 + 12 + 60)
    names = [line.split()[0] for line in convprof.render(report, depth=1).splitlines()[2:5]]
    assert names == ["0", "1", "2"]  # the root has no cost of its own: hidden
    with pytest.raises(ValueError, match="depth"):
        report.rollup(-1)


def test_render_is_deterministic() -> None:
    first = convprof.render(convprof.profile(separable(), torch.ones(1, 6, 4, 4)))
    second = convprof.render(convprof.profile(separable(), torch.ones(1, 6, 4, 4)))
    assert first == second
    assert str(convprof.profile(separable(), torch.ones(1, 6, 4, 4))) == first


def test_json_is_serialisable_and_complete(report: convprof.Report) -> None:
    data = json.loads(convprof.render(report, format="json"))
    assert data["schema"] == 1
    # float32 traffic of the leaves: depthwise (96 + 24 + 54) * 4, BatchNorm (54 + 12 + 54) * 4,
    # ReLU (54 + 54) * 4, pointwise (54 + 60 + 90) * 4, Flatten 0 (a view), Linear (90 + 182 + 2) * 4
    memory = (96 + 24 + 54 + 54 + 12 + 54 + 54 + 54 + 54 + 60 + 90 + 90 + 182 + 2) * 4
    assert data["total"] == {"params": 278, "macs": 936, "flops": 1872, "memory_bytes": memory}
    assert data["convention"].startswith("MACs = multiply-accumulates")
    assert data["complete"] is True
    assert [layer["name"] for layer in data["layers"]][:3] == ["", "0", "0.0"]
    assert data["layers"][2]["kind"] == "depthwise"


def test_csv_and_markdown(report: convprof.Report) -> None:
    rows = list(csv.DictReader(io.StringIO(convprof.render(report, format="csv"))))
    assert sum(int(r["macs"]) for r in rows) == 936
    depthwise = next(r for r in rows if r["name"] == "0.0")
    assert (depthwise["kernel_size"], depthwise["groups"], depthwise["kind"]) == ("2x2", "6", "depthwise")
    markdown = convprof.render(report, format="markdown")
    assert markdown.startswith("| Layer ")
    assert "| 0.3 " in markdown
    with pytest.raises(ValueError, match="unknown format 'yaml'"):
        convprof.render(report, format="yaml")


def test_footer_states_convention_and_totals(report: convprof.Report) -> None:
    text = convprof.render(report)
    assert "Total MACs:   936 (936)" in text
    assert "Total FLOPs:  1,872 (1.87K)" in text
    assert convprof.CONVENTION in text
    assert "complete" in text


@pytest.mark.parametrize(
    "text,value",
    [
        ("240", 240),
        ("2.2k", 2200),
        ("2.2K", 2200),
        ("300M", 300 * 10**6),
        ("4.1G", 4_100_000_000),
        ("1.5e9", 1_500_000_000),
        (" 7 ", 7),
        (12, 12),
    ],
)
def test_parse_quantity(text: str | int, value: int) -> None:
    assert parse_quantity(text) == value


# "1e-5" and "2.5" are no whole count: a budget of 1e-5 MACs would be 0 once rounded
@pytest.mark.parametrize("bad", ["", "3.5X", "M", "1,000", "-5", "1e", True, 1.5, "1e-5", "2.5"])
def test_parse_quantity_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match=r"quantity|expected"):
        parse_quantity(bad)  # type: ignore[arg-type]


def test_format_quantity() -> None:
    assert [format_quantity(v) for v in (0, 999, 2160, 3_504_872, 300_774_272, 17_564_000_000)] == [
        "0",
        "999",
        "2.16K",
        "3.50M",
        "300.77M",
        "17.56G",
    ]


def test_roofline_accepts_the_cli_names_and_numbers() -> None:
    from convprof.roofline import machine

    report = convprof.profile(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), torch.randn(1, 3, 8, 8))
    assert convprof.render(report, roofline="t4") == convprof.render(report, roofline=machine("t4"))
    assert convprof.render(report, roofline=20) == convprof.render(report, roofline=machine("20"))
    with pytest.raises(ValueError, match="unknown roofline 'moon'"):
        convprof.render(report, roofline="moon")


def test_csv_names_the_root_and_leaves_padding_of_other_rows_empty() -> None:
    report = convprof.profile(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()), torch.randn(1, 3, 8, 8)
    )
    rows = list(csv.DictReader(io.StringIO(convprof.render(report, format="csv"))))
    assert [r["name"] for r in rows] == ["(root)", "0", "1"]
    assert [r["padding"] for r in rows] == ["", "1x1", ""]


class _Twice(nn.Module):
    """One Linear and one ReLU called twice, the second time on 2 of the 5 rows."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(self.act(self.fc(x))[:2]))


def test_reused_modules_show_calls_and_mark_varying_shapes() -> None:
    report = convprof.profile(_Twice(), torch.randn(5, 8))
    (fc,) = [layer for layer in report.layers if layer.name == "fc"]
    assert (fc.calls, fc.macs, fc.shapes_vary) == (2, 5 * 8 * 8 + 2 * 8 * 8, True)
    lines = convprof.render(report).splitlines()
    assert lines[0].split()[-4:] == ["Calls", "Params", "MACs", "Share"]
    assert lines[2].split()[:5] == ["fc", "Linear", "5x8*", "5x8*", "2"]
    assert "Shapes:       * the first call's; later calls of the module had other shapes." in lines
    same = convprof.profile(nn.Sequential(nn.Linear(8, 8)), torch.randn(5, 8))
    text = convprof.render(same)
    assert "Calls" not in text and "*" not in text and not same.layers[0].shapes_vary


def test_a_module_its_parent_calls_functionally_sits_with_its_parent() -> None:
    """MultiheadAttention uses out_proj's weights without calling it: the row (params, no call)
    comes right after its parent, not at the end of the table."""
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    names = [row.name for row in convprof.profile(layer, torch.randn(1, 5, 16)).layers]
    assert names[:3] == ["", "self_attn", "self_attn.out_proj"]
    assert names[-1] == "norm2"


class _Cells(HTMLParser):
    """The text of every cell of every row, and of the <pre> below the table."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.pre = ""
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self.rows[-1].append("")
        self._in = tag

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in in ("td", "th"):
            self.rows[-1][-1] += data
        elif self._in == "pre":
            self.pre += data


def test_html_for_notebooks() -> None:
    model = nn.Sequential()
    model.add_module("dw<script>", nn.Conv2d(6, 6, 2, groups=6, bias=False))
    model.add_module("pw", nn.Conv2d(6, 10, 1, bias=False))
    report = convprof.profile(model, torch.ones(1, 6, 4, 4))
    page = report._repr_html_()
    assert page == convprof.render(report, format="html")
    assert "<script>" not in page  # names from user code are escaped
    cells = _Cells()
    cells.feed(page)
    rows = [[c.strip() for c in row] for row in cells.rows]
    assert rows[0][0] == "Layer" and rows[0][-3:] == ["Params", "MACs", "Share"]
    assert rows[1][:3] == ["dw<script>", "Conv2d", "depthwise"] and rows[1][-3:] == ["24", "216", "28.6%"]
    assert rows[2][0] == "pw" and rows[2][-2] == "540"
    assert "Total MACs:   756 (756)" in cells.pre
    assert report._repr_markdown_().startswith("| Layer")


def test_cli_html(capsys: pytest.CaptureFixture[str]) -> None:
    spec = "tests.test_roofline:tutorial_pair"
    assert main(["profile", spec, "--input", "1,6,4,4", "--format", "html"]) == 0
    cells = _Cells()
    cells.feed(capsys.readouterr().out)
    assert [row[0].strip() for row in cells.rows] == ["Layer", "0", "1"]


def test_html_is_styled_for_this_report_only() -> None:
    report = convprof.profile(nn.Conv2d(6, 10, 2, bias=False), torch.ones(1, 6, 4, 4))
    page = convprof.render(report, format="html")
    style = page[page.index("<style>") : page.index("</style>")]
    rules = [rule for rule in style.removeprefix("<style>").split("}") if rule]
    assert rules and all(rule.startswith(".convprof ") for rule in rules)  # nothing global
    assert ".convprof pre{white-space:pre-wrap" in style  # the footer wraps in the cell
    assert page.index("<style>") < page.index("<table>")


class _Iterated(nn.Module):
    """ultralytics' habit: a Sequential the model iterates (``for m in self.model``), never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.model:
            x = module(x)
        return self.head(x.mean((2, 3)))


def test_a_container_that_never_ran_rolls_up_under_its_own_type() -> None:
    # 1x3x8x8: the 3x3 conv makes 8x6x6, 36 positions x 8 x 27 = 7,776 MACs; the 1x1 conv
    # 36 x 4 x 8 = 1,152; the head 4 x 2 = 8
    report = convprof.profile(_Iterated(), torch.randn(1, 3, 8, 8))
    rows = {row.name: row for row in report.rollup(1)}
    assert (rows["model"].type, rows["model"].calls, rows["model"].macs) == ("Sequential", 0, 7_776 + 1_152)
    assert rows["model"].input_shape is None and rows["head"].type == "Linear"
    line = next(line for line in convprof.render(report, depth=1).splitlines() if line.startswith("model "))
    assert line.split()[:4] == ["model", "Sequential", "(not", "called)"]
    again = convprof.Report.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.rollup(1) == report.rollup(1)


def test_names_stay_one_cell_of_one_row() -> None:
    # module names are user text: a ModuleDict key may hold a line break, and a Markdown table
    # lands in a pull-request comment, where links and emphasis would render (issue 35 #15)
    names = ["a\nb", "[l](javascript:alert(1))", "**bold**", "`tick`"]
    model = nn.ModuleDict({name: nn.Linear(2, 2) for name in names})

    class Run(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers.values():
                x = layer(x)
            return x

    report = convprof.profile(Run(), torch.ones(1, 2))
    table = convprof.render(report).split("\n\n")[0].splitlines()
    assert len(table) == 2 + len(names)  # header, rule, one line per layer
    assert table[2].startswith("layers.a\\nb ")
    markdown = convprof.render(report, format="markdown")
    assert "\\[l\\](javascript:alert(1))" in markdown and "\\*\\*bold\\*\\*" in markdown
    assert "\\`tick\\`" in markdown and "](javascript" not in markdown.replace("\\](", "")


def test_csv_takes_the_columns_and_the_times(report: convprof.Report) -> None:
    # --format csv ignored --columns and dropped --time's and --roofline's columns (issue 35
    # #14); a hand-made timing of 2 ms per leaf, rolled up by prefix as the table is
    leaves = [layer.name for layer in report.layers if not layer.has_children]
    timing = convprof.Timing(
        "cpu", 1, 0.1, 0.1, 0.1, tuple(convprof.LayerTime(n, 2e-3, 1e-3, 3e-3) for n in leaves)
    )
    text = convprof.render(report, format="csv", columns=["name", "macs", "share", "measured"], timing=timing)
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == ["name", "macs", "share", "measured_seconds"]
    rows = {line[0]: line[1:] for line in lines[1:]}
    total = sum(layer.macs for layer in report.layers)
    first = next(layer for layer in report.layers if not layer.has_children and layer.macs)
    assert rows[first.name] == [str(first.macs), str(first.macs / total), "0.002"]
    rolled = list(csv.reader(io.StringIO(convprof.render(report, format="csv", depth=0, timing=timing))))
    header = rolled[0]
    assert [rolled[1][header.index(f)] for f in ("name", "measured_seconds")] == [
        "(root)",
        str(2e-3 * len(leaves)),
    ]
    with_roofline = convprof.render(report, format="csv", roofline="a100")
    assert "roofline_seconds" in with_roofline.splitlines()[0] and "bound" in with_roofline.splitlines()[0]
