"""Module stand-ins: in a zero-compute pass a built-in layer's forward is skipped and its output
made directly (stand_ins.modules.module_shortcut_for). Each stand-in must give what the layer's own
forward gives on meta (shape, dtype, strides, and the input itself where the forward returns
it), decline what it cannot know, and leave the counts and the model exactly as without it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import convprof
from convprof.record.stand_ins.modules import _MODULE_TABLE, module_shortcut_for
from tests.test_behaviour import assert_unchanged, snapshot


def _set(module: nn.Module, **attributes: Any) -> nn.Module:
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def _cl(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.empty(shape, device="meta").to(memory_format=torch.channels_last)


# (module, input) pairs; inputs on meta, like a zero-compute pass's
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor]]] = {
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, stride=2), lambda: torch.empty(2, 4, 9)),
    "conv2d groups dilation": (
        lambda: nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=4, bias=False),
        lambda: torch.empty(1, 8, 7, 7),
    ),
    "conv2d depthwise stride": (lambda: nn.Conv2d(6, 6, 3, 2, 1, groups=6), lambda: torch.empty(2, 6, 9, 9)),
    "conv2d stride an int": (lambda: _set(nn.Conv2d(3, 4, 3), stride=2), lambda: torch.empty(1, 3, 9, 9)),
    "conv3d": (lambda: nn.Conv3d(2, 4, (1, 3, 3), padding=(0, 1, 1)), lambda: torch.empty(1, 2, 3, 5, 5)),
    "conv transpose1d": (lambda: nn.ConvTranspose1d(4, 2, 4, stride=2), lambda: torch.empty(1, 4, 5)),
    "conv transpose2d output_padding": (
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
        lambda: torch.empty(2, 4, 5, 5),
    ),
    "conv transpose3d": (lambda: nn.ConvTranspose3d(2, 2, 2, stride=2), lambda: torch.empty(1, 2, 2, 3, 3)),
    "batch norm 1d, 2-D": (lambda: nn.BatchNorm1d(5), lambda: torch.empty(3, 5)),
    "batch norm 1d, 3-D": (lambda: nn.BatchNorm1d(5, affine=False), lambda: torch.empty(3, 5, 7)),
    "batch norm 2d": (lambda: nn.BatchNorm2d(4), lambda: torch.empty(2, 4, 3, 3)),
    "batch norm 2d channels last": (lambda: nn.BatchNorm2d(4), lambda: _cl((2, 4, 3, 3))),
    "batch norm 3d": (lambda: nn.BatchNorm3d(2), lambda: torch.empty(1, 2, 2, 3, 3)),
    "linear 1-D": (lambda: nn.Linear(4, 3), lambda: torch.empty(4)),
    "linear 3-D, no bias": (lambda: nn.Linear(4, 3, bias=False), lambda: torch.empty(2, 5, 4)),
    "relu in place": (lambda: nn.ReLU(inplace=True), lambda: torch.empty(2, 3)),
    "relu": (lambda: nn.ReLU(), lambda: _cl((1, 3, 2, 2))),
    "relu6 in place": (lambda: nn.ReLU6(inplace=True), lambda: torch.empty(2, 3)),
    "hardtanh": (lambda: nn.Hardtanh(-2.0, 2.0), lambda: torch.empty(2, 3)),
    "hardswish": (lambda: nn.Hardswish(), lambda: torch.empty(2, 3)),
    "hardswish in place": (lambda: nn.Hardswish(inplace=True), lambda: torch.empty(2, 3)),
    "hardsigmoid": (lambda: nn.Hardsigmoid(), lambda: torch.empty(2, 3)),
    "silu in place": (lambda: nn.SiLU(inplace=True), lambda: torch.empty(2, 3)),
    "gelu tanh": (lambda: nn.GELU("tanh"), lambda: torch.empty(2, 3, dtype=torch.bfloat16)),
    "sigmoid": (lambda: nn.Sigmoid(), lambda: torch.empty(2, 3)),
    "tanh": (lambda: nn.Tanh(), lambda: torch.empty(2, 3)),
    "leaky relu": (lambda: nn.LeakyReLU(0.2), lambda: torch.empty(2, 3)),
    "elu in place": (lambda: nn.ELU(inplace=True), lambda: torch.empty(2, 3)),
    "mish": (lambda: nn.Mish(), lambda: torch.empty(2, 3)),
    "adaptive avg pool 1d": (lambda: nn.AdaptiveAvgPool1d(3), lambda: torch.empty(2, 4, 7)),
    "adaptive avg pool 2d to 1x1": (lambda: nn.AdaptiveAvgPool2d(1), lambda: torch.empty(2, 8, 7, 7)),
    "adaptive avg pool 2d, None keeps a size": (
        lambda: nn.AdaptiveAvgPool2d((None, 2)),
        lambda: torch.empty(1, 3, 5, 6),
    ),
    "adaptive avg pool 2d, larger": (lambda: nn.AdaptiveAvgPool2d((4, 9)), lambda: torch.empty(1, 3, 2, 3)),
    "adaptive avg pool 3d": (lambda: nn.AdaptiveAvgPool3d((1, 2, 3)), lambda: torch.empty(1, 2, 3, 4, 5)),
    "identity": (lambda: nn.Identity(), lambda: torch.empty(2, 3)),
    "dropout": (lambda: nn.Dropout(0.5), lambda: torch.empty(2, 3)),
}


def _meta_case(name: str) -> tuple[nn.Module, torch.Tensor]:
    make_module, make_input = CASES[name]
    x = make_input()
    return make_module().to("meta").eval(), (x if x.is_meta else x.to("meta"))


@pytest.mark.parametrize("name", list(CASES))
def test_module_stand_ins_give_what_the_forward_gives_on_meta(name: str) -> None:
    module, x = _meta_case(name)
    shortcut = module_shortcut_for(type(module))
    assert shortcut is not None
    ours = shortcut(module, (x,))
    theirs = module(x)
    assert ours is not None
    assert (ours.shape, ours.dtype, ours.stride()) == (theirs.shape, theirs.dtype, theirs.stride())
    assert (ours is x) == (theirs is x)  # in place, or the input passed through


def test_every_module_stand_in_is_checked_above() -> None:
    checked = {type(_meta_case(name)[0]) for name in CASES}
    assert set(_MODULE_TABLE) <= checked


DECLINED: dict[str, tuple[nn.Module, torch.Tensor]] = {
    # what the stand-ins cannot know goes to the real forward on meta
    "conv padding same": (nn.Conv2d(3, 4, 3, padding="same"), torch.empty(1, 3, 5, 5)),
    "conv reflect padding": (nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), torch.empty(1, 3, 5, 5)),
    "conv unbatched": (nn.Conv2d(3, 4, 3), torch.empty(3, 5, 5)),
    "batch norm batch statistics": (nn.BatchNorm2d(3, track_running_stats=False), torch.empty(2, 3, 4, 4)),
    "linear non-contiguous": (nn.Linear(4, 3), torch.empty(4, 2).t()),
    "relu on integers": (nn.ReLU(), torch.empty(2, 3, dtype=torch.int64)),
    "gelu bad approximation": (nn.GELU("fast"), torch.empty(2, 3)),
    # what PyTorch refuses, so that its kernel or the module says what is wrong
    "conv channels": (nn.Conv2d(3, 4, 3), torch.empty(1, 5, 5, 5)),
    "conv input too small": (nn.Conv2d(3, 4, 5), torch.empty(1, 3, 3, 3)),
    "conv stride of the wrong length": (_set(nn.Conv2d(3, 4, 3), stride=(1, 1, 1)), torch.empty(1, 3, 5, 5)),
    "conv dtype": (nn.Conv2d(3, 4, 3), torch.empty(1, 3, 5, 5, dtype=torch.float64)),
    "batch norm rank": (nn.BatchNorm2d(3), torch.empty(2, 3)),
    "batch norm channels": (nn.BatchNorm1d(3), torch.empty(2, 4)),
    "linear features": (nn.Linear(4, 3), torch.empty(2, 5)),
    "linear dtype": (nn.Linear(4, 3), torch.empty(2, 4, dtype=torch.float16)),
    "linear scalar": (nn.Linear(1, 3), torch.empty(())),
    "adaptive pool unbatched": (nn.AdaptiveAvgPool2d(1), torch.empty(3, 5, 5)),
    "adaptive pool channels last": (nn.AdaptiveAvgPool2d(2), _cl((1, 3, 5, 5))),
    "adaptive pool rank": (nn.AdaptiveAvgPool2d(1), torch.empty(1, 3, 5)),
    "adaptive pool output size 0": (nn.AdaptiveAvgPool2d(0), torch.empty(1, 3, 5, 5)),
    "adaptive pool empty input": (nn.AdaptiveAvgPool2d(1), torch.empty(1, 3, 0, 5)),
    "adaptive pool output size too long": (nn.AdaptiveAvgPool2d((1, 1, 1)), torch.empty(1, 3, 5, 5)),
}


def test_a_channels_last_conv_gives_what_the_cpu_gives() -> None:
    # PyTorch's meta kernel makes a contiguous output; the CPU kernel (the oracle) a
    # channels-last one, which later operators' paths and temporaries depend on
    conv = nn.Conv2d(3, 4, 3)
    real = conv(torch.randn(1, 3, 5, 5).to(memory_format=torch.channels_last))
    shortcut = module_shortcut_for(nn.Conv2d)
    assert shortcut is not None
    stand_in = shortcut(conv.to("meta"), (_cl((1, 3, 5, 5)).to("meta"),))
    assert stand_in is not None
    expected = ((1, 4, 3, 3), (36, 1, 12, 4))
    assert (stand_in.shape, stand_in.stride()) == (real.shape, real.stride()) == expected


@pytest.mark.parametrize("name", list(DECLINED))
def test_module_stand_ins_decline_what_they_cannot_know(name: str) -> None:
    module, x = DECLINED[name]
    module = module.to("meta").eval()
    shortcut = module_shortcut_for(type(module))
    assert shortcut is not None
    assert shortcut(module, (x.to("meta"),)) is None


def test_subclasses_and_wrapped_forwards_keep_their_own_forward() -> None:
    class Scaled(nn.Conv2d):  # a subclass may override forward: no stand-in
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x * 2)

    assert module_shortcut_for(Scaled) is None
    assert module_shortcut_for(nn.LazyConv2d) is None

    calls = []
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    real = model[0].forward

    def wrapped(x: torch.Tensor) -> torch.Tensor:  # as accelerate and others wrap a forward
        calls.append(x.shape)
        return real(x)

    model[0].forward = wrapped
    x = torch.randn(1, 3, 6, 6)
    assert convprof.profile(model, x, compute=False) == convprof.profile(model, x)
    assert len(calls) == 2  # the instance's own forward ran in both passes
    assert model[0].forward is wrapped

    # a patched helper: this conv pads by one before convolving, so its output is 6x6, not 4x4
    padded = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    conv_forward = padded[0]._conv_forward

    def padding_first(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return conv_forward(torch.nn.functional.pad(x, (1, 1, 1, 1)), weight, bias)

    padded[0]._conv_forward = padding_first
    report = convprof.profile(padded, x, compute=False)
    assert report == convprof.profile(padded, x)
    # conv 4 x 6x6 x 27 = 3,888 MACs, linear 144 x 2 = 288
    assert report.total.macs == 3888 + 288


def test_a_patched_class_keeps_its_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    # a tool that replaces Conv2d.forward for every conv (here: pad by one first, so a 3x3 conv
    # keeps the size): the stand-in would not do what it does
    real_forward = nn.Conv2d.forward

    def padding_first(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        return real_forward(self, torch.nn.functional.pad(x, (1, 1, 1, 1)))

    monkeypatch.setattr(nn.Conv2d, "forward", padding_first)
    assert module_shortcut_for(nn.Conv2d) is None
    # and had the patch come before convprof was imported: a method from outside PyTorch
    from convprof.record.stand_ins.modules import _from_pytorch, _own_methods

    assert not _from_pytorch(_own_methods(nn.Conv2d))
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    x = torch.randn(1, 3, 6, 6)
    report = convprof.profile(model, x, compute=False)
    assert report == convprof.profile(model, x)
    assert report.total.macs == 4 * 6 * 6 * 27 + 144 * 2  # the conv at 6x6 out, then the linear
    monkeypatch.undo()
    assert module_shortcut_for(nn.Conv2d) is not None


class _Direct(nn.Module):
    """Calls a child's forward directly: no module call, so the child's operators belong to
    the parent's row, and zero compute must run them to count them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv.forward(x).mean((2, 3))
        return self.fc(y) + self.fc.forward(y)


def test_a_forward_called_directly_is_counted_in_its_caller() -> None:
    model, x = _Direct(), torch.randn(2, 3, 6, 6)
    report = convprof.profile(model, x, compute=False)
    assert report == convprof.profile(model, x)
    # conv 2 x 4 x 4x4 outputs x 27 = 3,456 MACs and one fc call of 2 x 2 x 4 = 16 in the
    # root's row, the other fc call (16) in its own
    root = next(layer for layer in report.layers if layer.name == "")
    assert root.macs == 2 * 4 * 4 * 4 * 27 + 2 * 2 * 4
    assert report.total.macs == 3456 + 16 + 16


def test_model_left_as_it_was_also_when_a_later_layer_raises() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(5, 2))
    before = snapshot(model)
    with pytest.raises(convprof.ForwardError, match="module '3' \\(Linear\\)"):
        convprof.profile(model, torch.randn(1, 3, 5, 5), compute=False)
    assert_unchanged(before, model)
    assert all("forward" not in vars(m) for m in model.modules())


def test_zero_compute_with_stand_ins_counts_what_a_real_pass_counts() -> None:
    # every stand-in type in one network, with in-place layers and a residual that reads the
    # tensor an in-place activation wrote
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(inplace=True)
            )
            self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
            self.acts = nn.Sequential(nn.Hardswish(), nn.SiLU(inplace=True), nn.GELU(), nn.Dropout(0.1))
            self.head = nn.Sequential(nn.Identity(), nn.Linear(8, 5), nn.Tanh())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.stem(x)
            z = self.acts(self.up(y))
            return self.head(z.mean((2, 3)) + y.mean((2, 3)))

    model, x = Net(), torch.randn(2, 3, 8, 8)
    before = snapshot(model)
    shapes_only = convprof.profile(model, x, compute=False)
    assert_unchanged(before, model)
    assert shapes_only == convprof.profile(model, x)
    # conv 2 x 8 x 8x8 x 27 = 27,648; transposed 2 x 8 x 8x8 (input) x 8 x 4 = 32,768; linear 80
    assert shapes_only.total.macs == 27648 + 32768 + 80


def test_stand_ins_are_used_unless_another_mode_is_running(monkeypatch: pytest.MonkeyPatch) -> None:
    # the stand-in makes a layer's output, unless a mode the model pushed itself is on the
    # stack: that mode must see the layer's operators
    from convprof.record.stand_ins import modules as module_stand_ins

    made: list[torch.Size] = []
    conv_module = module_stand_ins._MODULE_TABLE[nn.Conv2d]

    def counting(module: Any, args: tuple[Any, ...]) -> Any:
        out = conv_module(module, args)
        made.append(out.shape)
        return out

    monkeypatch.setitem(module_stand_ins._MODULE_TABLE, nn.Conv2d, counting)
    ran: list[str] = []

    class Watch(torch.utils._python_dispatch.TorchDispatchMode):  # type: ignore[misc]
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            ran.append(str(func))
            return func(*args, **(kwargs or {}))

    class Pushes(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            with Watch():
                return self.conv(y)

    model, x = Pushes(), torch.randn(1, 3, 8, 8)
    report = convprof.profile(model, x, compute=False)
    assert made == [(1, 3, 6, 6)]  # the first call was stood in, the second ran on meta
    assert ran.count("aten.convolution.default") == 1
    made.clear()
    assert convprof.profile(model, x) == report
    assert made == []  # a computing pass runs every forward


def test_an_interrupt_inside_a_stand_in_leaves_the_model_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    from convprof.record.stand_ins import modules as module_stand_ins

    def interrupted(module: Any, args: tuple[Any, ...]) -> Any:
        raise KeyboardInterrupt

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    before = snapshot(model)
    monkeypatch.setitem(module_stand_ins._MODULE_TABLE, nn.Linear, interrupted)
    with pytest.raises(KeyboardInterrupt):
        convprof.profile(model, torch.randn(1, 3, 6, 6), compute=False)
    monkeypatch.undo()
    assert_unchanged(before, model)
    assert all("forward" not in vars(m) for m in model.modules())
    assert not any(p.is_meta for p in model.parameters())
    # conv 4 x 4x4 x 27 = 1,728 MACs, linear 64 x 2 = 128
    assert convprof.profile(model, torch.randn(1, 3, 6, 6), compute=False).total.macs == 1728 + 128


def test_a_users_mode_around_profile_sees_the_models_operators_only() -> None:
    # zero compute's own set-up (its meta stand-ins, the copies of the inputs, the look at a
    # small tensor's values) ran under the user's mode: a FlopCounterMode-like tool saw an
    # extra aten.view and one empty_strided per parameter (issue 35 #16)
    from collections import Counter

    class Count(torch.utils._python_dispatch.TorchDispatchMode):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.ops: Counter[str] = Counter()

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            self.ops[str(func)] += 1
            return func(*args, **(kwargs or {}))

    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(288, 3)
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad(), Count() as plain:
        model(x)
    for compute in (True, False):
        with Count() as seen:
            convprof.profile(model, x, compute=compute)
        assert seen.ops == plain.ops, compute
