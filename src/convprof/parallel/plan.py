"""A parallel plan: how many ranks along each dimension, and how the step runs on them.

Written as torchtitan names its dimensions: ``dp`` (replicated data parallel, DDP or the
replicate dimension of HSDP), ``fsdp`` (sharded data parallel, FSDP2's ``fully_shard``),
``tp`` (tensor parallel), ``pp`` (pipeline stages) and ``ep`` (expert parallel). The mesh
orders them outermost first (``pp``, ``dp``, ``fsdp``, ``tp``), so a tensor-parallel group
holds neighbouring ranks, as it would within a node, and pipeline stages are furthest apart.
Plain values only; nothing here imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

# the dimensions, outermost first, and the mesh dimension names PyTorch's APIs get
DIMENSIONS = ("pp", "dp", "fsdp", "tp", "ep")
MESH_NAMES = {"dp": "dp_replicate", "fsdp": "dp_shard", "tp": "tp", "pp": "pp", "ep": "ep"}
CHECKPOINTS = ("blocks", "selective")  # or a module pattern
SCHEDULES = ("1f1b", "gpipe", "interleaved1f1b", "loopedbfs", "interleavedzb")
LOOPED = ("interleaved1f1b", "loopedbfs", "interleavedzb")  # several stages on each rank
ZERO_BUBBLE = ("interleavedzb",)  # weight gradients fill the bubble: no fill and drain to bound
ROUTINGS = ("balanced", "worst")


class PlanError(ValueError):
    """A plan that cannot run: an unknown key, a size that does not divide, a combination
    this version does not predict. The message names the problem in one line."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Ranks per dimension (1: not parallel along it) and the step's options.

    ``accum``: micro-steps per optimizer step (gradient accumulation; gradients are
    synchronised on the last). ``reshard``: FSDP2 frees the gathered parameters after the
    forward and gathers them again for the backward (``reshard_after_forward``; the root
    module keeps them, as FSDP2 does). ``param_dtype`` / ``reduce_dtype``: FSDP2's
    ``MixedPrecisionPolicy`` (the all-gathers and the compute in ``param_dtype``, gradients
    reduced in ``reduce_dtype``). ``checkpoint="blocks"``: activation checkpointing of every
    repeated block (non-reentrant, PyTorch's composable ``checkpoint``): a block keeps only its
    input, and its forward runs again in the backward (``selective``: torchtitan's op policy; a
    module pattern: those modules). ``units``: FSDP2's units, the repeated blocks or the modules
    a pattern names. ``microbatches`` and ``schedule`` (:data:`SCHEDULES`; the looped ones,
    :data:`LOOPED`, with ``stages`` stages a rank) run a pipeline's stages. ``ep``: the experts
    split among groups of ``ep`` of the fsdp x tp ranks (not more ranks: the world is the same,
    as in torchtitan and transformers), with ``routing`` (``balanced``, ``worst``) the
    assumption of how many tokens go to each (:mod:`convprof.parallel.experts`)."""

    @property
    def chunks(self) -> int:
        """Micro-batches per pipeline step: as many as asked, by default one per stage."""
        return self.microbatches or self.pp

    @property
    def virtual(self) -> int:
        """Pipeline stages per rank: as many as asked of a looped schedule (2 by default), else 1."""
        return (self.stages or 2) if self.schedule in LOOPED else 1

    @property
    def stage_count(self) -> int:
        """The pipeline's stages: ``pp`` ranks of ``virtual`` stages each (rank r holds stages
        r, r + pp, ...)."""
        return self.pp * self.virtual

    dp: int = 1
    fsdp: int = 1
    tp: int = 1
    pp: int = 1
    ep: int = 1
    accum: int = 1
    reshard: bool = True
    param_dtype: str | None = None
    reduce_dtype: str | None = None
    checkpoint: str | None = None
    microbatches: int = 0  # pipeline micro-batches per step (0: one per stage)
    schedule: str = "1f1b"  # the pipeline's schedule
    routing: str | None = None  # what expert parallelism assumes of the router's choices
    units: str = "blocks"  # FSDP2's units: the repeated blocks, or the modules a pattern names
    stages: int = 0  # pipeline stages per rank of a looped schedule (0: 2)

    @property
    def world(self) -> int:
        return self.dp * self.fsdp * self.tp * self.pp  # ep splits the data-parallel ranks

    @property
    def expert_mesh(self) -> tuple[tuple[str, int], ...]:
        """The experts' mesh (none without ``ep``): the same ranks as the dense mesh, its
        shard and tensor-parallel dimensions split into ``efsdp`` (FSDP2 of the experts) and
        ``ep``, innermost, as transformers lays them out."""
        if self.ep == 1:
            return ()
        outer = tuple((MESH_NAMES[d], getattr(self, d)) for d in ("pp", "dp") if getattr(self, d) > 1)
        return (*outer, ("efsdp", self.fsdp * self.tp // self.ep), ("ep", self.ep))

    @property
    def mesh(self) -> tuple[tuple[str, int], ...]:
        """The mesh dimensions used (size > 1), outermost first, by PyTorch's names; a plan
        of one rank has a one-rank ``dp_shard`` dimension (FSDP2 over one rank), and so does
        a replicated one (``dp`` alone: FSDP2's HSDP with shards of one rank each)."""
        used = tuple(
            (MESH_NAMES[d], getattr(self, d))
            for d in DIMENSIONS
            if d != "ep"
            and (getattr(self, d) > 1 or (d == "fsdp" and self.dp > 1))  # HSDP's shard dimension, maybe of 1
        )
        return used or (("dp_shard", 1),)

    def text(self) -> str:
        """The plan as the command line writes it (what :func:`parse_plan` reads back)."""
        parts = [f"{d}={getattr(self, d)}" for d in DIMENSIONS if getattr(self, d) > 1] or ["fsdp=1"]
        defaults = Plan()
        for name in option_keys():
            value = getattr(self, name)
            if value != getattr(defaults, name):
                parts.append(f"{name}={str(value).lower() if isinstance(value, bool) else value}")
        return ",".join(parts)

    def describe(self) -> str:
        parts = [f"{d}={getattr(self, d)}" for d in DIMENSIONS if getattr(self, d) > 1] or ["fsdp=1"]
        if self.accum > 1:
            parts.append(f"accum={self.accum}")
        if self.param_dtype or self.reduce_dtype:
            parts.append(f"params {self.param_dtype or 'as is'}, reduce {self.reduce_dtype or 'as params'}")
        if not self.reshard and self.fsdp > 1:
            parts.append("no reshard after forward")
        if self.checkpoint:
            parts.append(f"checkpoint {self.checkpoint}")
        if self.units != "blocks":
            parts.append(f"FSDP units {self.units}")
        if self.pp > 1:
            parts.append(f"{self.chunks} micro-batches, {self.schedule}")
            if self.virtual > 1:
                parts.append(f"{self.virtual} stages a rank")
        if self.routing:
            parts.append(f"{self.routing} routing")
        return ", ".join(parts)


_DTYPES = ("float32", "bfloat16", "float16")


def option_keys() -> list[str]:
    """A plan's keys other than its dimensions, in the order :class:`Plan` declares them."""
    return [f.name for f in fields(Plan) if f.name not in DIMENSIONS]


def _positive(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        what = "a whole number of ranks" if key in DIMENSIONS else "a whole number"
        raise PlanError(f"parallel plan: {key} must be {what}, 1 or more, got {value!r}")
    return value


def _text(text: str) -> dict[str, Any]:
    """``"fsdp=8,tp=2,param_dtype=bfloat16"`` as a dict (the command line's form): whole
    numbers for the dimensions and ``accum``, true/false for ``reshard``, names for dtypes."""
    found: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = (item.strip() for item in part.partition("="))
        if not sep or not key or not value:
            raise PlanError(f"parallel plan {text!r}: write it as DIM=N,... (e.g. fsdp=8,tp=2)")
        if key in ("reshard",):
            if value.lower() not in ("true", "false"):
                raise PlanError(f"parallel plan {text!r}: reshard is true or false, got {value!r}")
            found[key] = value.lower() == "true"
        elif key.endswith("_dtype") or key in ("checkpoint", "schedule", "routing", "units"):
            found[key] = value
        else:
            try:
                found[key] = int(value)
            except ValueError:
                raise PlanError(f"parallel plan {text!r}: {key}={value!r} is not a number") from None
    return found


def parse_plan(value: Plan | Mapping[str, Any] | str, **options: Any) -> Plan:
    """A :class:`Plan` from a dict (``{"fsdp": 8, "tp": 2}``), the command line's text
    (``"fsdp=8,tp=2"``) or a plan; ``options`` (``accum``, ``reshard``, ``param_dtype``,
    ``reduce_dtype``, ``checkpoint``) override its fields. Unknown keys and bad values are a
    PlanError."""
    if isinstance(value, Plan):
        given: dict[str, Any] = {f.name: getattr(value, f.name) for f in fields(Plan)}
    elif isinstance(value, str):
        given = _text(value)
    elif isinstance(value, Mapping):
        given = dict(value)
    else:
        raise PlanError(
            f"parallel plan must be a dict such as {{'fsdp': 8}} or 'fsdp=8', got {type(value).__name__}"
        )
    given.update({k: v for k, v in options.items() if v is not None})
    known = {f.name for f in fields(Plan)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise PlanError(
            f"parallel plan: unknown key {unknown[0]!r}; the dimensions are {', '.join(DIMENSIONS)} "
            f"(and {', '.join(option_keys())})"
        )
    for key in (*DIMENSIONS, "accum", "microbatches", "stages"):
        if key in given:
            given[key] = _positive(key, given[key])
    for key in ("param_dtype", "reduce_dtype"):
        dtype = given.get(key)
        if dtype is not None and str(dtype).removeprefix("torch.") not in _DTYPES:
            raise PlanError(f"parallel plan: {key} must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        if dtype is not None:
            given[key] = str(dtype).removeprefix("torch.")
    for key, words in (("checkpoint", "blocks, selective"), ("units", "blocks")):
        how = given.get(key)
        if how is not None and not (isinstance(how, str) and re.fullmatch(r"[\w.*]+", how)):
            raise PlanError(
                f"parallel plan: {key} is {words} or a module pattern (a name with * for one part, or a "
                f"class name), got {how!r}"
            )
    if given.get("schedule", "1f1b") not in SCHEDULES:
        raise PlanError(
            f"parallel plan: schedule must be one of {', '.join(SCHEDULES)}, got {given['schedule']!r}"
        )
    if not isinstance(given.get("reshard", True), bool):
        raise PlanError(f"parallel plan: reshard is True or False, got {given['reshard']!r}")
    plan = Plan(**given)
    if plan.pp == 1 and ("microbatches" in given or "schedule" in given or "stages" in given):
        raise PlanError("parallel plan: microbatches, schedule and stages are a pipeline's (pp=N)")
    if plan.stages and plan.schedule not in LOOPED:
        raise PlanError(
            f"parallel plan: stages={plan.stages} per rank needs a looped schedule ({', '.join(LOOPED)}); "
            f"{plan.schedule} runs one stage a rank"
        )
    if (plan.param_dtype or plan.reduce_dtype or plan.units != "blocks") and plan.fsdp == plan.dp == 1:
        raise PlanError(
            "parallel plan: param_dtype, reduce_dtype and units are FSDP2's: they need fsdp or dp"
        )
    if plan.pp > 1 and plan.accum > 1:
        raise PlanError(
            "parallel plan: with pp, the micro-batches are the pipeline's: give microbatches, not accum"
        )
    _check_experts(plan)
    return plan


def _check_experts(plan: Plan) -> None:
    """``ep`` within the sharded data-parallel ranks, with a routing assumption."""
    if plan.ep == 1:
        if plan.routing is not None:
            raise PlanError("parallel plan: routing is expert parallelism's (ep=N)")
        return
    if plan.routing not in ROUTINGS:
        raise PlanError(
            f"parallel plan: ep={plan.ep} sends each token to its experts' rank, as many as the router's "
            f"values say; give the routing to assume: routing={' or routing='.join(ROUTINGS)}"
            + (f" (got {plan.routing!r})" if plan.routing is not None else "")
        )
    if (plan.fsdp * plan.tp) % plan.ep:
        raise PlanError(
            f"parallel plan: ep={plan.ep} splits the experts among the fsdp x tp ranks: it must divide "
            f"fsdp x tp = {plan.fsdp * plan.tp}"
        )


def matching(pattern: str, names: Sequence[str]) -> list[str]:
    """The names a plan's module pattern matches (transformers' form: ``*`` one name)."""
    regex = re.compile(re.escape(pattern).replace(r"\*", r"[^.]+"))
    return [name for name in names if regex.fullmatch(name)]
