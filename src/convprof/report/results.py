"""The report: frozen rows and totals, numbers only (:class:`Report`).

Rows carry each module's *own* cost, so every column adds up to the totals; ``rollup(depth)``
gives inclusive figures per name prefix, as fvcore's table does.

A report renders itself (``str(report)``, notebooks) through :mod:`convprof.rendering`, which
sits above these results and imports them. So that this module imports no rendering (that
would be a circle), the renderer hands itself down when it is imported (:func:`rendered_by`);
``convprof/__init__`` imports it, so it always is by the time a report exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from convprof.records import Shape
from convprof.report.memory import Memory
from convprof.report.ranks import RankClass
from convprof.report.rows import Block, Layer, Sizes, Totals, Unexplained
from convprof.report.schema import CONVENTION, SCHEMA, json_object

# How a report becomes text in a format ("table", "html", "markdown"): the renderer's.
_RENDERERS: list[Callable[[Report, str], str]] = []


def rendered_by(render: Callable[[Report, str], str]) -> None:
    """Make ``render(report, format)`` what ``str(report)`` and the notebook forms call."""
    _RENDERERS[:] = [render]


def rolled_name(name: str, depth: int) -> str:
    """The row a layer ``name`` rolls up into at ``depth``: its first ``depth`` components."""
    return ".".join(name.split(".")[:depth]) if name else ""


@dataclass(frozen=True, slots=True)
class Report:
    model: str
    inputs: tuple[Shape, ...]
    layers: tuple[Layer, ...]
    total: Totals
    unexplained: tuple[Unexplained, ...] = ()
    convention: str = CONVENTION
    blocks: tuple[Block, ...] = ()
    sizes: Sizes = Sizes()
    dtype: str = "float32"  # what the model computes in: its weights' dtype (most bytes), else its input's
    backward: bool = False  # a backward pass was counted: the grad_* figures are measured, not zero
    memory: Memory | None = None  # peak memory, when it was asked for (Layer.peak_bytes too)
    # A distributed step (profile(parallel=...)): the plan, and each class of ranks that run
    # the same step; the rows, totals and memory above are then the first rank's
    plan: str | None = None
    ranks: tuple[RankClass, ...] = ()
    mesh: tuple[tuple[str, int], ...] = ()  # the plan's mesh dimensions and sizes, outermost first
    microbatches: int = 0  # a pipeline's micro-batches per step (0: no pipeline)
    stages_per_rank: int = 1  # a looped pipeline schedule's stages on each rank
    zero_bubble: bool = False  # the pipeline's schedule fills its bubble with weight gradients
    # Containers that never ran themselves while modules below them did (a Sequential the
    # model iterates, a ModuleList): (name, type), so that a rolled-up row names its own type
    containers: tuple[tuple[str, str], ...] = ()
    # the rows were rolled up to this depth when the report was written (--depth with JSON):
    # its rows are groups, not the layers a full report lists
    depth: int | None = None

    @property
    def complete(self) -> bool:
        """True when every operator that ran was counted by a formula or is free."""
        return not self.unexplained

    def rollup(self, depth: int) -> tuple[Layer, ...]:
        """Rows merged by the first ``depth`` components of their names, inclusive of
        everything below; a group keeps the metadata of the module that names it."""
        if depth < 0:
            raise ValueError(f"depth must be 0 or more, got {depth}")
        groups: dict[str, list[Layer]] = {}
        for layer in self.layers:
            key = rolled_name(layer.name, depth)
            groups.setdefault(key, []).append(layer)
        rows = []
        containers = dict(self.containers)
        for key, members in groups.items():
            head = next((m for m in members if m.name == key), None)
            if head is None and key in containers:  # iterated, never called: no row of its own
                head = Layer(key, containers[key], None, None, None, 0, 0, 0, has_children=True)
            head = head or members[0]
            collapsed = len(members) > 1 or (head.has_children and head.depth == depth)
            rows.append(
                replace(
                    head,
                    name=key,
                    params=sum(m.params for m in members),
                    macs=sum(m.macs for m in members),
                    memory_bytes=sum(m.memory_bytes for m in members),
                    grad_input_macs=sum(m.grad_input_macs for m in members),
                    grad_weight_macs=sum(m.grad_weight_macs for m in members),
                    peak_bytes=max(m.peak_bytes for m in members),
                    trainable_params=sum(m.trainable_params for m in members),
                    has_children=head.has_children and not collapsed,
                    kind=head.kind if len(members) == 1 else None,
                    unexplained=tuple(op for m in members for op in m.unexplained),
                )
            )
        return tuple(rows)

    def inclusive(self) -> dict[str, Totals]:
        """Params, MACs and bytes of every module *with everything below it*, by name."""
        sums: dict[str, list[int]] = {}
        for layer in self.layers:
            parts = layer.name.split(".") if layer.name else []
            for depth in range(len(parts) + 1):
                acc = sums.setdefault(".".join(parts[:depth]), [0, 0, 0, 0, 0])
                acc[0] += layer.params
                acc[1] += layer.macs
                acc[2] += layer.memory_bytes
                acc[3] += layer.grad_input_macs
                acc[4] += layer.grad_weight_macs
        return {name: Totals(*acc) for name, acc in sums.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Read back what :meth:`to_dict` wrote (``convprof profile --format json``)."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a convprof report of schema {SCHEMA} (schema: {found!r})")
        try:
            return cls(
                model=data["model"],
                inputs=tuple(tuple(s) for s in data["inputs"]),
                layers=tuple(Layer.from_dict(json_object(layer, "layer")) for layer in data["layers"]),
                total=Totals(
                    data["total"]["params"],
                    data["total"]["macs"],
                    data["total"].get("memory_bytes", 0),
                    data["total"].get("grad_input_macs", 0),
                    data["total"].get("grad_weight_macs", 0),
                    data["total"].get("recompute_macs", 0),
                ),
                unexplained=tuple(
                    Unexplained(u["op"], u["calls"], tuple(u["layers"])) for u in data["unexplained"]
                ),
                convention=data["convention"],
                blocks=tuple(Block.from_dict(b) for b in data.get("blocks", ())),
                sizes=Sizes(**json_object(data.get("sizes", {}), "sizes table")),
                dtype=data.get("dtype", "float32"),
                backward=data.get("backward", False),
                memory=Memory.from_dict(json_object(data["memory"], "memory table"))
                if data.get("memory")
                else None,
                plan=data.get("plan"),
                mesh=tuple((str(name), int(size)) for name, size in data.get("mesh", ())),
                microbatches=int(data.get("microbatches", 0)),
                stages_per_rank=int(data.get("stages_per_rank", 1)),
                zero_bubble=bool(data.get("zero_bubble", False)),
                containers=tuple((str(name), str(kind)) for name, kind in data.get("containers", ())),
                depth=int(data["depth"]) if data.get("depth") is not None else None,
                ranks=tuple(RankClass.from_dict(json_object(r, "rank class")) for r in data.get("ranks", ())),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed convprof report: {type(exc).__name__}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form with stable keys (``schema`` versions it)."""
        return {
            "schema": SCHEMA,
            "convention": self.convention,
            "model": self.model,
            "dtype": self.dtype,
            "inputs": [list(s) for s in self.inputs],
            "total": {
                "params": self.total.params,
                "macs": self.total.macs,
                "flops": self.total.flops,
                "memory_bytes": self.total.memory_bytes,
                **(
                    {
                        "grad_input_macs": self.total.grad_input_macs,
                        "grad_weight_macs": self.total.grad_weight_macs,
                        "backward_macs": self.total.backward_macs,
                        "train_macs": self.total.train_macs,
                    }
                    if self.backward
                    else {}
                ),
                **({"recompute_macs": self.total.recompute_macs} if self.total.recompute_macs else {}),
            },
            **({"backward": True} if self.backward else {}),
            "complete": self.complete,
            "unexplained": [asdict(u) for u in self.unexplained],
            "layers": [layer.to_dict(self.backward, self.memory is not None) for layer in self.layers],
            "blocks": [block.to_dict() for block in self.blocks],
            **({"containers": [list(c) for c in self.containers]} if self.containers else {}),
            **({"depth": self.depth} if self.depth is not None else {}),
            "sizes": asdict(self.sizes),
            **({"memory": self.memory.to_dict()} if self.memory is not None else {}),
            **(
                {
                    "plan": self.plan,
                    "mesh": [list(d) for d in self.mesh],
                    **({"microbatches": self.microbatches} if self.microbatches else {}),
                    **({"stages_per_rank": self.stages_per_rank} if self.stages_per_rank > 1 else {}),
                    **({"zero_bubble": True} if self.zero_bubble else {}),
                    "ranks": [r.to_dict() for r in self.ranks],
                }
                if self.ranks
                else {}
            ),
        }

    def __str__(self) -> str:
        return _RENDERERS[0](self, "table")

    def _repr_html_(self) -> str:
        """Jupyter shows a report as its HTML table (rendered, like ``str``, by render)."""
        return _RENDERERS[0](self, "html")

    def _repr_markdown_(self) -> str:
        """For front ends that take Markdown rather than HTML."""
        return _RENDERERS[0](self, "markdown")
