"""How long the console script takes to answer `--help` and `--version`, against Python alone
and Python importing torch (what every command used to pay first). Median of 5 fresh processes.

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


if __name__ == "__main__":
    main()
