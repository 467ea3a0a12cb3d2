"""Expert parallelism: a mixture of experts' experts split among the ranks of ``ep``, each
token sent to its experts' rank and the result sent back.

Applied as transformers applies it to its models (their ``ep_plan``): each experts module's
weights split along the expert dimension (its ``grouped_gemm`` style, transformers' own), and
the module reached through an all-to-all dispatch: transformers' ``AllToAllEP``, the one that
trains. One thing of it a fake step cannot run: how many tokens go to each rank depends on
the router's values, which the real dispatch reads back to the host as its all-to-alls' split
sizes. The plan's ``routing`` says what to assume instead (:func:`split_sizes`):

- ``balanced``: the rank's (token, expert) pairs spread evenly over all experts (what a
  load-balancing loss aims for): each rank receives as many rows as it sends;
- ``worst``: every rank of the group sends this rank's experts all it can, each token's
  ``min(top_k, local experts)`` choices: the most a rank can receive, so its peak and compute
  bound every routing's.

The experts' FSDP2 runs on the expert mesh (``efsdp`` x ``ep``, ``efsdp = fsdp x tp / ep``), the
rest of the model's on the dense one, as transformers shards them; the ranks of a tensor-parallel
group share a batch, and each dispatches its own slice of it.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from convprof.parallel.plan import Plan, PlanError, matching
from convprof.parallel.world import World

# the styles of a transformers ep_plan convprof applies: the weights' split, the dispatch
_WEIGHTS, _DISPATCH = "grouped_gemm", "ep_dispatch_experts"


def expert_plan(model: nn.Module) -> dict[str, str] | None:
    """A transformers model's expert-parallel plan (module or parameter pattern -> style)."""
    plan = getattr(model, "_ep_plan", None)
    return dict(plan) if isinstance(plan, dict) and plan else None


def split_sizes(
    routing: str, tokens: int, top_k: int, local: int, ep: int, me: int
) -> tuple[list[int], list[int]]:
    """The rows this rank sends to each rank of its expert group and receives from each,
    under ``routing``: ``tokens`` tokens of this rank (as many on every rank), ``top_k``
    experts per token, ``local`` experts per rank, ``ep`` ranks, this one ``me``."""
    pairs = tokens * top_k
    if routing == "balanced":
        # every expert the same share; the first ones one more where they do not divide
        share, extra = divmod(pairs, local * ep)
        per_rank = [sum(share + (e < extra) for e in range(r * local, (r + 1) * local)) for r in range(ep)]
        return per_rank, [per_rank[me]] * ep
    hot = tokens * min(top_k, local)  # all of each token's choices this rank's experts can take
    rest, extra = divmod(pairs - hot, ep - 1)
    others = iter(rest + (i < extra) for i in range(ep - 1))
    return [hot if r == me else next(others) for r in range(ep)], [hot] * ep


def _dispatcher(experts: nn.Module, mesh: Any, tp_mesh: Any, routing: str) -> Any:
    """transformers' all-to-all dispatch of ``experts`` over ``mesh``, its split sizes from
    ``routing`` where the real one reads them from the router's choices (made here: the
    class comes from transformers). With tensor parallelism (``tp_mesh``), the ranks of a
    tensor-parallel group share their batch: each sends its own slice of it, as the real
    dispatch does, and the results are gathered back over the group."""
    from torch.distributed import all_to_all_single
    from torch.distributed._functional_collectives import all_to_all_single_autograd
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from transformers.distributed.expert_parallel import AllToAllEP, _AllToAllState
    from transformers.distributed.parallel_utils import _WaitTensor

    class _OneRank:
        """The tensor-parallel group of a plan without one."""

        def size(self) -> int:
            return 1

    def sliced(tensor: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a batch its tensor-parallel group shares (no communication)."""
        shared = DTensor.from_local(tensor, tp_mesh, [Replicate()], run_check=False)
        return shared.redistribute(tp_mesh, [Shard(0)]).to_local()

    class AssumedRouting(AllToAllEP):
        def __init__(self) -> None:  # the parent's reads a tensor-parallel mesh this plan has none of
            self.experts_forward = experts.forward
            self.local: int = int(getattr(experts, "num_experts"))  # noqa: B009 (a module's Any)
            self.num_local_experts = cast(Any, self.local)  # what the parent's combine reads
            self.ep_mesh, self.tp_mesh, self.shares_batch = mesh, tp_mesh or cast(Any, _OneRank()), False

        def _dispatch_tokens(self, hidden: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> Any:
            """The real dispatch's operators and collectives, the split sizes assumed."""
            tokens = hidden.size(0)  # the batch's, which the combine gathers back to
            if tp_mesh is not None:
                hidden, index, weights = sliced(hidden), sliced(index), sliced(weights)
            group, ep, local = mesh.get_group(), mesh.size(), self.local
            top_k = index.size(-1)
            sent, received = split_sizes(routing, hidden.size(0), top_k, local, ep, mesh.get_local_rank())
            ids = index.reshape(-1)
            order = torch.argsort(ids)
            rows = hidden[order // top_k]
            counts = torch.zeros(local * ep, dtype=torch.long, device=hidden.device)
            counts = counts.scatter_add_(0, ids, torch.ones_like(ids)).view(ep, local)
            their_counts = torch.empty_like(counts)
            all_to_all_single(their_counts, counts, group=group)
            torch.stack([counts.sum(dim=1), their_counts.sum(dim=1)])  # what the real one reads back
            arrived = _WaitTensor.apply(all_to_all_single_autograd(rows, received, sent, group))
            expert_ids = torch.arange(local, device=hidden.device).repeat(ep)
            expert_ids = expert_ids.repeat_interleave(their_counts.reshape(-1), output_size=sum(received))
            expert_ids = expert_ids.unsqueeze(-1)
            ones = torch.ones_like(expert_ids, dtype=arrived.dtype)
            return arrived, expert_ids, ones, _AllToAllState(weights, order, sent, received, tokens)

    return AssumedRouting()


def _install(experts: nn.Module, mesh: Any, tp_mesh: Any, routing: str) -> None:
    """``experts`` reached through the dispatch, on its local weights, as transformers'
    ``ep_dispatch_experts`` style installs its own."""
    from torch.distributed.tensor import DTensor
    from transformers.distributed.parallel_utils import _use_local_dtensor_params

    dispatch = _dispatcher(experts, mesh, tp_mesh, routing)

    def forward(hidden: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        hidden = hidden.to_local() if isinstance(hidden, DTensor) else hidden
        weights = weights.to_local() if isinstance(weights, DTensor) else weights
        with _use_local_dtensor_params(experts):
            output: torch.Tensor = dispatch(hidden, index, weights)
        return output.to(hidden.dtype)

    experts.forward = forward


def split_experts(model: nn.Module, plan: Plan, world: World) -> list[nn.Module]:
    """Apply the model's expert-parallel plan over ``world``'s ``ep`` mesh dimension; the
    experts modules, for FSDP2 on the expert mesh."""
    found = expert_plan(model)
    if found is None:
        raise PlanError(
            f"ep={plan.ep}: {type(model).__name__} has no expert-parallel plan (a transformers mixture of "
            "experts' ep_plan); ep splits the experts of such a model"
        )
    try:
        from transformers.distributed.parallel_utils import ALL_PARALLEL_STYLES
    except ImportError:
        raise PlanError(
            f"ep={plan.ep}: this transformers has no expert parallelism of its own "
            "(transformers.distributed.expert_parallel); convprof applies it as transformers does"
        ) from None
    mesh = world.submesh("ep")
    tp_mesh = world.submesh("tp") if plan.tp > 1 else None
    modules = dict(model.named_modules())
    params = [name for name, _ in model.named_parameters()]
    experts: list[nn.Module] = []
    for pattern, style in found.items():
        if style not in (_WEIGHTS, _DISPATCH):
            raise PlanError(
                f"ep: the model's expert plan gives {pattern!r} the style {style!r}, which convprof does not "
                f"apply (it applies {_WEIGHTS} and {_DISPATCH})"
            )
        for name in matching(pattern, params if style == _WEIGHTS else list(modules)):
            if style == _WEIGHTS:
                owner, _, weight = name.rpartition(".")
                ALL_PARALLEL_STYLES[style].shard_param(modules[owner], weight, mesh)
            elif not isinstance(modules[name], nn.Identity):  # another pipeline stage's
                _install(modules[name], mesh, tp_mesh, plan.routing or "balanced")
                experts.append(modules[name])
    if not experts:
        raise PlanError(f"ep={plan.ep}: the model's expert plan matches none of its modules")
    return experts
