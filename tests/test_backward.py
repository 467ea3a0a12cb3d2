"""The backward pass (``profile(backward=True)``): per-layer gradient MACs from the operators
that run in ``loss.backward()``.

Oracles: hand arithmetic written out below (every product of a forward convolution or matmul
is met once more in dX and once more in dW; attention's gradient is four products), and
PyTorch's ``FlopCounterMode`` over the same forward and backward on meta, with its
convolution-backward formula corrected for groups as pytorch/pytorch#183405 does (it counts
dW of a grouped convolution ``groups`` times: 3x3 depthwise on 6 channels, 1x6x8x8 ->
forward 3,888 MACs, FlopCounterMode's backward 27,216 instead of 7,776).
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.modules import module as module_globals
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

import convprof
from convprof.ci.budget import Budget, BudgetExceeded, checks
from convprof.cli import main
from convprof.models.torchvision import torchvision_model
from convprof.record.errors import ForwardError
from convprof.report import Report

aten = torch.ops.aten


def _swap(shape: Any) -> list[int]:
    return [shape[1], shape[0], *shape[2:]]


def _conv_backward_per_group(
    grad_out: Any, x: Any, w: Any, _bias: Any, _stride: Any, _padding: Any, _dilation: Any,
    transposed: bool, _output_padding: Any, groups: int, mask: Any, out_shape: Any = None, **_: Any,
) -> int:  # fmt: skip
    """FlopCounterMode's own convolution_backward formula, dW divided by groups."""
    flops = 0
    if mask[0]:
        flops += conv_flop_count(grad_out, w, out_shape[0], not transposed)
    if mask[1]:
        first, second = (grad_out, x) if transposed else (x, grad_out)
        flops += conv_flop_count(_swap(first), _swap(second), _swap(out_shape[1]), False) // groups
    return flops


def _sum_outputs(output: Any) -> torch.Tensor:
    parts = [t.sum() for t in tree_leaves(output) if isinstance(t, torch.Tensor) and t.requires_grad]
    return sum(parts[1:], parts[0])


def flop_counter_train_macs(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None = None,
    loss: Callable[[Any], torch.Tensor] = _sum_outputs,
) -> int:
    """Forward + backward MACs by FlopCounterMode over a meta copy of the model, in eval mode."""
    meta = copy.deepcopy(model).to("meta").eval()

    def to_meta(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        moved = t.detach().to("meta")
        return moved.requires_grad_() if t.requires_grad else moved

    meta_args, meta_kwargs = tree_map(to_meta, (args, kwargs or {}))
    mapping = {aten.convolution_backward: _conv_backward_per_group}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        loss(meta(*meta_args, **meta_kwargs)).backward()
    return counter.get_total_flops() // 2


def rows(report: Report) -> dict[str, tuple[int, int, int]]:
    """Leaf rows as (forward, dX, dW) MACs."""
    return {
        layer.name: (layer.macs, layer.grad_input_macs, layer.grad_weight_macs)
        for layer in report.layers
        if not layer.has_children
    }


# --- hand arithmetic: the tutorial's example, input 1x6x4x4, 2x2 kernels, output 3x3 ----------

SEED = torch.zeros(1, 6, 4, 4)


@pytest.mark.parametrize("compute", [True, False])
@pytest.mark.parametrize(
    ("groups", "forward"),
    [
        (1, 10 * 9 * 6 * 4),  # 10 outputs x 9 positions x (6 channels x 4 taps) = 2,160
        (2, 10 * 9 * 3 * 4),  # each output sees 3 channels: 1,080
    ],
)
def test_seed_conv_gradients_equal_the_forward(groups: int, forward: int, compute: bool) -> None:
    conv = nn.Conv2d(6, 10, 2, groups=groups, bias=False)
    report = convprof.profile(conv, SEED, backward=True, compute=compute)
    # the input does not require grad: only dW runs, one product per forward product
    assert (report.total.macs, report.total.grad_input_macs, report.total.grad_weight_macs) == (
        forward,
        0,
        forward,
    )
    wanted = SEED.clone().requires_grad_()
    report = convprof.profile(conv, wanted, backward=True, compute=compute)
    assert (report.total.grad_input_macs, report.total.grad_weight_macs) == (forward, forward)


@pytest.mark.parametrize("compute", [True, False])
def test_seed_separable_block(compute: bool) -> None:
    block = nn.Sequential(nn.Conv2d(6, 6, 2, groups=6, bias=False), nn.Conv2d(6, 10, 1, bias=False))
    report = convprof.profile(block, SEED, backward=True, compute=compute)
    depthwise = 6 * 9 * 4  # 216: 6 channels x 9 positions x 4 taps
    pointwise = 10 * 9 * 6  # 540
    # the depthwise conv's input needs no gradient; the pointwise conv's input (the depthwise
    # output) does, so that the depthwise weights get theirs
    assert rows(report) == {"0": (depthwise, 0, depthwise), "1": (pointwise, pointwise, pointwise)}
    assert report.total.train_macs == 3 * (depthwise + pointwise) - depthwise == 2_052


def test_linear_and_frozen_weights() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.zeros(5, 4)
    report = convprof.profile(model, x, backward=True)
    assert rows(report)["0"] == (5 * 4 * 3, 0, 5 * 4 * 3)  # 60
    assert rows(report)["2"] == (5 * 3 * 2, 5 * 3 * 2, 5 * 3 * 2)  # 30
    model[2].weight.requires_grad_(False)
    report = convprof.profile(model, x, backward=True)
    # a frozen weight gets no dW; its layer's dX still runs for the trainable layer before it
    assert rows(report)["2"] == (30, 30, 0)
    model[0].weight.requires_grad_(False)
    report = convprof.profile(model, x, backward=True)
    # only biases train: their gradients are sums (free), and nothing multiplies
    assert report.total.backward_macs == 30  # layer 2's dX, on the way to layer 0's bias


class Attention(nn.Module):
    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return nn.functional.scaled_dot_product_attention(q, k, v)


@pytest.mark.parametrize("compute", [True, False])
def test_attention_gradient_is_four_products(compute: bool) -> None:
    """On CPU the fused kernel runs (and recomputes the scores), on meta the unfused bmm path:
    both count the same four products."""
    model = Attention()
    x = torch.randn(1, 5, 8)
    report = convprof.profile(model, x, backward=True, compute=compute)
    attention = 2 * 5 * 5 * (4 + 4)  # heads x Lq x Lk x (D + Dv) = 400
    projection = 5 * 8 * 24  # 960
    assert report.total.macs == projection + attention
    # dQ, dK, dV, dP: 2 x the attention forward, all with respect to activations; dW of qkv
    root = report.layers[0]
    assert (root.name, root.macs, root.grad_input_macs, root.grad_weight_macs) == (
        "",
        attention,
        2 * attention,
        0,
    )
    assert rows(report)["qkv"] == (projection, 0, projection)


@pytest.mark.parametrize("compute", [True, False])
def test_multihead_attention_splits_its_own_weights(compute: bool) -> None:
    """MultiheadAttention multiplies by its in_proj weight and by out_proj's (a child that
    never runs itself): both are weight gradients of its row."""
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(1, 5, 8, requires_grad=True)
    report = convprof.profile(mha, (x, x, x), backward=True, compute=compute)
    in_proj, out_proj, attention = 5 * 8 * 24, 5 * 8 * 8, 2 * 5 * 5 * (4 + 4)
    assert report.total.macs == in_proj + out_proj + attention == 1_680
    assert report.total.grad_weight_macs == in_proj + out_proj
    assert report.total.grad_input_macs == in_proj + out_proj + 2 * attention
    assert report.total.train_macs == flop_counter_train_macs(mha, (x, x, x))


# --- FlopCounterMode on meta as the oracle --------------------------------------------------


# Attention's forward MACs, products of activations only (heads x windows x Lq x Lk x (D + Dv)).
# ViT-B/32: 12 layers x 12 heads, 50 tokens, 64 per head. Swin-T: 7x7 windows (49 tokens), 32
# per head; stages of 2, 2, 6, 2 blocks with 3, 6, 12, 24 heads over 64, 16, 4, 1 windows.
WINDOW = 49 * 49 * (32 + 32)
ATTENTION = {
    "vit_b_32": 12 * 12 * 50 * 50 * (64 + 64),
    "swin_t": (2 * 3 * 64 + 2 * 6 * 16 + 6 * 12 * 4 + 2 * 24 * 1) * WINDOW,
}


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "mobilenet_v3_small",
        "efficientnet_b0",
        "regnet_y_400mf",
        "convnext_tiny",
        "vit_b_32",
        "swin_t",
        "googlenet",
    ],
)
def test_torchvision_training_step_equals_flop_counter(name: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name)
    x = torch.zeros(1, 3, 224, 224)
    report = convprof.profile(model, x, backward=True, compute=False)
    assert report.complete, report.unexplained
    assert report.total.train_macs == flop_counter_train_macs(model, (x,))
    # every weight of these models trains, so dW repeats every forward product with a weight
    assert report.total.grad_weight_macs == report.total.macs - ATTENTION.get(name, 0)


@pytest.mark.slow
@pytest.mark.parametrize("name", torchvision.models.list_models(module=torchvision.models))
def test_every_torchvision_training_step_equals_flop_counter(name: str) -> None:
    torch.manual_seed(0)
    loaded = torchvision_model(name)
    x = torch.zeros(loaded.inputs[0].shape)
    report = convprof.profile(loaded.model, x, backward=True, compute=False)
    assert report.complete, report.unexplained
    assert report.total.train_macs == flop_counter_train_macs(loaded.model, (x,))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vit_b_32"])
def test_computing_pass_counts_what_zero_compute_counts(name: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name)
    x = torch.randn(1, 3, 224, 224) if name == "vit_b_32" else torch.randn(1, 3, 96, 96)
    real = convprof.profile(model, x, backward=True, compute=True)
    zero = convprof.profile(model, x, backward=True, compute=False)
    assert rows(real) == rows(zero)
    assert real.total == zero.total


def test_every_conv_and_linear_row_follows_the_rule() -> None:
    """Per layer, in ResNet-18: dW = forward MACs for each trainable conv and linear layer,
    dX = forward MACs except for the first layer, whose input needs no gradient."""
    report = convprof.profile(torchvision.models.resnet18(), torch.zeros(2, 3, 64, 64), backward=True)
    for layer in report.layers:
        if layer.type in ("Conv2d", "Linear"):
            assert layer.grad_weight_macs == layer.macs > 0, layer.name
            assert layer.grad_input_macs == (0 if layer.name == "conv1" else layer.macs), layer.name
        else:
            assert layer.backward_macs == 0, layer.name


def test_frozen_backbone_equals_flop_counter() -> None:
    model = torchvision.models.resnet18()
    x = torch.zeros(1, 3, 64, 64)
    for part in (model.conv1, model.layer1, model.layer2):
        part.requires_grad_(False)
    report = convprof.profile(model, x, backward=True)
    # bn1's scale and shift still train: their gradient flows back through layer2 and layer1
    assert report.inclusive()["layer1"].grad_input_macs == report.inclusive()["layer1"].macs > 0
    assert report.inclusive()["layer1"].grad_weight_macs == 0
    model.bn1.requires_grad_(False)
    report = convprof.profile(model, x, backward=True)
    inclusive = report.inclusive()
    assert inclusive["layer1"].backward_macs == inclusive["layer2"].backward_macs == 0
    # layer3's first conv needs dW but its input (from frozen layer2) needs no dX
    assert rows(report)["layer3.0.conv1"][1] == 0
    assert report.total.train_macs == flop_counter_train_macs(model, (x,))


def test_a_loss_of_the_users_choice() -> None:
    model = torchvision.models.resnet18()
    x = torch.zeros(1, 3, 64, 64)

    def first_logit(out: torch.Tensor) -> torch.Tensor:
        return out[:, 0].sum()

    report = convprof.profile(model, x, backward=True, loss=first_logit)
    # only one output column has a gradient, but fc's mm products still run over all of them
    assert report.total.train_macs == flop_counter_train_macs(model, (x,), loss=first_logit)


sys.path.insert(0, str(Path(__file__).parent))
transformers: Any
try:  # the dev extra installs transformers; without it only the tests that need it skip
    import transformers
except ImportError:
    transformers = None
    CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {}
else:
    from test_language import CONFIGS
needs_transformers = pytest.mark.skipif(transformers is None, reason="transformers is not installed")


def _feeds(name: str) -> dict[str, torch.Tensor]:
    if name == "whisper":
        return {"input_features": torch.randn(2, 16, 32), "decoder_input_ids": torch.randint(0, 100, (2, 5))}
    if name == "videomae":  # 4 frames of 32 x 32
        return {"pixel_values": torch.randn(2, 4, 3, 32, 32)}
    if name == "ast":  # 32 frames of 16 mel bins
        return {"input_values": torch.randn(2, 32, 16)}
    feeds = {"input_ids": torch.randint(0, 100, (2, 16))}
    if name == "t5":
        feeds["decoder_input_ids"] = torch.randint(0, 100, (2, 5))
    return feeds


@pytest.mark.parametrize("compute", [True, False])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_transformers_training_step_equals_flop_counter(name: str, compute: bool) -> None:
    cls, settings = CONFIGS[name]
    config = getattr(transformers, cls)(**settings)
    torch.manual_seed(0)
    model = getattr(transformers, config.architectures[0])(config)
    feeds = _feeds(name)
    report = convprof.profile(model, (), feeds, backward=True, compute=compute)
    assert report.complete, report.unexplained
    assert report.total.train_macs == flop_counter_train_macs(model, (), feeds)
    assert report.total.grad_weight_macs > 0 and report.total.grad_input_macs > 0


# --- the model is left as it was ---------------------------------------------------------------


def _hooks() -> list[int]:
    return [
        len(table)
        for table in (
            module_globals._global_forward_hooks,
            module_globals._global_forward_pre_hooks,
            module_globals._global_forward_hooks_with_kwargs,
            module_globals._global_forward_hooks_always_called,
        )
    ]


@pytest.mark.parametrize("compute", [True, False])
def test_model_left_as_it_was(compute: bool) -> None:
    model = torchvision.models.resnet18().train()
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.layer1.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hooks()
    convprof.profile(model, torch.randn(2, 3, 64, 64), backward=True, compute=compute)
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.layer1.parameters()] == [False] * 12
    assert all(p.grad is None for name, p in model.named_parameters() if not name.startswith("fc.weight"))
    assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight))  # not accumulated into
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    assert _hooks() == hooks


class Fails(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no gradient here")


class Custom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Fails.apply(x)  # type: ignore[no-any-return]


def test_a_failing_backward_names_the_module_and_leaves_nothing() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Custom(), nn.Conv2d(4, 4, 3))
    hooks = _hooks()
    with pytest.raises(
        ForwardError,
        match=r"backward pass of Sequential failed in the gradient of module '1'.*no gradient here",
    ):
        convprof.profile(model, torch.zeros(1, 3, 8, 8), backward=True)
    assert _hooks() == hooks and all(p.grad is None for p in model.parameters())


def test_loss_errors_are_clear() -> None:
    model = nn.Linear(4, 3)
    x = torch.zeros(2, 4)
    with pytest.raises(TypeError, match=r"one element.*2x3"):
        convprof.profile(model, x, backward=True, loss=lambda out: out)
    with pytest.raises(TypeError, match="backward=True"):
        convprof.profile(model, x, loss=lambda out: out.sum())


def test_nothing_trainable_runs_no_backward() -> None:
    model = nn.Linear(4, 3).requires_grad_(False)
    report = convprof.profile(model, torch.zeros(2, 4), backward=True)
    assert report.backward and report.total.backward_macs == 0


# --- budgets, report, command line ---------------------------------------------------------------


def test_max_train_macs_budget() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.zeros(5, 4)
    # forward 60 + 30, backward dW 60 + 30 and dX 30: 210
    report = convprof.assert_budget(model, x, max_train_macs=210)
    assert report.total.train_macs == 210
    with pytest.raises(BudgetExceeded, match="train_macs 210 > limit 209"):
        convprof.assert_budget(model, x, max_train_macs=209)
    with pytest.raises(BudgetExceeded, match=r"layer '2'.*train_macs 90 > limit 89"):
        convprof.assert_budget(model, x, layers={"2": {"max_train_macs": 89}})
    without = convprof.profile(model, x)
    with pytest.raises(ValueError, match="needs a backward pass"):
        checks(without, Budget.parse(max_train_macs="1G"))


def test_report_round_trips_with_backward() -> None:
    report = convprof.profile(
        nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), torch.zeros(5, 4), backward=True
    )
    data = json.loads(json.dumps(report.to_dict()))
    assert data["total"]["train_macs"] == 60 + 30 + 60 + 30 + 30
    assert Report.from_dict(data) == report


def test_cli_backward(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["profile", "torchvision:resnet18", "--input", "1,3,64,64", "--backward", "--format", "json"])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["backward"] and data["total"]["grad_weight_macs"] == data["total"]["macs"]
    assert (
        main(["profile", "torchvision:resnet18", "--input", "1,3,64,64", "--backward", "--depth", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert "Bwd dX MACs" in out and "Train step:" in out
    assert main(["profile", "torchvision:resnet18", "--columns", "name,train"]) == 2
    assert "needs a backward pass (--backward)" in capsys.readouterr().err


def test_check_with_a_train_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text(
        '[[tool.convprof.models]]\nname = "r18"\nmodel = "torchvision:resnet18"\n'
        'input = "1,3,64,64"\nmax_train_macs = "100M"\n'
    )
    assert main(["check", "--config", str(config)]) == 1
    assert "train_macs" in capsys.readouterr().out


# --- other families ----------------------------------------------------------------------------


def test_lstm_on_cpu_counts_what_onednn_computes() -> None:
    """On CPU, oneDNN runs each LSTM layer's backward in one kernel that computes every
    gradient: dX, dh (the forward's products again) and dW (once more), so the backward is
    2 x the forward exactly. A zero-compute pass runs the per-step products, which skip the
    first layer's input and the initial state (FlopCounterMode on meta agrees)."""
    from test_rnn import CASES

    build, shape, forward = CASES["lstm 2 layers"]
    model, x = build(), torch.randn(*shape)
    real = convprof.profile(model, x, backward=True, compute=True)
    assert real.complete and real.total.macs == forward
    assert (real.total.grad_input_macs, real.total.grad_weight_macs) == (forward, forward)
    zero = convprof.profile(model, x, backward=True, compute=False)
    assert zero.total.train_macs == flop_counter_train_macs(model, (x,))
    # 5 steps x batch 3, I = 8, H = 16: the meta pass skips the first layer's dX (15 x 64 x 8)
    # and both layers' dh for the initial state (2 x 3 x 64 x 16)
    assert real.total.grad_input_macs - zero.total.grad_input_macs == 15 * 64 * 8 + 2 * 3 * 64 * 16


@pytest.mark.parametrize("compute", [True, False])
def test_weight_norm_is_complete(compute: bool) -> None:
    conv = nn.utils.parametrizations.weight_norm(nn.Conv2d(6, 10, 2, bias=False))
    report = convprof.profile(conv, SEED, backward=True, compute=compute)
    assert report.complete, report.unexplained
    assert (report.total.macs, report.total.grad_weight_macs) == (2_160, 2_160)


def test_torchscript_needs_a_computing_pass() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    x = torch.randn(2, 3, 8, 8)
    eager = convprof.profile(model, x, backward=True)
    scripted = torch.jit.script(model)
    assert convprof.profile(scripted, x, backward=True).total.train_macs == eager.total.train_macs
    auto = convprof.profile(scripted, x, backward=True, compute="auto").total
    assert (auto.grad_input_macs, auto.grad_weight_macs) == (
        eager.total.grad_input_macs,
        eager.total.grad_weight_macs,
    )
    with pytest.raises(convprof.ValuesNeeded, match="TorchScript"):
        convprof.profile(scripted, x, backward=True, compute=False)


@needs_transformers
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mixture_of_experts(dtype: torch.dtype) -> None:
    """Grouped products: dA = dY B^T and dB = A^T dY are grouped products of the forward's
    size, so with every weight trainable and activations needing gradients all the way down
    (the embedding trains) the step is exactly 3x the forward. PyTorch's meta kernel for
    _grouped_mm refuses float32, which the CPU and CUDA kernels run: zero compute takes the
    stand-in, for the weight gradient's layout (2-D x 2-D) too. FlopCounterMode has no formula
    for _grouped_mm at all."""
    import hf_models

    _, _, build, inputs = next(e for e in hf_models.entries() if e[0] == "mixtral")
    torch.manual_seed(0)
    model = build().to(dtype)
    args, kwargs = inputs()
    real = convprof.profile(model, args, kwargs, backward=True, compute=True)
    zero = convprof.profile(model, args, kwargs, backward=True, compute=False)
    assert real.complete and zero.complete
    assert rows(real) == rows(zero)
    assert real.total.train_macs == 3 * real.total.macs


class StandardizedConv(nn.Conv2d):
    """Weight standardization through a training-mode batch norm over the weight, as timm's
    ScaledStdConv2d (NFNet) does: its backward reads the batch norm's saved statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = self.weight.reshape(1, self.out_channels, -1)
        weight = nn.functional.batch_norm(flat, None, None, training=True, momentum=0.0).reshape_as(
            self.weight
        )
        return nn.functional.conv2d(x, weight, self.bias, self.stride, self.padding)


def test_standardized_weights_in_zero_compute() -> None:
    model = nn.Sequential(StandardizedConv(6, 10, 2, bias=False))
    real = convprof.profile(model, SEED, backward=True, compute=True)
    zero = convprof.profile(model, SEED, backward=True, compute=False)  # raised before the fix
    assert real.total == zero.total
    assert (zero.total.macs, zero.total.grad_weight_macs) == (2_160, 2_160)


@needs_transformers
def test_language_model_training_per_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_language import save

    monkeypatch.chdir(tmp_path)
    config = save(tmp_path, "llama")
    assert main(["profile", "transformers:llama", "--backward", "--input", "1,8", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    tokens, total = data["tokens"], data["total"]
    assert total["train_macs"] == flop_counter_train_macs(
        getattr(transformers, config.architectures[0])(config),
        (),
        {"input_ids": torch.zeros(1, 8, dtype=torch.long)},
    )
    assert tokens["train_macs_per_token"] == total["train_macs"] / 8
    assert tokens["train_counted_vs_rule"] == pytest.approx(
        tokens["train_macs_per_token"] / (3 * tokens["rule_macs_per_token"])
    )
    assert main(["profile", "transformers:llama", "--backward", "--input", "1,8"]) == 0
    assert "Training:     " in capsys.readouterr().out


class Opaque:
    """An output convprof cannot look into (not a tensor, container or registered pytree)."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


class ReturnsOpaque(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> Opaque:
        return Opaque(self.fc(x) @ self.fc.weight)  # the root's own product: 5 x 3 x 4 = 60


@pytest.mark.parametrize("compute", [True, False])
def test_an_opaque_output_needs_a_loss_and_is_then_counted(compute: bool) -> None:
    model, x = ReturnsOpaque(), torch.zeros(5, 4)
    with pytest.raises(TypeError, match="pass loss="):
        convprof.profile(model, x, backward=True, compute=compute)
    report = convprof.profile(model, x, backward=True, compute=compute, loss=lambda out: out.logits.sum())
    # fc: forward 60, dW 60, no dX (x needs none). The root's product y @ W: forward 60; its
    # gradients, dY = G W^T (60, reads the weight: dX) and dW = Y^T G (60, shaped like W)
    assert rows(report)["fc"] == (60, 0, 60)
    root = report.layers[0]
    assert (root.macs, root.grad_input_macs, root.grad_weight_macs) == (60, 60, 60)
    assert report.total.train_macs == flop_counter_train_macs(model, (x,), loss=lambda out: out.logits.sum())


def test_check_holds_the_training_step_to_the_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pyproject.toml"
    entry = '[[tool.convprof.models]]\nname = "r18"\nmodel = "torchvision:resnet18"\ninput = "1,3,64,64"\n'
    config.write_text(entry + 'max_train_macs = "1G"\n')
    baseline = tmp_path / "baseline.json"
    assert main(["check", "--config", str(config), "--write-baseline", str(baseline)]) == 0
    capsys.readouterr()
    assert main(["check", "--config", str(config), "--baseline", str(baseline)]) == 0
    out = capsys.readouterr().out
    # the baseline holds the training step, FlopCounterMode's count on meta
    data = json.loads(baseline.read_text())["models"]["r18"]
    assert data["backward"] and data["total"]["train_macs"] == flop_counter_train_macs(
        torchvision.models.resnet18(), (torch.zeros(1, 3, 64, 64),)
    )
    assert "train_macs vs baseline" in out
    data["total"]["grad_weight_macs"] = "many"
    baseline.write_text(json.dumps({"schema": 1, "models": {"r18": data}}))
    assert main(["check", "--config", str(config), "--baseline", str(baseline)]) == 2
    assert "grad_weight_macs must be a non-negative integer" in capsys.readouterr().err


def test_diff_compares_the_training_step_only_when_both_sides_counted_one() -> None:
    from convprof.report.diff import compare

    small, large = nn.Sequential(nn.Linear(4, 3)), nn.Sequential(nn.Linear(4, 6))
    x = torch.zeros(5, 4)
    old, new = convprof.profile(small, x, backward=True), convprof.profile(large, x, backward=True)
    (both,) = compare({"m": old}, {"m": new})
    # forward 5 x 4 x 3 = 60 -> 120; the step adds dW only (the input needs no dX): 120 -> 240
    assert both.metric("train_macs") == (120, 240)
    assert both.exceeded(0.5) == ("params", "macs", "flops", "train_macs")
    (forward_only,) = compare({"m": old}, {"m": convprof.profile(large, x)})
    assert forward_only.exceeded(0.5) == ("params", "macs", "flops")  # no train_macs to compare


class Mix(nn.Module):
    """A trainable mixing matrix applied with einsum, as a user's own layer would."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.randn(16, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bsi,io->bso", x, self.mix)


@pytest.mark.parametrize("compute", [True, False])
def test_a_parameters_gradient_is_dw_wherever_it_is_used(compute: bool) -> None:
    # forward 2 x 5 tokens x 16 x 32 = 5,120 MACs; dW = X^T dY and dX = dY W^T cost as much
    # each. einsum runs dW as a batched product of one, (1, 16, 32), which once read as dX.
    x = torch.randn(2, 5, 16, requires_grad=True)
    report = convprof.profile(Mix(), x, backward=True, compute=compute)
    assert report.total.macs == 2 * 5 * 16 * 32 == 5_120
    assert (report.total.grad_input_macs, report.total.grad_weight_macs) == (5_120, 5_120)
