"""Tiny transformers models built from configuration objects in code (random weights, no
download), one per architecture family, with the inputs each forward takes.

Shared by scripts/zoo_sweep.py and tests/test_zoo.py. Sizes are small on purpose (hidden 32,
two layers, 16 tokens): the point is every operator path of the architecture, in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Inputs = tuple[tuple[Any, ...], dict[str, Any]]
Entry = tuple[str, str, Callable[[], nn.Module], Callable[[], Inputs]]  # name, kind, build, inputs

TEXT = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
FFN = {"intermediate_size": 64}


def _ids(length: int = 16) -> torch.Tensor:
    return torch.randint(0, 100, (1, length), generator=torch.Generator().manual_seed(0))


def _text(**extra: Any) -> Callable[[], Inputs]:
    return lambda: ((), {"input_ids": _ids(), **extra})


def _seq2seq() -> Inputs:
    return (), {"input_ids": _ids(), "decoder_input_ids": _ids(4)}


def _pixels(size: int = 32) -> Callable[[], Inputs]:
    return lambda: ((), {"pixel_values": torch.randn(1, 3, size, size)})


def _audio() -> Inputs:
    return (), {"input_values": torch.randn(1, 1600)}


def _entries() -> list[Entry]:
    import transformers as hf

    def model(cls: str, config: str, **kwargs: Any) -> Callable[[], nn.Module]:
        def build() -> nn.Module:
            made: nn.Module = getattr(hf, cls)(getattr(hf, config)(**kwargs))
            return made

        return build

    speech = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": (16, 16),
        "conv_stride": (5, 2),
        "conv_kernel": (10, 3),
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
    }
    vision = {"image_size": 32, "patch_size": 8, **TEXT, **FFN}
    vision.pop("vocab_size")
    return [
        # encoders
        ("bert", "encoder", model("BertModel", "BertConfig", **TEXT, **FFN), _text()),
        ("roberta", "encoder", model("RobertaModel", "RobertaConfig", **TEXT, **FFN), _text()),
        (
            "distilbert",
            "encoder",
            model(
                "DistilBertModel",
                "DistilBertConfig",
                vocab_size=100,
                dim=32,
                n_layers=2,
                n_heads=4,
                hidden_dim=64,
            ),
            _text(),
        ),
        (
            "albert",
            "encoder",
            model("AlbertModel", "AlbertConfig", embedding_size=16, **TEXT, **FFN),
            _text(),
        ),
        (
            "electra",
            "encoder",
            model("ElectraModel", "ElectraConfig", embedding_size=16, **TEXT, **FFN),
            _text(),
        ),
        ("deberta-v2", "encoder", model("DebertaV2Model", "DebertaV2Config", **TEXT, **FFN), _text()),
        # decoders
        (
            "gpt2",
            "decoder",
            model("GPT2LMHeadModel", "GPT2Config", vocab_size=100, n_embd=32, n_layer=2, n_head=4),
            _text(),
        ),
        (
            "gpt-neo",
            "decoder",
            model(
                "GPTNeoForCausalLM",
                "GPTNeoConfig",
                vocab_size=100,
                hidden_size=32,
                num_layers=2,
                num_heads=4,
                attention_types=[[["global", "local"], 1]],
                window_size=8,
            ),
            _text(),
        ),
        (
            "gptj",
            "decoder",
            model(
                "GPTJForCausalLM", "GPTJConfig", vocab_size=100, n_embd=32, n_layer=2, n_head=4, rotary_dim=4
            ),
            _text(),
        ),
        (
            "opt",
            "decoder",
            model(
                "OPTForCausalLM",
                "OPTConfig",
                vocab_size=100,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                ffn_dim=64,
                word_embed_proj_dim=32,
            ),
            _text(),
        ),
        (
            "bloom",
            "decoder",
            model("BloomForCausalLM", "BloomConfig", vocab_size=100, hidden_size=32, n_layer=2, n_head=4),
            _text(),
        ),
        (
            "llama",
            "decoder",
            model("LlamaForCausalLM", "LlamaConfig", num_key_value_heads=2, **TEXT, **FFN),
            _text(),
        ),
        (
            "llama-eager",
            "decoder",
            model(
                "LlamaForCausalLM",
                "LlamaConfig",
                num_key_value_heads=2,
                attn_implementation="eager",
                **TEXT,
                **FFN,
            ),
            _text(),
        ),
        (
            "mistral",
            "decoder",
            model(
                "MistralForCausalLM", "MistralConfig", num_key_value_heads=2, sliding_window=8, **TEXT, **FFN
            ),
            _text(),
        ),
        (
            "qwen2",
            "decoder",
            model("Qwen2ForCausalLM", "Qwen2Config", num_key_value_heads=2, **TEXT, **FFN),
            _text(),
        ),
        (
            "gemma",
            "decoder",
            model("GemmaForCausalLM", "GemmaConfig", num_key_value_heads=2, head_dim=8, **TEXT, **FFN),
            _text(),
        ),
        (
            "gemma2",
            "decoder",
            model(
                "Gemma2ForCausalLM",
                "Gemma2Config",
                num_key_value_heads=2,
                head_dim=8,
                sliding_window=8,
                **TEXT,
                **FFN,
            ),
            _text(),
        ),
        ("phi", "decoder", model("PhiForCausalLM", "PhiConfig", **TEXT, **FFN), _text()),
        (
            "phi3",
            "decoder",
            model("Phi3ForCausalLM", "Phi3Config", num_key_value_heads=2, pad_token_id=0, **TEXT, **FFN),
            _text(),
        ),
        (
            "falcon",
            "decoder",
            model(
                "FalconForCausalLM",
                "FalconConfig",
                vocab_size=100,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
            ),
            _text(),
        ),
        (
            "gpt-bigcode",
            "decoder",
            model(
                "GPTBigCodeForCausalLM", "GPTBigCodeConfig", vocab_size=100, n_embd=32, n_layer=2, n_head=4
            ),
            _text(),
        ),
        # mixture of experts
        (
            "mixtral",
            "moe",
            model(
                "MixtralForCausalLM",
                "MixtralConfig",
                num_key_value_heads=2,
                num_local_experts=4,
                num_experts_per_tok=2,
                **TEXT,
                **FFN,
            ),
            _text(),
        ),
        (
            "qwen2-moe",
            "moe",
            model(
                "Qwen2MoeForCausalLM",
                "Qwen2MoeConfig",
                num_key_value_heads=2,
                num_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=32,
                shared_expert_intermediate_size=64,
                **TEXT,
                **FFN,
            ),
            _text(),
        ),
        (
            "olmoe",
            "moe",
            model(
                "OlmoeForCausalLM",
                "OlmoeConfig",
                num_key_value_heads=2,
                num_experts=4,
                num_experts_per_tok=2,
                **TEXT,
                **FFN,
            ),
            _text(),
        ),
        # state space
        (
            "mamba",
            "state-space",
            model(
                "MambaForCausalLM",
                "MambaConfig",
                vocab_size=100,
                hidden_size=32,
                num_hidden_layers=2,
                state_size=8,
                expand=2,
                conv_kernel=4,
            ),
            _text(),
        ),
        (
            "mamba2",
            "state-space",
            model(
                "Mamba2ForCausalLM",
                "Mamba2Config",
                vocab_size=100,
                hidden_size=32,
                num_hidden_layers=2,
                state_size=8,
                expand=2,
                head_dim=8,
                num_heads=8,
                n_groups=1,
                chunk_size=8,
            ),
            _text(),
        ),
        # encoder-decoders
        (
            "t5",
            "encoder-decoder",
            model(
                "T5ForConditionalGeneration",
                "T5Config",
                vocab_size=100,
                d_model=32,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
            ),
            _seq2seq,
        ),
        (
            "bart",
            "encoder-decoder",
            model(
                "BartForConditionalGeneration",
                "BartConfig",
                vocab_size=100,
                d_model=32,
                encoder_layers=2,
                decoder_layers=2,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
            ),
            _seq2seq,
        ),
        (
            "marian",
            "encoder-decoder",
            model(
                "MarianMTModel",
                "MarianConfig",
                vocab_size=100,
                d_model=32,
                encoder_layers=2,
                decoder_layers=2,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
                decoder_start_token_id=0,
                pad_token_id=0,
            ),
            _seq2seq,
        ),
        # vision
        ("vit", "vision", model("ViTModel", "ViTConfig", **vision), _pixels()),
        ("deit", "vision", model("DeiTModel", "DeiTConfig", **vision), _pixels()),
        ("dinov2", "vision", model("Dinov2Model", "Dinov2Config", **vision), _pixels()),
        (
            "swin",
            "vision",
            model(
                "SwinModel",
                "SwinConfig",
                image_size=32,
                patch_size=4,
                embed_dim=16,
                depths=[1, 1],
                num_heads=[2, 2],
                window_size=4,
            ),
            _pixels(),
        ),
        (
            "convnext",
            "vision",
            model("ConvNextModel", "ConvNextConfig", num_stages=2, hidden_sizes=[8, 16], depths=[1, 1]),
            _pixels(),
        ),
        (
            "resnet",
            "vision",
            model("ResNetModel", "ResNetConfig", embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]),
            _pixels(),
        ),
        (
            "segformer",
            "vision",
            model(
                "SegformerModel",
                "SegformerConfig",
                num_encoder_blocks=2,
                depths=[1, 1],
                sr_ratios=[2, 1],
                hidden_sizes=[8, 16],
                num_attention_heads=[1, 2],
                patch_sizes=[7, 3],
                strides=[4, 2],
                mlp_ratios=[2, 2],
            ),
            _pixels(),
        ),
        # speech
        (
            "whisper",
            "speech",
            model(
                "WhisperModel",
                "WhisperConfig",
                vocab_size=100,
                d_model=32,
                encoder_layers=2,
                decoder_layers=2,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
                num_mel_bins=16,
                max_source_positions=16,
                max_target_positions=16,
                pad_token_id=0,
                bos_token_id=0,
                eos_token_id=0,
                decoder_start_token_id=0,
            ),
            lambda: ((), {"input_features": torch.randn(1, 16, 32), "decoder_input_ids": _ids(4)}),
        ),
        ("wav2vec2", "speech", model("Wav2Vec2Model", "Wav2Vec2Config", **speech), _audio),
        ("hubert", "speech", model("HubertModel", "HubertConfig", **speech), _audio),
        # multimodal
        (
            "clip",
            "multimodal",
            lambda: _clip(hf),
            lambda: ((), {"input_ids": _ids(8), "pixel_values": torch.randn(1, 3, 32, 32)}),
        ),
    ]


def _clip(hf: Any) -> nn.Module:
    text = {
        "vocab_size": 100,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
    }
    vision = {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
    }
    config = hf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    made: nn.Module = hf.CLIPModel(config)
    return made


def entries() -> list[Entry]:
    """Every architecture of the catalogue (empty when transformers is not installed)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return []
    return _entries()
