"""Mixed precision: which dtype each operation runs in under ``torch.autocast``, as the device would.

Autocast lives in PyTorch's dispatcher, per device: its kernels cast the arguments of listed
operators of CPU (or CUDA) tensors, and of nothing else. Meta tensors are never cast, so a
pass without arithmetic would run everything in float32: a wrong peak (activations twice
their size, no half-precision copies of the weights) and a wrong precision for the roofline.
convprof applies the device's own policy itself, at the call of each torch function (the
recorder's function mode), from PyTorch's lists (``aten/src/ATen/autocast_mode.h`` and
``autocast_mode.cpp``):

- **lower** (convolutions, linear layers, matrix products, attention): floating arguments
  are cast to the autocast dtype. A float32 leaf that requires grad (a weight) is cast once
  per autocast region and the copy kept until the region ends, as autocast's cache does:
  under autocast the half-precision weights exist beside the float32 ones for the whole
  forward.
- **float32** (on CUDA: layer and group norm, exp, log, pow, the losses, upsampling; on the
  CPU: the losses, FFTs, linear algebra, some pools and pads): floating arguments are cast up.
- **float32 by dtype** (on CUDA: sum, softmax, log_softmax, cumsum, prod, norms): called with
  ``dtype=torch.float32`` (their output is float32, their input not copied), unless the call
  gives a dtype.
- **promote** (``cat``, ``stack`` on the CPU; ``addcmul``, ``dot``, ... on CUDA): all to the
  widest floating dtype among the arguments.

Functions are matched by name (``F.linear`` and ``torch.conv2d`` are named as their operators;
``x @ w`` is ``__matmul__``); in-place variants and calls with ``out=`` are never cast, as
autocast's own rule. The operators inside a Python-level torch function are not seen one by
one, so three such functions get the rule of what they mostly run: ``einsum`` and
``F.multi_head_attention_forward`` lower (the CPU casts inside einsum, at its batched
products, so its reshapes of the operands stay float32 there, which this does not follow),
``F.cross_entropy`` float32, and on CUDA ``F.interpolate`` float32. Recurrent layers
(oneDNN's and cuDNN's RNN kernels) are not cast.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}

_LOWER_BOTH = frozenset(
    {
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_tbc",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "_convolution",
        "prelu",
        "addmm",
        "addbmm",
        "baddbmm",
        "bmm",
        "mm",
        "matmul",
        "__matmul__",
        "__rmatmul__",
        "linear",
        "linalg_vecdot",
        "vecdot",
        "einsum",
        "scaled_dot_product_attention",
        "multi_head_attention_forward",
    }
)
_LOWER = {
    "cuda": _LOWER_BOTH
    | {
        "convolution",
        "addmv",
        "addr",
        "mv",
        "chain_matmul",
        "linalg_multi_dot",
        "multi_dot",
        "lstm_cell",
        "gru_cell",
        "rnn_tanh_cell",
        "rnn_relu_cell",
    },
    "cpu": _LOWER_BOTH | {"_addmm_activation", "_native_multi_head_attention"},
}
_LOSSES = frozenset(
    {
        "mse_loss",
        "cosine_embedding_loss",
        "nll_loss",
        "nll_loss2d",
        "hinge_embedding_loss",
        "poisson_nll_loss",
        "smooth_l1_loss",
        "l1_loss",
        "huber_loss",
        "margin_ranking_loss",
        "soft_margin_loss",
        "triplet_margin_loss",
        "multi_margin_loss",
        "kl_div",
        "multilabel_margin_loss",
        "binary_cross_entropy_with_logits",
        "cross_entropy",
    }
)
_FLOAT32 = {
    "cuda": _LOSSES
    | {
        "acos",
        "asin",
        "cosh",
        "erfinv",
        "exp",
        "expm1",
        "log",
        "log10",
        "log2",
        "log1p",
        "reciprocal",
        "rsqrt",
        "sinh",
        "tan",
        "pow",
        "__pow__",
        "__rpow__",
        "softplus",
        "layer_norm",
        "native_layer_norm",
        "group_norm",
        "frobenius_norm",
        "nuclear_norm",
        "cosine_similarity",
        "dist",
        "pdist",
        "cdist",
        "renorm",
        "logsumexp",
        "upsample_nearest1d",
        "_upsample_nearest_exact1d",
        "upsample_nearest2d",
        "_upsample_nearest_exact2d",
        "upsample_nearest3d",
        "_upsample_nearest_exact3d",
        "upsample_linear1d",
        "upsample_bilinear2d",
        "_upsample_bilinear2d_aa",
        "upsample_trilinear3d",
        "upsample_bicubic2d",
        "_upsample_bicubic2d_aa",
        "interpolate",
    },
    "cpu": _LOSSES
    | {
        "avg_pool3d",
        "binary_cross_entropy",
        "grid_sampler",
        "grid_sampler_2d",
        "grid_sampler_3d",
        "polar",
        "prod",
        "quantile",
        "nanquantile",
        "stft",
        "cdist",
        "trace",
        "view_as_complex",
        "cholesky",
        "cholesky_inverse",
        "cholesky_solve",
        "inverse",
        "lu_solve",
        "orgqr",
        "ormqr",
        "pinverse",
        "max_pool3d",
        "max_unpool2d",
        "max_unpool3d",
        "adaptive_avg_pool3d",
        "adaptive_max_pool3d",
        "fractional_max_pool2d",
        "fractional_max_pool3d",
        "reflection_pad1d",
        "reflection_pad2d",
        "replication_pad1d",
        "replication_pad2d",
        "replication_pad3d",
        "cross_entropy_loss",
        "ctc_loss",
        "geqrf",
        "qr",
        "svd",
        "triangular_solve",
    },
}
_FLOAT32_BY_DTYPE = {
    "cuda": frozenset(
        {
            "sum",
            "prod",
            "softmax",
            "log_softmax",
            "cumsum",
            "cumprod",
            "linalg_vector_norm",
            "linalg_matrix_norm",
            "norm",
        }
    ),
    "cpu": frozenset(),
}
_PROMOTE = {
    "cuda": frozenset(
        {"addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot"}
        | {"grid_sampler", "index_put", "tensordot", "scatter_add"}
    ),
    "cpu": frozenset({"stack", "cat", "index_copy"}),
}
# On the CPU the FFTs and most of linear algebra run in float32 (by prefix, vecdot aside).
_FLOAT32_PREFIXES = {"cuda": (), "cpu": ("fft_", "linalg_")}


@functools.cache  # asked on every torch function call of a forward under autocast
def rule(device: str, name: str) -> str | None:
    """How ``device``'s autocast treats the function named ``name``: ``"lower"``,
    ``"float32"``, ``"float32_dtype"`` (float32 through its dtype argument), ``"promote"``, or
    None (not at all: it runs in its arguments' dtypes)."""
    if name in _LOWER[device]:
        return "lower"
    if name in _FLOAT32[device] or (name.startswith(_FLOAT32_PREFIXES[device]) and "vecdot" not in name):
        return "float32"
    if name in _FLOAT32_BY_DTYPE[device]:
        return "float32_dtype"
    if name in _PROMOTE[device]:
        return "promote"
    return None


def _eligible(value: Any) -> bool:
    """What autocast casts: a floating tensor that is not float64."""
    return isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype is not torch.float64


class Casts:
    """One autocast region's casts: the dtype, and the cache of weights' lower-precision
    copies, which keeps each alive until the region ends (:meth:`clear`)."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _to(self, value: Any, dtype: torch.dtype) -> Any:
        if isinstance(value, (list, tuple)):
            return type(value)(self._to(item, dtype) for item in value)
        if not _eligible(value) or value.dtype is dtype:
            return value
        cacheable = (
            dtype is self.dtype and value.dtype is torch.float32 and value.requires_grad and value.is_leaf
        )
        if cacheable:
            held = self._cache.get(id(value))
            if held is not None and held[0] is value:
                return held[1]
        cast = value.to(dtype)
        if cacheable:
            self._cache[id(value)] = (value, cast)
        return cast

    def _widest(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.dtype:
        found = [
            t.dtype
            for v in (*args, *kwargs.values())
            for t in (v if isinstance(v, (list, tuple)) else (v,))
            if _eligible(t)
        ]
        return torch.float32 if torch.float32 in found or not found else found[0]

    def apply(
        self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments a call of a function with rule ``kind`` runs with."""
        if "out" in kwargs:
            return args, kwargs
        if kind == "float32_dtype":
            first = args[0] if args else None
            if _eligible(first) and kwargs.get("dtype") is None:
                kwargs = {**kwargs, "dtype": torch.float32}
            return args, kwargs
        dtype = {"lower": self.dtype, "float32": torch.float32}.get(kind) or self._widest(args, kwargs)
        return tuple(self._to(a, dtype) for a in args), {k: self._to(v, dtype) for k, v in kwargs.items()}

    def clear(self) -> None:
        """The region ended: the cached copies go (unless something else still holds them)."""
        self._cache.clear()
