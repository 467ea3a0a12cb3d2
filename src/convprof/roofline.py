"""The roofline model: is a layer limited by arithmetic or by memory traffic?

A machine does at most ``P`` MACs per second and moves at most ``B`` bytes per second, so a
layer with ``M`` MACs and ``D`` bytes of traffic needs at least ``max(M / P, D / B)`` seconds.
It is **memory-bound** when its intensity ``M / D`` is below the machine balance ``P / B``
(MACs per byte): then it runs at the speed of memory, whatever its MAC count says. Depthwise
convolutions do ``k*k`` MACs per weight and per activation read, far below any accelerator's
balance, which is why they cost more time than their share of MACs.

Presets are datasheet peaks (dense, no sparsity), MACs = FLOPs / 2, one per precision: the
roofline of a float32 report uses a GPU's FP32 peak, not the BF16 tensor-core peak that a
bfloat16 report gets (``h100:tf32`` picks one explicitly). They are upper bounds:
real kernels reach a fraction of either roof, and frameworks fuse norms and activations into
the convolution before them, which this per-layer estimate does not. Use it to rank layers
and to see which roof a layer sits under, not to predict latency.
"""

from __future__ import annotations

from collections.abc import Sequence
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

# The precision a tensor dtype runs at; "fp32" also for what has no peak of its own.
PRECISIONS = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")
_OF_DTYPE = {
    "float64": "fp64",
    "float32": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
    "int8": "int8",
    "uint8": "int8",
    "qint8": "int8",
    "quint8": "int8",
}


@dataclass(frozen=True, slots=True)
class Hardware:
    """A machine's datasheet: dense peak MACs per second at each precision it has a peak for
    (FLOP/s / 2; tensor cores or matrix units where the precision uses them), and its memory
    bandwidth. :meth:`at` gives the :class:`Machine` for one precision."""

    name: str
    peaks: tuple[tuple[str, float], ...]
    bytes_per_second: float
    chip: str
    memory: str
    # a parallel step's links, per GPU and direction: within a node (NVLink), between nodes
    # (the network), and GPUs per node; None for machines that are not a cluster's nodes
    links: tuple[float, float, int] | None = None

    def at(self, precision: str, why: str = "") -> Machine:
        peaks = dict(self.peaks)
        if precision not in peaks:
            raise ValueError(f"{self.name} has no {precision} peak (has {', '.join(peaks)})")
        rate = peaks[precision]
        unit = "TOPS" if precision == "int8" else "TFLOP/s"
        why = f", {why}" if why else ""
        return Machine(
            self.name,
            rate,
            self.bytes_per_second,
            f"{self.chip}, {precision.upper()} {2 * rate / _T:.4g} {unit}{why}; {self.memory}",
        )


def _tflops(**peaks: float) -> tuple[tuple[str, float], ...]:
    return tuple((precision, value * _T / 2) for precision, value in peaks.items())


def _cpu(cores: int, ghz: float, fp32_lanes: int, **times: float) -> tuple[tuple[str, float], ...]:
    """MAC rates of a CPU: cores x clock x FP32 FMA lanes per cycle, and the other precisions as
    multiples of it."""
    fp32 = cores * ghz * _G * fp32_lanes
    return (("fp32", fp32), *((precision, fp32 * factor) for precision, factor in times.items()))


HARDWARE: dict[str, Hardware] = {
    hardware.name: hardware
    for hardware in (
        Hardware(
            "h100",
            _tflops(fp64=66.9, fp32=66.9, tf32=494.7, bf16=989.4, fp16=989.4, fp8=1978.9, int8=1978.9),
            3.35 * _T,
            "NVIDIA H100 SXM5",
            "HBM3 3.35 TB/s",
            # NVLink 4: 900 GB/s both ways; one 400 Gb/s NDR InfiniBand port per GPU
            (450 * _G, 50 * _G, 8),
        ),
        Hardware(
            "a100",
            _tflops(fp64=19.5, fp32=19.5, tf32=156, bf16=312, fp16=312, int8=624),
            2.039 * _T,
            "NVIDIA A100 SXM4 80GB",
            "HBM2e 2.039 TB/s",
            # NVLink 3: 600 GB/s both ways; one 200 Gb/s HDR InfiniBand port per GPU
            (300 * _G, 25 * _G, 8),
        ),
        Hardware("t4", _tflops(fp32=8.1, fp16=65, int8=130), 320 * _G, "NVIDIA T4", "GDDR6 320 GB/s"),
        Hardware(
            "xeon-8480",
            # 2 AVX-512 FMA units x 16 FP32 lanes; AMX tiles: 512 BF16 and 1,024 INT8 MACs a cycle
            _cpu(56, 2.0, 2 * 16, fp64=0.5, bf16=512 / 32, int8=1024 / 32),
            8 * 38.4 * _G,
            "Intel Xeon Platinum 8480+ (56 cores x 2.0 GHz; AVX-512, AMX for BF16 and INT8)",
            "8 channels DDR5-4800 (307.2 GB/s)",
        ),
        Hardware(
            "epyc-9654",
            # 2 256-bit FMA pipes x 8 FP32 lanes; AVX-512 BF16 and VNNI dot products: 2x and 4x
            _cpu(96, 2.4, 2 * 8, fp64=0.5, bf16=2, int8=4),
            12 * 38.4 * _G,
            "AMD EPYC 9654 (96 cores x 2.4 GHz; AVX-512 BF16 and VNNI)",
            "12 channels DDR5-4800 (460.8 GB/s)",
        ),
    )
}
# Names kept from before precisions: a preset pinned to one precision.
ALIASES = {"h100-fp32": ("h100", "fp32")}
PRESETS = (*HARDWARE, *ALIASES)


def link_seconds(name: str, sends: Sequence[tuple[int, int]]) -> float | None:
    """The least time to send ``(bytes, span)`` pairs at the links of preset ``name``: a group
    whose ranks span at most one node's GPUs sends over NVLink, a wider one over the network
    (None: the preset has no links). Ranks are laid out node by node, the innermost mesh
    dimension on neighbouring ranks."""
    hardware = HARDWARE.get(name.split(":")[0])
    if hardware is None or hardware.links is None:
        return None
    intra, inter, node = hardware.links
    return sum(size / (intra if span <= node else inter) for size, span in sends)


def precision_of(dtype: str | None) -> str:
    """The precision a tensor dtype computes at (``"float32"`` -> ``"fp32"``)."""
    return _OF_DTYPE.get((dtype or "float32").removeprefix("torch."), "fp32")


def machine(spec: str, dtype: str | None = None) -> Machine:
    """The machine ``spec`` names, at the precision of ``dtype`` (the report's).

    ``spec`` is a preset (``"h100"``), a preset at a precision (``"h100:tf32"``), or a machine
    balance in MACs per byte (``"20"``). A preset without a precision takes the one ``dtype``
    runs at, FP32 when the machine has no peak for it (said in the description)."""
    text = spec.strip().lower()
    name, _, precision = text.partition(":")
    if name in ALIASES and not precision:
        name, precision = ALIASES[name]
    hardware = HARDWARE.get(name)
    if hardware is not None:
        if precision:
            if precision not in PRECISIONS:
                raise ValueError(
                    f"unknown precision {precision!r} in {spec!r} (one of {', '.join(PRECISIONS)})"
                )
            return hardware.at(precision, "as asked")
        wanted = precision_of(dtype)
        if wanted in dict(hardware.peaks):
            return hardware.at(wanted, f"for {dtype or 'float32'}")
        return hardware.at("fp32", f"no {wanted} peak for {dtype}, FP32 used")
    try:
        balance = float(text)
    except ValueError:
        balance = -1.0
    if not 0 < balance < float("inf"):
        raise ValueError(
            f"unknown roofline {spec!r}: give a machine balance in MACs per byte (e.g. 20), "
            f"one of {', '.join(PRESETS)}, or PRESET:PRECISION (e.g. h100:tf32)"
        )
    return Machine(f"balance {balance:g} MACs/B", balance, 1.0, "only the balance is known", absolute=False)
