"""Every model type transformers knows (``CONFIG_MAPPING``), built from its default
configuration shrunk to two layers, with inputs chosen from its forward's signature.

Shared by ``scripts/zoo_sweep.py transformers-defaults`` and ``tests/test_zoo.py``. The tiny
catalogue in ``hf_models.py`` runs every operator path of 40 families in seconds; this one asks
a different question: does convprof count *whatever* a user builds from transformers, at the
widths its authors chose? Widths stay at their defaults (hidden sizes, vocabularies, image
sizes); only the depth shrinks, so that a sweep of several hundred models fits in an hour.
Attention is eager everywhere, because FlopCounterMode on meta misses some fused attention
paths (mBART, Pegasus) and it is the oracle.

A model type is *skipped* with a reason when it has no base model class (a sub-configuration
such as ``clip_text_model`` is swept through its parent), needs a package transformers does
not install, or takes inputs this module does not make (forecasting with time features,
prompts of points, image tokens that must match the image); :func:`skipped` lists them for the docs.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

Inputs = tuple[tuple[Any, ...], dict[str, Any]]

DEPTH = 2
TOKENS = 16
DECODER_TOKENS = 4
AUDIO_SAMPLES = 16_000
# Every integer attribute of a configuration that counts layers, capped at DEPTH.
_LAYER_COUNTS = (
    "num_hidden_layers",
    "num_layers",
    "n_layer",
    "n_layers",
    "num_encoder_layers",
    "num_decoder_layers",
    "encoder_layers",
    "decoder_layers",
    "text_layers",
    "vision_layers",
    "num_text_layers",
    "num_vision_layers",
    "num_audio_layers",
    "depth",
    "num_blocks",  # xLSTM's, beside its num_hidden_layers
)
# Per-layer lists that must keep the configuration's length (hybrid and sliding-window models).
_PER_LAYER = ("layer_types", "layers_block_type", "block_types", "hybrid_override_pattern")
# Stage counts some configurations alias a layer count to (ConvNeXt's num_hidden_layers is its
# num_stages, SegFormer's its num_encoder_blocks): cutting them drops stages whose widths stay
# listed; their depth is in ``depths``, cut below.
_STAGE_COUNTS = ("num_stages", "num_encoder_blocks")


class Unsupported(Exception):
    """A model type the sweep does not build, with the reason the docs give."""


def model_types() -> list[str]:
    """Every key of ``CONFIG_MAPPING`` (empty without transformers)."""
    try:
        from transformers import CONFIG_MAPPING
    except ImportError:
        return []
    return sorted(CONFIG_MAPPING.keys())


def shrink(config: Any) -> Any:
    """``config`` with every layer count (its sub-configurations' too) at most DEPTH and
    per-layer lists cut to match; stage lists (Swin's ``depths``) keep their stages, each at
    most DEPTH deep."""
    from transformers import PretrainedConfig

    seen: set[int] = set()

    def visit(c: Any) -> None:
        if id(c) in seen:
            return
        seen.add(id(c))
        depth = DEPTH
        for key in _PER_LAYER:
            value = getattr(c, key, None)
            if isinstance(value, (list, tuple, str)) and len(value) > DEPTH:
                # the first DEPTH layers, then the first layer of every kind they lack: a
                # hybrid model cut to two linear-attention layers has no cache for attention
                kept = list(range(DEPTH))
                kept += [value.index(kind) for kind in dict.fromkeys(value) if kind not in value[:DEPTH]]
                cut = [value[i] for i in sorted(kept)]
                depth = max(depth, len(cut))
                with contextlib.suppress(AttributeError, TypeError, ValueError):
                    setattr(c, key, "".join(cut) if isinstance(value, str) else type(value)(cut))
                if isinstance(getattr(c, "hybrid_layer_ids", None), list):  # Zamba2 lists them twice
                    c.hybrid_layer_ids = [i for i, kind in enumerate(cut) if kind == "hybrid"]
        aliases = getattr(type(c), "attribute_map", None) or {}
        for key in _LAYER_COUNTS:
            if aliases.get(key) in _STAGE_COUNTS:
                continue
            value = getattr(c, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > depth:
                with contextlib.suppress(AttributeError, TypeError, ValueError):
                    setattr(c, key, depth)
        for kind in ("attn_layer", "expert_layer"):
            # Jamba, Zamba: every period-th layer from offset is attention (or experts); an
            # offset past the cut would leave none, so the last layer becomes the first of them
            offset = getattr(c, f"{kind}_offset", None)
            if isinstance(offset, int) and offset >= depth:
                with contextlib.suppress(AttributeError, TypeError, ValueError):
                    setattr(c, f"{kind}_offset", depth - 1)
                    setattr(c, f"{kind}_period", depth)
        depths = getattr(c, "depths", None)
        if isinstance(depths, (list, tuple)) and all(isinstance(d, int) for d in depths):
            with contextlib.suppress(AttributeError, TypeError, ValueError):
                c.depths = type(depths)(min(d, DEPTH) for d in depths)
        for value in list(vars(c).values()):
            if isinstance(value, PretrainedConfig):
                visit(value)

    visit(config)
    return config


def _model_class(model_type: str) -> type[nn.Module]:
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    name = MODEL_MAPPING_NAMES.get(model_type)
    if name is None:
        raise Unsupported("no base model class (a part of another model, swept through it)")
    if isinstance(name, (list, tuple)):
        name = name[0]
    try:
        cls: type[nn.Module] = getattr(transformers, name)
        cls.forward  # noqa: B018 -- a placeholder for a missing package (torchaudio) raises here
    except (AttributeError, ImportError, RuntimeError) as exc:
        raise Unsupported(f"{name} does not import: {_short(exc)}") from exc
    return cls


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


def _config(model_type: str) -> Any:
    from transformers import CONFIG_MAPPING

    try:
        config = CONFIG_MAPPING[model_type]()
    except Exception as exc:
        raise Unsupported(f"default configuration does not build: {_short(exc)}") from exc
    try:
        return shrink(config)
    except Exception as exc:  # Funnel and ProphetNet refuse a new num_hidden_layers
        raise Unsupported(f"its configuration refuses two layers: {_short(exc)}") from exc


def _attr(config: Any, *names: str) -> Any:
    """The first of ``names`` on the configuration, else on its sub-configurations (text,
    vision, audio, a wrapped model's), breadth first."""
    from transformers import PretrainedConfig

    queue, seen = [config], set()
    while queue:
        holder = queue.pop(0)
        if id(holder) in seen:
            continue
        seen.add(id(holder))
        for name in names:
            value = getattr(holder, name, None)
            if value is not None:
                return value
        queue.extend(v for v in vars(holder).values() if isinstance(v, PretrainedConfig))
    return None


def _ids(config: Any, length: int) -> torch.Tensor:
    vocab = _attr(config, "vocab_size")
    high = min(int(vocab), 1000) if isinstance(vocab, int) and vocab > 10 else 100
    return torch.randint(4, high, (1, length), generator=torch.Generator().manual_seed(0))


def _side(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) >= 2 and all(isinstance(s, int) for s in size[-2:]):
        return int(size[-2]), int(size[-1])
    if isinstance(size, dict) and "height" in size:
        return int(size["height"]), int(size["width"])
    return 224, 224


def candidates(
    cls: type[nn.Module], config: Any, model: nn.Module | None = None
) -> list[dict[str, torch.Tensor]]:
    """Keyword inputs to try, most likely first: the class's main input (its first argument
    where the class's main_input_name is not one), with decoder ids for an encoder-decoder,
    text plus pixels for a model that takes both, frames for a video model, a spectrogram or
    stacked features where the configuration gives their sizes, patches and their grid for a
    vision tower that takes them, and a series of the context length."""
    params = inspect.signature(cls.forward).parameters
    first = next(iter(list(params)[1:]), None)  # after self
    main = getattr(cls, "main_input_name", "input_ids")
    if not isinstance(main, str) or main not in params:  # a vision tower inherits input_ids
        main = first or main
    made: list[dict[str, torch.Tensor]] = []

    def pixels() -> torch.Tensor:
        channels = _attr(config, "num_channels", "in_channels", "input_channels")
        height, width = _side(_attr(config, "image_size", "img_size", "input_size"))
        return torch.randn(1, channels if isinstance(channels, int) else 3, height, width)

    def clip(frames: int) -> torch.Tensor:  # a video: frames x channels x height x width
        return pixels().unsqueeze(1).expand(-1, frames, -1, -1, -1).clone()

    decoder = (
        {"decoder_input_ids": _ids(config, DECODER_TOKENS)}
        if "decoder_input_ids" in params and getattr(config, "is_encoder_decoder", False)
        else {}
    )
    if main == "input_ids" and "input_ids" in params:
        made.append({"input_ids": _ids(config, TOKENS), **decoder})
        if "pixel_values" in params:
            made.append({"input_ids": _ids(config, TOKENS), "pixel_values": pixels(), **decoder})
    elif main == "pixel_values" and "pixel_values" in params:
        made.append({"pixel_values": pixels(), **decoder})
        video_frames = _attr(config, "num_frames")
        if isinstance(video_frames, int) and video_frames > 1:  # a video model
            made.append({"pixel_values": clip(video_frames)})
        if "input_ids" in params:
            made.append({"input_ids": _ids(config, TOKENS), "pixel_values": pixels(), **decoder})
    elif main == "pixel_values_videos":
        count = _attr(config, "num_frames", "frames_per_clip")
        count = count if isinstance(count, int) else 8
        made.append({main: clip(count)})
    elif main == "input_values" and "input_values" in params:
        made.append({"input_values": torch.randn(1, AUDIO_SAMPLES), **decoder})
        made.append({"input_values": torch.randn(1, 1, AUDIO_SAMPLES), **decoder})
        length, bins = _attr(config, "max_length"), _attr(config, "num_mel_bins")
        if isinstance(length, int) and isinstance(bins, int):  # a spectrogram (AST)
            made.append({"input_values": torch.randn(1, length, bins), **decoder})
    elif main == "input_features" and "input_features" in params:
        features = _attr(config, "num_mel_bins", "feature_size", "input_feat_per_channel", "n_mels")
        features = features if isinstance(features, int) else 80
        positions = _attr(config, "max_source_positions")
        frames = 2 * positions if isinstance(positions, int) and positions <= 3000 else 100
        made.append({"input_features": torch.randn(1, features, frames), **decoder})
        made.append({"input_features": torch.randn(1, 100, features), **decoder})
        stacked = _attr(config, "feature_projection_input_dim")
        if isinstance(stacked, int):  # wav2vec2-BERT's frames stacked in pairs
            made.append({"input_features": torch.randn(1, 100, stacked), **decoder})
    grid = next((name for name in params if name.endswith("grid_thw")), None)
    if "spatial_shapes" in params:  # SigLIP 2's images are patches of a grid, and its size
        patch = _attr(config, "patch_size")
        if isinstance(patch, int):
            side = 16
            shown = {
                "pixel_values": torch.randn(1, side * side, 3 * patch * patch),
                "pixel_attention_mask": torch.ones(1, side * side, dtype=torch.long),
                "spatial_shapes": torch.tensor([[side, side]]),
            }
            text = {"input_ids": _ids(config, TOKENS)} if "input_ids" in params else {}
            made = [kwargs for kwargs in made if "pixel_values" not in kwargs] + [{**text, **shown}]
    if first == "past_values" and not made:
        made.extend(_series(config, params))
    if grid is not None and first in ("hidden_states", "pixel_values"):
        made = _patches(config, first, grid, model)  # an image would not do: the grid is required
    if not made:
        takes = ", ".join(list(params)[1:4])
        raise Unsupported(f"its forward takes {takes}, ...: none of the inputs this sweep makes")
    return made


def _series(config: Any, params: Any) -> list[dict[str, torch.Tensor]]:
    """A time series of the configuration's context length: channels last where it has
    channels (PatchTST, PatchTSMixer), with TimesFM's padding flags and frequency class. The
    forecasting transformers with lags and time features (Informer, Autoformer) have no
    context length by default, so nothing is made for them."""
    length = _attr(config, "context_length")
    if not isinstance(length, int):
        return []
    channels = _attr(config, "num_input_channels")
    shape = (1, length, channels) if isinstance(channels, int) else (1, length)
    made = {"past_values": torch.randn(*shape)}
    if "past_values_padding" in params:
        made["past_values_padding"] = torch.zeros(1, length)
    if "freq" in params:
        made["freq"] = torch.zeros(1, 1, dtype=torch.long)
    return [made]


PATCH_GRID = 8  # patches a side for a vision tower fed flattened patches (Qwen-VL's kin)


def _patches(config: Any, name: str, grid: str, model: nn.Module | None) -> list[dict[str, torch.Tensor]]:
    """Inputs of a vision tower that takes its image as patches and a grid of (frames, rows,
    columns) per image: one 8x8-patch image, each patch shaped for the tower's first layer,
    read from the meta-built model because the configurations do not say (MuseSpark flattens
    two frames): a Linear's flattened patches, a Conv3d's channels x temporal patch x patch x
    patch flattened (Qwen-VL's kin), a Conv2d's flattened (HunYuan-VL, Ovis 2.5) or as
    channels x patch x patch images (Kimi), the images last, the one kept when both need
    values on meta."""
    count = PATCH_GRID * PATCH_GRID
    sizes = torch.tensor([[1, PATCH_GRID, PATCH_GRID]])
    layers = (nn.Linear, nn.Conv2d, nn.Conv3d)
    first = next((m for m in (model.modules() if model else ()) if isinstance(m, layers)), None)
    if isinstance(first, nn.Linear):
        return [{name: torch.randn(count, first.in_features), grid: sizes}]
    if isinstance(first, (nn.Conv2d, nn.Conv3d)):
        flat = {name: torch.randn(count, first.in_channels * math.prod(first.kernel_size)), grid: sizes}
        if isinstance(first, nn.Conv3d):
            return [flat]
        return [flat, {name: torch.randn(count, first.in_channels, *first.kernel_size), grid: sizes}]
    return []


def _builder(cls: type[nn.Module], config: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        try:
            made: nn.Module = cls._from_config(config, attn_implementation="eager")  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            made = cls(config)
        return made

    return build


def entry(model_type: str) -> tuple[Callable[[], nn.Module], Callable[[], Inputs]]:
    """The builder and inputs of one model type; raises :class:`Unsupported` with a reason.

    The inputs are the first candidate whose forward runs on a meta-device model (a model that
    needs tensor values fails there for that reason alone, so a failure that speaks of meta or
    data keeps the first candidate, and the sweep's passes say what needs values)."""
    cls = _model_class(model_type)
    config = _config(model_type)
    build = _builder(cls, config)
    try:
        with torch.device("meta"):
            model = build().eval()
    except Exception as exc:
        raise Unsupported(f"does not build from its default configuration: {_short(exc)}") from exc
    options = candidates(cls, config, model)
    import convprof

    first_error: BaseException | None = None
    needs_values: list[dict[str, torch.Tensor]] = []
    for kwargs in options:
        # convprof on the meta model is the trial: PyTorch's own meta kernels refuse some
        # inputs a real pass takes (float32 grouped products of experts), convprof's do not
        meta = {k: v.to("meta") for k, v in kwargs.items()}
        try:
            convprof.profile(model, (), meta)
        except convprof.ValuesNeeded:
            needs_values.append(kwargs)
            continue
        except Exception as exc:
            first_error = first_error or exc.__cause__ or exc
            continue
        return build, (lambda chosen=kwargs: ((), dict(chosen)))
    if needs_values:
        # it stopped for want of values on every candidate: the fullest one (text and pixels
        # for a model that takes both), which the passes with real tensors can run
        return build, (lambda chosen=needs_values[-1]: ((), dict(chosen)))
    assert first_error is not None
    tried = ", ".join(map(_describe, options))
    raise Unsupported(f"none of the inputs tried runs ({tried}): {_short(first_error)}")


def _describe(kwargs: dict[str, torch.Tensor]) -> str:
    return " + ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in kwargs.items())


def sweepable() -> Iterator[str]:
    """Model types that have a base model class (the rest are parts of other models)."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES
    except ImportError:
        return
    yield from (t for t in model_types() if t in MODEL_MAPPING_NAMES)
