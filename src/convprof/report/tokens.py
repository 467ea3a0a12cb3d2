"""What a language model costs per token, and how far the usual rule of thumb is off.

The rule (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", Table 1): a forward
pass costs about ``2 N + 2 n_layer n_ctx d_attn`` FLOPs per token, where ``N`` is the number of
parameters without the embeddings (token and position tables), ``n_ctx`` the context and
``d_attn`` the width of the attention (query heads x head size). In MACs: ``N + n_layer n_ctx
d_attn``. It is a good guess for a dense decoder at a short context, and off where the model
is not that: a head tied to the embedding (its MACs are spent, its params are not in N), the
scores *and* the weighted sum of attention (the rule counts one of the two matmuls), mixture of
experts (N counts every expert, a token runs only a few), and encoders or encoder-decoders.
For training, the same paper takes 3x the forward, ``6 N`` FLOPs per token (plus
``6 n_layer n_ctx d_attn``), next to which a counted backward pass is put.

Plain arithmetic on numbers the caller gives; nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TextShape:
    """The figures of a language model's configuration that the rule needs."""

    layers: int  # transformer blocks (n_layer)
    attention_width: int  # query heads x head size (d_attn)
    embedding_params: int  # parameters of the token and position embedding tables
    encoder_decoder: bool = False


@dataclass(frozen=True, slots=True)
class TokenCost:
    """One pass of a language model, per token.

    ``tokens`` is how many new tokens the pass processed (batch x new positions), ``context``
    how many positions the last of them attends to (cached + new), ``past`` the cached ones.
    ``prefill_macs`` is the cost of the pass that filled the cache (with ``past``).
    """

    tokens: int
    context: int
    past: int
    params: int
    embedding_params: int
    macs: int
    layers: int | None = None  # None: no rule (encoder-decoder models)
    attention_width: int | None = None
    prefill_macs: int | None = None
    train_macs: int | None = None  # forward + backward, when a backward pass was counted

    @property
    def new(self) -> int:
        """New positions per sequence (``context - past``)."""
        return self.context - self.past

    @property
    def batch(self) -> int:
        return self.tokens // max(self.new, 1)

    @property
    def non_embedding_params(self) -> int:
        return self.params - self.embedding_params

    @property
    def macs_per_token(self) -> float:
        return self.macs / self.tokens

    @property
    def rule_macs_per_token(self) -> int | None:
        """``N + n_layer n_ctx d_attn`` (half the rule's FLOPs), or None where it does not apply."""
        if self.layers is None or self.attention_width is None:
            return None
        return self.non_embedding_params + self.layers * self.context * self.attention_width

    @property
    def counted_vs_rule(self) -> float | None:
        rule = self.rule_macs_per_token
        return self.macs_per_token / rule if rule else None

    @property
    def train_macs_per_token(self) -> float | None:
        return self.train_macs / self.tokens if self.train_macs is not None else None

    @property
    def train_counted_vs_rule(self) -> float | None:
        """The training step per token against 3x the forward rule (``6 N + ...`` FLOPs)."""
        rule, counted = self.rule_macs_per_token, self.train_macs_per_token
        return counted / (3 * rule) if rule and counted is not None else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            non_embedding_params=self.non_embedding_params,
            macs_per_token=self.macs_per_token,
            flops_per_token=2 * self.macs_per_token,
            rule_macs_per_token=self.rule_macs_per_token,
            counted_vs_rule=self.counted_vs_rule,
            train_macs_per_token=self.train_macs_per_token,
            train_counted_vs_rule=self.train_counted_vs_rule,
        )
        return data


def token_cost(
    *,
    macs: int,
    params: int,
    shape: TextShape,
    batch: int,
    new: int,
    past: int = 0,
    prefill_macs: int | None = None,
    train_macs: int | None = None,
) -> TokenCost:
    """The per-token figures of a pass over ``batch`` sequences of ``new`` tokens each, after
    ``past`` cached positions."""
    if batch <= 0 or new <= 0 or past < 0:
        raise ValueError(f"need batch and new tokens > 0 and past >= 0, got {batch}, {new}, {past}")
    rule = not shape.encoder_decoder
    return TokenCost(
        tokens=batch * new,
        context=past + new,
        past=past,
        params=params,
        embedding_params=shape.embedding_params,
        macs=macs,
        layers=shape.layers if rule else None,
        attention_width=shape.attention_width if rule else None,
        prefill_macs=prefill_macs,
        train_macs=train_macs,
    )
