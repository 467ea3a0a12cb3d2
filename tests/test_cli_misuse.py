"""Bad input to the CLI, the config, baselines and the fixture: one line naming the problem,
exit 2, never a traceback; an internal error exits 3, never 1 ("a budget is broken").
Every case here used to print a traceback or pass silently (issue 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import convprof
from convprof import cli
from convprof.cli import main
from tests.test_budget import TOTAL, separable

ENTRY = """
[[tool.convprof.models]]
name = "separable"
model = "tests.test_budget:separable"
input = [1, 6, 4, 4]
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(result: tuple[int, str, str], *words: str) -> None:
    code, _, err = result
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("convprof: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], err


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("raise RuntimeError('no GPU here')", ("RuntimeError", "no GPU here")),
        ("def build(:\n    pass", ("SyntaxError",)),
    ],
    ids=["raises", "syntax"],
)
def test_spec_module_that_fails_to_import(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    source: str,
    words: tuple[str],
) -> None:
    (tmp_path / "broken_model.py").write_text(source + "\n")
    monkeypatch.chdir(tmp_path)
    result = run(capsys, "profile", "broken_model:build", "--input", "1,3,8,8")
    assert_usage_error(result, "broken_model", *words)


def test_spec_imported_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "my_own_model.py").write_text(
        "from torch import nn\ndef build():\n    return nn.Conv2d(6, 10, 2, bias=False)\n"
    )
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "profile", "my_own_model:build", "--input", "1,6,4,4", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["total"]["macs"] == 9 * 240  # the tutorial's conv


_GPT2 = "transformers:gpt2(n_layer=1,n_embd=32,n_head=2,vocab_size=100)"
_SEPARABLE = "tests.test_budget:separable"
_LLAMA = (
    "transformers:llama(num_hidden_layers=1,hidden_size=32,intermediate_size=64,"
    "num_attention_heads=2,num_key_value_heads=1,vocab_size=100)"
)


def detached() -> object:
    """A model whose output leaves the graph: nothing to differentiate."""
    import torch

    class Detached(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x).detach()

    return Detached()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("profile", "tests.test_budget:separable", "--input", "99999999999999999999,3,8,8"), ("too many",)),
        (
            ("profile", "tests.test_budget:separable", "--input", "-1,3,224,224"),
            ("bad input", "-1,3,224,224"),
        ),
        # 64 x 3 x 8192 x 8192 float32 = 51.5 GB: refused before allocating, not after
        (
            ("profile", "tests.test_budget:separable", "--input", "64,3,8192,8192"),
            ("51.5 GB", "--no-compute"),
        ),
        (("check", "--config", "x.toml", "--tolerance", "-2%"), ("tolerance", "-2%")),
        (("profile", "tests.test_budget:separable", "--device", "banana"), ("unknown device", "banana")),
        (("profile", "tests.test_budget:separable", "--device", "tpu"), ("unknown device", "tpu")),
        (("profile", "tests.test_budget:separable", "--fit", "24"), ("with its unit", "24GiB")),
        # GPT-2's learned position table holds 1,024 rows: a real forward fails past it
        (("profile", _GPT2, "--input", "1,2000"), ("learned positions for 1,024", "make 2,000")),
        (("profile", _GPT2, "--input", "1,1", "--past", "1024"), ("make 1,025",)),
        # issue 35 #10: each was exit 3 (a C++ backtrace, a validation error) or ran unbounded
        (("profile", _LLAMA, "--past", "1" + "0" * 30), ("--past must be 1 to 1,099,511,627,776",)),
        (
            ("profile", "tests.test_budget:separable", "--time", "--repeats", "9" * 20),
            ("--repeats", "10,000"),
        ),
        (("profile", "transformers:gpt2(n_embd='big')"), ("n_embd='big' refused", "expected int")),
        (("profile", "tests.test_cli_misuse:detached", "--input", "2,4", "--backward"), ("requires grad",)),
        (("diff", "/dev/zero", "/dev/zero"), ("/dev/zero: not a regular file",)),
    ],
    ids=[
        "overflow",
        "negative",
        "too big to allocate",
        "negative tolerance",
        "banana device",
        "tpu",
        "fit unit",
        "prompt past positions",
        "cache past positions",
        "past beyond any context",
        "unbounded repeats",
        "a setting of the wrong type",
        "backward of a detached output",
        "a device file as a baseline",
    ],
)
def test_bad_values(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], words: tuple[str, ...]
) -> None:
    assert_usage_error(run(capsys, *argv), *words)


def test_calculator_with_huge_channels_needs_no_weights(capsys: pytest.CaptureFixture[str]) -> None:
    # 100,000 x 100,000 x 3 x 3 float32 weights would be 360 GB; the calculator builds on meta
    code, out, err = run(capsys, "conv", "--in", "100000", "--out", "100000", "--kernel", "3", "--size", "8")
    assert code == 0, err
    # standard: 6 x 6 positions x 100,000 x 100,000 x 9 weights
    assert f"{36 * 100_000 * 100_000 * 9:,}" in out


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (ENTRY + 'max_macs = "1e999"\n', ("max_macs", "too large")),
        (ENTRY + 'layers = { "0" = 5 }\n', ("layers", "'0': 5")),
        (ENTRY + 'allow_incomplete = "no"\n', ("allow_incomplete",)),
        ("tool = 5\n", ("no [[tool.convprof.models]]",)),
        (b"\xff\xfe[[tool.convprof.models]]\n", ("not UTF-8",)),
    ],
    ids=["huge quantity", "layer limit not a table", "flag not a bool", "tool not a table", "not utf-8"],
)
def test_config_values_of_the_wrong_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes, words: tuple[str, ...]
) -> None:
    path = tmp_path / "budgets.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    assert_usage_error(run(capsys, "check", "--config", str(path)), *words)


def _report() -> dict[str, object]:
    report = convprof.profile(separable(), __import__("torch").randn(1, 6, 4, 4))
    data: dict[str, object] = report.to_dict()
    return data


BASELINES = {
    "models a list": lambda r: json.dumps({"schema": 1, "models": [r]}),
    "a layer an int": lambda r: json.dumps({**r, "layers": [5]}),
    "params a string": lambda r: json.dumps({**r, "total": {**r["total"], "params": "120"}}),
    "params null": lambda r: json.dumps({**r, "total": {**r["total"], "params": None}}),
    "NaN MACs": lambda r: json.dumps({**r, "total": {**r["total"], "macs": float("nan")}}),
    "deep nesting": lambda r: "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_of_the_wrong_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(BASELINES[name](_report()))  # type: ignore[no-untyped-call]
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_report()))
    assert_usage_error(run(capsys, "diff", str(good), str(bad), "--tolerance", "1%"), str(bad))
    config = tmp_path / "budgets.toml"
    config.write_text(ENTRY)
    assert_usage_error(run(capsys, "check", "--config", str(config), "--baseline", str(bad)), str(bad))


def test_baseline_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"schema": 1, "model": "\xff"}')
    assert_usage_error(run(capsys, "diff", str(bad), str(bad)), "not UTF-8")


@pytest.mark.parametrize("where", ["missing folder", "a folder", "unwritable"])
def test_output_paths_are_checked_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    config = tmp_path / "budgets.toml"
    config.write_text(ENTRY)
    target = {
        "missing folder": tmp_path / "nowhere" / "base.json",
        "a folder": tmp_path,
        "unwritable": Path("/proc/version"),  # not writable, even by root
    }[where]
    result = run(capsys, "check", "--config", str(config), "--write-baseline", str(target))
    assert_usage_error(result, "--write-baseline")
    assert "profiling" not in result[2]  # refused before the first model ran
    image = {
        "missing folder": tmp_path / "nowhere" / "plot.png",
        "a folder": tmp_path / "folder.png",
        "unwritable": Path("/proc/plot.png"),
    }[where]
    if where == "a folder":
        image.mkdir()
    plot = run(capsys, "profile", "tests.test_budget:separable", "--input", "1,6,4,4", "--plot", str(image))
    assert_usage_error(plot, "--plot")


def test_internal_error_exits_3_not_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> str:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("convprof.cli.profile.render", broken)
    code, _, err = run(capsys, "profile", "tests.test_budget:separable", "--input", "1,6,4,4")
    assert code == 3
    assert "internal error: ZeroDivisionError: a bug" in err and "Traceback" not in err


def test_markdown_diff_escapes_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = _report()
    new = json.loads(json.dumps(old))
    costly = next(layer for layer in new["layers"] if layer["macs"])  # the diff lists it
    costly["name"] = "x|y\n| injected | row |<img src=x onerror=alert(1)>"
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    code, out, _ = run(
        capsys, "diff", str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--format", "markdown"
    )
    assert code == 0
    assert "x\\|y" in out  # the name is there, escaped
    assert "<img" not in out and "&lt;img" in out
    assert not any(line.startswith("| injected") for line in out.splitlines())
    table = [line for line in out.splitlines() if line.startswith("| ") and "Layer" not in line]
    header = next(line for line in out.splitlines() if line.startswith("| Model") and "Layer" in line)
    cells = header.count(" | ")
    assert all(line.replace("\\|", "").count(" | ") == cells for line in table if "injected" in line)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"max_macs": "1e999"}, ValueError, ("max_macs", "too large")),
        ({"layers": {"0": 5}}, TypeError, ("layers", "'0': 5")),
        ({"allow_incomplete": "no"}, TypeError, ("allow_incomplete", "'no'")),
    ],
    ids=["huge quantity", "layer limit not a mapping", "string flag"],
)
def test_budget_arguments_of_the_wrong_type(
    kwargs: dict[str, object], error: type, words: tuple[str, ...]
) -> None:
    with pytest.raises(error) as info:
        convprof.assert_budget(separable(), __import__("torch").randn(1, 6, 4, 4), **kwargs)
    for word in words:
        assert word in str(info.value)
    # a real budget still works after the refusals
    assert convprof.assert_budget(separable(), __import__("torch").randn(1, 6, 4, 4), max_macs=TOTAL).complete


def test_pytest_plugin_does_not_import_torch_at_startup(tmp_path: Path) -> None:
    (tmp_path / "test_one.py").write_text(
        "import sys\nTORCH_AT_COLLECTION = 'torch' in sys.modules\n\n"
        "def test_one():\n    assert not TORCH_AT_COLLECTION\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_one.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "convprof"
        in subprocess.run(
            [sys.executable, "-m", "pytest", "--help"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
        ).stdout
    )  # the plugin is loaded (its option is listed), it just does not import torch


def test_help_and_version_answer_without_torch(tmp_path: Path) -> None:
    script = (
        "import sys\nfrom convprof.cli import main\n"
        "for argv in (['--help'], ['--version'], ['check', '--help'], ['diff', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert "TORCH False" in done.stdout
    assert f"convprof {convprof.__version__}" in done.stdout


def test_bare_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys)
    assert code == 2 and out.startswith("usage: convprof") and "profile" in out and "exit status" in out


def test_every_option_says_what_it_does() -> None:
    from convprof.cli import _parser

    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    for name, sub in commands.choices.items():
        assert sub.description, name
        assert "exit status" in (sub.epilog or ""), name
        for action in sub._actions:
            assert action.help, f"{name} {action.dest} has no help"


GATED = """
import torch
from torch import nn


class Gate(nn.Module):
    def forward(self, x):
        return x[x.nonzero(as_tuple=True)] if x.sum().item() > -1e9 else x


def build():
    return nn.Sequential(nn.Linear(4, 4), Gate())
"""


def test_default_counts_without_computing_and_falls_back_when_values_are_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "gated_model.py").write_text(GATED)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "profile", "gated_model:build", "--input", "2,4", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["total"]["macs"] == 2 * 4 * 4
    assert "note:" in err and "counted with a real forward pass instead" in err and ".item()" in err
    refused = run(capsys, "profile", "gated_model:build", "--input", "2,4", "--no-compute")
    assert_usage_error(refused, "needs real tensor values", "(run without --no-compute)")


def test_default_and_forced_modes_agree_without_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    base = ("profile", "tests.test_budget:separable", "--input", "1,6,4,4", "--format", "json")
    results = {
        mode: run(capsys, *base, *flags)
        for mode, flags in {"auto": (), "no": ("--no-compute",), "yes": ("--compute",)}.items()
    }
    totals = {mode: json.loads(out)["total"] for mode, (_, out, _) in results.items()}
    assert totals["auto"] == totals["no"] == totals["yes"]
    assert totals["auto"]["macs"] == TOTAL
    assert all("note" not in err for _, _, err in results.values())
    both = run(capsys, *base, "--compute", "--no-compute")
    assert_usage_error(both, "not allowed with argument")


def test_default_builds_for_real_what_cannot_be_built_on_meta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "quantized_model.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "def build():\n"
        "    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))\n"
        "    return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)\n"
    )
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "profile", "quantized_model:build", "--input", "2,8", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["total"]["macs"] == 2 * 8 * 16 + 2 * 16 * 4
    assert "counted with a real forward pass instead" in err


def test_api_compute_auto() -> None:
    namespace: dict[str, object] = {}
    exec(GATED, namespace)  # the same model, built here
    model = namespace["build"]()  # type: ignore[operator]
    assert convprof.profile(model, __import__("torch").randn(2, 4), compute="auto").total.macs == 2 * 4 * 4
    with pytest.raises(TypeError, match="compute must be True, False or 'auto'"):
        convprof.profile(model, __import__("torch").randn(2, 4), compute="yes")


@pytest.mark.parametrize(("missing", "code"), [("torch", 2), ("torchvision", 2), ("someones_module", 3)])
def test_a_missing_package_is_a_usage_error(
    missing: str, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without torch (a wheel installed with --no-deps) the answer says what to install, with
    status 2; a module missing for another reason is still convprof's own error (3)."""

    def absent(*args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    monkeypatch.setattr(cli.profile, "profile_spec", absent)
    assert cli.main(["profile", "torchvision:resnet18"]) == code
    err = capsys.readouterr().err
    assert ("pip install" in err) == (code == 2) and "Traceback" not in err


def test_console_script_from_a_folder_holding_the_model(tmp_path: Path) -> None:
    """The installed `convprof` script (not main(), not python -m): its import path starts at
    the script's own folder, so the current directory must be added by convprof itself."""
    script = Path(sys.executable).parent / "convprof"
    if not script.exists():
        pytest.skip("no console script next to this interpreter")
    (tmp_path / "my_net.py").write_text(
        "from torch import nn\n"
        "def build(width=10):\n"
        "    return nn.Sequential(nn.Conv2d(6, width, 2, bias=False))\n"
    )
    done = subprocess.run(
        [str(script), "profile", "my_net:build(width=4)", "--input", "1,6,4,4", "--tree", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    total = json.loads(done.stdout)["total"]
    weights = 4 * 6 * 2 * 2  # 96, each applied at 3 x 3 output positions
    assert (total["params"], total["macs"]) == (weights, weights * 3 * 3)


def test_a_fifo_as_baseline_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # opening a FIFO blocks until someone writes to it: refused before any open
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert_usage_error(run(capsys, "diff", str(fifo), str(fifo)), "not a regular file")
    (tmp_path / "pyproject.toml").write_text(ENTRY)
    monkeypatch.chdir(tmp_path)
    assert_usage_error(run(capsys, "check", "--baseline", str(fifo)), "not a regular file")
    assert_usage_error(
        run(capsys, "check", "--write-baseline", str(fifo)), "--write-baseline", "not a regular file"
    )


def test_a_file_name_as_spec_and_a_named_main_input(capsys: pytest.CaptureFixture[str]) -> None:
    # issue 35 #16: 'mymodel.py:build' got no hint; --input x=SHAPE on a torchvision model
    # (its forward's input is x) was added beside the default input instead of replacing it
    assert_usage_error(
        run(capsys, "profile", "tests/test_budget.py:separable"),
        "drop the .py",
        "tests.test_budget:separable",
    )
    code, out, _ = run(
        capsys,
        "profile",
        "torchvision:resnet18",
        "--input",
        "x=1,3,64,64",
        "--format",
        "json",
        "--no-compute",
    )
    assert code == 0 and json.loads(out)["inputs"] == [[1, 3, 64, 64]]
