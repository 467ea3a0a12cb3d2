"""Expert parallelism (``ep``): the experts split among ranks, the tokens sent to them by
transformers' all-to-all dispatch, with a stated routing assumption.

Held to real gloo runs of transformers' own expert parallelism (tests/parallel_models.py's
``mixtral-ep`` cases, whose routers are set to route as the assumption says) and to hand
arithmetic: the split sizes, the experts' MACs and the all-to-alls' bytes of the tiny Mixtral
(2 layers, width 64, 4 experts of width 128, 2 per token, bf16 compute, 2 x 64 tokens a rank).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

import convprof
from convprof.parallel.experts import split_sizes
from convprof.parallel.plan import PlanError, parse_plan

sys.path.insert(0, str(Path(__file__).parent))
import parallel_models
import parallel_oracle
from test_parallel import measured, needs_gloo, predicted

TOKENS, TOP_K, WIDTH, EXPERT_WIDTH, LAYERS = 2 * 64, 2, 64, 128, 2
# one row through one expert: gate and up (64 -> 2 x 128), then down (128 -> 64)
ROW_MACS = WIDTH * 2 * EXPERT_WIDTH + EXPERT_WIDTH * WIDTH  # 24,576
BF16 = 2


@pytest.mark.parametrize(
    ("routing", "tokens", "top_k", "local", "ep", "me", "sent", "received"),
    [
        # 32 x 2 = 64 pairs over 4 experts: 16 each, 32 to each rank, 32 from each
        ("balanced", 32, 2, 2, 2, 0, [32, 32], [32, 32]),
        # 5 x 2 = 10 pairs over 4 experts: 3, 3, 2, 2 (the first ones one more): rank 0's
        # experts 6, rank 1's 4; rank 1 gets 4 from each rank
        ("balanced", 5, 2, 2, 2, 1, [6, 4], [4, 4]),
        # every token's 2 choices on this rank's 2 experts: 64 rows to itself, 64 from the other
        ("worst", 32, 2, 2, 2, 0, [64, 0], [64, 64]),
        # 8 choices, 4 experts a rank: at most 4 of a token's on rank 2 (40 rows from each of
        # the 4 ranks); its other 40 pairs spread over the 3 others, 14, 13, 13
        ("worst", 10, 8, 4, 4, 2, [14, 13, 40, 13], [40, 40, 40, 40]),
    ],
)
def test_split_sizes_follow_the_routing_assumption(
    routing: str, tokens: int, top_k: int, local: int, ep: int, me: int, sent: list[int], received: list[int]
) -> None:
    assert split_sizes(routing, tokens, top_k, local, ep, me) == (sent, received)


@needs_gloo
@pytest.mark.parametrize("case", ["mixtral-ep", "mixtral-tp-ep", "mixtral-ep-worst"])
def test_each_rank_matches_transformers_expert_parallelism(
    case: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The real run routes as the assumption says: balanced on both ranks; in the worst case
    every token goes to rank 0's experts, which the prediction holds for every rank (the
    hottest one's step): rank 0 realises it, rank 1 receives nothing and stays below it."""
    real = measured(case, tmp_path_factory)
    report = predicted(case)
    assert report.complete, report.unexplained
    (rank_class,) = report.ranks
    got = {(c.kind, c.phase, c.group): (c.count, c.bytes) for c in rank_class.collectives}
    hot = (0,) if case == "mixtral-ep-worst" else (0, 1)
    for rank in hot:
        oracle = real[rank]
        assert got == parallel_oracle.logged(oracle["collectives"]), rank
        assert rank_class.memory is not None and rank_class.memory.held_bytes == oracle["held"]
        gap = oracle["dispatched"] - rank_class.peak_bytes
        assert abs(gap) <= 0.01 * oracle["dispatched"], (rank, gap)
    if case == "mixtral-ep-worst":
        assert real[1]["dispatched"] < 0.9 * rank_class.peak_bytes


def _mixtral(routing: str, **plan: Any) -> convprof.Report:
    parallel = {"fsdp": 2, "ep": 2, "routing": routing, **parallel_models.MIXED_BF16, **plan}
    return predicted("mixtral-ep", parallel=parallel)


def test_the_worst_case_computes_what_every_rank_sends_it() -> None:
    """Balanced: a rank's experts get as many rows as its own tokens choose, 128 x 2; worst:
    both ranks send each token's 2 choices here, 2 x 128 x 2. The difference is the experts'
    forward on 256 more rows in each of 2 layers."""
    balanced, worst = _mixtral("balanced"), _mixtral("worst")
    extra_rows = 2 * TOKENS * TOP_K - TOKENS * TOP_K
    assert worst.ranks[0].macs - balanced.ranks[0].macs == LAYERS * extra_rows * ROW_MACS  # 12,582,912


def test_the_all_to_alls_carry_the_routed_rows() -> None:
    """Per layer forward: the counts (4 experts, int64: 32 bytes), the dispatch (every
    (token, expert) pair, 256 rows of 64 bf16) and the combine (the rows received, 256 under
    balanced routing, 512 in the worst case); the backward sends both back."""
    for routing, received in (("balanced", TOKENS * TOP_K), ("worst", 2 * TOKENS * TOP_K)):
        report = _mixtral(routing)
        sent = {(c.kind, c.phase): (c.count, c.bytes) for c in report.ranks[0].collectives}
        rows = TOKENS * TOP_K + received
        assert sent[("all_to_all", "forward")] == (3 * LAYERS, LAYERS * (4 * 8 + rows * WIDTH * BF16))
        assert sent[("all_to_all", "backward")] == (2 * LAYERS, LAYERS * rows * WIDTH * BF16)


def test_experts_are_sharded_over_what_is_left_of_fsdp() -> None:
    """fsdp=4, ep=2: each rank holds 2 of the 4 experts, FSDP2-sharded over efsdp = 4 / 2 = 2
    ranks: gathered per layer in bf16 in the forward and again in the backward, 2 experts x
    24,576 weights x 2 bytes, and reduced once."""
    report = _mixtral("balanced", fsdp=4)
    collectives = {(c.kind, c.phase, c.group): (c.count, c.bytes) for c in report.ranks[0].collectives}
    gathered = LAYERS * 2 * ROW_MACS * BF16  # an expert holds as many weights as a row's MACs
    assert collectives[("all_gather", "forward", "efsdp")] == (LAYERS, gathered)
    assert collectives[("all_gather", "backward", "efsdp")] == (LAYERS, gathered)
    assert collectives[("reduce_scatter", "backward", "efsdp")][0] == LAYERS


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"fsdp": 2, "ep": 2}, "give the routing to assume: routing=balanced or routing=worst"),
        ({"fsdp": 2, "ep": 2, "routing": "even"}, "got 'even'"),
        ({"fsdp": 2, "routing": "balanced"}, "routing is expert parallelism's"),
        ({"fsdp": 3, "ep": 2, "routing": "balanced"}, "it must divide fsdp x tp = 3"),
        ({"fsdp": 2, "tp": 2, "ep": 3, "routing": "balanced"}, "it must divide fsdp x tp = 4"),
    ],
)
def test_bad_expert_plans_say_what_is_wrong(plan: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_plan(plan)


def test_ep_on_a_model_without_experts_is_refused() -> None:
    with pytest.raises(PlanError, match="MLP has no expert-parallel plan"):
        convprof.profile(
            parallel_models.mlp(),
            torch.randn(8, 256),
            backward=True,
            parallel={"fsdp": 2, "ep": 2, "routing": "balanced"},
        )
    assert not dist.is_initialized()


def test_the_users_model_keeps_its_experts() -> None:
    model = parallel_models.mixtral()
    experts = model.model.layers[0].mlp.experts
    before = [(name, id(p), type(p)) for name, p in model.named_parameters()]
    _ = convprof.profile(
        model,
        torch.randint(0, 512, (1, 8)),
        backward=True,
        parallel={"fsdp": 2, "ep": 2, "routing": "worst", "param_dtype": "bfloat16"},
    )
    assert "forward" not in vars(experts) and experts.num_experts == 4
    assert [(name, id(p), type(p)) for name, p in model.named_parameters()] == before
    assert not dist.is_initialized()


def test_the_plan_reads_back_from_its_text() -> None:
    plan = parse_plan("fsdp=8,ep=4,routing=worst")
    assert (plan.world, plan.expert_mesh) == (8, (("efsdp", 2), ("ep", 4)))
    assert parse_plan(plan.text()) == plan


def test_fp32_experts_are_told_to_compute_in_bf16() -> None:
    """PyTorch's fake ``_grouped_mm`` refuses fp32: the refusal names the remedy."""
    with pytest.raises(convprof.ForwardError, match="add param_dtype=bfloat16 to the plan"):
        predicted("mixtral-ep", parallel={"fsdp": 2, "ep": 2, "routing": "balanced"})


def test_a_pipeline_of_experts_dispatches_per_stage_and_micro_batch() -> None:
    """pp=2 x fsdp=2, ep=2 over the fsdp ranks of each stage, 2 micro-batches of 2 x 64
    tokens: each stage holds one of the 2 MoE layers, so 3 all-to-alls per micro-batch
    forward (counts, 32 bytes; the 256 routed rows of 64 bf16 out and back) and 2 backward;
    the stages send bf16 hidden states (FSDP2 computes in bf16): 128 x 64 x 2 bytes each."""
    parallel = {
        "pp": 2,
        "fsdp": 2,
        "ep": 2,
        "routing": "balanced",
        "microbatches": 2,
        **parallel_models.MIXED_BF16,
    }
    first, last = predicted("mixtral-pp-ep", parallel=parallel).ranks
    rows = 2 * TOKENS * TOP_K * WIDTH * BF16
    for rank in (first, last):
        sent = {(c.kind, c.phase): (c.count, c.bytes) for c in rank.collectives}
        assert sent[("all_to_all", "forward")] == (2 * 3, 2 * (32 + rows))
        assert sent[("all_to_all", "backward")] == (2 * 2, 2 * rows)
    sends = {(c.kind, c.phase): c.bytes for c in first.collectives if c.group == "pp"}
    assert sends == {
        ("send", "forward"): 2 * TOKENS * WIDTH * BF16,
        ("recv", "backward"): 2 * TOKENS * WIDTH * BF16,
    }


def test_tensor_parallel_ranks_send_their_slice_of_the_batch() -> None:
    """tp=2, ep=2 over the same 2 ranks: both hold the batch of 128 tokens, each dispatches
    its 64 (128 rows, half of fsdp's), and gathers the combined rows back over tp."""
    report = predicted("mixtral-tp-ep")
    sent = {(c.kind, c.phase): (c.count, c.bytes) for c in report.ranks[0].collectives}
    rows = 2 * (TOKENS // 2) * TOP_K * WIDTH * BF16
    assert sent[("all_to_all", "forward")] == (3 * LAYERS, LAYERS * (4 * 8 + rows))
    assert sent[("all_to_all", "backward")] == (2 * LAYERS, LAYERS * rows)
