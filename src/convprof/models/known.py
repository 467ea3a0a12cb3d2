"""Configurations of well-known language models, as plain data, for ``transformers:NAME``.

``convprof profile transformers:llama-3-8b`` must work on a machine that cannot reach the
hub: these are the values of the published ``config.json`` files that change the count or the
memory (sizes, heads, vocabulary, context, tied embeddings), copied from the repository each
entry names. A directory of that name in the current directory still comes first.
"""

from __future__ import annotations

from typing import Any

# name -> (model type, configuration values, the hub repository whose config.json they are from)
KNOWN: dict[str, tuple[str, dict[str, Any], str]] = {
    "llama-3-8b": (
        "llama",
        {
            "vocab_size": 128256,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "max_position_embeddings": 8192,
            "rope_theta": 500000.0,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "architectures": ["LlamaForCausalLM"],
        },
        "meta-llama/Meta-Llama-3-8B",
    ),
    "llama-3-70b": (
        "llama",
        {
            "vocab_size": 128256,
            "hidden_size": 8192,
            "intermediate_size": 28672,
            "num_hidden_layers": 80,
            "num_attention_heads": 64,
            "num_key_value_heads": 8,
            "max_position_embeddings": 8192,
            "rope_theta": 500000.0,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "architectures": ["LlamaForCausalLM"],
        },
        "meta-llama/Meta-Llama-3-70B",
    ),
    "mistral-7b": (
        "mistral",
        {
            "vocab_size": 32000,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "max_position_embeddings": 32768,
            "sliding_window": 4096,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
            "architectures": ["MistralForCausalLM"],
        },
        "mistralai/Mistral-7B-v0.1",
    ),
    "qwen2-7b": (
        "qwen2",
        {
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 131072,
            "rope_theta": 1000000.0,
            "tie_word_embeddings": False,
            "architectures": ["Qwen2ForCausalLM"],
        },
        "Qwen/Qwen2-7B",
    ),
    "gemma-2b": (
        "gemma",
        {
            "vocab_size": 256000,
            "hidden_size": 2048,
            "intermediate_size": 16384,
            "num_hidden_layers": 18,
            "num_attention_heads": 8,
            "num_key_value_heads": 1,
            "head_dim": 256,
            "max_position_embeddings": 8192,
            "architectures": ["GemmaForCausalLM"],
        },
        "google/gemma-2b",
    ),
    "gemma-7b": (
        "gemma",
        {
            "vocab_size": 256000,
            "hidden_size": 3072,
            "intermediate_size": 24576,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "head_dim": 256,
            "max_position_embeddings": 8192,
            "architectures": ["GemmaForCausalLM"],
        },
        "google/gemma-7b",
    ),
    **{
        name: (
            "gpt2",
            {"n_embd": embd, "n_layer": layers, "n_head": heads, "architectures": ["GPT2LMHeadModel"]},
            f"openai-community/{name}",
        )
        for name, embd, layers, heads in (
            ("gpt2-medium", 1024, 24, 16),
            ("gpt2-large", 1280, 36, 20),
            ("gpt2-xl", 1600, 48, 25),
        )
    },
}
