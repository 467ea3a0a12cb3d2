"""Reports on disk: one report (``convprof profile --format json``) or a baseline of several
(``convprof check --write-baseline``), both read by :func:`read` as ``{model name: Report}``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from convprof.report import SCHEMA, Report


class BaselineError(ValueError):
    """A report or baseline file that cannot be read."""


def dumps(reports: Mapping[str, Report]) -> str:
    """A baseline: ``{"schema": 1, "models": {name: report}}``, keys sorted for stable diffs."""
    data = {"schema": SCHEMA, "models": {name: r.to_dict() for name, r in reports.items()}}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a count")


# a baseline of a few hundred models is a few MB; anything far larger is not one (a device
# file such as /dev/zero would be read forever)
MAX_BYTES = 256 * 2**20


def _text(path: Path) -> str:
    """A regular file's text, refused unread when it is something else (a FIFO blocks until
    written to, /dev/zero never ends) or larger than any baseline."""
    if path.exists() and not path.is_dir() and not path.is_file():
        raise BaselineError(f"{path}: not a regular file")
    with path.open("rb") as handle:
        data = handle.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise BaselineError(f"{path}: larger than {MAX_BYTES // 2**20} MiB, not a convprof baseline")
    return data.decode("utf-8")


def read(path: str | Path) -> dict[str, Report]:
    """The reports in a file; anything that is not what convprof wrote is a BaselineError
    (wrong types, NaN or infinite counts, non-UTF-8 text, absurdly deep nesting)."""
    path = Path(path)
    try:
        data = json.loads(_text(path), parse_constant=_no_constant)
    except BaselineError:
        raise
    except FileNotFoundError:
        raise BaselineError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BaselineError(f"{path}: is a directory") from None
    except UnicodeDecodeError as exc:
        raise BaselineError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise BaselineError(f"{path}: nested too deeply to be a convprof report") from None
    except (OSError, ValueError) as exc:
        raise BaselineError(f"{path}: not readable JSON: {exc}") from None
    try:
        if isinstance(data, dict) and "models" in data:
            if data.get("schema") != SCHEMA:
                raise ValueError(f"baseline schema {data.get('schema')!r}, expected {SCHEMA}")
            if not isinstance(data["models"], dict):
                raise ValueError("'models' must map model names to reports")
            reports = {str(name): Report.from_dict(report) for name, report in data["models"].items()}
        else:
            report = Report.from_dict(data)
            reports = {report.model: report}
        for name, report in reports.items():
            _check_counts(name, report)
    except (ValueError, TypeError, AttributeError) as exc:
        raise BaselineError(f"{path}: {exc}") from None
    return reports


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_counts(name: str, report: Report) -> None:
    """Counts are non-negative integers: what diffs and budgets compare must be numbers."""
    totals = report.total
    for key, value in (
        ("params", totals.params),
        ("macs", totals.macs),
        ("memory_bytes", totals.memory_bytes),
        ("grad_input_macs", totals.grad_input_macs),
        ("grad_weight_macs", totals.grad_weight_macs),
    ):
        if not _count(value):
            raise ValueError(f"model {name!r}: total {key} must be a non-negative integer, got {value!r}")
    for layer in report.layers:
        counts = (
            ("params", layer.params),
            ("macs", layer.macs),
            ("calls", layer.calls),
            ("grad_input_macs", layer.grad_input_macs),
            ("grad_weight_macs", layer.grad_weight_macs),
        )
        for key, value in counts:
            if not _count(value):
                where = f"model {name!r}: layer {layer.name!r}"
                raise ValueError(f"{where}: {key} must be a non-negative integer, got {value!r}")
