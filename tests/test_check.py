"""`convprof check`, `convprof diff` and the config file, through main(argv).

Models come from tests.test_budget (MACs by hand there: 1,332 in total, 120 params)."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
from torch import nn

import convprof
from convprof.ci.config import ConfigError, load
from convprof.cli import main
from convprof.units import parse_tolerance
from tests.test_budget import PARAMS, TOTAL

ENTRY = """
[[tool.convprof.models]]
name = "separable"
model = "tests.test_budget:separable"
input = [1, 6, 4, 4]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "budgets.toml"
    path.write_text(text)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path, ENTRY + 'max_macs = "1.4k"\nmax_params = 120\nlayers = { "1.*" = { max_macs = 540 } }\n'
    )
    code, out, err = run(capsys, "check", "--config", str(path))
    assert code == 0
    assert "[1/1] profiling separable (tests.test_budget:separable)" in err  # progress on stderr
    lines = {line.split()[1]: line.split() for line in out.splitlines()[2:] if "[" not in line and line}
    # headroom: (1,400 - 1,332) / 1,400 = 4.9%; params exactly at the limit: 0.0%
    assert lines["macs"][2:] == ["1,332", "1,400", "4.9%", "ok"]
    assert lines["params"][2:] == ["120", "120", "0.0%", "ok"]
    assert "worst of 2 matching '1.*'" in out  # 1.1 (540) is the worst of 1.0 and 1.1
    assert out.endswith("\n1 model within budget.\n")
    assert "\x1b[" not in out  # no colour when the output is not a terminal
    code, markdown, _ = run(capsys, "check", "--config", str(path), "--format", "markdown")
    assert code == 0 and markdown.startswith("| Model ") and "| separable " in markdown


def test_check_fails_with_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, ENTRY + "max_macs = 1000\n")
    code, out, _ = run(capsys, "check", "--config", str(path))
    assert code == 1
    assert "FAIL" in out and f"{TOTAL:,}" in out and "-33.2%" in out  # (1000 - 1332) / 1000
    assert out.endswith("\n1 of 1 model over budget.\n")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("no_color", [None, "1"])
def test_fail_in_colour_on_a_terminal_unless_no_color(
    no_color: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, ENTRY + "max_macs = 1000\nmax_params = 1000\n")
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    monkeypatch.setenv("TERM", "xterm")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["check", "--config", str(path)]) == 1
    out = terminal.getvalue()
    if no_color:
        assert "\x1b[" not in out and "FAIL" in out
    else:
        assert "\x1b[1;31mFAIL\x1b[0m" in out and "\x1b[32mok\x1b[0m" in out
        # the columns stay aligned: every row is as wide as the header once the codes are gone
        plain = [re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip() for line in out.splitlines()[:4]]
        assert plain[2].endswith("ok") and plain[3].endswith("FAIL")  # params, then MACs
        assert len(plain[1]) >= max(len(line) for line in plain[2:4])


def test_check_defaults_to_pyproject(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text(ENTRY + "max_params = 200\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent))
    assert run(capsys, "check")[0] == 0


@pytest.mark.parametrize(
    "text,message",
    [
        (None, "no such file"),
        ("[[tool.convprof.models]\nname = 1\n", "TOML syntax error"),
        ("[tool.other]\nx = 1\n", "no [[tool.convprof.models]] entries"),
        (ENTRY + "max_mac = 3\n", "model 'separable': unknown key 'max_mac'"),
        (ENTRY + 'max_macs = "3 apples"\n', "cannot read quantity '3 apples'"),
        (ENTRY.replace("[1, 6, 4, 4]", "[1, 6, -4, 4]"), "input must be a list of positive integers"),
        (ENTRY + ENTRY, "model name 'separable' is used twice"),
        (ENTRY.replace("tests.test_budget:separable", "no_such_module:f"), "cannot import 'no_such_module'"),
        (ENTRY.replace("[1, 6, 4, 4]", "[1, 5, 4, 4]"), "in module '0' (Conv2d)"),
        (ENTRY + 'layers = { "head.*" = { max_macs = 1 } }\n', "'head.*' matches no module"),
        (ENTRY.replace('name = "separable"\n', ""), "'name' is required"),
    ],
)
def test_check_configuration_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, message: str
) -> None:
    path = tmp_path / "budgets.toml" if text is None else write(tmp_path, text)
    code, _, err = run(capsys, "check", "--config", str(path))
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("convprof: error: ") and message in last


def test_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, ENTRY + "max_macs = = 3\n")
    with pytest.raises(ConfigError, match=r"line 6"):
        load(path)


def test_baseline_written_and_enforced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, ENTRY)
    base = tmp_path / "base.json"
    assert run(capsys, "check", "--config", str(path), "--write-baseline", str(base))[0] == 0
    data = json.loads(base.read_text())
    # float32 traffic, input read + weights read + output written: stem 1x1 conv
    # 96*4 + 36*4 + 96*4 = 912; depthwise 96*4 + 24*4 + 54*4 = 696; pointwise 54*4 + 60*4 + 90*4 = 816
    memory = (96 + 36 + 96) * 4 + (96 + 24 + 54) * 4 + (54 + 60 + 90) * 4
    assert data["models"]["separable"]["total"] == {
        "params": PARAMS,
        "macs": TOTAL,
        "flops": 2 * TOTAL,
        "memory_bytes": memory,
    }
    assert run(capsys, "check", "--config", str(path), "--baseline", str(base))[0] == 0
    # Pretend the agreed model was 2.5% cheaper: 1,332 is 2.5% over 1,299.5 -> fails at 2%, passes at 3%.
    data["models"]["separable"]["total"]["macs"] = 1300
    base.write_text(json.dumps(data))
    code, out, _ = run(capsys, "check", "--config", str(path), "--baseline", str(base), "--tolerance", "2%")
    assert code == 1 and "macs vs baseline 1,300" in out
    assert "flops vs baseline" not in out  # 2 x MACs: it would repeat the MACs row
    assert out.endswith("\n1 of 1 model over budget.\n")
    assert run(capsys, "check", "--config", str(path), "--baseline", str(base), "--tolerance", "3%")[0] == 0


def test_profile_json_and_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    code, out, _ = run(
        capsys, "profile", "tests.test_budget:separable", "--input", "1,6,4,4", "--format", "json"
    )
    old.write_text(out)
    assert convprof.Report.from_dict(json.loads(out)).total.macs == TOTAL
    _, out, _ = run(
        capsys, "profile", "tests.test_cli:tutorial_pair", "--input", "1,6,4,4", "--format", "json"
    )
    new.write_text(out)  # same model name (Sequential) without the 576-MAC stem: layers moved
    code, table, _ = run(capsys, "diff", str(old), str(new))
    assert code == 0
    totals = {line.split()[1]: line.split()[2:] for line in table.splitlines()[2:5]}
    # macs 1,332 -> 756: -576 = -43.24%; params 120 -> 84: -36 = -30.00%
    assert totals["macs"] == ["1,332", "756", "-576", "-43.24%"]
    assert totals["params"] == ["120", "84", "-36", "-30.00%"]
    assert "removed" in table and "changed" in table
    assert run(capsys, "diff", str(new), str(old), "--tolerance", "80%")[0] == 0  # 756 -> 1,332 is +76.2%
    code, _, err = run(capsys, "diff", str(new), str(old), "--tolerance", "5%")
    assert code == 1 and "macs grew by more than 5%" in err  # 756 -> 1,332 is +76.2%
    assert run(capsys, "diff", str(old), str(new), "--tolerance", "0%")[0] == 0  # shrinking never fails
    code, markdown, _ = run(capsys, "diff", str(old), str(new), "--format", "markdown")
    assert markdown.startswith("### convprof diff\n") and "| Sequential | macs" in markdown


def test_diff_rejects_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run(capsys, "diff", str(bad), str(bad))
    assert code == 2 and "not readable JSON" in err


def test_diff_refuses_a_single_report_against_a_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, ENTRY)
    base = tmp_path / "base.json"
    assert run(capsys, "check", "--config", str(path), "--write-baseline", str(base))[0] == 0
    data = json.loads(base.read_text())
    data["models"]["other"] = data["models"]["separable"]  # a baseline of two models
    base.write_text(json.dumps(data))
    single = tmp_path / "single.json"
    single.write_text(json.dumps(data["models"]["separable"]))
    code, _, err = run(capsys, "diff", str(single), str(base))
    assert code == 2 and "holds one model" in err and "two baselines" in err


@pytest.mark.parametrize(
    ("spelling", "fraction"),
    [
        ("2%", 0.02),
        ("2", 0.02),
        (" 2 % ", 0.02),
        ("0.5", 0.005),
        ("0.5%", 0.005),
        ("0", 0.0),
        ("100", 1.0),
        (5, 0.05),
    ],
)
def test_a_tolerance_is_always_a_percentage(spelling: str | int, fraction: float) -> None:
    # a bare number is a percentage, never a fraction: "--tolerance 2" once allowed +200%
    assert parse_tolerance(spelling) == pytest.approx(fraction)


@pytest.mark.parametrize("spelling", ["-2%", "-1", "two", "2%%", "", "inf"])
def test_a_tolerance_that_is_no_percentage_is_refused(spelling: str) -> None:
    with pytest.raises(ValueError, match="expected a percentage such as '2%'"):
        parse_tolerance(spelling)


def test_diff_tolerance_2_is_2_percent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 756 -> 1,332 MACs is +76.2%: "--tolerance 80" passes, "--tolerance 5" and "0.5" fail
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    assert main(["profile", "tests.test_cli:tutorial_pair", "--input", "1,6,4,4", "--format", "json"]) == 0
    old.write_text(capsys.readouterr().out)
    assert main(["profile", "tests.test_check:bigger_pair", "--input", "1,6,4,4", "--format", "json"]) == 0
    new.write_text(capsys.readouterr().out)
    assert run(capsys, "diff", str(old), str(new), "--tolerance", "80")[0] == 0
    for spelling in ("5", "0.5"):
        code, _, err = run(capsys, "diff", str(old), str(new), "--tolerance", spelling)
        assert code == 1 and f"macs grew by more than {spelling}%" in err


def bigger_pair() -> nn.Module:
    """The tutorial pair after a 1x1 conv over the 4x4 input (6 x 6 x 16 = 576 MACs): 1,332."""
    return nn.Sequential(
        nn.Conv2d(6, 6, 1, bias=False),
        nn.Conv2d(6, 6, 2, groups=6, bias=False),
        nn.Conv2d(6, 10, 1, bias=False),
    )
