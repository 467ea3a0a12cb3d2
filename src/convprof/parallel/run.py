"""A parallel profile: every class of ranks predicted, each in a fake world of its own.

For each rank class (:mod:`~convprof.parallel.ranks`): a fake world for its first rank
(:mod:`~convprof.parallel.world`), a meta copy of the model sharded by the plan
(:mod:`~convprof.parallel.copy`, :mod:`~convprof.parallel.shard`), materialised as fake
tensors, one warm-up step (so the optimizer's state and DTensor's sharding caches exist, as in
every step after the first), then the recorded step (:func:`convprof.record.step.record_step`),
counted as any pass is. The report's rows, totals and memory are the first class's; every
class is in ``Report.ranks``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from convprof.count.collectives import summarize
from convprof.count.counter import count
from convprof.memory.optimizers import make
from convprof.parallel import ranks as rank_classes
from convprof.parallel.copy import meta_copy
from convprof.parallel.plan import Plan
from convprof.parallel.shard import TensorPlan, shard
from convprof.parallel.world import World, fake_world
from convprof.record.fake import fake_tensors
from convprof.record.step import record_step
from convprof.records import Trace
from convprof.report import RankClass, Report


@dataclass(frozen=True)
class Job:
    """What to predict: the model and one rank's inputs for one micro-step, the plan, and
    the step's options."""

    model: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    plan: Plan
    optimizer: str | None = None
    loss: Callable[[Any], torch.Tensor] | None = None
    memory: str | None = None
    tensor_plan: TensorPlan | None = None
    units: Sequence[str] | None = None


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor._local_tensor if isinstance(tensor, DTensor) else tensor


def _sync(model: nn.Module) -> Callable[[bool], None] | None:
    """FSDP2's gradient synchronisation switch (on for the last micro-step only)."""
    switch = getattr(model, "set_requires_gradient_sync", None)
    if switch is None:
        return None

    def sync(last: bool) -> None:
        switch(last)

    return sync


def _step(job: Job, world: World) -> tuple[Trace, tuple[int, int]]:
    """The recorded step of ``world``'s rank. The copy is sharded before fake tensors are on
    (DTensor's meshes read their ranks as numbers), then materialised as fake tensors."""
    model = meta_copy(job.model)
    shard(model, job.plan, world, job.tensor_plan, job.units)
    with fake_tensors() as fake:
        fake.materialise(model)
        inputs = fake.inputs((job.args, job.kwargs))
        micro = [inputs] * job.plan.accum
        device = job.memory or "cpu"
        params: list[torch.Tensor] = list(model.parameters())
        # foreach cannot take DTensors and plain tensors in one list (a tensor-parallel plan
        # that leaves the norms whole): PyTorch refuses, so such a step updates them one by one
        mixed = len({isinstance(p, DTensor) for p in params}) > 1
        optimizer = make(job.optimizer, params, device, False if mixed else None) if job.optimizer else None
        options: dict[str, Any] = {
            "optimizer": optimizer,
            "optimizer_name": job.optimizer,
            "loss": job.loss,
            "sync": _sync(model),
            "wrapped": (DTensor,),
            "groups": world.groups,
            "local": _local,
        }
        # one step first, its record dropped: FSDP2's lazy initialisation, DTensor's sharding
        # caches and the optimizer's state then exist, as in every step after the first (and a
        # model that fails, fails here, with the module named)
        record_step(model, micro, memory=None, **options)
        trace = record_step(model, micro, memory=job.memory, **options)
        return trace, rank_classes.local_size(model)


def _members(job: Job) -> list[rank_classes.Members]:
    with fake_world(job.plan, 0) as world:
        model = meta_copy(job.model)
        shard(model, job.plan, world, job.tensor_plan, job.units)
        return rank_classes.classes(model, world)


def profile_parallel(job: Job) -> Report:
    """The report of ``job``'s step: the first rank class's rows, and every class."""
    first: Report | None = None
    found = []
    for members in _members(job):
        with fake_world(job.plan, members.ranks[0]) as world, warnings.catch_warnings():
            # about convprof's own copy, not the user's model (FSDP2 on a root returning a view)
            warnings.filterwarnings("ignore", message="FSDP2-wrapped module")
            trace, (params, param_bytes) = _step(job, world)
        report = count(trace)
        first = first or report
        found.append(
            RankClass(
                name=members.name,
                ranks=members.ranks,
                coordinates=members.coordinates,
                macs=report.total.macs,
                train_macs=report.total.train_macs,
                recompute_macs=report.total.recompute_macs,
                params=params,
                param_bytes=param_bytes,
                peak_bytes=report.memory.peak_bytes if report.memory is not None else 0,
                memory=report.memory,
                collectives=summarize(trace.collectives),
            )
        )
    assert first is not None
    # named as the user's model (FSDP2 renamed the copy's class)
    return replace(
        first,
        model=type(job.model).__name__,
        plan=job.plan.describe(),
        ranks=tuple(found),
        mesh=job.plan.mesh,
    )
