"""The roofline model: is a layer limited by arithmetic or by memory traffic?

A machine does at most ``P`` MACs per second and moves at most ``B`` bytes per second, so a
layer with ``M`` MACs and ``D`` bytes of traffic needs at least ``max(M / P, D / B)`` seconds.
It is **memory-bound** when its intensity ``M / D`` is below the machine balance ``P / B``
(MACs per byte): then it runs at the speed of memory, whatever its MAC count says. Depthwise
convolutions do ``k*k`` MACs per weight and per activation read, far below any accelerator's
balance, which is why they cost more time than their share of MACs.

Presets are datasheet peaks (dense, no sparsity), MACs = FLOPs / 2. They are upper bounds:
real kernels reach a fraction of either roof, and frameworks fuse norms and activations into
the convolution before them, which this per-layer estimate does not. Use it to rank layers
and to see which roof a layer sits under, not to predict latency.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Machine:
    """Peak MAC rate and memory bandwidth; with only a balance, both are relative."""

    name: str
    macs_per_second: float
    bytes_per_second: float
    description: str = ""
    absolute: bool = True  # False when only the balance is known: times are relative

    @property
    def balance(self) -> float:
        """MACs per byte at which both roofs meet."""
        return self.macs_per_second / self.bytes_per_second

    def seconds(self, macs: int, memory_bytes: int) -> float:
        """The roofline lower bound on time (relative units when built from a balance)."""
        return max(macs / self.macs_per_second, memory_bytes / self.bytes_per_second)

    def bound(self, macs: int, memory_bytes: int) -> str:
        """``"compute"``, ``"memory"``, or ``""`` for a row that neither computes nor moves data."""
        if not memory_bytes:
            return "compute" if macs else ""
        return "compute" if macs / memory_bytes >= self.balance else "memory"


_T = 1e12
_G = 1e9
PRESETS: dict[str, Machine] = {
    machine.name: machine
    for machine in (
        Machine(
            "h100",
            989.4 * _T / 2,
            3.35 * _T,
            "NVIDIA H100 SXM5, BF16 tensor cores (989.4 TFLOP/s), HBM3 3.35 TB/s",
        ),
        Machine(
            "h100-fp32",
            66.9 * _T / 2,
            3.35 * _T,
            "NVIDIA H100 SXM5, FP32 without tensor cores (66.9 TFLOP/s), HBM3 3.35 TB/s",
        ),
        Machine(
            "a100",
            312 * _T / 2,
            2.039 * _T,
            "NVIDIA A100 SXM4 80GB, BF16 tensor cores (312 TFLOP/s), HBM2e 2.039 TB/s",
        ),
        Machine("t4", 65 * _T / 2, 320 * _G, "NVIDIA T4, FP16 tensor cores (65 TFLOP/s), GDDR6 320 GB/s"),
        Machine(
            "xeon-8480",
            56 * 2.0 * _G * 2 * 16,
            8 * 38.4 * _G,
            "Intel Xeon Platinum 8480+: 56 cores x 2.0 GHz x 2 AVX-512 FMA units x 16 FP32 lanes; "
            "8 channels DDR5-4800 (307.2 GB/s)",
        ),
        Machine(
            "epyc-9654",
            96 * 2.4 * _G * 2 * 8,
            12 * 38.4 * _G,
            "AMD EPYC 9654: 96 cores x 2.4 GHz x 2 256-bit FMA pipes x 8 FP32 lanes; "
            "12 channels DDR5-4800 (460.8 GB/s)",
        ),
    )
}


def machine(spec: str) -> Machine:
    """A preset by name, or a machine balance in MACs per byte such as ``"20"``."""
    known = PRESETS.get(spec.strip().lower())
    if known is not None:
        return known
    try:
        balance = float(spec)
    except ValueError:
        balance = -1.0
    if not 0 < balance < float("inf"):
        raise ValueError(
            f"unknown roofline {spec!r}: give a machine balance in MACs per byte (e.g. 20) "
            f"or one of {', '.join(PRESETS)}"
        )
    return Machine(f"balance {balance:g} MACs/B", balance, 1.0, "only the balance is known", absolute=False)
