"""Peak memory from the command line, budgets and the batch search: ``--peak-memory``,
``--optimizer``, ``--fit``, ``max_peak_bytes``. Expected values are the MLP's closed forms of
tests/test_peak_memory.py, written out again here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import convprof
from convprof.cli import main
from convprof.memory.fit import MOST, search_batch
from convprof.units import format_binary_bytes, parse_bytes

PARAMS = (100 * 200 + 200 + 200 * 10 + 10) * 4  # 88,840 bytes


def mlp() -> nn.Module:
    """Spec target 'tests.test_peak_cli:mlp'."""
    return nn.Sequential(nn.Linear(100, 200), nn.ReLU(), nn.Linear(200, 10))


def peak_at(batch: int) -> int:
    # inference on the CPU: parameters, the input (400 bytes a row) and, inside the ReLU, its
    # input and output (800 bytes a row each)
    return PARAMS + batch * (400 + 2 * 800)


def test_profile_peak_memory_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "tests.test_peak_cli:mlp", "--input", "8,100", "--peak-memory"]) == 0
    out = capsys.readouterr().out
    assert "Peak MiB" in out.splitlines()[0]
    assert f"Peak memory:  {format_binary_bytes(peak_at(8))} ({peak_at(8):,} bytes)" in out
    assert "inference (no_grad) on cpu, in the forward pass, at 1" in out
    assert "Memory:       peak = the most bytes of tensor storage alive at once" in out


def test_profile_optimizer_is_a_training_step_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "profile",
        "tests.test_peak_cli:mlp",
        "--input",
        "8,100",
        "--optimizer",
        "adam",
        "--format",
        "json",
    ]
    assert main(argv) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    # params, input, Adam's two moments and step counts, gradients, output, two temporaries
    assert memory["peak_bytes"] == PARAMS + 3_200 + (2 * PARAMS + 16) + PARAMS + 320 + 160_000 == 518_896
    assert memory["training"] and memory["optimizer"] == "adam" and memory["phase"] == "step"


def test_fit_finds_the_largest_batch(capsys: pytest.CaptureFixture[str]) -> None:
    assert peak_at(5) == 98_840 <= 100_000 < peak_at(6) == 100_840
    argv = ["profile", "tests.test_peak_cli:mlp", "--input", "1,100", "--fit", "100000B", "--format", "json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert (
        data["fit"]["batch"] == 5
        and data["fit"]["peak_bytes"] == 98_840
        and data["fit"]["next_bytes"] == 100_840
    )
    assert data["inputs"] == [[5, 100]]  # the table is that batch's


def test_fit_that_fails_at_batch_one_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "tests.test_peak_cli:mlp", "--input", "1,100", "--fit", "80000B"]) == 1
    assert "Fit:          batch 1 does not fit in 78.12 KiB: its peak is 88.71 KiB" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fit", "lots"], "cannot read memory size 'lots'"),
        (["--fit", "0B"], "must be more than 0 bytes"),
        (["--columns", "name,peak"], "column 'peak' needs peak memory (--peak-memory)"),
        (["--optimizer", "lion"], "invalid choice: 'lion'"),
        (["--peak-memory", "--time"], "--time does not go with peak memory"),
        (
            ["--autocast", "bfloat16", "--time"],
            "--time measures the model as it is: it does not go with --autocast",
        ),
    ],
)
def test_bad_peak_options_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) if argv[0] in ("--fit", "--optimizer") else _returns(2):
        assert main(["profile", "tests.test_peak_cli:mlp", "--input", "1,100", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


class _returns:
    def __init__(self, code: int) -> None:
        self.code = code

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (100_000, 5),
        (peak_at(5), 5),
        (peak_at(5) - 1, 4),
        (peak_at(1), 1),
        (peak_at(1) - 1, 0),
        (10**12, MOST),
    ],
)
def test_search_batch_on_a_straight_line(limit: int, expected: int) -> None:
    fit = search_batch(peak_at, limit)
    assert fit.batch == expected
    assert fit.tried <= 12  # interpolation: a handful of predictions, not a bisection of 2**20


def test_search_batch_on_a_curve() -> None:
    # a peak that grows faster than the batch (quadratic attention): the largest b with
    # 1000 + 10 b^2 <= 50,000 is 70 (1,000 + 49,000), as 71 needs 1,000 + 50,410
    fit = search_batch(lambda b: 1000 + 10 * b * b, 50_000)
    assert (fit.batch, fit.peak_bytes, fit.next_bytes) == (70, 50_000, 51_410)


def test_a_fit_line_is_true_to_the_byte() -> None:
    """A limit of 24 GiB, batch 1144 at 1,000 bytes under it and batch 1145 at 20,000 over: to
    two decimals all three read 24.00 GiB, and "1145 would need 24.00 GiB" after "1144 fits in
    24.00 GiB" contradicts itself, so such a line gives bytes; sizes that read apart keep
    their units."""
    limit = 24 * 2**30
    fit = search_batch(lambda b: limit - 1000 + 21000 * (b - 1144), limit)
    assert (fit.batch, fit.peak_bytes, fit.next_bytes) == (1144, limit - 1000, limit + 20_000)
    assert fit.describe().startswith(
        "batch 1144 fits in 25,769,803,776 bytes (peak 25,769,802,776 bytes); "
        "batch 1145 would need 25,769,823,776 bytes"
    )
    assert search_batch(peak_at, 100_000).describe().startswith("batch 5 fits in 97.66 KiB")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("24GiB", 24 * 2**30),
        ("80GB", 80 * 10**9),
        ("512 MiB", 512 * 2**20),
        ("1.5KiB", 1536),
        ("24G", 24 * 10**9),
        ("100", 100),
        (7, 7),
    ],
)
def test_memory_sizes(text: str | int, size: int) -> None:
    assert parse_bytes(text) == size


def test_assert_budget_holds_the_peak() -> None:
    x = torch.randn(8, 100)
    report = convprof.assert_budget(mlp(), x, max_peak_bytes=peak_at(8), device="cpu")
    assert report.memory is not None and report.memory.peak_bytes == peak_at(8)
    with pytest.raises(convprof.BudgetExceeded) as caught:
        convprof.assert_budget(mlp(), x, max_peak_bytes=peak_at(8) - 1, device="cpu")
    message = str(caught.value)
    assert f"total: peak_bytes {peak_at(8):,} > limit {peak_at(8) - 1:,}" in message
    assert "The peak is reached in the forward pass at 1; it holds parameter 86.76 KiB" in message
    with pytest.raises(convprof.BudgetExceeded):  # Adam's step needs far more than inference
        convprof.assert_budget(mlp(), x, max_peak_bytes="400KB", optimizer="adam", device="cpu")
    with pytest.raises(ValueError, match="optimizer 'adam' is for a max_peak_bytes limit"):
        convprof.assert_budget(mlp(), x, max_macs="1G", optimizer="adam")


def test_check_holds_the_configured_peak(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text(
        "[[tool.convprof.models]]\n"
        'name = "mlp"\nmodel = "tests.test_peak_cli:mlp"\ninput = [8, 100]\n'
        f'max_peak_bytes = {peak_at(8)}\npeak_device = "cpu"\n'
        "[[tool.convprof.models]]\n"
        'name = "mlp-adam"\nmodel = "tests.test_peak_cli:mlp"\ninput = [8, 100]\n'
        'max_peak_bytes = "500KB"\noptimizer = "adam"\npeak_device = "cpu"\n'
    )
    assert main(["check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:] if line.startswith("mlp")}
    assert rows["mlp"] == ["peak_bytes", f"{peak_at(8):,}", f"{peak_at(8):,}", "0.0%", "ok"]
    assert rows["mlp-adam"] == ["peak_bytes", "518,896", "500,000", "-3.8%", "FAIL"]
    assert "1 of 2 models over budget." in out


def test_csv_has_the_peak_column(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["profile", "tests.test_peak_cli:mlp", "--input", "8,100", "--peak-memory", "--format", "csv"])
        == 0
    )
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].endswith(",peak_bytes")
    assert [row.rsplit(",", 1)[1] for row in rows[1:]] == [str(peak_at(8)), "98440", str(peak_at(8)), "98760"]


class Gate(nn.Module):
    """Needs values: y[y > 0] has a data-dependent shape."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return y[y > 0].sum() + y.mean()


def test_fit_on_a_model_that_needs_values_says_how(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "tests.test_peak_cli:Gate", "--input", "4,16", "--fit", "1MiB"]) == 2
    err = capsys.readouterr().err
    assert "needs real tensor values" in err and "add --compute to search with real forwards" in err
    assert len(err.strip().splitlines()) == 1
    # with --compute the search runs real forwards: 16x16 + 16 parameters (1,088 bytes) and
    # the rest grows with the batch
    assert main(["profile", "tests.test_peak_cli:Gate", "--input", "4,16", "--fit", "1MiB", "--compute"]) == 0
    assert "Fit:          batch " in capsys.readouterr().out


def test_check_holds_the_peak_to_the_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "pyproject.toml"
    entry = '[[tool.convprof.models]]\nname = "mlp"\nmodel = "tests.test_peak_cli:mlp"\ninput = [8, 100]\n'
    config.write_text(entry + 'max_peak_bytes = "1MiB"\npeak_device = "cpu"\n')
    base = tmp_path / "base.json"
    assert main(["check", "--config", str(config), "--write-baseline", str(base)]) == 0
    capsys.readouterr()
    # the same model for CUDA's allocator: params and MACs as they were, the peak 104,840 ->
    # 107,008 bytes (every storage rounded to 512), +2.07%
    config.write_text(entry + 'max_peak_bytes = "1MiB"\npeak_device = "cuda"\n')
    assert main(["check", "--config", str(config), "--baseline", str(base), "--tolerance", "3"]) == 0
    out = capsys.readouterr().out
    assert f"peak_bytes vs baseline {peak_at(8):,}" in out and "107,008" in out
    assert main(["check", "--config", str(config), "--baseline", str(base), "--tolerance", "2"]) == 1


def test_diff_compares_the_peak_when_both_reports_predicted_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new, plain = tmp_path / "old.json", tmp_path / "new.json", tmp_path / "plain.json"
    for path, batch, extra in ((old, 8, ["--peak-memory"]), (new, 10, ["--peak-memory"]), (plain, 10, [])):
        assert (
            main(
                ["profile", "tests.test_peak_cli:mlp", "--input", f"{batch},100", "--format", "json", *extra]
            )
            == 0
        )
        path.write_text(capsys.readouterr().out)
    assert main(["diff", str(old), str(new)]) == 0
    rows = {
        line.split()[1]: line.split()[2:]
        for line in capsys.readouterr().out.splitlines()[2:7]
        if line.strip()
    }
    # 104,840 -> 108,840 bytes: two more rows of 400 + 2 x 800 bytes
    assert rows["peak_bytes"] == [f"{peak_at(8):,}", f"{peak_at(10):,}", "+4,000", "+3.82%"]
    assert main(["diff", str(old), str(plain)]) == 0
    assert "peak_bytes" not in capsys.readouterr().out  # one side predicted none


# Under autocast to bfloat16 (the CPU's policy) at batch 8: the float32 parameters and input,
# every weight's bfloat16 copy (cached for the forward), the ReLU's bfloat16 output and the
# second Linear's, at its output (tests/test_autocast.py has the derivation)
AUTOCAST_PEAK = PARAMS + 3_200 + PARAMS // 2 + 8 * 200 * 2 + 8 * 10 * 2  # 139,820


def test_profile_autocast(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "profile",
        "tests.test_peak_cli:mlp",
        "--input",
        "8,100",
        "--peak-memory",
        "--autocast",
        "bfloat16",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"Peak memory:  {format_binary_bytes(AUTOCAST_PEAK)} ({AUTOCAST_PEAK:,} bytes)" in out
    assert "inference (no_grad) under autocast (bfloat16) on cpu" in out


def test_budgets_hold_the_autocast_peak(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = torch.randn(8, 100)
    report = convprof.assert_budget(mlp(), x, max_peak_bytes=AUTOCAST_PEAK, device="cpu", autocast="bfloat16")
    assert report.memory is not None and report.memory.peak_bytes == AUTOCAST_PEAK == 139_820
    with pytest.raises(convprof.BudgetExceeded):
        convprof.assert_budget(mlp(), x, max_peak_bytes=AUTOCAST_PEAK - 1, device="cpu", autocast="bfloat16")
    config = tmp_path / "pyproject.toml"
    config.write_text(
        "[[tool.convprof.models]]\n"
        'name = "mlp-amp"\nmodel = "tests.test_peak_cli:mlp"\ninput = [8, 100]\n'
        f'max_peak_bytes = {AUTOCAST_PEAK}\npeak_device = "cpu"\nautocast = "bfloat16"\n'
    )
    assert main(["check", "--config", str(config)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("mlp-amp"))
    assert row.split()[1:3] == ["peak_bytes", f"{AUTOCAST_PEAK:,}"]
    config.write_text(config.read_text().replace('"bfloat16"', '"int8"'))
    assert main(["check", "--config", str(config)]) == 2
    assert "autocast must be 'bfloat16' or 'float16', got 'int8'" in capsys.readouterr().err
