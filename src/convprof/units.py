"""Quantities: parse ``"3.5M"`` and format ``2.16G``, in one place for tables, budgets and the CLI."""

from __future__ import annotations

import math
import re

_SCALE = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKMGT]?)\s*$")


def parse_quantity(value: int | str) -> int:
    """An exact integer from an int or a string such as ``"240"``, ``"2.2k"``, ``"300M"``,
    ``"1.5e9"``. Anything else is a ValueError that quotes the input."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected an integer or a string like '300M', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"quantity must not be negative, got {value}")
        return value
    match = _QUANTITY.match(value)
    if match is None:
        raise ValueError(
            f"cannot read quantity {value!r}: expected a number with an optional suffix "
            "k/K, M, G or T (e.g. '240', '2.2k', '300M', '1.5e9')"
        )
    number, suffix = match.groups()
    value_float = float(number) * _SCALE[suffix]
    if not math.isfinite(value_float):
        raise ValueError(f"quantity {value!r} is too large")
    whole = round(value_float)
    if abs(value_float - whole) > 1e-9 * max(1.0, value_float):  # 1e-5 MACs: 0 once rounded
        raise ValueError(f"quantity {value!r} is not a whole number ({value_float:g})")
    return whole


_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 10**3,  # as parse_quantity reads them: "24G" is 24 GB
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
}
_BYTES = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: int | str) -> int:
    """Bytes from an int or a string such as ``"24GiB"`` (2^30), ``"80GB"`` (10^9), ``"512MiB"``
    or ``"1000000"``: a memory size, as GPUs are sold in GiB (a "24 GB" card holds 24 GiB)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a memory size must not be negative, got {value}")
        return value
    match = _BYTES.match(value) if isinstance(value, str) else None
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _BYTE_UNITS:
        raise ValueError(
            f"cannot read memory size {value!r}: expected a number of bytes with an optional unit "
            "B, KB (K), MB (M), GB (G), TB (T), powers of 1000, or KiB, MiB, GiB, TiB, powers of 1024, "
            "e.g. '24GiB'"
        )
    return round(float(match.group(1)) * _BYTE_UNITS[unit])


def format_binary_bytes(count: int) -> str:
    """Bytes in binary units, as memory is sized: ``25769803776 -> '24.00 GiB'``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count} B"


def parse_tolerance(value: str | float) -> float:
    """A relative tolerance, as a fraction, from a percentage: ``"2%"`` or ``"2"`` is 0.02,
    ``"0.5%"`` or ``0.5`` is 0.005. A bare number is a percentage too, never a fraction: the
    docs and ``--help`` write "2%", and ``--tolerance 2`` read as 200% (or ``0.02`` as 2%)
    would let a CI guard pass growth it was written to stop."""
    text = str(value).strip().removesuffix("%").strip()
    try:
        percent = float(text)
    except ValueError:
        percent = -1.0
    if not 0 <= percent < float("inf"):
        raise ValueError(
            f"cannot read tolerance {value!r}: expected a percentage such as '2%' (a bare number is "
            "a percentage too)"
        )
    return percent / 100


def format_quantity(value: int | float, digits: int = 2) -> str:
    """Human form with a K/M/G/T suffix and ``digits`` decimals: ``300774272 -> '300.77M'``."""
    magnitude = abs(value)
    for suffix in ("T", "G", "M", "K"):
        scale = _SCALE[suffix]
        if magnitude >= scale:
            return f"{value / scale:.{digits}f}{suffix}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_bytes(count: int) -> str:
    """Bytes in decimal units: ``170075968 -> '170.08MB'`` (KB = 10^3 bytes, MB = 10^6, as
    torchinfo's MB)."""
    return f"{format_quantity(count)}B"


def format_shape(shape: tuple[int, ...]) -> str:
    """``(1, 3, 224, 224) -> '1x3x224x224'``; a 0-d tensor is ``'scalar'``."""
    return "x".join(str(d) for d in shape) if shape else "scalar"


def format_stride(stride: tuple[int, ...]) -> str:
    """``(2, 2) -> '2'``, ``(1, 2) -> '1x2'``: one number when every dimension agrees."""
    return str(stride[0]) if len(set(stride)) == 1 else "x".join(map(str, stride))
