"""``timm:NAME``: a timm model, untrained, at the input its pretrained configuration names.

``timm.create_model(NAME, pretrained=False, **kwargs)`` builds it (nothing is downloaded); the
default input is one image at the configuration's ``input_size`` (224 x 224 for most, 288 for
``efficientnet_b3``), or at ``img_size`` when the spec gives one (``timm:vit_tiny_patch16_224
(img_size=64)``), whose configuration still says 224. A name timm does not know gets the
closest ones it does.
"""

from __future__ import annotations

import difflib
from typing import Any

from convprof.models.build import Loaded, SpecError, build
from convprof.models.inputs import Input
from convprof.records import Shape


def timm_model(name: str, *, meta: bool = False, **given: Any) -> Loaded:
    """The timm model ``name`` with random weights and its default input; ``given`` goes to
    ``timm.create_model`` (``num_classes=10``, ``img_size=64``, ``in_chans=1``)."""
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else " (timm.list_models() lists them)"
        raise SpecError(f"timm has no model {name!r}{hint}")
    try:
        loaded = build(
            lambda: timm.create_model(name, pretrained=False, **given), meta=meta, what=f"timm:{name}"
        )
    except Exception as exc:  # an argument it rejects (num_classes="ten", bogus=1)
        if not given:
            raise
        raise SpecError(f"building timm:{name} with {given} failed: {type(exc).__name__}: {exc}") from exc
    config = getattr(loaded.model, "pretrained_cfg", None) or {}
    return Loaded(loaded.model, (Input(_input_shape(config, given)),), loaded.note)


def _input_shape(config: dict[str, Any], given: dict[str, Any]) -> Shape:
    channels, *size = config.get("input_size", (3, 224, 224))
    channels = int(given.get("in_chans", channels))
    image = given.get("img_size")
    if isinstance(image, int):
        size = [image, image]
    elif isinstance(image, (tuple, list)) and len(image) == 2:
        size = [int(s) for s in image]
    return (1, channels, *(int(s) for s in size))
