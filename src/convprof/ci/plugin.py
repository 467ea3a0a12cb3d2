"""pytest plugin (registered through the ``pytest11`` entry point; no conftest needed).

* ``convprof_budget`` fixture: ``convprof_budget(model, args, max_macs="300M", ...)`` behaves
  like :func:`convprof.assert_budget` and returns the report; a broken budget fails the test
  with the limits broken and the model's layer table in the failure output.
* ``--convprof-report``: print every report the fixture produced in the terminal summary.

State lives in ``config.stash``, never on private attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from convprof.ci.budget import BudgetExceeded, assert_budget
from convprof.rendering.render import render
from convprof.report import Report

_REPORTS = pytest.StashKey[list[tuple[str, Report]]]()


class BudgetFailure(BudgetExceeded):
    """BudgetExceeded whose message also carries the layer table, for the failure output."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n\n{render(self.report)}"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("convprof")
    group.addoption(
        "--convprof-report",
        action="store_true",
        default=False,
        help="print the layer table of every model profiled by convprof_budget in the summary",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_REPORTS] = []


@pytest.fixture
def convprof_budget(request: pytest.FixtureRequest) -> Callable[..., Report]:
    """Profile a model and hold it to limits; returns the report."""

    def check(*args: Any, **kwargs: Any) -> Report:
        # The same arguments as convprof.assert_budget, to which this delegates.
        __tracebackhide__ = True  # the failure shows the budget's message, not this frame
        try:
            report = assert_budget(*args, **kwargs)
        except BudgetExceeded as exc:
            request.config.stash[_REPORTS].append((request.node.nodeid, exc.report))
            raise BudgetFailure(exc.report, exc.violations, exc.incomplete) from None
        request.config.stash[_REPORTS].append((request.node.nodeid, report))
        return report

    return check


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not config.getoption("--convprof-report"):
        return
    for nodeid, report in config.stash.get(_REPORTS, []):
        terminalreporter.write_sep("-", f"convprof: {nodeid}")
        terminalreporter.write(render(report))
