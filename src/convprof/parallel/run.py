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
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from convprof.count.collectives import summarize
from convprof.count.counter import count
from convprof.memory.optimizers import make
from convprof.parallel import pipeline
from convprof.parallel import ranks as rank_classes
from convprof.parallel.copy import meta_copy
from convprof.parallel.inputs import known_values, unpacked
from convprof.parallel.pipeline import StageSplit
from convprof.parallel.plan import ZERO_BUBBLE, Plan
from convprof.parallel.shard import TensorPlan, shard
from convprof.parallel.world import World, fake_world
from convprof.record.errors import ForwardError
from convprof.record.fake import fake_tensors
from convprof.record.step import MicroSteps, record_step
from convprof.record.tensors import named_tensors
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
    pp_split: StageSplit | None = None


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor._local_tensor if isinstance(tensor, DTensor) else tensor


def _sync(model: nn.Module) -> Callable[[bool], None] | None:
    """FSDP2's gradient synchronisation switch (on for the last micro-step only)."""
    switch: Callable[[bool], None] | None = getattr(model, "set_requires_gradient_sync", None)
    return switch


def _stage(job: Job, world: World) -> nn.Module:
    """``world``'s rank's part of the model, sharded on meta: the whole model, its pipeline
    stage, or its stages of a looped schedule (:class:`~convprof.parallel.pipeline.Chunks`,
    each stage sharded as a model of its own, as torchtitan shards its model chunks)."""
    if job.plan.pp == 1:
        model = meta_copy(job.model)
        shard(model, job.plan, world, job.tensor_plan)
        return model
    stages = {}
    for index in pipeline.rank_stages(job.plan, world.coordinate("pp")):
        stages[index] = pipeline.stage_module(meta_copy(job.model), job.plan, index, job.pp_split)
        shard(stages[index], job.plan, world, job.tensor_plan)
    return stages[min(stages)] if len(stages) == 1 else pipeline.Chunks(stages)


def _stages(module: nn.Module, plan: Plan, place: int) -> dict[int, nn.Module]:
    """The pipeline stages ``module`` (what :func:`_stage` made) holds, by index."""
    if isinstance(module, pipeline.Chunks):
        return {index: getattr(module, f"stage{index}") for index in pipeline.rank_stages(plan, place)}
    return {place: module}


def _step(job: Job, world: World, stage_shapes: list[torch.Tensor]) -> tuple[Trace, tuple[int, int]]:
    """The recorded step of ``world``'s rank. The copy is sharded before fake tensors are on
    (DTensor's meshes read their ranks as numbers), then materialised as fake tensors."""
    module = _stage(job, world)
    with fake_tensors() as fake:
        fake.materialise(module)
        inputs = fake.inputs((job.args, job.kwargs))
        device = job.memory or "cpu"
        params: list[torch.Tensor] = list(module.parameters())
        # foreach cannot take DTensors and plain tensors in one list (a tensor-parallel plan
        # that leaves the norms whole): PyTorch refuses, so such a step updates them one by one
        mixed = len({isinstance(p, DTensor) for p in params}) > 1
        optimizer = make(job.optimizer, params, device, False if mixed else None) if job.optimizer else None
        options: dict[str, Any] = {
            "optimizer": optimizer,
            "optimizer_name": job.optimizer,
            "wrapped": (DTensor,),
            "groups": world.groups,
            "local": _local,
            "inputs": tuple(meta for _, meta in named_tensors("", (job.args, job.kwargs))),
        }
        driver: Any
        if job.plan.pp > 1:
            # the batch of every micro-batch: the one tensor a pipeline takes (check_inputs)
            batch = (torch.cat([inputs[0][0]] * job.plan.chunks),)
            group = world.mesh.get_group("pp")
            stages = _stages(module, job.plan, world.coordinate("pp"))
            driver = pipeline.Pipeline(stages, job.plan, group, stage_shapes, batch, job.loss, fake.inputs)
        else:
            driver = MicroSteps(module, [inputs] * job.plan.accum, job.loss, _sync(module))
        # one step first, its record dropped: FSDP2's lazy initialisation, DTensor's sharding
        # caches, a pipeline's buffers and the optimizer's state then exist, as in every step
        # after the first (and a model that fails, fails here, with the module named)
        record_step(module, driver, memory=None, **options)
        trace = record_step(module, driver, memory=job.memory, **options)
        return trace, rank_classes.local_size(module)


def _members(job: Job) -> list[rank_classes.Members]:
    """The rank classes: of the whole world, or stage by stage (each stage its own model)."""
    found: list[rank_classes.Members] = []
    for index in range(job.plan.pp):
        first = index * (job.plan.world // job.plan.pp)  # pp is the outermost mesh dimension
        with fake_world(job.plan, first) as world:
            module = _stage(job, world)
            found += [
                m for m in rank_classes.classes(module, world) if dict(m.coordinates).get("pp", 0) == index
            ]
    return found


def _shapes(job: Job) -> list[torch.Tensor]:
    """A pipeline's stage inputs and last output for one micro-batch (nothing without one)."""
    if job.plan.pp == 1:
        return []
    pipeline.check_inputs(job.args, job.kwargs)
    return pipeline.shapes(lambda: meta_copy(job.model), job.plan, job.pp_split, job.args[0])


def profile_parallel(job: Job) -> Report:
    """The report of ``job``'s step: the first rank class's rows, and every class."""
    with unpacked(job.model, job.kwargs):
        # a pipeline's decoder stages run without a cache of their own accord
        checkpointed = job.plan.checkpoint is not None and job.plan.pp == 1
        kwargs = known_values(job.model, job.kwargs, checkpointed)
        try:
            return _profile(replace(job, kwargs=kwargs))
        except ForwardError as exc:
            if "mat_a to be BFloat16" in str(exc) and job.plan.param_dtype is None:
                # a mixture of experts' grouped products: the step runs as such models train
                raise ForwardError(
                    f"{exc}; PyTorch's fake _grouped_mm takes bf16 only: add param_dtype=bfloat16 to the plan"
                ) from None
            raise


def _profile(job: Job) -> Report:
    first: Report | None = None
    found = []
    stage_shapes = _shapes(job)
    for members in _members(job):
        with fake_world(job.plan, members.ranks[0]) as world, warnings.catch_warnings():
            # about convprof's own copy, not the user's model (FSDP2 on a root returning a view)
            warnings.filterwarnings("ignore", message="FSDP2-wrapped module")
            trace, (params, param_bytes) = _step(job, world, stage_shapes)
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
        microbatches=job.plan.chunks if job.plan.pp > 1 else 0,
        stages_per_rank=job.plan.virtual,
        zero_bubble=job.plan.schedule in ZERO_BUBBLE,
    )
