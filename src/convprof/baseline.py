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


def read(path: str | Path) -> dict[str, Report]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BaselineError(f"{path}: no such file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BaselineError(f"{path}: not readable JSON: {exc}") from None
    try:
        if isinstance(data, dict) and "models" in data:
            if data.get("schema") != SCHEMA:
                raise ValueError(f"baseline schema {data.get('schema')!r}, expected {SCHEMA}")
            return {name: Report.from_dict(report) for name, report in data["models"].items()}
        report = Report.from_dict(data)
    except ValueError as exc:
        raise BaselineError(f"{path}: {exc}") from None
    return {report.model: report}
