"""Warm, in-process cost of profile() against a plain forward, for an A/B of two source trees:

    python benchmarks/state_cost.py OLD_TREE/src    # e.g. a git worktree of an earlier commit
    python benchmarks/state_cost.py src

Median of 7 interleaved runs after 2 warm-ups, 2 threads, batch 1 at 224x224.
"""

import statistics
import sys
import time
import warnings

import torch
import torchvision

warnings.filterwarnings("ignore")
sys.path.insert(0, sys.argv[1])
import convprof  # noqa: E402

torch.set_num_threads(2)
out = []
for name in ("mobilenet_v3_large", "resnet50"):
    m = torchvision.models.get_model(name).eval()
    x = torch.randn(1, 3, 224, 224)
    for _ in range(2):
        convprof.profile(m, x)
        convprof.profile(m, x, compute=False)
        with torch.no_grad():
            m(x)
    t = {"plain": [], "compute": [], "zero": []}
    for _ in range(7):
        s = time.perf_counter()
        with torch.no_grad():
            m(x)
        t["plain"].append(time.perf_counter() - s)
        s = time.perf_counter()
        convprof.profile(m, x)
        t["compute"].append(time.perf_counter() - s)
        s = time.perf_counter()
        convprof.profile(m, x, compute=False)
        t["zero"].append(time.perf_counter() - s)
    med = {k: statistics.median(v) * 1000 for k, v in t.items()}
    plain, compute, zero = med["plain"], med["compute"], med["zero"]
    out.append(
        f"{name}: plain {plain:.1f} ms, computing {compute:.1f} ms ({compute / plain:.2f}x), "
        f"zero {zero:.1f} ms ({zero / plain:.2f}x)"
    )
print(sys.argv[1], *out, sep="\n  ")
