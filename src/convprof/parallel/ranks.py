"""Which ranks run the same step: classes of ranks whose shards have the same sizes.

A sharded dimension that the ranks do not divide evenly gives the last ranks smaller shards
(``torch.chunk``'s split: FSDP2 pads its all-gather buffers but not the shard its optimizer
updates), and the ranks' steps differ by that much. Every rank's local shape of every sharded
parameter follows from the global shape, the mesh and the placements alone (DTensor's own
rule, ``_compute_local_shape_and_global_offset``), so the classes are found without running
anything: ranks with the same local shapes everywhere run the same step. One rank of each
class is then predicted.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor
from torch.distributed.tensor._utils import _compute_local_shape_and_global_offset

from convprof.parallel.world import World


@dataclass(frozen=True)
class Members:
    """The ranks of one class, and the first one's place on each mesh dimension."""

    ranks: tuple[int, ...]
    coordinates: tuple[tuple[str, int], ...]

    @property
    def name(self) -> str:
        return describe(self.ranks)


def describe(ranks: tuple[int, ...]) -> str:
    """``(0, 1, 2, 5)`` -> ``"ranks 0-2, 5"``; one rank -> ``"rank 3"``."""
    spans: list[str] = []
    start = previous = ranks[0]
    for rank in (*ranks[1:], None):
        if rank is not None and rank == previous + 1:
            previous = rank
            continue
        spans.append(f"{start}" if start == previous else f"{start}-{previous}")
        if rank is not None:
            start = previous = rank
    return f"{'rank' if len(ranks) == 1 else 'ranks'} {', '.join(spans)}"


def _places(mesh: DeviceMesh | None) -> dict[int, dict[str, int]]:
    """Each rank's place on every dimension of ``mesh`` (``mesh.mesh`` holds the ranks,
    arranged in the mesh's shape)."""
    if mesh is None:
        return {}
    names = mesh.mesh_dim_names or ()
    return {
        int(mesh.mesh[index]): dict(zip(names, index, strict=True))
        for index in itertools.product(*(range(n) for n in mesh.shape))
    }


def classes(model: nn.Module, world: World) -> list[Members]:
    """The rank classes of a model sharded in ``world`` (any rank's view serves; a pipeline's
    stages are told apart by their place on ``pp``, each its own model)."""
    dense, experts = _places(world.mesh), _places(world.experts)
    sizes = {
        name: size
        for mesh in (world.mesh, world.experts)
        if mesh is not None
        for name, size in zip(mesh.mesh_dim_names or (), mesh.shape, strict=True)
    }
    kinds = {
        (tuple(p.shape), tuple(p.placements), tuple(p.device_mesh.mesh_dim_names or ()))
        for p in model.parameters()
        if isinstance(p, DTensor)
    }
    found: dict[tuple[object, ...], list[int]] = {}
    for rank in sorted(dense):
        place = {**experts.get(rank, {}), **dense[rank]}
        signature = (
            place.get("pp", 0),
            *(
                _compute_local_shape_and_global_offset(
                    shape,
                    tuple(sizes[d] for d in dims) or (1,),
                    [place[d] for d in dims],
                    list(placements),
                    True,
                )[0]
                for shape, placements, dims in sorted(kinds, key=repr)
            ),
        )
        found.setdefault(signature, []).append(rank)
    return [Members(tuple(ranks), tuple(dense[ranks[0]].items())) for ranks in sorted(found.values())]


def local_size(model: nn.Module) -> tuple[int, int]:
    """The parameter elements and bytes this rank holds: its shards (each tensor once)."""
    seen: dict[int, torch.Tensor] = {}
    for param in model.parameters():
        local = param.to_local() if isinstance(param, DTensor) else param
        seen.setdefault(id(param), local)
    return sum(t.numel() for t in seen.values()), sum(t.numel() * t.element_size() for t in seen.values())
