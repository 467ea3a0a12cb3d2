"""Pipeline parallelism: the model cut into stages, one per rank of the ``pp`` dimension, run by
PyTorch's own schedules (``torch.distributed.pipelining``: GPipe, 1F1B) over micro-batches.

A stage is the model with only its share of the repeated blocks: a transformers decoder keeps
its embeddings on the first stage, its final norm and head on the last (its forward feeds a
later stage the hidden states as ``inputs_embeds`` and hands on ``logits``); any other model needs
the user's ``pp_split(model, index, count)``, which returns stage ``index``'s module. Each
stage's input and output shapes are found once, on fake tensors, by running the stages in turn
on one micro-batch, and given to PyTorch's stage as static metadata (a fake world has no peer
to ask). The schedule's step is the driver of the recorded step: its stage's forwards and
backwards announced as it runs them, and each send's work made to hold what it sends, as a
real backend's does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from convprof.memory.lifetimes import tensors_in
from convprof.parallel.plan import Plan, PlanError
from convprof.record.fake import fake_tensors
from convprof.record.gradients import loss_of
from convprof.record.step import Phases

StageSplit = Callable[[nn.Module, int, int], nn.Module]


class OnAnotherStage(nn.Identity):
    """A part of the model that another pipeline stage holds (an embedding, a final norm, a
    head): here it hands its input on."""


def _kept(layers: nn.ModuleList, start: int, end: int) -> nn.ModuleList:
    """Layers ``start`` to ``end`` under their own names (``layers.5`` stays ``layers.5`` on
    the stage that holds it), iterated and sliced as the model's forward does."""
    kept = nn.ModuleList()
    for index in range(start, end):
        kept.add_module(str(index), layers[index])
    return kept


def _decoder_forward(model: nn.Module, first: bool, x: torch.Tensor) -> torch.Tensor:
    """A transformers decoder's stage: token ids in on the first stage, hidden states (as
    ``inputs_embeds``) on the others; ``logits`` out (the hidden states, before the last)."""
    given = {"input_ids" if first else "inputs_embeds": x}
    logits: torch.Tensor = type(model).forward(model, **given, use_cache=False).logits
    return logits


def result_of(module: nn.Module) -> Callable[[torch.Tensor], Any] | None:
    """How the user's loss reads a stage's output: a decoder cut by convprof returns its
    logits, which its loss reads as the model's output (``.logits``); else as it is."""
    if not getattr(module, "_convprof_stage", False):
        return None
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return lambda logits: CausalLMOutputWithPast(logits=logits)


def _bounds(blocks: int, index: int, count: int) -> tuple[int, int]:
    """Stage ``index``'s blocks of ``blocks``, split evenly (the first stages take one more)."""
    size, extra = divmod(blocks, count)
    start = index * size + min(index, extra)
    return start, start + size + (index < extra)


def decoder_stage(model: nn.Module, index: int, count: int) -> nn.Module:
    """Stage ``index`` of ``count`` of a transformers decoder (``model.model.layers``)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(model, "lm_head"):
        raise PlanError(
            f"pp: {type(model).__name__} is not a transformers decoder convprof can cut into stages; "
            "pass pp_split= (--pp-split on the command line), a function stage(model, index, count) "
            "returning stage index's module"
        )
    if len(layers) < count:
        raise PlanError(
            f"{count} pipeline stages are more than {type(model).__name__}'s {len(layers)} layers"
        )
    start, end = _bounds(len(layers), index, count)
    inner.layers = _kept(layers, start, end)  # type: ignore[union-attr]
    if index > 0:
        inner.embed_tokens = OnAnotherStage()  # type: ignore[union-attr]
    if index < count - 1:
        inner.norm = OnAnotherStage()  # type: ignore[union-attr]
        model.lm_head = OnAnotherStage()
    # the model itself, its forward the stage's (its modules keep the names the user knows)
    model.forward = functools.partial(_decoder_forward, model, index == 0)
    setattr(model, "_convprof_stage", True)  # noqa: B010 (an nn.Module's attributes are typed)
    return model


def stage_module(model: nn.Module, plan: Plan, index: int, split: StageSplit | None) -> nn.Module:
    """Stage ``index``'s module of ``model`` (a meta copy, cut in place), of the plan's
    ``stage_count`` stages."""
    return (split or decoder_stage)(model, index, plan.stage_count)


def rank_stages(plan: Plan, place: int) -> list[int]:
    """The stages the rank at ``place`` on ``pp`` runs: ``place``, ``place + pp``, ..."""
    return [place + k * plan.pp for k in range(plan.virtual)]


class Chunks(nn.Module):
    """A rank's stages of a looped schedule, each under its stage's name (``stage0``,
    ``stage2``, ...): what the rank holds and runs; the schedule calls the stages."""

    def __init__(self, stages: Mapping[int, nn.Module]) -> None:
        super().__init__()
        for index, module in stages.items():
            self.add_module(f"stage{index}", module)


def check_inputs(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """A pipeline feeds its first stage one tensor per micro-batch (as PyTorch's schedules
    split it): other inputs would be dropped silently, so they are refused."""
    if len(args) != 1 or not isinstance(args[0], torch.Tensor) or kwargs:
        given = [type(a).__name__ for a in args] + [f"{k}=" for k in kwargs]
        raise PlanError(
            "pp: a pipeline's first stage takes one tensor (a micro-batch, as the schedule splits "
            f"the batch); got {', '.join(given) or 'nothing'}"
        )


def shapes(
    copy: Callable[[], nn.Module], plan: Plan, split: StageSplit | None, micro: torch.Tensor
) -> list[torch.Tensor]:
    """Every stage's input of one micro-batch, and the last stage's output, as meta tensors
    (a floating one wants its gradient): the stages run in turn on fake tensors, under
    ``no_grad`` (``copy`` makes a fresh meta copy of the model)."""
    found = [micro.to("meta")]
    modules = [stage_module(copy(), plan, index, split) for index in range(plan.stage_count)]
    # FSDP2's mixed precision computes in param_dtype and casts a unit's floating inputs to
    # it, so a stage sends (and is sent gradients) in that dtype
    dtype = getattr(torch, plan.param_dtype) if plan.param_dtype and (plan.fsdp > 1 or plan.dp > 1) else None
    if dtype is not None:
        for module in modules:
            _computing_in(module, dtype)
    with fake_tensors() as fake, torch.no_grad():
        value: Any = fake.inputs(micro)
        for index, module in enumerate(modules):
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            fake.materialise(module)
            value = module(value)
            if not isinstance(value, torch.Tensor):
                raise PlanError(
                    f"pp: stage {index} returns {type(value).__name__}; a stage must return one tensor"
                )
            sent = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
            # what the next stage receives wants its gradient, as the activation it was did
            found.append(sent.requires_grad_(sent.is_floating_point()))
    return found


def _computing_in(module: nn.Module, dtype: torch.dtype) -> None:
    """``module``'s floating parameters in ``dtype`` (its buffers as they are, as FSDP2 leaves
    them): a stage of the shapes pass, which is thrown away after."""
    for sub in module.modules():
        for name, param in sub._parameters.items():
            if param is not None and param.is_floating_point():
                sub._parameters[name] = nn.Parameter(param.to(dtype), requires_grad=param.requires_grad)


class Pipeline:
    """The step of one pipeline rank: PyTorch's schedule over the micro-batches, its stages'
    forwards and backwards announced to the recording as the schedule runs them."""

    def __init__(
        self,
        stages: Mapping[int, nn.Module],
        plan: Plan,
        group: Any,
        stage_shapes: Sequence[torch.Tensor],
        batch: tuple[Any, ...],
        loss: Callable[[Any], torch.Tensor] | None,
        fake: Callable[[Any], Any],
    ) -> None:
        from torch.distributed.pipelining import PipelineStage, schedules

        missing = [
            name
            for owner, name in ((schedules, "_batch_p2p"), (PipelineStage, "perform_reduce_grad"))
            if not hasattr(owner, name)
        ]
        if missing:
            raise PlanError(
                f"pp: this PyTorch's pipelining ({torch.__version__}) has no {missing[0]}, which convprof "
                "follows a pipeline's step by (torch 2.14 has it)"
            )
        self.stages = [
            self._stage(module, index, plan, group, stage_shapes, fake) for index, module in stages.items()
        ]
        last = stages[max(stages)]
        loss_fn = functools.partial(_loss, last, loss, result_of(last))
        kind = getattr(schedules, _SCHEDULES[plan.schedule])
        try:
            self.schedule = kind(
                self.stages if plan.virtual > 1 else self.stages[0], plan.chunks, loss_fn=loss_fn
            )
        except ValueError as exc:  # a looped schedule's rules of micro-batches, in PyTorch's words
            raise PlanError(f"pp: {plan.schedule} with {plan.chunks} micro-batches: {exc}") from None
        self.first, self.last, self.chunks = 0 in stages, plan.stage_count - 1 in stages, plan.chunks
        self.batch = batch
        self.target = torch.empty(batch[0].shape[0], device=batch[0].device)  # chunked as the input is

    @staticmethod
    def _stage(
        module: nn.Module,
        index: int,
        plan: Plan,
        group: Any,
        stage_shapes: Sequence[torch.Tensor],
        fake: Callable[[Any], Any],
    ) -> Any:
        from torch.distributed.pipelining import PipelineStage

        inputs, outputs = fake(stage_shapes[index]), fake(stage_shapes[index + 1])
        return PipelineStage(
            module,
            index,
            plan.stage_count,
            torch.device("cpu"),
            input_args=(inputs,),
            output_args=(outputs,),
            output_grads=(torch.empty_like(outputs),),
            input_grads=(torch.empty_like(inputs),),
            group=group,
        )

    def held(self) -> Any:
        """What a stage keeps between steps: the first stage's batch, the last one's target
        and the schedule's own tensors (the stage's receive buffers, the last micro-batches'
        outputs, which the next step lets go of, its loss reducer); not its shape records."""
        kept = [t for t in tensors_in(self.schedule) if t.device.type != "meta"]
        return [self.batch if self.first else (), self.target if self.last else (), kept]

    def _reduce(self, method: Callable[..., Any], phases: Phases) -> Callable[..., Any]:
        """The stage's gradient reduction (FSDP2's reduce-scatters, after the last backward):
        part of that backward."""

        def run(*args: Any, **kwargs: Any) -> Any:
            with phases.backward_of(self.chunks - 1):
                return method(*args, **kwargs)

        return run

    def run(self, phases: Phases) -> None:
        from torch.distributed.pipelining import schedules

        names = (*_ANNOUNCED, "perform_reduce_grad")
        originals = [{name: getattr(stage, name) for name in names} for stage in self.stages]
        batch_p2p = schedules._batch_p2p
        try:
            for stage, methods in zip(self.stages, originals, strict=True):
                for name in _ANNOUNCED:
                    setattr(stage, name, _announced(name, methods[name], phases))
                setattr(stage, "perform_reduce_grad", self._reduce(methods["perform_reduce_grad"], phases))  # noqa: B010
            schedules._batch_p2p = _holding(batch_p2p)
            if self.first:
                self.schedule.step(*self.batch)
            elif self.last:
                self.schedule.step(target=self.target, losses=[])
            else:
                self.schedule.step()
        finally:
            schedules._batch_p2p = batch_p2p
            for stage in self.stages:
                for name in names:
                    vars(stage).pop(name, None)


class _Sending:
    """A send's ``Work`` as a real backend's is: holding the tensors it sends until the
    schedule lets go of it (gloo's and NCCL's works keep them; the fake group's holds none),
    so a stage's sent activations live as long as they do in a real run."""

    def __init__(self, work: Any, tensors: list[torch.Tensor]) -> None:
        self.work, self.tensors = work, tensors

    def wait(self, *args: Any, **kwargs: Any) -> Any:
        return self.work.wait(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.work, name)


def _holding(batch_p2p: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    """PyTorch's schedules' ``_batch_p2p``, its works holding the tensors the batch sends."""

    def run(ops: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
        works = batch_p2p(ops, *args, **kwargs)
        sent = [op.tensor for op in ops if op.op is torch.distributed.isend]
        return [_Sending(work, sent) for work in works] if sent else works

    return run


def _loss(
    stage_of_loss: nn.Module,
    loss: Callable[[Any], torch.Tensor] | None,
    result: Callable[[torch.Tensor], Any] | None,
    output: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    """The last stage's loss of a micro-batch: ``loss`` of the output (as the model returns
    it, where the stage's output is a part of it), by default its sum, as a whole model's."""
    value = loss_of(stage_of_loss, result(output) if result is not None else output, loss, True)
    assert value is not None  # wanted: loss_of raises rather than find nothing
    return value


# convprof's schedule names -> PyTorch's classes
_SCHEDULES = {
    "gpipe": "ScheduleGPipe",
    "1f1b": "Schedule1F1B",
    "interleaved1f1b": "ScheduleInterleaved1F1B",
    "loopedbfs": "ScheduleLoopedBFS",
    "interleavedzb": "ScheduleInterleavedZeroBubble",
}

# the stage's methods the schedule calls with a micro-batch's index, and the phase each one's
# work is part of: a pass run at once, or sends and receives the schedule runs later
_ANNOUNCED = {
    "forward_one_chunk": "forward",
    "backward_one_chunk": "backward",
    "backward_weight_one_chunk": "backward",  # a zero-bubble schedule's weight gradients, later
    "get_fwd_send_ops": "forward",
    "get_fwd_recv_ops": "forward",
    "get_bwd_send_ops": "backward",
    "get_bwd_recv_ops": "backward",
}


def _announced(name: str, method: Callable[..., Any], phases: Phases) -> Callable[..., Any]:
    phase, runs = _ANNOUNCED[name], name.endswith("_one_chunk")

    def run(chunk: int, *args: Any, **kwargs: Any) -> Any:
        if runs:
            with phases.forward(chunk) if phase == "forward" else phases.backward_of(chunk):
                return method(chunk, *args, **kwargs)
        # the sends and receives of this chunk, which the schedule runs later, batched with
        # others: each tensor tagged with its chunk's phase
        ops = method(chunk, *args, **kwargs)
        for op in ops:
            phases.collectives.tagged[id(op.tensor)] = (phase, chunk)
        return ops

    return run
