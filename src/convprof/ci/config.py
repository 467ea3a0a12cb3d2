"""Budget configuration: ``[[tool.convprof.models]]`` entries in pyproject.toml or a TOML file.

Every problem is a :class:`ConfigError` naming the file and the entry: a missing file, a TOML
syntax error (with its line), an unknown key, a bad quantity or shape. ``convprof check`` turns
them into one line and exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convprof.ci.budget import LIMIT_KEYS, Budget
from convprof.models.inputs import Input, parse

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENTRY_KEYS = (
    "name",
    "model",
    "input",
    "layers",
    "allow_incomplete",
    "optimizer",
    "peak_device",
    "autocast",
    "parallel",
    *LIMIT_KEYS,
)


class ConfigError(ValueError):
    """The budget configuration cannot be used as written."""


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model to hold to a budget: a spec to build it, its inputs, its limits."""

    name: str
    model: str
    inputs: tuple[Input, ...] | None
    budget: Budget


def _inputs(value: Any, where: str) -> tuple[Input, ...]:
    """``[1, 3, 224, 224]``, ``"1,128:int64"``, or a list of those (as ``--input``)."""

    def one(item: Any) -> Input:
        if isinstance(item, str):
            try:
                return parse(item)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        if (
            not isinstance(item, list)
            or not item
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in item)
        ):
            raise ConfigError(
                f"{where}: input must be a list of positive integers, a string such as "
                "'1,128:int64', or a list of those"
            )
        return Input(tuple(item))

    if isinstance(value, list) and value and all(isinstance(v, (list, str)) for v in value):
        return tuple(one(v) for v in value)
    return (one(value),)


def _entry(raw: Any, index: int, path: Path) -> ModelEntry:
    where = f"{path}: [[tool.convprof.models]] entry {index + 1}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table")
    if isinstance(raw.get("name"), str):
        where = f"{path}: model {raw['name']!r}"
    unknown = sorted(set(raw) - set(ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (expected one of {', '.join(ENTRY_KEYS)})")
    for key in ("name", "model"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{where}: {key!r} is required and must be a string")
    if not isinstance(raw.get("allow_incomplete", False), bool):
        raise ConfigError(f"{where}: allow_incomplete must be true or false")
    try:
        budget = Budget.parse(
            max_params=raw.get("max_params"),
            max_macs=raw.get("max_macs"),
            max_train_macs=raw.get("max_train_macs"),
            max_flops=raw.get("max_flops"),
            max_peak_bytes=raw.get("max_peak_bytes"),
            layers=raw.get("layers"),
            allow_incomplete=raw.get("allow_incomplete", False),
            optimizer=raw.get("optimizer"),
            device=raw.get("peak_device", "cuda"),
            autocast=raw.get("autocast"),
            parallel=raw.get("parallel"),
            where=where,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    inputs = _inputs(raw["input"], where) if "input" in raw else None
    return ModelEntry(raw["name"], raw["model"], inputs, budget)


def load(path: str | Path) -> tuple[ModelEntry, ...]:
    """The model entries of a TOML file (``[[tool.convprof.models]]``)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    models: Any = data
    for key in ("tool", "convprof", "models"):
        models = models.get(key) if isinstance(models, Mapping) else None
    if not isinstance(models, list) or not models:
        raise ConfigError(f"{path}: no [[tool.convprof.models]] entries")
    entries = tuple(_entry(raw, i, path) for i, raw in enumerate(models))
    names = [e.name for e in entries]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ConfigError(f"{path}: model name {duplicate!r} is used twice")
    return entries
