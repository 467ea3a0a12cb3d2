"""The pytest plugin, run in a child pytest session through ``pytester``. No conftest in the
child: the fixture comes from the ``pytest11`` entry point installed with the package."""

from __future__ import annotations

import pytest
import torch  # noqa: F401  (see below)

# Imported here, before any child session: pytester runs children in this process and drops the
# modules a child imported first when it ends, and torch imported a second time corrupts the
# interpreter (this file alone crashed with SIGSEGV in its second child session).

MODEL = """
import torch
from torch import nn

def model():
    # The tutorial's separable pair: 24 + 60 params, 216 + 540 = 756 MACs at 1x6x4x4.
    return nn.Sequential(nn.Conv2d(6, 6, 2, groups=6, bias=False), nn.Conv2d(6, 10, 1, bias=False))

X = torch.ones(1, 6, 4, 4)
"""


def test_passing_budget_returns_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        MODEL
        + """
def test_ok(convprof_budget):
    report = convprof_budget(model(), X, max_macs="756", max_params=84)
    assert report.total.macs == 756
"""
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_train_budget_through_the_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        MODEL
        + """
def test_train(convprof_budget):
    # forward 756; dW 216 + 540; dX 540 (the pointwise conv's input, not the image): 2,052
    report = convprof_budget(model(), X, max_train_macs=2052)
    assert report.total.train_macs == 2052

def test_train_over(convprof_budget):
    convprof_budget(model(), X, max_train_macs=2051)
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*total: train_macs 2,052 > limit 2,051*"])


def test_peak_budget_through_the_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        MODEL
        + """
def test_peak(convprof_budget):
    # CUDA's allocator (the default) rounds each storage up to 512 bytes: two weights (96 and
    # 240 bytes) and the input (384) are held; both convs' outputs (216, 360) are alive at the end
    report = convprof_budget(model(), X, max_peak_bytes=5 * 512)
    assert report.memory.peak_bytes == 2560

def test_peak_over(convprof_budget):
    convprof_budget(model(), X, max_peak_bytes="2KiB")
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*total: peak_bytes 2,560 > limit 2,048 (2.50 KiB > 2.00 KiB)*"])
    # the failure is the budget's message under the test's own line, not convprof's frames
    result.stdout.no_fnmatch_line("*convprof/budget.py*")
    result.stdout.no_fnmatch_line("*convprof/pytest_plugin.py*")


def test_failing_budget_shows_limits_and_table(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        MODEL
        + """
def test_too_big(convprof_budget):
    convprof_budget(model(), X, max_macs=700)
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*BudgetFailure*convprof budget exceeded for Sequential*",
            "*total: macs 756 > limit 700 (over by 56, +8.0%)*",  # 56 / 700 = 8.0%
            "*1*Conv2d*pointwise*1x6x3x3*1x10x3x3*60*540*",  # the layer table
        ]
    )


def test_report_option_prints_tables_in_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        MODEL
        + """
def test_a(convprof_budget):
    convprof_budget(model(), X, max_macs="1k")
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--convprof-report")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*convprof: test_report_option_prints_tables_in_summary.py::test_a*", "Total MACs:   756 (756)"]
    )
    quiet = pytester.runpytest("-p", "no:cacheprovider")
    assert "Total MACs" not in quiet.stdout.str()
