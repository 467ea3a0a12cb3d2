"""The fake world: one process standing in for one rank of many, through PyTorch's fake process
group (``init_process_group("fake")``), whose collectives send nothing and return at once.

:func:`fake_world` makes it and its device mesh for one rank and takes both away after, also
when the step raises (``sys.excepthook`` too, which ``init_process_group`` replaces); a
process group the caller initialised already is left as it is, and the profile refused (a fake
world cannot sit beside a real one in one process).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from convprof.parallel.plan import Plan, PlanError


@dataclass(frozen=True)
class World:
    """One rank's view: its rank, the mesh, and each process group's mesh dimension and size
    by group name (how a collective names its group)."""

    rank: int
    mesh: DeviceMesh
    groups: dict[str, tuple[str, int]]
    experts: DeviceMesh | None = None  # expert parallelism's mesh: the same ranks, split otherwise

    def submesh(self, *names: str) -> DeviceMesh:
        """The dimensions ``names`` of the dense mesh, or of the experts' (``ep``, ``efsdp``)."""
        mesh = self.experts if self.experts is not None and {"ep", "efsdp"} & set(names) else self.mesh
        return mesh[names] if len(names) > 1 else mesh[names[0]]

    def coordinate(self, name: str) -> int:
        """This rank's place on the mesh dimension ``name`` (0 where the mesh has none)."""
        names = list(self.mesh.mesh_dim_names or ())
        place = self.mesh.get_coordinate()
        return int(place[names.index(name)]) if name in names and place is not None else 0


def _register_fake_backend() -> None:
    """PyTorch registers its fake backend when this testing module is imported (torchtitan's
    memory estimator imports it the same way); nothing else of it is used."""
    import torch.testing._internal.distributed.fake_pg  # noqa: F401


def _forget_sharding_caches() -> None:
    """Empty DTensor's caches of sharding decisions (its C++ fast path's and Python's). They
    are keyed by device meshes, which compare equal across worlds whatever their rank, and
    hold the mesh they were made with: a second world (another rank class) would read the
    first one's coordinates and process group names. Each is looked up by name and skipped
    where this PyTorch has none."""
    from torch.distributed.tensor import DTensor, _redistribute, debug

    clear_all = getattr(debug, "_clear_sharding_prop_cache", None)
    if callable(clear_all):
        clear_all()
    propagator = getattr(getattr(DTensor, "_op_dispatcher", None), "sharding_propagator", None)
    for cache in (
        getattr(type(propagator), "_propagate_tensor_meta_cached", None),
        getattr(_redistribute, "_gen_transform_infos", None),
    ):
        clear = getattr(cache, "cache_clear", None)
        if callable(clear):
            clear()


@contextlib.contextmanager
def fake_world(plan: Plan, rank: int) -> Iterator[World]:
    """Rank ``rank`` of a fake world of ``plan.world`` ranks with the plan's mesh; the process
    group is destroyed on the way out."""
    if not dist.is_available():
        raise PlanError("a parallel profile needs torch.distributed, which this PyTorch build lacks")
    if dist.is_initialized():
        raise PlanError(
            "a process group is already initialised in this process; a parallel profile makes a fake "
            "world of its own: profile before init_process_group, or in a process without one"
        )
    _register_fake_backend()
    from torch._C._distributed_c10d import FakeStore

    hook = sys.excepthook  # init_process_group prefixes every later traceback with the rank, for good
    _forget_sharding_caches()
    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=plan.world)
    try:
        names, sizes = zip(*plan.mesh, strict=True)
        # made outside fake tensors: the mesh reads its ranks' coordinates as Python numbers
        mesh = init_device_mesh("cpu", sizes, mesh_dim_names=names)
        groups = {str(mesh.get_group(name).group_name): (name, size) for name, size in plan.mesh}
        experts = None
        if plan.expert_mesh:
            names, sizes = zip(*plan.expert_mesh, strict=True)
            experts = init_device_mesh("cpu", sizes, mesh_dim_names=names)
            for name, size in plan.expert_mesh:
                # a dimension of the same ranks as a dense one has its process group: both names
                key = str(experts.get_group(name).group_name)
                known = groups.get(key, (name, size))[0]
                groups[key] = (name if known == name else f"{known}/{name}", size)
        yield World(rank, mesh, groups, experts)
    finally:
        dist.destroy_process_group()
        sys.excepthook = hook
        _forget_sharding_caches()
