"""Zero compute leaves the caller's inputs and the model alone (issue 14, part 2): caches and
objects passed in, packed sequences, tensors made in forward from a parameter's device,
detector anchors; and what needs values says so."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import convprof
from convprof import ValuesNeeded

LSTM_STEP = 4 * 16 * (8 + 16)  # one step of LSTM(8, 16): 4 gates x 16 x (8 + 16)


@dataclass
class State:
    memory: torch.Tensor
    steps: list[torch.Tensor]


class Appends(nn.Module):
    """Writes into the objects it is given, as decoders do with their caches."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, state: State, extra: dict[str, torch.Tensor]) -> torch.Tensor:
        y = self.fc(x + state.memory)
        state.steps.append(y)
        state.memory = y
        extra["last"] = y
        return y


def test_objects_the_caller_passes_are_left_as_they_were() -> None:
    memory = torch.randn(2, 8)
    state, extra = State(memory, []), {"seen": torch.zeros(1)}
    report = convprof.profile(Appends(), (torch.randn(2, 8), state), {"extra": extra}, compute=False)
    assert report.total.macs == 2 * 8 * 8
    assert state.memory is memory and state.steps == [] and set(extra) == {"seen"}
    assert not memory.is_meta


def test_transformers_cache_is_left_real_and_unchanged() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 100, (1, 8))
    with torch.no_grad():
        cache = model(ids, use_cache=True).past_key_values
    keys = [layer.keys for layer in cache.layers]
    # transformers renames past_key_values to cache (the old name goes in 5.40)
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    step = {"input_ids": ids[:, :1], name: cache, "use_cache": True}
    report = convprof.profile(model, (), step, compute=False)
    # one new token attending to 8 cached + itself, per layer: q 32x32, k and v 32x16, o 32x32,
    # 4 heads x 9 keys x (8 + 8), MLP 3 x 32 x 64; then the head 32 x 100
    layer = (32 * 32 + 2 * 32 * 16 + 32 * 32) + 4 * 9 * (8 + 8) + 3 * 32 * 64
    assert report.total.macs == 2 * layer + 32 * 100
    assert [layer.keys for layer in cache.layers] == keys  # the same tensors, not grown
    assert all(k.device.type == "cpu" and k.shape[-2] == 8 for k in keys)
    with torch.no_grad():
        model(**step)  # the user's next decode step works


def test_packed_sequence_as_args_is_one_input() -> None:
    packed = pack_padded_sequence(torch.randn(3, 5, 8), torch.tensor([5, 3, 2]), batch_first=True)
    for compute in (True, False):
        assert convprof.profile(nn.LSTM(8, 16, batch_first=True), packed, compute=compute).total.macs == (
            (5 + 3 + 2) * LSTM_STEP
        )


class Packs(nn.Module):
    """Packs by the caller's lengths, runs an LSTM, unpacks, and classifies every step."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        padded, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)
        out: torch.Tensor = self.head(padded)
        return out


def test_lengths_that_steer_packing_stay_real() -> None:
    # The caller's small integer tensors stay real in a zero-compute pass, so packing by them
    # works: 2 + 5 + 3 = 10 real LSTM steps; the head runs on the padded 3 x 5 steps.
    inputs = (torch.randn(3, 5, 8), torch.tensor([2, 5, 3]))
    expected = 10 * LSTM_STEP + 3 * 5 * 16 * 4
    assert convprof.profile(Packs(), inputs).total.macs == expected
    assert convprof.profile(Packs(), inputs, compute=False).total.macs == expected


class ReadsValues(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x[: int(x.abs().argmax())])  # a float input's values decide the shape


def test_float_values_still_need_compute_and_say_so() -> None:
    with pytest.raises(ValuesNeeded, match=r"needs real tensor values"):
        convprof.profile(ReadsValues(), torch.randn(4, 8), compute=False)


class MakesTensors(nn.Module):
    """Makes a tensor in forward on its weight's device (EdgeNeXt's positional encoding)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = torch.zeros(x.shape[-2:]).to(device=self.conv.weight.device, dtype=x.dtype)
        return self.conv(x + grid)


def test_tensors_made_on_a_parameters_device() -> None:
    x = torch.randn(1, 3, 6, 6)
    expected = 36 * (4 * 3 * 9)
    assert convprof.profile(MakesTensors(), x).total.macs == expected
    assert convprof.profile(MakesTensors(), x, compute=False).total.macs == expected


def test_detector_anchors_stay_real_after_zero_compute() -> None:
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    images = [torch.rand(3, 320, 320)]
    with pytest.raises(ValuesNeeded):  # box decoding indexes by score: values needed
        convprof.profile(model, (images,), compute=False)
    anchors = model.anchor_generator
    assert all(not a.is_meta for a in getattr(anchors, "cell_anchors", []) or [])
    model.eval()
    with torch.no_grad():
        model(images)  # used to fail: "Cannot copy out of meta tensor"


class _ReadsValues(nn.Module):
    def forward(self, x: torch.Tensor, *, lengths: torch.Tensor) -> torch.Tensor:
        return x[: int(lengths.max().item())]


class _Caller(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _ReadsValues()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x=x, lengths=x.sum(-1))


def test_values_needed_names_the_keyword_inputs() -> None:
    """A module called with keyword inputs only (as transformers' decoders are) is described by
    them, not as having "no tensor inputs"."""
    with pytest.raises(convprof.ValuesNeeded) as caught:
        convprof.profile(_Caller(), torch.randn(5, 3), compute=False)
    message = str(caught.value)
    assert "in module 'inner' (_ReadsValues) with inputs (x: 5x3, lengths: 5)" in message


def test_large_integer_inputs_cost_nothing_without_arithmetic() -> None:
    # 250 million token ids were made for real (2 GB) for a pass that makes them meta anyway
    from convprof.models import inputs
    from convprof.record.stand_ins import values

    assert inputs._REAL == {False: values.STEERING_NUMEL, True: values.CONSTANT_NUMEL}
    (ids, small, mask), _ = inputs.make(
        [
            inputs.Input((1, 250_000_000), "int64"),
            inputs.Input((1, 4096), "int64"),
            inputs.Input((1, 250_000_000), "bool"),
        ],
        compute=False,
    )
    assert ids.is_meta and mask.is_meta and not small.is_meta
    (real,), _ = inputs.make([inputs.Input((1, 8192), "int64")], compute=True)
    assert not real.is_meta
