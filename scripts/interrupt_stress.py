"""Interrupt profiling at random moments (issue 10): timer signals raising KeyboardInterrupt
during computing and zero-compute passes of MobileNetV2. Only KeyboardInterrupt may surface;
afterwards no dispatch mode or global hook may be left and the model must be unchanged.

    python scripts/interrupt_stress.py [--trials 450]
"""

from __future__ import annotations

import argparse
import collections
import random
import signal
import time
from types import FrameType

import torch
import torchvision
from torch.nn.modules import module as hooks
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

import convprof

armed = False


def interrupt(signum: int, frame: FrameType | None) -> None:
    if armed:
        raise KeyboardInterrupt


def main() -> None:
    global armed
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=450)
    trials = parser.parse_args().trials
    torch.set_num_threads(1)
    model = torchvision.models.mobilenet_v2()
    x = torch.randn(1, 3, 64, 64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    signal.signal(signal.SIGALRM, interrupt)
    start = time.perf_counter()
    convprof.profile(model, x)
    span = time.perf_counter() - start
    outcomes: collections.Counter[str] = collections.Counter()
    for trial in range(trials):
        compute = trial % 2 == 0
        armed = True
        signal.setitimer(signal.ITIMER_REAL, random.uniform(0, span if compute else span / 2))
        try:
            try:
                convprof.profile(model, x, compute=compute)
                armed = False
                outcomes["finished"] += 1
            except KeyboardInterrupt:
                armed = False
                outcomes["KeyboardInterrupt"] += 1
            except Exception as exc:
                armed = False
                outcomes[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
        except KeyboardInterrupt:  # landed after profile() had returned
            outcomes["after return"] += 1
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        assert not _get_current_dispatch_mode_stack(), "a dispatch mode was left on the stack"
        assert not hooks._global_forward_hooks and not hooks._global_forward_pre_hooks
        assert not hooks._global_forward_hooks_with_kwargs
    print(dict(outcomes))
    same = all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    print(f"state unchanged: {same}; training flag: {model.training}")


if __name__ == "__main__":
    main()
