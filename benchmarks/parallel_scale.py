"""How long a parallel prediction takes at scale, and what it says.

Usage:
    python benchmarks/parallel_scale.py [70b | 70b-pp | 405b | 8b | 671b-moe] [--tokens N]

Each configuration is built on the meta device from its known configuration
(``transformers:llama-3-70b``, ...; nothing downloaded) and predicted as one training step per
rank class: bf16 compute and all-gathers (FSDP2's ``param_dtype``), fp32 gradient reduction and
AdamW state, activation checkpointing of every block, one sequence of ``--tokens`` tokens per
rank (per micro-batch of a pipeline, which runs one per stage), the allocator CUDA's. The table
gives the wall time per rank class (the step runs twice: a warm-up and the recorded one), the
process's peak RSS, and each class's peak memory, where it is reached and what it sends.
Timings are of this machine, never asserted."""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any

import torch

import convprof
from convprof.models.load import load

CONFIGS: dict[str, tuple[str, str]] = {
    # name -> (spec, plan)
    "8b": ("transformers:llama-3-8b", "fsdp=8,param_dtype=bfloat16,reduce_dtype=float32,checkpoint=blocks"),
    "70b": (
        "transformers:llama-3-70b",
        "fsdp=64,tp=8,param_dtype=bfloat16,reduce_dtype=float32,checkpoint=blocks",
    ),
    "70b-pp": (
        "transformers:llama-3-70b",
        "pp=4,fsdp=16,tp=8,param_dtype=bfloat16,reduce_dtype=float32,checkpoint=blocks",
    ),
    "405b": (
        "transformers:llama(hidden_size=16384,intermediate_size=53248,num_hidden_layers=126,"
        "num_attention_heads=128,num_key_value_heads=8,vocab_size=128256)",
        "fsdp=128,tp=8,param_dtype=bfloat16,reduce_dtype=float32,checkpoint=blocks",
    ),
    # DeepSeek-V3's shape (transformers' defaults): 61 layers, 256 routed experts, 8 per token
    "671b-moe": (
        "transformers:deepseek_v3",
        "fsdp=256,ep=64,routing=balanced,param_dtype=bfloat16,reduce_dtype=float32,checkpoint=blocks",
    ),
}


def _loss(out: Any) -> torch.Tensor:
    return out.logits.float().sum()


def run(name: str, tokens: int) -> list[str]:
    spec, plan = CONFIGS[name]
    model = load(spec, meta=True).model
    ids = torch.zeros(1, tokens, dtype=torch.int64, device="meta")
    start = time.perf_counter()
    report = convprof.profile(
        model, ids, backward=True, memory="cuda", optimizer="adamw", parallel=plan, loss=_loss
    )
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    params = sum(p.numel() for p in model.parameters())
    lines = []
    for rank in report.ranks:
        assert rank.memory is not None
        sent = rank.sent_bytes / 1e9
        lines.append(
            f"| {name} ({params / 1e9:.1f}B) | {report.plan} | {tokens:,} | {rank.name} | "
            f"{rank.peak_bytes / 2**30:.1f} GiB ({rank.memory.phase}, {rank.memory.layer or 'loss'}) | "
            f"{2 * (rank.train_macs + rank.recompute_macs) / 1e12:.0f} TFLOP | {sent:.1f} GB | "
            f"{seconds / len(report.ranks):.0f} s | {rss:.2f} GiB |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("configs", nargs="*", default=["70b"], help=f"of {', '.join(CONFIGS)}")
    parser.add_argument("--tokens", type=int, default=8192)
    args = parser.parse_args()
    headers = ["model", "plan", "tokens per rank", "ranks", "peak memory", "step's FLOP", "sent per step"]
    print("| " + " | ".join([*headers, "time per class", "RSS"]) + " |")
    print("|---|---|---:|---|---|---:|---:|---:|---:|")
    for name in args.configs:
        for line in run(name, args.tokens):
            print(line, flush=True)


if __name__ == "__main__":
    main()
