"""The real multi-process oracle of a parallel step: ``torchrun --nproc_per_node N
tests/parallel_oracle.py CASE OUT_DIR [OPTIMIZER]`` runs a tests/parallel_models.py case with
gloo on the CPU and writes, per rank, what it measured to ``OUT_DIR/rank{R}.json``.

Each rank runs one warm-up step, then ``REPEATS`` steps under ``torch.profiler`` with memory
events (the method of tests/measured_memory.py): the peak is the bytes held before the step
(parameter shards, optimizer state, the input) plus the highest running sum of the CPU
allocator's events, the least over the repeats. gloo runs collectives on its own threads and
a buffer one holds (FSDP2's reduce-scatter input, a functional all-reduce's output) is freed
when that thread lets it go, sometimes after the next allocations of the main thread: steps
differ by one or two such buffers (a block's gradient, a hidden state). The fake world's
collectives finish at once, as the least of the repeats does. Two peaks:

- ``peak``: every allocation of the process;
- ``dispatched``: without what gloo allocates itself: allocations made inside a collective's
  own code (under a ``c10d::`` operator or a ``gloo:`` region in the profiler's event tree, which
  no dispatch mode sees) or on another thread (gloo's workers), and their frees. That is what a
  dispatch-level prediction can see, and what NCCL does not allocate through PyTorch either.

The collectives are logged by a dispatch mode: kind, phase, the mesh dimension of the group,
payload bytes. Nothing of convprof runs here.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import parallel_models

# steps measured after the warm-up (the docs' table: 6; the tests take 10, fewer of whose
# least steps a slow gloo thread can spoil)
REPEATS = int(os.environ.get("ORACLE_REPEATS", "6"))

# c10d and functional collectives -> (kind, index of the payload argument; -1: the output)
KINDS = {
    "_allgather_base_": ("all_gather", 0),
    "_reduce_scatter_base_": ("reduce_scatter", 1),
    "allreduce_": ("all_reduce", 0),
    "all_reduce": ("all_reduce", 0),
    "all_gather_into_tensor": ("all_gather", -1),
    "reduce_scatter_tensor": ("reduce_scatter", 0),
    "send": ("send", 0),
    "recv_": ("recv", 0),
    "alltoall_base_": ("all_to_all", 1),  # (output, input, ...): the send buffer
    "all_to_all_single": ("all_to_all", 0),
}


def _bytes(value: Any) -> int:
    tensors = torch.utils._pytree.tree_leaves(value)
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class Collectives(TorchDispatchMode):
    def __init__(self, groups: dict[str, str]) -> None:
        super().__init__()
        self.groups = groups
        self.phase = "forward"
        self.tagged: dict[int, str] = {}  # a pipeline's send and receive buffers: their phase
        self.seen: list[tuple[str, str, str, int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func._schema.name.split("::")[-1]
        if func.namespace in ("c10d", "_c10d_functional") and name in KINDS:
            kind, where = KINDS[name]
            group = next(
                (
                    torch._C._distributed_c10d.ProcessGroup.unbox(a).group_name
                    for a in args
                    if isinstance(a, torch.ScriptObject) and "ProcessGroup" in str(a._type())
                ),
                ([a for a in args if isinstance(a, str)] or [""])[-1],  # after the reduce op's name
            )
            payload = _bytes(out if where < 0 else args[where])
            phase = self.phase
            if phase == "pipeline":  # a schedule's step: autograd says which pass is running
                phase = "backward" if torch._C._current_graph_task_id() != -1 else "forward"
            if kind in ("send", "recv"):  # activations forward, their gradients backward
                phase = self.tagged.get(id(args[0][0]), phase)
            self.seen.append((kind, phase, self.groups.get(group, "world"), payload))
        return out


def logged(collectives: list[list[Any]]) -> dict[tuple[str, str, str], tuple[int, int]]:
    """A rank's collectives log (as written to its JSON) as calls and payload bytes per kind,
    phase and group: what a prediction's collectives are compared with."""
    counts: Counter[tuple[str, str, str]] = Counter()
    payload: Counter[tuple[str, str, str]] = Counter()
    for kind, phase, group, size in collectives:
        counts[(kind, phase, group)] += 1
        payload[(kind, phase, group)] += size
    return {key: (counts[key], payload[key]) for key in counts}


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor._local_tensor if hasattr(tensor, "_local_tensor") else tensor


def held(*values: Any) -> int:
    seen: dict[int, int] = {}
    for tensor in torch.utils._pytree.tree_leaves(values):
        if isinstance(tensor, torch.Tensor):
            storage = _local(tensor).untyped_storage()
            seen[storage.data_ptr() or id(storage)] = storage.nbytes()
    return sum(seen.values())


def _peaks(prof: Any, main_thread: int) -> tuple[int, int]:
    """(every allocation, allocations outside collectives' own code) at their highest."""
    events: list[tuple[int, int, int, bool]] = []  # time, ptr, bytes, gloo's own

    def walk(node: Any, inside: bool) -> None:
        name = node.name
        inside = inside or name.startswith(("c10d::", "gloo:"))
        fields = node.extra_fields
        if type(fields).__name__ == "_ExtraFields_Allocation" and fields.device.type == "cpu":
            own = inside or node.start_tid != main_thread
            events.append((node.start_time_ns, fields.ptr, fields.alloc_size, own))
        for child in node.children:
            walk(child, inside)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root, False)
    level = peak = visible = visible_peak = 0
    excluded: dict[int, bool] = {}
    for _, ptr, size, own in sorted(events, key=lambda e: e[0]):
        level += size
        peak = max(peak, level)
        if size > 0:
            excluded[ptr] = own
        skip = excluded.pop(ptr, own) if size < 0 else own
        if not skip:
            visible += size
            visible_peak = max(visible_peak, visible)
    return peak, visible_peak


def main() -> None:
    name, out = sys.argv[1], Path(sys.argv[2])
    optimizer = sys.argv[3] if len(sys.argv) > 3 else "adamw"
    anchors = "anchors" in sys.argv[4:]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    case = parallel_models.CASES[name]
    torch.manual_seed(0)
    model = case.build()
    model.train()
    model, groups, mesh = parallel_models.apply(case, model, rank)
    x = case.input()
    opt = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[optimizer](model.parameters(), lr=1e-3)
    watch = Collectives(groups)
    pp = int(case.parallel.get("pp", 1))
    if pp > 1:
        x, pipeline = _pipeline(case, model, mesh, x, watch)

    accum = int(case.parallel.get("accum", 1))

    def step() -> None:
        if pp > 1:
            watch.phase = "pipeline"
            pipeline()
        for micro in range(accum if pp == 1 else 0):
            if accum > 1:  # FSDP2 reduces the gradients on the last micro-step only
                model.set_requires_gradient_sync(micro == accum - 1)  # type: ignore[operator]
            watch.phase = "forward"
            loss = case.loss(model(x))
            watch.phase = "backward"
            loss.backward()
            del loss
        watch.phase = "step"
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    before = held(list(model.parameters()), list(model.buffers()), opt.state, x)
    if pp > 1:  # and the pipeline's own buffers, between steps: every live tensor
        before = held([t for t in gc.get_objects() if isinstance(t, torch.Tensor) and t.device.type == "cpu"])
    peaks, visible = [], []
    for _ in range(REPEATS):
        watch.seen = []
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, watch:
            step()
        raw, dispatched = _peaks(prof, main_thread=_main_thread(prof))
        peaks.append(before + raw)
        visible.append(before + dispatched)
    whole = case.parallel.get("tp", 1) == pp == 1  # FSDPMemTracker follows FSDP2 alone
    tracked = _fsdp_tracker(model, opt, x, step) if anchors and whole else None
    result = {
        "fsdp_mem_tracker": tracked,
        "rank": rank,
        "world": world,
        "held": before,
        "peak": min(peaks),
        "peaks": peaks,
        "dispatched": min(visible),
        "collectives": watch.seen,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def _pipeline(case: Any, model: Any, mesh: Any, x: torch.Tensor, watch: Collectives) -> tuple[Any, Any]:
    """This rank's pipeline stages under PyTorch's schedule: the batch of ``microbatches``
    micro-batches like ``x`` (the first stage's; later stages hold none) and one step's run.
    A looped schedule's rank holds several stages (``model`` a ``ModuleList`` of them)."""
    from torch.distributed.pipelining import PipelineStage, schedules

    pp = int(case.parallel["pp"])
    index = mesh["pp"].get_local_rank()
    modules = list(model) if isinstance(model, torch.nn.ModuleList) else [model]
    count = pp * len(modules)
    stages = [
        PipelineStage(module, index + k * pp, count, torch.device("cpu"), group=mesh.get_group("pp"))
        for k, module in enumerate(modules)
    ]
    chunks = int(case.parallel.get("microbatches", pp))
    names = {
        "1f1b": "Schedule1F1B",
        "gpipe": "ScheduleGPipe",
        "interleaved1f1b": "ScheduleInterleaved1F1B",
        "loopedbfs": "ScheduleLoopedBFS",
        "interleavedzb": "ScheduleInterleavedZeroBubble",
    }
    kind = getattr(schedules, names[case.parallel.get("schedule", "1f1b")])
    # a Llama's loss reads the model's output, whose logits the last stage returns
    read = SimpleNamespace if isinstance(modules[-1], parallel_models.LlamaStage) else None
    schedule = kind(
        stages if len(stages) > 1 else stages[0],
        chunks,
        loss_fn=lambda output, target: case.loss(read(logits=output) if read else output),
    )
    for stage in stages:
        _watched(stage, watch)
    first, last = index == 0, index == pp - 1
    batch = torch.cat([x] * chunks) if first else None
    target = torch.empty(x.shape[0] * chunks) if last else None  # the schedule wants one

    def run() -> None:
        if first:
            schedule.step(batch)
        elif last:
            schedule.step(target=target, losses=[])
        else:
            schedule.step()

    return batch, run


def _watched(stage: Any, watch: Collectives) -> None:
    """The stage's gradient reduction logged as the backward's, and its send and receive
    buffers tagged with their phase (a looped schedule sends activations both ways)."""
    reduce = stage.perform_reduce_grad

    def reduce_grad(*args: Any) -> Any:  # the gradients' reduction, after the last backward
        watch.phase = "backward"
        try:
            return reduce(*args)
        finally:
            watch.phase = "pipeline"

    stage.perform_reduce_grad = reduce_grad
    for name in ("get_fwd_send_ops", "get_fwd_recv_ops", "get_bwd_send_ops", "get_bwd_recv_ops"):
        method = getattr(stage, name)

        def tagging(
            *args: Any, _method: Any = method, _phase: str = "forward" if "fwd" in name else "backward"
        ) -> Any:
            ops = _method(*args)
            for op in ops:
                watch.tagged[id(op.tensor)] = _phase
            return ops

        setattr(stage, name, tagging)


def _fsdp_tracker(model: Any, opt: Any, x: Any, step: Any) -> int | None:
    """PyTorch's FSDPMemTracker over one more step (after the warm-up ones), real tensors: an
    anchor the docs compare with (-1: it refused, as it does a module run twice in a step)."""
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return None
    tracker = FSDPMemTracker(model, opt)
    tracker.track_inputs((x,))
    try:
        with tracker:
            step()
    except NotImplementedError:
        return -1
    peak = tracker.get_tracker_snapshot("peak")
    return max(snapshot["Total"] for snapshot in peak.values())


def _main_thread(prof: Any) -> int:
    counts: dict[int, int] = {}
    for root in prof.profiler.kineto_results.experimental_event_tree():
        counts[root.start_tid] = counts.get(root.start_tid, 0) + 1
    return max(counts, key=lambda tid: counts[tid])


if __name__ == "__main__":
    main()
