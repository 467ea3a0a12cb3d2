"""Model specs: ``torchvision:NAME``, ``transformers:NAME``, ``timm:NAME`` or
``package.module:callable``, each optionally with keyword arguments, turned into a model and
its default inputs."""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from convprof.models.build import Loaded, SpecError, build
from convprof.models.torchvision import torchvision_model


@contextlib.contextmanager
def _importable_from(folders: Sequence[Path]) -> Iterator[None]:
    """Put ``folders`` first on ``sys.path`` while a spec's module is imported, as ``python -m``
    and pytest do for the current directory."""
    added = [str(Path(folder).resolve()) for folder in folders]
    sys.path[:0] = added
    try:
        yield
    finally:
        for folder in added:
            if folder in sys.path:
                sys.path.remove(folder)


_CALL = re.compile(r"^(?P<base>[^()]+)\((?P<arguments>.*)\)$", re.S)


def split_call(spec: str) -> tuple[str, dict[str, Any]]:
    """``'torchvision:resnet50(num_classes=10)'`` -> ``('torchvision:resnet50', {'num_classes': 10})``.

    Keyword arguments only, with Python literal values (numbers, strings, booleans, None,
    tuples, lists, dicts): a spec is text from a command line or a config file, never code."""
    found = _CALL.match(spec.strip())
    if found is None:
        return spec, {}
    try:
        call = ast.parse(f"f({found['arguments']})", mode="eval").body
    except SyntaxError:
        raise SpecError(f"spec {spec!r}: the arguments are not NAME=VALUE, ...") from None
    assert isinstance(call, ast.Call)
    if call.args or any(keyword.arg is None for keyword in call.keywords):
        raise SpecError(f"spec {spec!r}: give arguments by name (NAME=VALUE, ...)")
    kwargs: dict[str, Any] = {}
    for keyword in call.keywords:
        try:
            kwargs[str(keyword.arg)] = ast.literal_eval(keyword.value)
        except ValueError:
            raise SpecError(
                f"spec {spec!r}: {keyword.arg}= must be a literal (number, string, True, None, tuple ...)"
            ) from None
    return found["base"].strip(), kwargs


def load(spec: str, *, meta: bool = False, folders: Sequence[Path] = ()) -> Loaded:
    """The model a spec names, and its default inputs when the spec implies them.

    A ``package.module:callable`` spec is imported from ``folders`` first, then from
    ``sys.path``: importing it runs its code, as ``python -c 'import package.module'`` would.
    Any spec may end with keyword arguments, ``NAME(key=value, ...)``: the builder's for
    ``torchvision:`` (over those the weights imply), ``timm:`` and callables, the
    configuration's for ``transformers:``.
    """
    spec, kwargs = split_call(spec)
    if spec.startswith("torchvision:"):
        return torchvision_model(spec.removeprefix("torchvision:"), meta=meta, **kwargs)
    if spec.startswith("transformers:"):
        from convprof.models.transformers import transformers_model  # imports transformers

        return transformers_model(spec.removeprefix("transformers:"), meta=meta, **kwargs)
    if spec.startswith("timm:"):
        from convprof.models.timm import timm_model  # imports timm

        return timm_model(spec.removeprefix("timm:"), meta=meta, **kwargs)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SpecError(
            f"model spec {spec!r} is not 'package.module:callable', 'torchvision:NAME', "
            "'transformers:NAME' or 'timm:NAME'"
        )
    target = find_callable(spec, folders)
    try:
        loaded = build(functools.partial(target, **kwargs), meta=meta, what=spec)
    except Exception as exc:
        raise SpecError(f"calling {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(loaded.model, nn.Module):
        raise SpecError(f"{spec!r} returned {type(loaded.model).__name__}, not a torch.nn.Module")
    return loaded


def find_callable(spec: str, folders: Sequence[Path] = ()) -> Any:
    """The callable a ``package.module:callable`` spec names (``callable`` may be dotted),
    its module imported from ``folders`` first."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SpecError(f"spec {spec!r} is not 'package.module:callable'")
    if module_name.endswith(".py"):  # a file name where a module name goes
        dotted = module_name.removesuffix(".py").replace("/", ".")
        raise SpecError(f"spec {spec!r} names a file: drop the .py and give the module, '{dotted}:{attr}'")
    try:
        with _importable_from(folders):
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"cannot import {module_name!r} for spec {spec!r}: {exc}") from exc
    except Exception as exc:  # the module's own code raised (SyntaxError, RuntimeError, ...)
        raise SpecError(
            f"importing {module_name!r} for spec {spec!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise SpecError(f"{module_name!r} has no attribute {attr!r} (spec {spec!r})")
    if not callable(target):
        raise SpecError(f"{spec!r} is not callable")
    return target
