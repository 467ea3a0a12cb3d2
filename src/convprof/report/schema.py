"""The report's JSON form: its schema version and the convention every figure follows."""

from __future__ import annotations

from typing import Any

SCHEMA = 1
CONVENTION = (
    "MACs = multiply-accumulates of convolutions, linear layers, matmuls and attention, "
    "bias excluded; FLOPs = 2 x MACs; params counted once per tensor"
)


def json_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` when it is a JSON object (a dict), else a TypeError naming ``what`` it is."""
    if not isinstance(value, dict):
        raise TypeError(f"a {what} must be a JSON object, got {value!r}")
    return value
