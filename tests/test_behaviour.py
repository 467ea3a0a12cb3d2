"""The model comes back as it was, errors name the problem, and counts do not depend on mode,
grad or dtype."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import convprof
from convprof import ModuleCall


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 4),
    )


# Conv 8*3*9 + 8, BN 8 + 8, Linear 288*4 + 4; MACs: 36 positions * 8*3*9 + 288*4
SMALL_PARAMS = 8 * 3 * 9 + 8 + 2 * 8 + 288 * 4 + 4
SMALL_MACS = 36 * (8 * 3 * 9) + 288 * 4


def snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "dicts": [sorted(vars(m)) for m in model.modules()],
        "hooks": [
            (
                len(m._forward_hooks),
                len(m._forward_pre_hooks),
                len(m._forward_hooks_with_kwargs),
                len(m._forward_pre_hooks_with_kwargs),
                len(m._forward_hooks_always_called),
            )
            for m in model.modules()
        ],
        "grads": [p.grad for p in model.parameters()],
    }


def assert_unchanged(before: dict[str, object], model: nn.Module) -> None:
    after = snapshot(model)
    assert after["training"] == before["training"]
    assert after["dicts"] == before["dicts"]
    assert after["hooks"] == before["hooks"]
    assert all(g is None for g in after["grads"])  # type: ignore[attr-defined]
    state_before, state_after = before["state"], after["state"]
    assert isinstance(state_before, dict) and isinstance(state_after, dict)
    assert state_before.keys() == state_after.keys()
    for key in state_before:
        assert torch.equal(state_before[key], state_after[key]), key


def test_model_in_train_mode_is_left_as_it_was() -> None:
    model = small_net().train()
    model[1].eval()  # a mixed state must come back mixed
    before = snapshot(model)
    report = convprof.profile(model, torch.randn(2, 3, 6, 6))
    assert_unchanged(before, model)
    assert model.training and not model[1].training
    assert report.total.params == SMALL_PARAMS
    assert report.total.macs == 2 * SMALL_MACS


def test_model_left_as_it_was_when_forward_raises() -> None:
    model = small_net().train()
    before = snapshot(model)
    with pytest.raises(convprof.ForwardError) as info:
        convprof.profile(model, torch.randn(2, 3, 7, 7))  # Linear expects 288 features
    assert_unchanged(before, model)
    message = str(info.value)
    assert "'5' (Linear)" in message and "2x392" in message
    assert isinstance(info.value.__cause__, RuntimeError)


class Counting(nn.Module):
    """Mutates a buffer in forward even in eval: convprof must put it back."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += 1
        return x


def test_mutated_buffers_are_restored() -> None:
    model = Counting()
    convprof.profile(model, torch.randn(2))
    assert model.seen.item() == 0


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_counts_do_not_depend_on_mode_grad_or_dtype(grad: bool, training: bool, dtype: torch.dtype) -> None:
    model = small_net().to(dtype).train(training)
    with torch.set_grad_enabled(grad):
        report = convprof.profile(model, torch.randn(1, 3, 6, 6, dtype=dtype))
    assert (report.total.params, report.total.macs) == (SMALL_PARAMS, SMALL_MACS)


def test_wrong_argument_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got function"):
        convprof.profile(small_net, torch.randn(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"args must be a Tensor or a tuple of positional inputs, got list"):
        convprof.profile(small_net(), [torch.randn(1, 3, 6, 6)])
    with pytest.raises(TypeError, match=r"kwargs must be a dict"):
        convprof.profile(small_net(), torch.randn(1, 3, 6, 6), kwargs=[1])  # type: ignore[arg-type]


class Tied(nn.Module):
    """An embedding tied to the output projection, and one block called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.block = nn.Linear(4, 4, bias=False)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
        self.unused = nn.Linear(3, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.block(self.embed(ids))))


def test_tied_weights_shared_calls_and_unused_modules() -> None:
    model = Tied()
    report = convprof.profile(model, torch.tensor([[1, 2, 3]]))
    rows = {layer.name: layer for layer in report.layers}
    assert rows["block"].calls == 2
    assert rows["block"].macs == 2 * (3 * 4 * 4)
    assert rows["embed"].params == 10 * 4
    assert rows["head"].params == 0  # the tied weight was counted at 'embed', which ran first
    assert rows["head"].macs == 3 * 4 * 10
    assert (rows["unused"].calls, rows["unused"].params) == (0, 3 * 3 + 3)
    assert report.total.params == sum(p.numel() for p in model.parameters()) == 40 + 16 + 12
    assert [layer.name for layer in report.layers] == ["", "embed", "block", "head", "unused"]


class Keywords(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor, *, scale: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * scale


def test_keyword_inputs() -> None:
    report = convprof.profile(Keywords(), torch.randn(5, 6), kwargs={"scale": torch.ones(1)})
    assert report.total.macs == 5 * 6 * 2
    assert report.inputs == ((5, 6), (1,))


class Spectral(nn.Module):
    """A linear solve: an operator with no formula (FFTs have one)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(2 * torch.eye(x.shape[-1]), x.unsqueeze(-1)).squeeze(-1)


def test_unexplained_operator_is_reported_not_zeroed() -> None:
    model = nn.Sequential(nn.Linear(8, 8, bias=False), Spectral())
    report = convprof.profile(model, torch.randn(2, 8))
    assert not report.complete
    (missing,) = report.unexplained
    assert missing.op.startswith("aten._linalg_solve_ex")
    assert missing.layers == ("1",)
    assert report.total.macs == 2 * 8 * 8  # what is known; the footer says what is not
    assert "Not counted" in convprof.render(report) and "aten._linalg_solve_ex" in convprof.render(report)


class MyAttention(nn.Module):
    """A user module type with its own formula, and a subclass that inherits it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(x).abs()


class MyAttentionV2(MyAttention):
    pass


def test_registered_module_formula_applies_to_subclasses() -> None:
    @convprof.register(MyAttention)
    def cost(call: ModuleCall) -> int:
        (_, x), *_ = call.inputs
        return 5 * x.numel

    try:
        report = convprof.profile(nn.Sequential(MyAttentionV2()), torch.randn(2, 8))
    finally:
        from convprof.count.formulas.registry import _MODULE_FORMULAS, _RESOLVED

        del _MODULE_FORMULAS[MyAttention]
        _RESOLVED.clear()
    assert report.complete
    assert report.total.macs == 5 * 16


def test_deep_copy_of_model_profiles_the_same() -> None:
    model = small_net()
    clone = copy.deepcopy(model)
    assert (
        convprof.profile(model, torch.randn(1, 3, 6, 6)).total
        == convprof.profile(clone, torch.randn(1, 3, 6, 6)).total
    )
