"""Budgets: hold a model's params, MACs, FLOPs and peak memory under agreed limits.

A :class:`Budget` is checked against a :class:`Report` (pure arithmetic, no torch) and yields
:class:`Check` rows; :func:`assert_budget` profiles and raises :class:`BudgetExceeded`, an
``AssertionError`` so pytest shows it as an ordinary failure. Counters whose asserts pass
silently when an operator is dropped are the problem this solves, so an incomplete report
(compute that no formula explains) fails a budget too, unless the caller opts out.

Layer limits are keyed by module-name patterns matched one dotted component at a time: ``*``
matches one component, ``**`` any number, so ``features.*`` means each top-level block of
``features`` and ``features`` the whole container. Each matching module is held to the limit
with everything below it. A pattern that matches no module is an error, never a pass.

``max_peak_bytes`` holds the predicted peak memory (see ``profile(memory=...)``): of an
inference forward, or of a training step when the budget names an ``optimizer``, for the
allocator of ``device`` (CUDA by default: the question a memory budget answers is whether the
model fits on the GPU, and the prediction needs none). A layer's peak is the most memory alive
while it runs.

With a ``parallel`` plan (``"fsdp=8,tp=2"``) the profile is the plan's training step per rank
class, and the limits on ``peak_bytes``, ``macs``, ``flops`` and ``train_macs`` hold every
class of ranks (one row each: will every GPU fit); ``params`` holds the model's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from convprof.report import OPTIMIZERS, RankClass, Report, Totals
from convprof.units import format_binary_bytes, parse_bytes, parse_quantity

METRICS = ("params", "macs", "flops", "train_macs", "peak_bytes")
LIMIT_KEYS = tuple(f"max_{m}" for m in METRICS)
Quantity = int | str


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds on params, MACs and FLOPs; None means no limit. ``max_train_macs`` holds
    a training step's MACs (forward + backward, see ``profile(backward=True)``)."""

    max_params: int | None = None
    max_macs: int | None = None
    max_flops: int | None = None
    max_train_macs: int | None = None
    max_peak_bytes: int | None = None  # a memory size: "20GiB", "16GB", bytes

    @classmethod
    def parse(cls, values: Mapping[str, Any], where: str = "budget") -> Limits:
        """From ``{"max_macs": "300M", ...}``; unknown keys and bad quantities are ValueErrors."""
        unknown = sorted(set(values) - set(LIMIT_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown limit {unknown[0]!r} (expected {', '.join(LIMIT_KEYS)})")
        parsed: dict[str, int | None] = {}
        for key in LIMIT_KEYS:
            value = values.get(key)
            try:
                read = parse_bytes if key == "max_peak_bytes" else parse_quantity
                parsed[key] = None if value is None else read(value)
            except ValueError as exc:
                raise ValueError(f"{where}: {key}: {exc}") from None
        return cls(**parsed)

    def items(self) -> list[tuple[str, int]]:
        """(metric, limit) for each limit that is set."""
        limits = (self.max_params, self.max_macs, self.max_flops, self.max_train_macs, self.max_peak_bytes)
        pairs = zip(METRICS, limits, strict=True)
        return [(metric, limit) for metric, limit in pairs if limit is not None]


@dataclass(frozen=True, slots=True)
class Budget:
    total: Limits = Limits()
    layers: tuple[tuple[str, Limits], ...] = ()
    allow_incomplete: bool = False
    optimizer: str | None = None  # max_peak_bytes is a training step's, with this optimizer
    device: str = "cuda"  # whose allocator max_peak_bytes is predicted for
    autocast: str | None = None  # the profile's forward runs under mixed precision to this dtype
    parallel: str | None = None  # a parallel plan ("fsdp=8,tp=2"): the limits hold every rank

    def _any(self, key: str) -> bool:
        return any(
            getattr(limits, key) is not None for limits in (self.total, *(lim for _, lim in self.layers))
        )

    @property
    def needs_memory(self) -> bool:
        """A limit on ``peak_bytes`` needs a profile that predicts peak memory."""
        return self._any("max_peak_bytes")

    @property
    def needs_backward(self) -> bool:
        """A limit on ``train_macs``, a training step's peak, or a parallel plan (a training
        step per rank) needs a backward pass."""
        training = self.needs_memory and self.optimizer is not None
        return self._any("max_train_macs") or training or self.parallel is not None

    @classmethod
    def parse(
        cls,
        *,
        max_params: Quantity | None = None,
        max_macs: Quantity | None = None,
        max_flops: Quantity | None = None,
        max_train_macs: Quantity | None = None,
        max_peak_bytes: Quantity | None = None,
        layers: Mapping[str, Mapping[str, Any]] | None = None,
        allow_incomplete: bool = False,
        optimizer: str | None = None,
        device: str = "cuda",
        autocast: str | None = None,
        parallel: Mapping[str, Any] | str | None = None,
        where: str = "budget",
    ) -> Budget:
        given = {"max_params": max_params, "max_macs": max_macs, "max_flops": max_flops}
        total = Limits.parse(
            {**given, "max_train_macs": max_train_macs, "max_peak_bytes": max_peak_bytes}, where
        )
        if optimizer is not None and optimizer not in OPTIMIZERS:
            raise ValueError(
                f"{where}: unknown optimizer {optimizer!r} (expected one of {', '.join(OPTIMIZERS)})"
            )
        if autocast is not None and autocast not in ("bfloat16", "float16"):
            raise ValueError(f"{where}: autocast must be 'bfloat16' or 'float16', got {autocast!r}")
        if device not in ("cpu", "cuda"):
            raise ValueError(
                f"{where}: device must be 'cuda' or 'cpu' (the allocator predicted), got {device!r}"
            )
        if not isinstance(allow_incomplete, bool):  # "no" would otherwise be a true flag
            raise TypeError(f"{where}: allow_incomplete must be True or False, got {allow_incomplete!r}")
        if layers is not None and not isinstance(layers, Mapping):
            raise TypeError(f"{where}: layers must map name patterns to limits, got {layers!r}")
        for pattern, limits in (layers or {}).items():
            if not isinstance(pattern, str) or not isinstance(limits, Mapping):
                raise TypeError(
                    f"{where}: layers must map name patterns to limits such as {{'max_macs': '10M'}}, "
                    f"got {pattern!r}: {limits!r}"
                )
        per_layer = tuple(
            (pattern, Limits.parse(limits, f"{where}: layers[{pattern!r}]"))
            for pattern, limits in (layers or {}).items()
        )
        budget = cls(total, per_layer, allow_incomplete, optimizer, device, autocast, _plan(parallel, where))
        if optimizer is not None and not budget.needs_memory:
            raise ValueError(
                f"{where}: optimizer {optimizer!r} is for a max_peak_bytes limit, and none is set"
            )
        return budget


def _plan(parallel: Mapping[str, Any] | str | None, where: str) -> str | None:
    """A plan checked now (a config file's typo is its error, not the profile's), as text."""
    if parallel is None:
        return None
    from convprof.parallel.plan import PlanError, parse_plan

    try:
        plan = parse_plan(parallel)
    except PlanError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return plan.text()


@dataclass(frozen=True, slots=True)
class Check:
    """One limit as checked: ``scope`` is ``"total"`` or a module name (``pattern`` says
    which layer limit matched it). The rows of ``convprof check``'s summary; the failing ones
    are a budget's violations."""

    scope: str
    metric: str
    actual: int
    limit: int
    pattern: str | None = None

    @property
    def ok(self) -> bool:
        return self.actual <= self.limit

    @property
    def excess(self) -> int:
        return self.actual - self.limit

    def describe(self) -> str:
        where = self.scope if self.pattern is None else f"layer {self.scope!r} (limit for {self.pattern!r})"
        percent = f", +{100 * self.excess / self.limit:.1f}%" if self.limit else ""
        sizes = (
            f" ({format_binary_bytes(self.actual)} > {format_binary_bytes(self.limit)})"
            if self.metric == "peak_bytes"
            else ""
        )
        return (
            f"{where}: {self.metric} {self.actual:,} > limit {self.limit:,}{sizes} "
            f"(over by {self.excess:,}{percent})"
        )

    @property
    def headroom(self) -> float:
        """Fraction of the limit still free (negative when over)."""
        if self.limit == 0:
            return 0.0 if self.actual == 0 else float("-inf")
        return (self.limit - self.actual) / self.limit


def matches(pattern: str, name: str) -> bool:
    """Component-wise glob: ``*`` is one dotted component, ``**`` any number of them."""

    def walk(pat: list[str], parts: list[str]) -> bool:
        if not pat:
            return not parts
        if pat[0] == "**":
            return any(walk(pat[1:], parts[i:]) for i in range(len(parts) + 1))
        return bool(parts) and fnmatchcase(parts[0], pat[0]) and walk(pat[1:], parts[1:])

    return walk(pattern.split("."), name.split(".") if name else [])


def _value(totals: Totals, metric: str) -> int:
    value: int = getattr(totals, metric)  # every metric is a field or property of Totals
    return value


_PER_RANK = ("macs", "flops", "train_macs", "peak_bytes")


def _rank_value(rank: RankClass, metric: str) -> int:
    return 2 * rank.macs if metric == "flops" else int(getattr(rank, metric))


def _ranked_by(metric: str) -> str:
    """What the layers most responsible for a broken limit are ranked by: FLOPs follow MACs."""
    return "macs" if metric == "flops" else metric


def checks(report: Report, budget: Budget) -> tuple[Check, ...]:
    """Every limit of the budget against the report; ValueError for a pattern matching nothing,
    or for a limit on train_macs when the report counted no backward pass."""
    if budget.needs_backward and not report.backward:
        raise ValueError(
            f"max_train_macs needs a backward pass; the report of {report.model} has none "
            "(profile with backward=True, --backward)"
        )
    memory = report.memory
    if budget.needs_memory and memory is None:
        raise ValueError(
            f"max_peak_bytes needs peak memory; the report of {report.model} has none "
            "(profile with memory=True, --peak-memory)"
        )
    peaks = {layer.name: layer.peak_bytes for layer in report.layers}
    rows = [
        Check(
            "total",
            metric,
            memory.peak_bytes if metric == "peak_bytes" and memory else _value(report.total, metric),
            limit,
        )
        for metric, limit in budget.total.items()
        if not (report.ranks and metric in _PER_RANK)
    ]
    rows += [  # a parallel step: every class of ranks held to the limit
        Check(rank.name, metric, _rank_value(rank, metric), limit)
        for metric, limit in budget.total.items()
        if report.ranks and metric in _PER_RANK
        for rank in report.ranks
    ]
    inclusive = report.inclusive()
    for pattern, limits in budget.layers:
        names = [name for name in inclusive if name and matches(pattern, name)]
        if not names:
            raise ValueError(
                f"layer pattern {pattern!r} matches no module of {report.model}{_near(pattern, inclusive)}"
            )
        for name in names:
            rows.extend(
                Check(
                    name,
                    metric,
                    peaks.get(name, 0) if metric == "peak_bytes" else _value(inclusive[name], metric),
                    limit,
                    pattern,
                )
                for metric, limit in limits.items()
            )
    return tuple(rows)


def _near(pattern: str, names: Iterable[str]) -> str:
    """The modules a pattern that matched none may have meant: close names, else the
    top-level ones."""
    import difflib

    every = [name for name in names if name]
    near = difflib.get_close_matches(pattern, every, n=3, cutoff=0.6)
    if not near:  # "featurs.*" against "features.0", ...: compare the first parts
        tops = sorted({name.split(".")[0] for name in every})
        near = [f"{top}.*" for top in difflib.get_close_matches(pattern.split(".")[0], tops, n=3, cutoff=0.6)]
        if not near:
            return f"; its top-level modules are {', '.join(tops[:8])}{', ...' if len(tops) > 8 else ''}"
    return f"; did you mean {' or '.join(repr(n) for n in near)}?"


def violations(report: Report, budget: Budget) -> tuple[Check, ...]:
    """The limits the report breaks."""
    return tuple(check for check in checks(report, budget) if not check.ok)


def _top_layers(report: Report, metric: str, count: int = 5) -> list[str]:
    key = _ranked_by(metric)
    rows = sorted(report.layers, key=lambda layer: getattr(layer, key), reverse=True)[:count]
    total = getattr(report.total, key) or 1
    return [
        f"  {layer.name or '(root)'} ({layer.type}): {getattr(layer, key):,} {key} "
        f"({100 * getattr(layer, key) / total:.1f}%)"
        for layer in rows
        if getattr(layer, key)
    ]


class BudgetExceeded(AssertionError):
    """A budget was broken; ``report`` and ``violations`` say by what."""

    def __init__(self, report: Report, broken: tuple[Check, ...], incomplete: bool = False) -> None:
        self.report = report
        self.violations = broken
        self.incomplete = incomplete
        super().__init__(explain(report, broken, incomplete))


def explain(report: Report, broken: tuple[Check, ...], incomplete: bool) -> str:
    """The failure message: each limit broken, then the layers that cost most."""
    lines = [f"convprof budget exceeded for {report.model}:"]
    lines.extend(f"  {v.describe()}" for v in broken)
    if incomplete:
        missing = ", ".join(
            f"{u.op} ({u.calls} call{'s' if u.calls != 1 else ''})" for u in report.unexplained
        )
        lines.append(
            f"  incomplete count: operators without a formula ran ({missing}); the totals are lower "
            "bounds. Register a formula (convprof.register) or pass allow_incomplete=True."
        )
    for metric in dict.fromkeys(_ranked_by(v.metric) for v in broken):
        if metric == "peak_bytes":
            lines.extend(_peak_lines(report))
            continue
        lines.append(f"Layers with the most {metric}:")
        lines.extend(_top_layers(report, metric))
    return "\n".join(lines)


def _peak_lines(report: Report) -> list[str]:
    """Where a broken peak is reached and what it holds."""
    memory = report.memory
    if memory is None:
        return []
    held = ", ".join(f"{name} {format_binary_bytes(size)}" for name, size in memory.at_peak)
    return [
        f"The peak is reached in the {memory.phase} pass at {memory.layer or '(no module)'}; it holds {held}"
    ]


def enforce(report: Report, budget: Budget) -> Report:
    """Raise BudgetExceeded unless the report keeps the budget; return the report."""
    __tracebackhide__ = True
    broken = violations(report, budget)
    incomplete = not report.complete and not budget.allow_incomplete
    if broken or incomplete:
        raise BudgetExceeded(report, broken, incomplete)
    return report


def assert_budget(
    model: Any,
    args: Any,
    kwargs: Mapping[str, Any] | None = None,
    *,
    max_params: Quantity | None = None,
    max_macs: Quantity | None = None,
    max_flops: Quantity | None = None,
    max_train_macs: Quantity | None = None,
    max_peak_bytes: Quantity | None = None,
    layers: Mapping[str, Mapping[str, Any]] | None = None,
    allow_incomplete: bool = False,
    loss: Callable[[Any], Any] | None = None,
    optimizer: str | None = None,
    device: str = "cuda",
    autocast: str | None = None,
    parallel: Mapping[str, Any] | str | None = None,
) -> Report:
    """Profile once and return the report when every limit holds; else raise BudgetExceeded.

    Limits are ints or strings such as ``"300M"``; ``layers`` maps module-name patterns to
    limits (``{"features.*": {"max_macs": "200M"}}``). A ``max_train_macs`` limit (total or
    per layer) profiles a backward pass too, of ``loss(output)`` when given. A
    ``max_peak_bytes`` limit (``"20GiB"``) holds the predicted peak memory for ``device``'s
    allocator: of an inference forward, or with ``optimizer`` of a training step;
    ``autocast`` (``"bfloat16"``, ``"float16"``) profiles the forward under mixed precision.
    ``parallel`` (``"fsdp=8,tp=2"`` or a dict) profiles that plan's training step per rank:
    the limits on peak memory and MACs then hold every class of ranks (see the module's
    docstring).
    """
    __tracebackhide__ = True  # pytest shows the budget's message, not convprof's frames
    from convprof.api import profile

    budget = Budget.parse(
        max_params=max_params,
        max_macs=max_macs,
        max_flops=max_flops,
        max_train_macs=max_train_macs,
        max_peak_bytes=max_peak_bytes,
        layers=layers,
        allow_incomplete=allow_incomplete,
        optimizer=optimizer,
        device=device,
        autocast=autocast,
        parallel=parallel,
    )
    backward = budget.needs_backward
    report = profile(
        model,
        args,
        kwargs,
        backward=backward,
        loss=loss if backward else None,
        memory=budget.device if budget.needs_memory or budget.parallel else False,
        optimizer=budget.optimizer if budget.needs_memory else None,
        autocast=budget.autocast,
        parallel=budget.parallel,
    )
    return enforce(report, budget)
