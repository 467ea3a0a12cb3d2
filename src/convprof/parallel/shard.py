"""Applying a plan to a model on the meta device, with PyTorch's own parallel APIs.

Tensor parallelism first (``parallelize_module`` on the ``tp`` mesh dimension), then
activation checkpointing of the blocks when asked, then FSDP2
(``fully_shard`` on the data-parallel dimensions: ``dp_shard``, with ``dp_replicate`` beside it
for HSDP or DDP), as torchtitan composes them. Nothing here computes: the model stays on meta,
and the step materialises it as fake tensors after.

The tensor-parallel plan is the user's function ``parallelize(model, mesh)`` when given, else
the model's own: a transformers model's ``_tp_plan`` (its ``base_model_tp_plan`` with the
head's), whose styles are mapped to PyTorch's DTensor styles as torchtitan writes them for
Llama (below). FSDP2's units (unless the plan names others) and the checkpointed blocks are
the model's repeated blocks (transformers' ``_no_split_modules``, or the members of the
largest ``ModuleList`` or ``Sequential`` of one type), then, for FSDP2, the root.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from convprof.parallel.experts import expert_plan, split_experts
from convprof.parallel.plan import CHECKPOINTS, Plan, PlanError, matching
from convprof.parallel.world import World

TensorPlan = Callable[[nn.Module, Any], Any]


def _styles() -> dict[str, Any]:
    """transformers' style names -> PyTorch's styles (imported here: torch.distributed)."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, SequenceParallel

    return {
        "colwise": ColwiseParallel(),
        "rowwise": RowwiseParallel(),
        "colwise_rep": ColwiseParallel(output_layouts=Replicate()),
        "colwise_gather_output": ColwiseParallel(output_layouts=Replicate()),
        "rowwise_rep": RowwiseParallel(input_layouts=Replicate()),
        "rowwise_split_input": RowwiseParallel(input_layouts=Replicate()),
        "embedding_rowwise": RowwiseParallel(input_layouts=Replicate()),
        "embedding_colwise": ColwiseParallel(output_layouts=Replicate()),
        "sequence_parallel": SequenceParallel(),
    }


# styles that leave a module as it is on every rank
_REPLICATED = ("replicate", "local_params")


def model_tensor_plan(model: nn.Module) -> dict[str, str] | None:
    """A transformers model's tensor-parallel plan (module pattern -> style), if it has one."""
    plan = getattr(model, "_tp_plan", None) or getattr(
        getattr(model, "config", None), "base_model_tp_plan", None
    )
    return dict(plan) if isinstance(plan, dict) and plan else None


def _apply_tensor_plan(model: nn.Module, plan: dict[str, str], mesh: Any) -> None:
    from torch.distributed.tensor.parallel import parallelize_module

    styles = _styles()
    # not what another pipeline stage holds (an Identity in its place here)
    names = [name for name, module in model.named_modules() if not isinstance(module, nn.Identity)]
    layout: dict[str, Any] = {}
    for pattern, style in plan.items():
        if style in _REPLICATED:
            continue
        if style not in styles:
            raise PlanError(
                f"tp: the model's plan gives {pattern!r} the style {style!r}, which convprof does not map to "
                "PyTorch's tensor parallelism; pass tp_plan= (a function parallelize(model, mesh))"
            )
        for name in matching(pattern, names):
            layout[name] = styles[style]
    if not layout:
        raise PlanError("tp: the model's tensor-parallel plan matches none of its modules")
    parallelize_module(model, mesh, layout)


def _check_divisible(model: nn.Module, tp: int) -> None:
    """Every tensor-parallel shard even, and the attention heads divided among the ranks."""
    from torch.distributed.tensor import DTensor, Shard

    config = getattr(model, "config", None)
    for key in ("num_attention_heads", "num_key_value_heads"):
        heads = getattr(config, key, None)
        if isinstance(heads, int) and heads % tp:
            raise PlanError(f"tp={tp} does not divide the model's {key} ({heads})")
    for name, param in model.named_parameters():
        if not isinstance(param, DTensor):
            continue
        for placement in param.placements:
            if isinstance(placement, Shard) and param.shape[placement.dim] % tp:
                raise PlanError(
                    f"tp={tp} does not divide dimension {placement.dim} of {name} ({tuple(param.shape)})"
                )


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks: modules of a class transformers names as not to be split
    (``_no_split_modules``), else of the class that repeats most among the members of
    ``ModuleList`` and ``Sequential`` containers (two of a class in one container at least:
    a transformer's layers, a ResNet's blocks across its stages), outermost ones only."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    if names:
        found = [m for m in model.modules() if type(m).__name__ in names]
        if found:
            return _outermost(found)
    counts: Counter[type] = Counter()
    for module in model.modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            kinds = Counter(type(child) for child in module.children())
            counts.update({kind: n for kind, n in kinds.items() if n >= 2})
    if not counts:
        return []
    kind = max(counts, key=lambda k: counts[k])
    return _outermost([m for m in model.modules() if type(m) is kind])


def _outermost(found: list[nn.Module]) -> list[nn.Module]:
    """Those of ``found`` that are not inside another of them."""
    inner = {id(sub) for module in found for sub in module.modules() if sub is not module}
    return [module for module in found if id(module) not in inner]


def shard(model: nn.Module, plan: Plan, world: World, tensor_plan: TensorPlan | None = None) -> None:
    """Apply ``plan`` to ``model`` (on meta) in ``world``: tensor parallel, then checkpointing,
    then FSDP2, the last two on the model's repeated blocks."""
    if plan.tp > 1:
        mesh = world.submesh("tp")
        if tensor_plan is not None:
            tensor_plan(model, mesh)
        else:
            found = model_tensor_plan(model)
            if found is None:
                raise PlanError(
                    f"tp={plan.tp}: {type(model).__name__} has no tensor-parallel plan of its own (a "
                    "transformers model's base_model_tp_plan); pass tp_plan= (--tp-plan on the command "
                    "line), a function parallelize(model, mesh)"
                )
            if plan.ep > 1:  # the experts are expert parallelism's, as transformers decides
                kept = expert_plan(model) or {}
                found = {
                    k: v for k, v in found.items() if not any(k == e or k.startswith(f"{e}.") for e in kept)
                }
            _apply_tensor_plan(model, found, mesh)
        _check_divisible(model, plan.tp)
    experts = split_experts(model, plan, world) if plan.ep > 1 else []
    repeated = blocks(model)
    if plan.checkpoint:  # after tensor parallelism, before FSDP2, as torchtitan does
        _checkpoint(model, repeated, plan.checkpoint)
    if plan.fsdp > 1 or plan.dp > 1:
        units = repeated if plan.units == "blocks" else named(model, plan.units, "units")
        _fully_shard(model, plan, world, units, experts)


def named(model: nn.Module, pattern: str, key: str) -> list[nn.Module]:
    """The outermost modules a plan's pattern names: by name (``*`` one part) or by class."""
    found = set(matching(pattern, [name for name, _ in model.named_modules()]))
    modules = [m for name, m in model.named_modules() if name in found or type(m).__name__ == pattern]
    if not modules:
        raise PlanError(f"{key}={pattern}: no module of {type(model).__name__} has that name or class")
    return _outermost(modules)


def _checkpoint(model: nn.Module, units: list[nn.Module], how: str) -> None:
    """Activation checkpointing, PyTorch's composable ``checkpoint`` (which keeps the module
    and its name as they are): of every block, every block selectively (torchtitan's op
    policy), or of the modules a pattern names (by name, ``*`` one name, or by class)."""
    from torch.distributed._composable.checkpoint_activation import checkpoint

    from convprof.record.recompute import same_modes, selective

    if how not in CHECKPOINTS:
        units = named(model, how, "checkpoint")
    elif not units:
        raise PlanError(f"checkpoint={how}: {type(model).__name__} has no repeated blocks to checkpoint")
    for module in units:
        checkpoint(module, context_fn=selective if how == "selective" else same_modes)


def _fully_shard(
    model: nn.Module, plan: Plan, world: World, units: list[nn.Module], experts: list[nn.Module]
) -> None:
    """FSDP2: the experts on the expert mesh first (each its own unit, as transformers shards
    them), then the blocks and the root on the data-parallel dimensions."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = world.submesh("dp_replicate", "dp_shard") if plan.dp > 1 else world.submesh("dp_shard")
    policy = MixedPrecisionPolicy(
        param_dtype=getattr(torch, plan.param_dtype) if plan.param_dtype else None,
        reduce_dtype=getattr(torch, plan.reduce_dtype) if plan.reduce_dtype else None,
    )
    if experts:
        expert_mesh = world.submesh("dp_replicate", "efsdp") if plan.dp > 1 else world.submesh("efsdp")
        for expert in experts:
            sharded = fully_shard(
                expert, mesh=expert_mesh, reshard_after_forward=plan.reshard, mp_policy=policy
            )
            # an expert's gradient sums the tokens of every data-parallel rank that sent it
            # some: averaged over all of them, not over its own FSDP group
            sharded.set_gradient_divide_factor(float(plan.dp * plan.fsdp))
            if plan.fsdp * plan.tp // plan.ep > 1:  # as transformers does: gloo has no PREMUL_SUM
                sharded.set_force_sum_reduction_for_comms(True)
    for module in units:
        fully_shard(module, mesh=mesh, reshard_after_forward=plan.reshard, mp_policy=policy)
    # the root keeps its parameters from the forward to the backward, FSDP2's default for it
    fully_shard(model, mesh=mesh, reshard_after_forward=None if plan.reshard else False, mp_policy=policy)
