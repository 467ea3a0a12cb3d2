"""Harmless under misuse: nothing left behind on the model or in PyTorch, exceptions a model
catches, dispatch modes of its own, nested and concurrent profiling. Each case here failed
before the fix it tests (issue 10)."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_globals
from torch.utils.flop_counter import FlopCounterMode

import convprof
from convprof import ForwardError


def test_no_global_hook_state_is_left_after_many_profiles() -> None:
    tables = (
        module_globals._global_forward_hooks,
        module_globals._global_forward_pre_hooks,
        module_globals._global_forward_hooks_with_kwargs,
        module_globals._global_forward_hooks_always_called,
    )
    before = [dict(t) for t in tables]
    model = nn.Linear(4, 4)
    for _ in range(20):
        convprof.profile(model, torch.randn(2, 4))
    with pytest.raises(ForwardError):
        convprof.profile(model, torch.randn(2, 5))
    assert [dict(t) for t in tables] == before


class Writer(nn.Module):
    """Writes its own state in forward, in every way that does not rebind it."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.lin = nn.Linear(8, 8)
        self.register_buffer("buf", torch.zeros(8))
        self.register_buffer("rm", torch.zeros(8))
        self.register_buffer("rv", torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "index":
            self.buf[0] = 5
        elif self.how == "slice":
            self.buf[:4] += 1
        elif self.how == "view":
            self.buf.view(-1).add_(1)
        elif self.how == ".data":
            self.lin.weight.data.mul_(0.5)
        elif self.how == "batch_norm":
            x = F.batch_norm(x, self.rm, self.rv, training=True)
        return self.lin(x)


@pytest.mark.parametrize("how", ["index", "slice", "view", ".data", "batch_norm"])
def test_writes_through_views_and_data_are_undone(how: str) -> None:
    model = Writer(how)
    x = torch.randn(4, 8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    report = convprof.profile(model, x)
    assert report.total.macs == 4 * 8 * 8
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_only_a_batch_norm_in_training_is_taken_for_a_write() -> None:
    # the legacy batch norm kernels write running_mean and running_var although their schema
    # does not say so, and only in training (their sixth argument): in eval nothing is saved
    from convprof.record.session import _trains

    x, c = torch.randn(2, 3, 4, 4), torch.zeros(3)
    assert _trains((x, c, c, c, c, True, 0.1, 1e-5), {})
    assert not _trains((x, c, c, c, c, False, 0.1, 1e-5), {})
    assert not _trains((x, c, c, c, c), {"training": False, "momentum": 0.1, "eps": 1e-5})
    assert _trains((x, c, c, c, c), {})  # not said: taken as a write, to be safe

    class NormWithChild(nn.BatchNorm1d):  # as timm's BatchNormAct2d: not a quiet layer
        def __init__(self) -> None:
            super().__init__(8)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(F.batch_norm(x, self.running_mean, self.running_var, training=self.training))

    model = nn.Sequential(nn.Linear(8, 8), NormWithChild()).train()  # profiled in eval
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert convprof.profile(model, torch.randn(4, 8)).total.macs == 8 * 8 * 4
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.training


def test_state_put_back_when_one_attribute_is_removed_and_another_added() -> None:
    from convprof.record.state import ModelState

    model = nn.Linear(2, 2)
    model.old = 1
    state = ModelState([model])
    del model.old
    model.new = 2  # as many attributes as before, but not the same ones
    state.restore()
    assert model.old == 1 and not hasattr(model, "new")


class GrowingCache(nn.Module):
    """A rotary cache that grows in forward, a lazily registered buffer, a stored tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.max_seq_len_cached = 4
        self.register_buffer("cos", torch.ones(4, 8), persistent=False)
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.max_seq_len_cached:
            self.max_seq_len_cached = x.shape[0]
            self.register_buffer("cos", torch.ones(x.shape[0], 8, device=x.device), persistent=False)
        if not hasattr(self, "lazy"):
            self.register_buffer("lazy", torch.zeros(8, device=x.device))
        y = self.lin(x * self.cos[: x.shape[0]])
        self.last = y
        return y + self.lazy


@pytest.mark.parametrize("compute", [True, False])
def test_python_state_changed_in_forward_is_put_back(compute: bool) -> None:
    model = GrowingCache()
    before = {name: dict(vars(m)) for name, m in model.named_modules()}
    buffers = {name: dict(m._buffers) for name, m in model.named_modules()}
    convprof.profile(model, torch.randn(6, 8), compute=compute)
    for name, m in model.named_modules():
        assert vars(m).keys() == before[name].keys(), name
        assert all(vars(m)[k] is v for k, v in before[name].items()), name
        assert m._buffers == buffers[name]
    assert model.max_seq_len_cached == 4 and not hasattr(model, "last") and not hasattr(model, "lazy")
    # the model still works as before, with real tensors
    assert not model(torch.randn(3, 8)).is_meta


def test_meta_build_fallback_leaves_other_threads_alone() -> None:
    from convprof.models.build import build

    patched, built = threading.Event(), threading.Event()
    elsewhere: list[nn.Linear] = []

    def other() -> None:
        patched.wait(10)
        elsewhere.append(nn.Linear(4, 4))
        built.set()

    def builder() -> nn.Module:
        torch.arange(3).tolist()  # reads values: fails under torch.device("meta"), then falls back
        if not torch.arange(1).is_meta:  # the fallback run: nn.Module is patched now
            patched.set()
            built.wait(10)
        return nn.Linear(4, 4)

    thread = threading.Thread(target=other)
    thread.start()
    loaded = build(builder, meta=True)
    thread.join()
    assert loaded.model.weight.is_meta
    assert not elsewhere[0].weight.is_meta


class Fragile(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("not today")


class Catching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.child = Fragile(3, 4, 3)
        self.weight = nn.Parameter(torch.randn(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self.child(x)
        except ValueError:
            return x.flatten(1)[:, :8] @ self.weight


def test_parent_that_catches_a_child_exception_keeps_its_own_operators() -> None:
    report = convprof.profile(Catching(), torch.randn(2, 3, 8, 8))
    rows = {layer.name: layer for layer in report.layers}
    assert rows[""].macs == 2 * 8 * 8  # the matmul after the except, on the parent's row
    assert rows["child"].macs == 0 and rows["child"].calls == 1
    assert report.total.macs == 2 * 8 * 8


def test_error_names_the_innermost_module_that_raised() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(5, 2)))
    with pytest.raises(ForwardError, match=r"in module '1\.0' \(Linear\)"):
        convprof.profile(model, torch.randn(2, 4))


class OwnCounter(nn.Module):
    """Runs part of its forward under its own FlopCounterMode."""

    def __init__(self, seen: list[int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)
        # outlives the profile: attributes set in forward, and the contents of containers the
        # model holds, are put back; a bound method is neither
        self.report = seen.append

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with FlopCounterMode(display=False) as counter:
            y = F.relu(self.bn(self.conv(x)))
        self.report(counter.get_total_flops())
        return self.fc(y.mean((2, 3)))


def test_a_mode_the_model_pushes_itself_is_left_alone() -> None:
    seen: list[int] = []
    model = OwnCounter(seen)
    x = torch.randn(1, 3, 10, 10)
    conv = 64 * (8 * 3 * 9)  # 8x8 positions
    report = convprof.profile(model, x)
    assert report.total.macs == conv + 8 * 10
    assert seen == [2 * conv]  # the model's own counter saw its conv while being profiled


@pytest.mark.parametrize("compute", [True, False])
def test_a_mode_around_profile_sees_the_operators(compute: bool) -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    x = torch.randn(1, 3, 10, 10)
    macs = 64 * (8 * 3 * 9) + 512 * 10
    with FlopCounterMode(display=False) as counter:
        report = convprof.profile(model, x, compute=compute)
    assert report.total.macs == macs
    assert counter.get_total_flops() == 2 * macs


def test_interrupt_between_pop_and_record_surfaces_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    from convprof.record import session

    real_pop = session._stack_pop

    def pop_then_interrupt(key: Any) -> Any:
        real_pop(key)
        raise KeyboardInterrupt

    monkeypatch.setattr(session, "_stack_pop", pop_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        convprof.profile(nn.Sequential(nn.ReLU()), torch.randn(2))
    monkeypatch.undo()
    assert convprof.profile(nn.Linear(2, 2), torch.randn(1, 2)).total.macs == 4


def test_signals_wait_while_the_model_is_put_back() -> None:
    import os
    import signal

    from convprof.record.state import HeldSignals

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    held = HeldSignals()
    try:
        held.hold()
        os.kill(os.getpid(), signal.SIGALRM)  # arrives while held: nothing happens yet
        done = True
        with pytest.raises(KeyboardInterrupt):
            held.release()  # delivered now, after the restore would have finished
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert done


class ProfilesItself(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sub = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.inner: convprof.Report | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inner = convprof.profile(self.sub, x, compute=False)
        return self.sub(x)


def test_profile_nested_inside_a_profiled_forward() -> None:
    model = ProfilesItself()
    macs = 36 * (4 * 3 * 9)
    outer = convprof.profile(model, torch.randn(1, 3, 8, 8))
    assert outer.total.macs == macs  # the inner zero-compute run is not counted again
    model(torch.randn(1, 3, 8, 8))
    assert model.inner is not None and model.inner.total.macs == macs


class Gate(nn.Module):
    """Blocks its forward until ``release`` is set, so another thread can call in meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.entered, self.release = threading.Event(), threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        self.release.wait(10)
        return self.lin(x)


@pytest.mark.parametrize("compute", [True, False])
def test_a_call_from_another_thread_during_profiling_is_refused_clearly(compute: bool) -> None:
    # in zero compute the Linear has a module stand-in for its forward while the pass runs
    model = Gate()
    errors: list[BaseException] = []

    def other() -> None:
        model.entered.wait(10)
        try:
            model.lin(torch.randn(1, 4))
        except RuntimeError as exc:
            errors.append(exc)
        model.release.set()

    thread = threading.Thread(target=other)
    thread.start()
    with pytest.raises(ForwardError, match="another thread"):
        convprof.profile(model, torch.randn(1, 4), compute=compute)
    thread.join()
    assert len(errors) == 1 and "another thread" in str(errors[0])
    assert "forward" not in vars(model.lin)
    # afterwards both threads may use the model again
    assert model(torch.randn(1, 4)).shape == (1, 4)


class CachesInPlace(nn.Module):
    """Fills containers it owns in place, as timm's LeViT caches its attention biases per device."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.cache: dict[str, torch.Tensor] = {}
        self.seen: list[int] = [7]
        self.tags: set[str] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = str(x.device)
        if key not in self.cache:
            self.cache[key] = self.scale * 2
        self.seen.append(x.shape[0])
        self.tags.add(key)
        return x * self.cache[key]


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("compute", [True, False])
def test_containers_filled_in_place_are_emptied(compute: bool, backward: bool) -> None:
    model = CachesInPlace()
    cache, seen, tags = model.cache, model.seen, model.tags
    convprof.profile(model, torch.zeros(2, 4), compute=compute, backward=backward)
    assert model.cache is cache and cache == {}  # no meta tensor, no tensor holding a graph
    assert model.seen is seen and seen == [7]
    assert model.tags is tags and tags == set()
    copy.deepcopy(model)  # a cached tensor with a graph would refuse to be copied


@pytest.mark.parametrize("compute", [True, False, "auto"])
def test_the_garbage_collector_comes_back_as_it_was(compute: Any) -> None:
    # profile() pauses it for the pass and the counting; on again after, also after an error,
    # and left off when the caller had turned it off
    import gc

    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2))
    assert gc.isenabled()
    convprof.profile(model[:1], torch.randn(1, 3), compute=compute)
    assert gc.isenabled()
    with pytest.raises(convprof.ForwardError):
        convprof.profile(model, torch.randn(1, 3), compute=compute)
    assert gc.isenabled()
    gc.disable()
    try:
        convprof.profile(model[:1], torch.randn(1, 3), compute=compute)
        assert not gc.isenabled()
    finally:
        gc.enable()


class LazilyHooked(nn.Module):
    """Installs a forward hook on its child on the first call and marks itself as hooked with a
    plain attribute, as transformers does for its output-capturing hooks; the hook's output is
    what the forward returns, so a model left with the hook and without the mark (or the other
    way round) answers differently from a fresh one."""

    def __init__(self) -> None:
        super().__init__()
        self.child = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not getattr(self, "hooked", False):
            self.seen: list[torch.Tensor] = []
            self.child.register_forward_hook(lambda m, a, out: self.seen.append(out))
            self.hooked = True
        self.seen.clear()
        self.child(x)
        return torch.stack(self.seen)


@pytest.mark.parametrize("compute", [True, False])
def test_hooks_a_forward_registers_go_with_the_attributes_it_sets(compute: bool) -> None:
    model = LazilyHooked()
    mine = model.child.register_forward_pre_hook(lambda m, a: None)  # the user's, kept
    x = torch.randn(2, 4)
    fresh = copy.deepcopy(model)
    for _ in range(2):
        assert convprof.profile(model, x, compute=compute).total.macs == 2 * 4 * 4
    assert "hooked" not in vars(model) and not model.child._forward_hooks
    assert list(model.child._forward_pre_hooks) == [mine.id]
    assert torch.equal(model(x), fresh(x))  # one captured output: the hook is installed once
    assert model(x).shape == (1, 2, 4)


def _tiny_llava() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    hf = pytest.importorskip("transformers")
    vision = hf.CLIPVisionConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    text = hf.LlamaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    torch.manual_seed(0)
    model = hf.LlavaForConditionalGeneration(
        hf.LlavaConfig(vision_config=vision, text_config=text, image_token_id=99, projector_hidden_act="gelu")
    ).eval()
    # 4 words, the 16 patches' tokens (32 / 8 squared; the class token is dropped), 4 words
    ids = torch.cat([torch.arange(4), torch.full((16,), 99), torch.arange(4, 8)]).unsqueeze(0)
    return model, {"input_ids": ids, "pixel_values": torch.randn(1, 3, 32, 32)}


@pytest.mark.parametrize("compute", [True, False])
def test_llava_sees_its_image_after_being_profiled(compute: bool) -> None:
    # LLaVA reads the vision tower's hidden states, which transformers collects with hooks it
    # installs on the first call; after a profile the model answered None for them (the mark
    # "hooks installed" was put back, the hooks were not), in convprof's next pass too.
    model, feeds = _tiny_llava()
    with torch.no_grad():
        expected = model(**feeds).logits
    model, feeds = _tiny_llava()
    # By hand: CLIP's patch embedding 16 x 32 x (3 x 8 x 8) = 98,304; per layer over 17 tokens
    # q, k, v, o 4 x 17 x 32 x 32 = 69,632, scores and sum 2 x 17 x 17 x 32 = 18,496, MLP
    # 2 x 17 x 32 x 64 = 69,632; the projector 2 x 16 x 32 x 32 = 32,768; per Llama layer over 24
    # tokens 4 x 24 x 32 x 32 = 98,304, 2 x 24 x 24 x 32 = 36,864, 3 x 24 x 32 x 64 = 147,456;
    # the head 24 x 32 x 100 = 76,800.
    macs = 98_304 + 2 * (69_632 + 18_496 + 69_632) + 32_768 + 2 * (98_304 + 36_864 + 147_456) + 76_800
    for _ in range(2):
        report = convprof.profile(model, (), feeds, compute=compute)
        assert report.complete
        assert report.total.macs == macs == 1_088_640
    with torch.no_grad():
        assert torch.equal(model(**feeds).logits, expected)


def test_a_lazy_module_initialises_on_the_first_forward_after_a_profile() -> None:
    # A lazy module removes its initialising pre-hook when it materialises; the profile put its
    # class and parameters back but not the hook, and it stayed a LazyLinear for good.
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU())
    x = torch.randn(2, 3)
    # Without values its parameters have no shape: a refusal that names it (auto mode then
    # counts it with a real pass), not PyTorch's error about an uninitialised parameter.
    with pytest.raises(convprof.ValuesNeeded, match=r"module '0' \(LazyLinear\) has lazy parameters"):
        convprof.profile(model, x, compute=False)
    assert convprof.profile(model, x, compute="auto").total.macs == 2 * 3 * 4
    assert convprof.profile(model, x).total.macs == 2 * 3 * 4
    assert type(model[0]) is nn.LazyLinear and len(model[0]._forward_pre_hooks) == 1
    model(x)
    assert type(model[0]) is nn.Linear and model[0].weight.shape == (4, 3)


@pytest.mark.parametrize("parallel", [None, {"fsdp": 2}], ids=["one device", "parallel"])
def test_a_profiles_optimizer_does_not_fire_the_users_global_hooks(parallel: Any) -> None:
    """``register_optimizer_step_pre_hook`` / ``_post_hook`` fire for every optimizer in the
    process: convprof's own steps (made to predict the update's memory) keep quiet, and the
    hooks fire again for the user's optimizer after."""
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    fired: list[str] = []
    handles = [
        register_optimizer_step_pre_hook(lambda *a: fired.append("pre")),
        register_optimizer_step_post_hook(lambda *a: fired.append("post")),
    ]
    try:
        model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
        convprof.profile(
            model, torch.randn(4, 8), backward=True, memory=True, optimizer="adam", parallel=parallel
        )
        assert fired == []
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        assert fired == ["pre", "post"]
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("compute", [True, False])
def test_a_training_profile_leaves_the_callers_graph_usable(compute: bool) -> None:
    # a graph built before the profile saved BatchNorm's weight and bias at their versions;
    # the training step's memory pass saves and restores them around the legacy kernel, which
    # used to leave them one version on ("modified by an inplace operation" at backward)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    x = torch.randn(2, 3, 8, 8)
    loss = model(x).sum()
    versions = [t._version for t in (*model.parameters(), *model.buffers())]
    convprof.profile(model, x, memory=True, backward=True, compute=compute)
    assert [t._version for t in (*model.parameters(), *model.buffers())] == versions
    loss.backward()
    assert model[1].weight.grad is not None


@pytest.mark.parametrize("compute", [True, False])
def test_input_size_as_torchinfo_takes_it(compute: bool) -> None:
    # resnet18 at 224: torchvision's published 1.814 GMACs; an embedding and a Linear(8, 4) on
    # 2 x 16 token ids: 32 rows x 8 x 4 = 1,024
    import torchvision

    report = convprof.profile(torchvision.models.resnet18(), input_size=(1, 3, 224, 224), compute=compute)
    assert round(report.total.macs / 1e9, 3) == 1.814
    embedded = nn.Sequential(nn.Embedding(100, 8), nn.Linear(8, 4))
    assert (
        convprof.profile(embedded, input_size=[(2, 16)], dtypes=[torch.long], compute=compute).total.macs
        == 1024
    )
    for wrong in ({"input_size": (1, -3)}, {"input_size": [(2, 16)], "dtypes": [torch.long] * 2}, {}):
        with pytest.raises(TypeError, match=r"input_size|dtypes|one of the two"):
            convprof.profile(embedded, **wrong)
