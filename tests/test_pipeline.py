"""Pipeline parallelism (``pp``): each stage's step under PyTorch's own schedules, held to
closed forms. The real runs (torchrun, gloo) are test_parallel.py's oracle cases
mlp-pp-1f1b, mlp-pp-gpipe and llama-pp.

The MLP of tests/parallel_models.py over 2 stages (``mlp_stage``): blocks 0-1 on stage 0,
blocks 2-3 and the head Linear(256, 16) on stage 1; a block is Linear(256, 1024), GELU,
Linear(1024, 256) and a residual add; one micro-batch is 64 x 256 floats.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn

import convprof
from convprof.cli import main
from convprof.parallel.plan import PlanError
from convprof.report import Report

sys.path.insert(0, str(Path(__file__).parent))
import parallel_models

HERE = Path(__file__).parent
ROWS = 64
UP = ROWS * 256 * 1024  # MACs of one projection of a block, one micro-batch (up or down)
HEAD = ROWS * 256 * 16
BLOCK_PARAMS = 256 * 1024 + 1024 + 1024 * 256 + 256
HEAD_PARAMS = 256 * 16 + 16
HIDDEN = ROWS * 256 * 4  # one micro-batch's hidden state, what a stage sends: 65,536 bytes
# what one block keeps for its backward, per micro-batch: the up projection's output (GELU's
# input), GELU's output (the down projection's input) and the block's output (the next
# block's input), fp32; the down projection's output dies in the residual add
ACTIVATION = ROWS * (1024 + 1024 + 256) * 4


def pipeline(microbatches: int, schedule: str = "1f1b", **plan: Any) -> Report:
    return convprof.profile(
        parallel_models.mlp(),
        torch.randn(ROWS, 256),
        backward=True,
        memory="cpu",
        optimizer="adamw",
        parallel={"pp": 2, "microbatches": microbatches, "schedule": schedule, **plan},
        pp_split=parallel_models.mlp_stage,
    )


def test_each_stage_computes_its_blocks_for_every_micro_batch() -> None:
    """4 micro-batches: stage 0 runs blocks 0-1 four times, stage 1 blocks 2-3 and the head.
    Backward: every weight's gradient, and every input's but stage 0's first block's (its
    input is the data); stage 1's input is an activation, whose gradient it sends back."""
    first, last = pipeline(4).ranks
    assert (first.ranks, last.ranks) == ((0,), (1,))
    assert first.macs == 4 * 2 * 2 * UP
    assert last.macs == 4 * (2 * 2 * UP + HEAD)
    assert first.train_macs == 3 * first.macs - 4 * UP
    assert last.train_macs == 3 * last.macs
    assert (first.params, last.params) == (2 * BLOCK_PARAMS, 2 * BLOCK_PARAMS + HEAD_PARAMS)


def test_stages_send_activations_forward_and_gradients_back() -> None:
    first, last = pipeline(4).ranks
    sent = {(c.kind, c.phase, c.group): (c.count, c.bytes, c.sent_bytes) for c in first.collectives}
    assert sent == {
        ("send", "forward", "pp"): (4, 4 * HIDDEN, 4 * HIDDEN),
        ("recv", "backward", "pp"): (4, 4 * HIDDEN, 0),
    }
    sent = {(c.kind, c.phase, c.group): (c.count, c.bytes, c.sent_bytes) for c in last.collectives}
    assert sent == {
        ("recv", "forward", "pp"): (4, 4 * HIDDEN, 0),
        ("send", "backward", "pp"): (4, 4 * HIDDEN, 4 * HIDDEN),
    }


def test_under_fsdp_mixed_precision_stages_send_in_its_dtype() -> None:
    """FSDP2 computes in param_dtype and casts a unit's inputs to it: a stage sends bf16
    activations and is sent bf16 gradients, half of fp32's 65,536 bytes a micro-batch (the
    real run's receive buffers are bf16 too: docs/parallel.md, mlp-pp-fsdp-bf16)."""
    first, last = pipeline(4, fsdp=2, param_dtype="bfloat16", reduce_dtype="float32").ranks
    for rank, kinds in ((first, ("send", "recv")), (last, ("recv", "send"))):
        sent = {(c.kind, c.phase): c.bytes for c in rank.collectives if c.group == "pp"}
        assert sent == {(kinds[0], "forward"): 4 * HIDDEN // 2, (kinds[1], "backward"): 4 * HIDDEN // 2}


def test_mixed_precision_without_fsdp_is_refused() -> None:
    """param_dtype is FSDP2's: without fsdp or dp nothing would apply it."""
    with pytest.raises(PlanError, match=r"param_dtype, reduce_dtype and units are FSDP2's"):
        pipeline(4, param_dtype="bfloat16")


def test_1f1b_keeps_the_stages_in_flight_and_gpipe_every_micro_batch() -> None:
    """From 4 to 8 micro-batches. 1F1B runs a backward as soon as it can: stage 0 keeps the
    activations of 2 micro-batches (as many as there are stages) whatever their number, and
    holds only 4 more micro-batches of the batch and 4 more gradient receive buffers. GPipe
    runs every forward first: stage 0's peak (the backward of the second micro-batch) keeps 4
    more micro-batches' activations of its 2 blocks."""
    for schedule, more_activations in (("1f1b", 0), ("gpipe", 4 * 2 * ACTIVATION)):
        few, many = (pipeline(m, schedule).ranks[0].memory for m in (4, 8))
        assert few is not None and many is not None
        held = {key: dict(many.at_peak)[key] - dict(few.at_peak)[key] for key in ("input", "activation")}
        assert held == {"input": 8 * HIDDEN, "activation": more_activations}, schedule
    # 1F1B's stage 0 at its peak: 2 micro-batches of activations, and one block output sent
    # and still held by the send's work
    (memory,) = (pipeline(4).ranks[0].memory,)
    assert memory is not None and dict(memory.at_peak)["activation"] == 2 * 2 * ACTIVATION + HIDDEN


def test_the_step_waits_for_the_pipeline() -> None:
    """With a machine, the step's lower bound is (m + p - 1) micro-steps of the slowest
    stage: 4 micro-batches over 2 stages, 5 micro-steps of the last stage's quarter step."""
    from convprof.rendering.footer import seconds

    report = pipeline(4)
    text = convprof.render(report, roofline="h100")
    rate = 66.9e12 / 2  # the H100's fp32 FLOP/s as MACs
    slowest = max(r.train_macs for r in report.ranks) / rate
    assert f"the pipeline {seconds(slowest * 5 / 4)}: 5 micro-steps of its slowest stage, 1 of them" in text


def test_interleaved_1f1b_runs_two_stages_on_each_rank() -> None:
    """pp=2 with 2 stages a rank: 4 stages of one block each (the head on the last), rank 0
    holding stages 0 and 2 (blocks 0 and 2), rank 1 stages 1 and 3. Rank 0 sends stage 0's and
    stage 2's activations and receives stage 1's: 8 sends and 4 receives forward, the reverse
    backward; the step's bound is (m v + p - 1) = 9 stage steps of the slowest rank's 8."""
    from convprof.rendering.footer import seconds

    report = pipeline(4, "interleaved1f1b")
    first, last = report.ranks
    assert first.macs == 4 * 2 * 2 * UP and last.macs == 4 * (2 * 2 * UP + HEAD)
    assert (first.params, last.params) == (2 * BLOCK_PARAMS, 2 * BLOCK_PARAMS + HEAD_PARAMS)
    sent = {(c.kind, c.phase): (c.count, c.bytes) for c in first.collectives}
    assert sent == {
        ("send", "forward"): (8, 8 * HIDDEN),
        ("recv", "forward"): (4, 4 * HIDDEN),
        ("recv", "backward"): (8, 8 * HIDDEN),
        ("send", "backward"): (4, 4 * HIDDEN),
    }
    assert "stage0.blocks.0" in {layer.name for layer in report.layers}  # a stage's own name first
    text = convprof.render(report, roofline="h100")
    slowest = max(r.train_macs for r in report.ranks) / (66.9e12 / 2)
    assert f"the pipeline {seconds(slowest * 9 / 8)}: 9 stage steps of its slowest rank, 1 of them" in text


@pytest.mark.parametrize("schedule", ["loopedbfs", "interleavedzb"])
def test_other_looped_schedules_compute_the_same_step(schedule: str) -> None:
    """Looped BFS and interleaved zero bubble (its backward split into the inputs' gradients
    and, later, the weights'): the same blocks on the same ranks as interleaved 1F1B, the
    same forward and backward MACs (rank 0: 4 micro-batches of blocks 0 and 2, 3 x less the
    first block's input gradient). Zero bubble's least time has no fill and drain to add."""
    report = pipeline(4, schedule)
    first, _ = report.ranks
    assert first.macs == 4 * 2 * 2 * UP and first.train_macs == 3 * first.macs - 4 * UP
    text = convprof.render(report, roofline="h100")
    assert ("the pipeline" in text) == (schedule == "loopedbfs")


def test_stages_go_with_a_looped_schedule() -> None:
    with pytest.raises(PlanError, match="stages=2 per rank needs a looped schedule"):
        pipeline(4, stages=2)


def test_a_transformers_decoder_is_cut_into_stages_under_its_own_names() -> None:
    """Llama with 2 layers over 2 stages: the embeddings and layer 0 on stage 0, layer 1,
    the final norm and the head on stage 1, each module under the name it has in the model;
    the user's loss reads the last stage's logits as the model's output."""
    model = parallel_models.llama()
    report = convprof.profile(
        model,
        torch.randint(0, 512, (2, 64)),
        backward=True,
        memory="cpu",
        parallel={"pp": 2},
        loss=lambda out: out.logits.sum(),
    )
    layer = sum(p.numel() for p in model.model.layers[0].parameters())
    embed, norm, head = 512 * 128, 128, 128 * 512
    assert [r.params for r in report.ranks] == [embed + layer, layer + norm + head]
    names = [row.name for row in report.layers]
    assert "model.layers.0" in names and "model.layers.1" not in names  # stage 0's table
    last = report.ranks[1].memory
    assert last is not None and last.layer is not None
    assert last.layer.startswith(("model.layers.1", "model.norm", "lm_head"))


@pytest.mark.parametrize(
    ("plan", "inputs", "message"),
    [
        ({"pp": 4}, {}, "4 pipeline stages are more than LlamaForCausalLM's 2 layers"),
        ({"pp": 2, "accum": 2}, {}, "give microbatches, not accum"),
        ({"fsdp": 2, "microbatches": 2}, {}, "microbatches, schedule and stages are a pipeline's"),
        ({"pp": 2, "schedule": "zb"}, {}, "schedule must be one of 1f1b, gpipe"),
        ({"pp": 2, "microbatches": 0}, {}, "microbatches must be a whole number, 1 or more"),
        (
            {"pp": 2},
            {"attention_mask": torch.tensor([[1] * 63 + [0]] * 2)},
            "a pipeline's first stage takes one tensor",
        ),
    ],
)
def test_bad_pipelines_say_what_is_wrong(plan: dict[str, Any], inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        convprof.profile(
            parallel_models.llama(), torch.randint(0, 512, (2, 64)), inputs, backward=True, parallel=plan
        )


def test_an_all_ones_attention_mask_is_no_mask() -> None:
    """transformers leaves out an all-ones mask on real tensors and attends causally; on fake
    tensors it would keep it (it cannot read it) and repeat keys and values per head. convprof
    reads the real mask: all ones predicts what no mask does; a padding mask costs more."""
    ids = torch.randint(0, 512, (2, 64))

    def peak(**kwargs: Any) -> int:
        report = convprof.profile(
            parallel_models.llama(), ids, kwargs, backward=True, memory="cpu", parallel={"fsdp": 2}
        )
        return report.ranks[0].peak_bytes

    bare = peak()
    assert peak(attention_mask=torch.ones(2, 64, dtype=torch.long)) == bare
    assert peak(attention_mask=torch.tensor([[1] * 60 + [0] * 4] * 2)) > bare
    assert peak(use_cache=False) == bare  # no cache: transformers asks whether rows are packed


def test_nothing_is_left_behind() -> None:
    from torch.distributed.pipelining import schedules
    from transformers import masking_utils

    model = parallel_models.llama()
    before = [(name, id(p)) for name, p in model.named_parameters()], type(model), vars(model).copy()
    batch_p2p, packed = schedules._batch_p2p, masking_utils.find_packed_sequence_indices
    convprof.profile(model, torch.randint(0, 512, (2, 64)), backward=True, parallel="pp=2")
    assert ([(name, id(p)) for name, p in model.named_parameters()], type(model), vars(model)) == before
    assert "forward" not in vars(model) and len(model.model.layers) == 2
    assert schedules._batch_p2p is batch_p2p and masking_utils.find_packed_sequence_indices is packed
    assert not dist.is_initialized() and not torch._C._len_torch_dispatch_stack()


def test_the_report_reads_back_from_json() -> None:
    report = pipeline(2)
    data = report.to_dict()
    assert data["microbatches"] == 2 and data["mesh"] == [["pp", 2]]
    assert Report.from_dict(data) == report


def test_cli_pipeline_of_a_split_of_ones_own(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    words = ["profile", "parallel_models:mlp", "--input", "64,256", "--parallel", "pp=2,microbatches=4"]
    assert main([*words, "--pp-split", "parallel_models:mlp_stage", "--depth", "0"]) == 0
    out = capsys.readouterr().out
    assert "Parallel:     pp=2, 4 micro-batches, 1f1b (2 ranks)" in out
    assert "send" in out and "recv" in out
    assert main(words) == 2
    err = capsys.readouterr().err
    assert "MLP is not a transformers decoder" in err and "--pp-split" in err


def test_pp_split_goes_with_a_plan() -> None:
    with pytest.raises(TypeError, match="pp_split= goes with parallel=; pass parallel too"):
        convprof.profile(
            parallel_models.mlp(), torch.randn(8, 256), backward=True, pp_split=parallel_models.mlp_stage
        )


def test_a_stage_that_returns_no_tensor_is_refused() -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.a(x), self.b(x)

    with pytest.raises(PlanError, match="stage 0 returns tuple; a stage must return one tensor"):
        convprof.profile(
            Pair(), torch.randn(4, 8), backward=True, parallel={"pp": 2}, pp_split=lambda m, i, n: m
        )
