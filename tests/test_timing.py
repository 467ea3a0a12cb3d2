"""Measured time per layer (issue 12, part 2): structure and invariants, never timings."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.modules import module as module_globals

import convprof
from convprof.cli import main
from convprof.record.timing import measure


class Twice(nn.Module):
    """A depthwise and a pointwise conv, the pointwise one called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
        self.pw = nn.Conv2d(6, 6, 1, bias=False)
        self.bn = nn.BatchNorm2d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.pw(self.bn(self.dw(x))))


def test_measure_structure_and_invariants() -> None:
    model = Twice().train()  # measured in eval, put back in train
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = (len(module_globals._global_forward_pre_hooks), len(module_globals._global_forward_hooks))
    timing = measure(model, torch.randn(2, 6, 16, 16), repeats=4, warmup=1)
    assert [layer.name for layer in timing.layers] == ["dw", "bn", "pw"]  # leaves, first call order
    for layer in timing.layers:
        assert 0 < layer.low <= layer.median <= layer.high
    assert 0 < timing.forward_low <= timing.forward <= timing.forward_high
    assert timing.repeats == 4 and timing.device.startswith("cpu, ")
    assert timing.attributed == pytest.approx(sum(layer.median for layer in timing.layers))
    # left as it was: training flag, hooks, BatchNorm statistics (eval: not updated)
    assert model.training and all(m.training for m in model.modules())
    assert (len(module_globals._global_forward_pre_hooks), len(module_globals._global_forward_hooks)) == hooks
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_measure_is_public() -> None:
    assert convprof.measure is measure and "measure" in convprof.__all__
    assert isinstance(convprof.measure(nn.Linear(2, 2), torch.ones(1, 2), repeats=1), convprof.Timing)


def test_measure_refuses_meta_and_bad_repeats() -> None:
    with torch.device("meta"):
        model = Twice()
    with pytest.raises(ValueError, match="cannot time a model or inputs on meta"):
        measure(model, torch.empty(1, 6, 8, 8, device="meta"))
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure(Twice(), torch.randn(1, 6, 8, 8), repeats=0)


def test_render_with_timing() -> None:
    model, x = Twice(), torch.randn(2, 6, 16, 16)
    report, timing = convprof.profile(model, x), measure(model, x, repeats=3, warmup=1)
    text = convprof.render(report, timing=timing, roofline="xeon-8480")
    header = text.splitlines()[0]
    unit = "us" if "Measured us" in header else "ms"  # us when a time would show as 0.000 ms
    for column in (
        f"Measured {unit}",
        f"Spread {unit}",
        "GMAC/s",
        "GB/s",
        f"Roofline {unit}",
        "Measured / roofline",
    ):
        assert column in header
    assert "Measured:     forward " in text and "; layers " in text
    # the depthwise conv's share of MACs: 6 x 9 x 256 x 2 of 6 x 9 x 256 x 2 + 2 x 6 x 6 x 256 x 2
    dw, pw = 6 * 9 * 256 * 2, 2 * 6 * 6 * 256 * 2
    assert f"depthwise {100 * dw / (dw + pw):.1f}% of the MACs" in text
    data = json.loads(convprof.render(report, format="json", timing=timing))
    assert [layer["name"] for layer in data["timing"]["layers"]] == ["dw", "bn", "pw"]
    with pytest.raises(ValueError, match="needs a measurement"):
        convprof.render(report, columns=["name", "measured"])
    tree = convprof.render(report, tree=True, timing=timing, columns=["name", "measured"])
    assert tree.splitlines()[2].split()[0] == "Twice"  # the root sums its leaves


def test_cli_time(capsys: pytest.CaptureFixture[str]) -> None:
    spec = "tests.test_timing:Twice"
    argv = ["profile", spec, "--input", "1,6,8,8", "--time", "--repeats", "2"]
    assert main([*argv, "--columns", "name,macs,measured,gmacs"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["Layer", "MACs", "Measured", "ms", "GMAC/s"]
    assert "Measured:     forward" in out
    assert main([*argv, "--no-compute"]) == 2
    assert "cannot go with --no-compute" in capsys.readouterr().err
    assert main(["profile", spec, "--input", "1,6,8,8", "--columns", "name,measured"]) == 2
    assert "needs a measurement (--time)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse's refusal of an unknown device
        main([*argv, "--device", "nonsense"])
    assert exited.value.code == 2
    assert "unknown device 'nonsense'" in capsys.readouterr().err


class FakeEvent:
    """Stands in for torch.cuda.Event on a machine without a GPU: records a made-up GPU time
    (one unit per event, in order), and says how far apart two are in milliseconds."""

    clock = 0.0

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.at: float | None = None

    def record(self, stream: object = None) -> None:
        FakeEvent.clock += 1.0
        self.at = FakeEvent.clock

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.at is not None and end.at is not None
        return end.at - self.at


def test_cuda_event_clock_sums_each_module_per_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path's bookkeeping, without a GPU: a module called twice gets the sum of its
    two intervals, each pass starts from nothing, and nothing synchronises in between (the
    events are read once, when the pass is collected)."""
    from convprof.record import timing

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    clock = timing._event_clock(torch.device("cuda"))
    for _ in range(2):  # two passes: the second must not carry the first's time
        clock.before("dw")  # events 1 and 2: 1 unit
        clock.after("dw")
        clock.before("pw")  # events 3 and 4, then 5 and 6: 1 + 1 units
        clock.after("pw")
        clock.before("pw")
        clock.after("pw")
        clock.after("never started")  # a post-hook without its pre-hook is ignored
        assert clock.collect() == {"dw": 0.001, "pw": 0.002}  # milliseconds -> seconds


def test_rolled_up_rows_carry_their_leaves_time_and_the_kinds_stay_the_leaves() -> None:
    # a hand-made timing: every leaf 1 ms, so a rolled-up row is its leaf count in ms. By kind
    # over resnet18's leaves: the three 1x1 downsampling convs are 3 x 6,422,528 = 19,267,584
    # MACs of 1,814,073,344, 1.1%; the other convs 1,813,561,344 - 19,267,584, 98.9%
    report = convprof.profile(torchvision.models.resnet18(), torch.ones(1, 3, 224, 224), compute=False)
    leaves = [layer.name for layer in report.layers if not layer.has_children]
    timing = convprof.Timing(
        "cpu", 1, 0.1, 0.1, 0.1, tuple(convprof.LayerTime(n, 1e-3, 1e-3, 1e-3) for n in leaves)
    )
    text = convprof.render(report, depth=1, timing=timing)
    layer1 = next(line for line in text.splitlines() if line.startswith("layer1 "))
    inside = sum(name.startswith("layer1.") for name in leaves)  # 2 blocks of conv, bn, relu, conv, bn
    assert f"{inside:.3f}" in layer1.split()  # its leaves' milliseconds added up
    assert "By kind:      standard 98.9% of the MACs" in text and "pointwise 1.1% of the MACs" in text


def test_a_container_is_timed_for_its_own_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container named as computing itself (attention's products in its own forward) gets
    its span less the spans of the timed modules it calls; nesting goes any depth (issue 35
    #2: ViT-B/16's attention was in no row)."""
    from convprof.record import timing

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    clock = timing._event_clock(torch.device("cuda"))
    clock.before("block")  # event 1
    clock.before("block.attn")  # 2
    clock.before("block.attn.qkv")  # 3
    clock.after("block.attn.qkv")  # 4: qkv 1 unit
    clock.after("block.attn")  # 5: attn 3 units, 2 of its own
    clock.before("block.mlp")  # 6
    clock.after("block.mlp")  # 7: mlp 1 unit
    clock.after("block")  # 8: block 7 units, 7 - 3 - 1 = 3 of its own
    assert clock.collect() == {
        "block.attn.qkv": 0.001,
        "block.attn": 0.002,
        "block.mlp": 0.001,
        "block": 0.003,
    }


class Attention(nn.Module):
    """An attention block of one's own: its products are its own operators, not a child's."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(32, 96)
        self.out = nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, -1)
        return self.out(torch.softmax(q @ k.transpose(-1, -2), -1) @ v)


def test_cli_times_a_containers_own_compute(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["profile", "tests.test_timing:Attention", "--input", "2,64,32", "--time", "--repeats", "2"]
    assert main([*argv, "--columns", "name,macs,measured", "--format", "csv"]) == 0
    rows = {line.split(",")[0]: line.split(",") for line in capsys.readouterr().out.splitlines()[1:]}
    # the root's own products: 2 x 64 x 64 x 32 x 2 = 524,288 MACs, and a time of their own
    assert rows["(root)"][1] == "524288" and float(rows["(root)"][2]) > 0
    assert float(rows["qkv"][2]) > 0 and float(rows["out"][2]) > 0
    assert main(argv) == 0
    assert "; layers " in capsys.readouterr().out


def test_a_layer_pytorch_fuses_in_inference_is_timed_itself(capsys: pytest.CaptureFixture[str]) -> None:
    # In inference nn.TransformerEncoderLayer runs one fused operator: its children never run,
    # and its time was in no row (94% "in no leaf layer" on a two-layer encoder)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
    timing = measure(nn.Sequential(layer), torch.randn(2, 8, 32), repeats=2, warmup=1)
    assert [t.name for t in timing.layers] == ["0"]  # the layer, and none of its children
    assert (
        main(["profile", "tests.test_timing:encoder", "--input", "2,8,32", "--time", "--repeats", "2"]) == 0
    )
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:] if line.strip()]
    assert "0" in rows  # the layer is a row of the table, with its time


def encoder() -> nn.Module:
    return nn.Sequential(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True))
