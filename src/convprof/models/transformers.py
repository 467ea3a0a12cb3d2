"""``transformers:NAME`` specs: a Hugging Face model built from its configuration alone.

``NAME`` is a directory holding ``config.json`` (or the file itself), one of the well-known
models of :mod:`convprof.models.known` (``llama-3-8b``, ``mistral-7b``, ...: their published
configuration, no network), a model type such as ``llama`` or ``gpt2`` (its default
configuration, no network), or a hub name, for which only ``config.json`` is fetched: from the
local cache first, then, where the hub answers within a few seconds, from the hub. Weights are
never downloaded: the model is built with random weights, on meta when asked (free at any
size).

The class is the one the configuration's ``architectures`` names when this transformers has
it; otherwise the causal LM of a decoder-only type, the seq2seq LM of an encoder-decoder, else
the bare model. The default inputs are the model's main input at a usual size (128 token ids,
the configured image size, Whisper's 30 s of features), with one decoder token for an
encoder-decoder; token ids are drawn below the vocabulary size.

``cache`` builds the key/value cache of ``past`` tokens the way generation does, by running
the model over them, so that one decoding step can be profiled after it.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convprof.models.build import Loaded, SpecError, build
from convprof.models.inputs import Input
from convprof.models.known import KNOWN
from convprof.report.tokens import TextShape

SEQUENCE = 128  # default tokens per input, as calflops


def _transformers() -> Any:
    if importlib.util.find_spec("transformers") is None:
        raise SpecError(
            "transformers: specs need the transformers package: pip install 'convprof[transformers]'"
        )
    import transformers

    return transformers


def configuration(name: str) -> Any:
    """The configuration ``name`` designates (see the module docstring)."""
    hf = _transformers()
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    path = Path(name).expanduser()
    if path.is_file() and path.name.endswith(".json"):
        path = path.parent
    try:
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise SpecError(f"transformers:{name}: {path} has no config.json")
            return hf.AutoConfig.from_pretrained(str(path))
        if name in KNOWN:
            model_type, values, _ = KNOWN[name]
            return hf.AutoConfig.for_model(model_type, **values)
        if name in CONFIG_MAPPING:
            return hf.AutoConfig.for_model(name)
        return _from_hub(hf, name)
    except SpecError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(
            f"transformers:{name}: not a directory with config.json, a model type, or a hub name "
            f"this machine can fetch ({first})"
        ) from None


def _from_hub(hf: Any, name: str) -> Any:
    """A hub name's configuration: the local cache first; then the hub, only once it answered a
    connection within a few seconds (offline, the hub client retries for half a minute, with a
    page of warnings, before it fails)."""
    try:
        return hf.AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        pass
    import os

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise SpecError(f"transformers:{name}: not in the local cache, and HF_HUB_OFFLINE is set")
    if not _hub_reachable():
        known = ", ".join(KNOWN)
        raise SpecError(
            f"transformers:{name}: not a directory with config.json, a model type, a known model or a "
            "hub name in the local cache, and the hub cannot be reached (no network?). Give a directory "
            f"with its config.json, a model type such as llama, or one of: {known}; set "
            "HF_HUB_OFFLINE=1 to fail at once"
        )
    return hf.AutoConfig.from_pretrained(name)


def _hub_reachable(seconds: float = 3.0) -> bool:
    """Whether the hub's endpoint accepts a connection (one attempt, no retries)."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    where = urlsplit(constants.ENDPOINT)
    port = where.port or (443 if where.scheme == "https" else 80)
    try:
        with socket.create_connection((where.hostname or "", port), timeout=seconds):
            return True
    except OSError:
        return False


def _names(mapping: dict[str, Any], model_type: str) -> tuple[str, ...]:
    found = mapping.get(model_type, ())
    return (found,) if isinstance(found, str) else tuple(found)


def _model_class(hf: Any, name: str) -> Any:
    """The class ``architectures`` names, if transformers builds models of it from a
    configuration: a model class (a PreTrainedModel of its own) or an Auto class."""
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    found = getattr(hf, name)
    if isinstance(found, type) and (
        (issubclass(found, hf.PreTrainedModel) and found is not hf.PreTrainedModel)
        or issubclass(found, _BaseAutoModelClass)
    ):
        return found
    raise SpecError(
        f"the configuration's architectures names {name!r}, which is not a transformers model class "
        "(a PreTrainedModel subclass such as GPT2LMHeadModel, or an Auto class); name one, or leave "
        "architectures out to build the model type's usual class"
    )


def model_class(config: Any) -> Any:
    """The class to build: the named architecture, else one chosen by the model type."""
    hf = _transformers()
    from transformers.models.auto import modeling_auto as auto

    for name in getattr(config, "architectures", None) or ():
        if hasattr(hf, name):
            return _model_class(hf, name)
    kind = config.model_type
    causal = _names(auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, kind)
    if causal and not _names(auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES, kind) and not config.is_encoder_decoder:
        return getattr(hf, causal[0])
    for mapping in (
        auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
        auto.MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES,
    ):
        named = _names(mapping, kind)
        if named and hasattr(hf, named[0]):
            return getattr(hf, named[0])
    return hf.AutoModel


def _embedding_params(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            for param in module.parameters(recurse=False):
                if id(param) not in seen:
                    seen.add(id(param))
                    total += param.numel()
    return total


def _text_shape(config: Any, model: nn.Module) -> TextShape | None:
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    layers = getattr(text, "num_hidden_layers", None)
    width = getattr(text, "hidden_size", None)
    if not isinstance(layers, int) or not isinstance(width, int):
        return None
    heads = getattr(text, "num_attention_heads", None)
    head = getattr(text, "head_dim", None)
    attention = heads * head if isinstance(heads, int) and isinstance(head, int) else width
    return TextShape(layers, attention, _embedding_params(model), bool(config.is_encoder_decoder))


def _size(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0], value[1]
    return None


def _has(config: Any, *names: str) -> bool:
    return all(isinstance(getattr(config, name, None), int) for name in names)


def _defaults(config: Any, model: nn.Module) -> tuple[Input, ...] | None:
    main = getattr(model, "main_input_name", "input_ids")
    parameters = list(inspect.signature(model.forward).parameters)
    name = None if parameters[:1] == [main] else main
    inputs: list[Input]
    if main == "input_ids":
        limit = getattr(config.get_text_config(), "max_position_embeddings", None)
        length = min(SEQUENCE, limit) if isinstance(limit, int) and limit > 0 else SEQUENCE
        inputs = [Input((1, length), "int64", name)]
    elif main in ("pixel_values", "pixel_values_videos"):
        vision = getattr(config, "vision_config", None) or config
        size = _size(getattr(vision, "image_size", None))
        if size is None:
            return None
        shape: tuple[int, ...] = (1, getattr(vision, "num_channels", 3), *size)
        # a video model (VideoMAE, ViViT, TimeSformer, V-JEPA 2) takes its clip's frames
        frames = getattr(vision, "num_frames", None) or getattr(vision, "frames_per_clip", None)
        if isinstance(frames, int) and (frames > 1 or main == "pixel_values_videos"):
            shape = (1, frames, *shape[1:])
        inputs = [Input(shape, None, name)]
    elif main == "input_features" and _has(config, "num_mel_bins", "max_source_positions"):
        inputs = [Input((1, config.num_mel_bins, 2 * config.max_source_positions), None, name)]
    elif main == "input_values" and _has(config, "max_length", "num_mel_bins"):
        # the Audio Spectrogram Transformer takes its spectrogram, frames x mel bins
        inputs = [Input((1, config.max_length, config.num_mel_bins), None, name)]
    elif main == "input_values":
        inputs = [Input((1, 16000), None, name)]
    else:
        return None
    if config.is_encoder_decoder and "decoder_input_ids" in parameters:
        inputs.append(Input((1, 1), "int64", "decoder_input_ids"))
    return tuple(inputs)


def transformers_model(name: str, *, meta: bool = False, **overrides: Any) -> Loaded:
    """The model ``transformers:NAME`` designates, with random weights, in eval mode;
    ``overrides`` change its configuration (``num_hidden_layers=2``)."""
    config = configuration(name)
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise SpecError(f"transformers:{name}: {type(config).__name__} has no setting {key!r}")
        try:
            setattr(config, key, value)
        except Exception as exc:  # a typed configuration refuses the value (n_embd='big')
            reason = " ".join(str(exc).split())
            raise SpecError(f"transformers:{name}: {key}={value!r} refused: {reason}") from None
    cls = model_class(config)
    builder = cls.from_config if cls.__name__.startswith("Auto") else cls._from_config
    try:
        loaded = build(lambda: builder(config), meta=meta, what=f"transformers:{name}")
    except Exception as exc:  # the library's own code raised on this configuration
        raise SpecError(
            f"building {cls.__name__} for transformers:{name} failed: {type(exc).__name__}: {exc}"
        ) from exc
    model = loaded.model.eval()
    text = config.get_text_config()
    vocab = getattr(text, "vocab_size", None)
    return Loaded(
        model,
        _defaults(config, model),
        loaded.note,
        id_limit=vocab if isinstance(vocab, int) and vocab > 0 else None,
        text=_text_shape(config, model),
        main=getattr(model, "main_input_name", None),
        decoder=_is_decoder(config, model),
    )


def _is_decoder(config: Any, model: nn.Module) -> bool:
    """Whether the model generates from a cache of its own past tokens (decoder-only)."""
    can_generate = getattr(model, "can_generate", None)
    return bool(callable(can_generate) and can_generate() and not config.is_encoder_decoder)


def cache_keyword(model: nn.Module) -> str:
    """The forward's name for the key/value cache (transformers renamed it ``cache``)."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache(model: nn.Module, ids: torch.Tensor) -> Any:
    """The key/value cache after running ``model`` over ``ids`` (batch x past tokens), built
    as generation builds it. On a model on meta this costs nothing."""
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
    # transformers 5 calls it ``cache`` (reading ``past_key_values`` warns); older ones do not
    found = out.get("cache", None) if hasattr(out, "get") else None
    if found is None:
        found = getattr(out, "past_key_values", None)
    if found is None:
        raise SpecError(f"{type(model).__name__} returned no key/value cache: it cannot take --past")
    return found
