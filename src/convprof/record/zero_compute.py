"""Zero compute: the pass on meta stand-ins, with no arithmetic and nothing of the caller's touched.

The model's parameters and buffers get meta stand-ins (same shape, stride and dtype, no data),
which the model's own references point at for the pass (:meth:`ModelState.point_at`); the
caller's inputs are copied with their tensors as stand-ins; and every operator that meets a
real tensor of the model's is handed the stand-ins instead (:meth:`MetaPass.metas`). Small
integer tensors that steer control flow (lengths, masks, BatchNorm's batch counter) stay real
(:func:`~convprof.record.stand_ins.values.steers`). Built-in layers whose operators nothing
records do not even run: their forward is a module stand-in (:meth:`MetaPass.skip_forwards`).
"""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from convprof.memory.lifetimes import SPARSE
from convprof.record.errors import ValuesNeeded
from convprof.record.stand_ins.modules import ModuleShortcut, module_shortcut_for, shadows_its_class
from convprof.record.stand_ins.shapes import Shortcut
from convprof.record.stand_ins.sparse import sparse_product, sparse_result, sparse_stand_in
from convprof.record.stand_ins.values import steers

_META = torch.device("meta")


def stand_in(tensor: torch.Tensor) -> torch.Tensor:
    """A meta tensor like one of the model's own; a real copy of a small integer or boolean
    buffer, which steers as the caller's lengths do (EnCodec keeps its convolutions' strides
    and paddings in buffers and computes its padding from them; BatchNorm counts batches)."""
    if not isinstance(tensor, nn.Parameter) and not tensor.dtype.is_floating_point and steers(tensor):
        return tensor.clone()
    if tensor.layout in SPARSE:
        return sparse_stand_in(tensor)
    meta = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device=_META)
    if isinstance(tensor, nn.Parameter):  # what nn.Parameter(meta) does, without its Python
        return torch.Tensor._make_subclass(nn.Parameter, meta, tensor.requires_grad)
    return meta


def _causal_bias(value: Any) -> bool:
    """A ``torch.nn.attention.bias.CausalBias`` (whose module imports torch._dynamo: looked up,
    never imported; without it no such bias exists)."""
    bias: Any = sys.modules.get("torch.nn.attention.bias")
    return bias is not None and isinstance(value, bias.CausalBias)


class MetaPass:
    """The stand-ins of one zero-compute pass. ``tracked``: peak memory is predicted, so a
    meta input gets a storage of its own (see :meth:`copy_inputs`)."""

    def __init__(self, owned: list[torch.Tensor], tracked: bool) -> None:
        # id of a parameter or buffer -> its meta stand-in
        self.stand_ins = {id(t): stand_in(t) for t in owned if not t.is_meta}
        self.tracked = tracked
        # a sparse tensor has a stand-in: products with it need sparse_product
        self.sparse = any(t.layout in SPARSE for t in owned)

    def ident(self) -> Callable[[torch.Tensor], int]:
        """The key of a parameter or buffer as the records know it: the id of the tensor a
        stand-in stands for, so that both passes agree."""
        originals = {id(meta): key for key, meta in self.stand_ins.items()}

        def ident(tensor: torch.Tensor) -> int:
            return originals.get(id(tensor), id(tensor))

        return ident

    def _meta(self, tensor: torch.Tensor) -> torch.Tensor:
        """A meta tensor like ``tensor`` (itself when it is one): no data is read or copied."""
        if tensor.is_meta:
            return tensor
        known = self.stand_ins.get(id(tensor))
        if known is not None:
            return known
        if tensor.layout in SPARSE:
            self.sparse = True
            return sparse_stand_in(tensor)
        if tensor.is_nested:
            raise ValuesNeeded(
                f"zero-compute pass stopped: an input is a nested tensor of "
                f"{tensor.size(0)} sequences, whose lengths are values a meta stand-in does not "
                "keep; profile with compute=True and real inputs"
            )
        return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device=_META)

    def needs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether an operator touches a meta tensor or the model's own tensors. One that does
        not works only on small real tensors (the caller's lengths or masks, or what the model
        made from them) and runs for real: ``lengths.max().item()`` works."""
        stand_ins = self.stand_ins
        for value in (*args, *kwargs.values()):
            for tensor in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(tensor, torch.Tensor) and (tensor.is_meta or id(tensor) in stand_ins):
                    return True
        return False

    def metas(self, value: Any) -> Any:
        """``value`` with every tensor in it (also inside lists, as for ``cat``) made meta."""
        if isinstance(value, torch.Tensor):
            return value if value.is_meta else self._meta(value)
        if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
            return type(value)(self.metas(v) for v in value)
        return value

    def run(
        self,
        func: torch._ops.OpOverload,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        shortcut: Shortcut | None,
        with_values: Shortcut | None,
    ) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        """An operator of the pass: its output, and the arguments it ran on (stand-ins for
        the real tensors it met). ``with_values`` sees the real arguments first (lengths and
        masks stay real); ``shortcut`` makes the output from shapes, unless another mode is
        active (a user's FlopCounterMode around profile() must see the operator itself)."""
        out = with_values(func, args, kwargs) if with_values is not None else None
        if out is None and self.needs(args, kwargs):
            args = tuple(self.metas(a) for a in args)
            if kwargs:
                kwargs = {k: self.metas(v) for k, v in kwargs.items()}
            if self.sparse:  # PyTorch has no meta kernel for these: not a shortcut, the only way
                out = sparse_product(func, args, kwargs)
            if out is None and shortcut is not None and not torch._C._len_torch_dispatch_stack():
                out = shortcut(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        if self.sparse:
            out = sparse_result(func, args, out)
        return out, args, kwargs

    def copy_inputs(self, value: Any, memo: dict[int, Any], depth: int = 0) -> Any:
        """The caller's inputs for the pass: tensors as meta stand-ins, and every container or
        object holding them (a transformers cache, a dataclass) copied, so that nothing the
        caller owns is touched when the model writes into it. Aliases stay aliases (``memo``);
        modules, classes and objects nested deeper than 8 are shared."""
        known = memo.get(id(value))
        if known is not None:
            return known
        copied: Any = value
        if _causal_bias(value):
            # holds no data, only its variant and lengths: attention reads those (its own
            # __torch_function__), where a meta copy would be a dense mask of another shape
            copied = value
        elif isinstance(value, torch.Tensor):
            copied = value if steers(value) else self._meta(value)
            if copied is value and value.is_meta and self.tracked and value.layout == torch.strided:
                # peak memory: a storage of the copy's own, which dies when the model replaces it
                # (a key/value cache's tensors do, step by step), as the caller's reference would
                # otherwise keep it alive
                copied = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=_META)
            if value.requires_grad and not copied.requires_grad:  # a backward pass wants its gradient
                copied = copied.detach().requires_grad_()
        elif depth > 8 or isinstance(value, (nn.Module, type, str, bytes, int, float, bool)) or value is None:
            return value
        elif isinstance(value, (list, tuple)):
            items = [self.copy_inputs(v, memo, depth + 1) for v in value]
            copied = type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
        elif isinstance(value, dict):
            copied = copy.copy(value)
            for key, item in value.items():
                copied[key] = self.copy_inputs(item, memo, depth + 1)
        elif hasattr(value, "__dict__") and not callable(value):
            copied = copy.copy(value)
            for key, item in vars(value).items():
                vars(copied)[key] = self.copy_inputs(item, memo, depth + 1)
        memo[id(value)] = copied
        return copied


def skip_forwards(
    named: list[tuple[str, nn.Module]], quiet: Callable[[nn.Module], bool], opened: Callable[[str], bool]
) -> list[nn.Module]:
    """Zero compute without a backward pass: give each quiet built-in layer that has a module
    stand-in (:mod:`~convprof.record.stand_ins.modules`) a forward of its own that makes its
    output directly, and return those modules (the caller takes the forwards away; the
    state's restore would too). ``opened(name)`` says whether the session has just opened a
    call of that module, alone on the dispatch stack. A backward pass needs the operators'
    autograd graph, so it keeps them all."""
    skipped = []
    shortcuts: dict[type, ModuleShortcut | None] = {}
    for name, module in named:
        kind = type(module)
        if kind not in shortcuts:
            shortcuts[kind] = module_shortcut_for(kind)
        shortcut = shortcuts[kind]
        if shortcut is not None and quiet(module) and not shadows_its_class(module):
            module.__dict__["forward"] = _skipping(module, name, shortcut, opened)
            skipped.append(module)
    return skipped


def _skipping(
    module: nn.Module, name: str, shortcut: ModuleShortcut, opened: Callable[[str], bool]
) -> Callable[..., Any]:
    real = functools.partial(type(module).forward, module)

    def forward(*args: Any, **kwargs: Any) -> Any:
        # Only for a call the session opened a frame for (not ``module.forward(x)`` called by
        # other code, whose operators are recorded on the caller), with no other mode on the
        # stack (a mode pushed by the model, or a user's mode around profile(), must see the
        # operators).
        if not kwargs and opened(name):
            with torch._C._DisableTorchDispatch():
                out = shortcut(module, args)
            if out is not None:
                return out
        return real(*args, **kwargs)

    return forward
