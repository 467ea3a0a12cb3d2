"""How long the console script takes to answer `--help` and `--version`, against Python alone
and Python importing torch (what every command used to pay first), and two whole profiles (a
Llama-3 8B decode step after 2,048 tokens, ViT-H/14) against the imports they need. Median of 5
fresh processes.

    python benchmarks/cli_startup.py
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time


def seconds(command: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    script = shutil.which("convprof") or "convprof"
    rows = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
        ("convprof --help", [script, "--help"]),
        ("convprof --version", [script, "--version"]),
        ("convprof check --help", [script, "check", "--help"]),
    ]
    print("| command | seconds |\n|---|---|")
    for label, command in rows:
        print(f"| `{label}` | {seconds(command):.2f} |")
    # Whole profiles from the command line, against the imports they cannot avoid (what the
    # target "within import time + 1 s" is measured from); zero compute, the default.
    profiles = [
        (
            "transformers:llama-3-8b --past 2048",
            # the Llama classes import transformers' image and video helpers, torchvision and
            # torch._dynamo with them (about 2 s): the model's own cost, paid by any user of it
            "import torch, convprof.cli, convprof.api; from transformers import LlamaForCausalLM",
        ),
        ("torchvision:vit_h_14", "import torch, convprof.cli, convprof.api, torchvision.models"),
    ]
    print("\n| profile | imports alone | whole command | above the imports |\n|---|---:|---:|---:|")
    for spec, imports in profiles:
        base = seconds([sys.executable, "-c", imports])
        whole = seconds([script, "profile", *spec.split(), "--depth", "0"])
        print(f"| `convprof profile {spec}` | {base:.2f} | {whole:.2f} | {whole - base:+.2f} |")


if __name__ == "__main__":
    main()
