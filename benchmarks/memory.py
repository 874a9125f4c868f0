"""Peak memory of training one side (tricklab or torch) of a case, in a fresh process.

    python -m benchmarks.memory --case mlp-bn-dropout --side tricklab

Prints one JSON line, in MiB: the peak resident set size during ``--steps`` training steps
(VmHWM, reset just before them through /proc/self/clear_refs) and its growth over the resident
size before them. That baseline comes after one warm-up step on 2 examples, which touches the
gradients and the optimizer state and compiles tricklab's kernels (numba's compiler is not the
net's memory), so the growth is a step's working memory: activations, caches and temporaries.
Random inputs: the values do not change the memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource

import numpy as np


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    p.add_argument("--case", default="mlp-bn-dropout")
    p.add_argument("--side", choices=("tricklab", "torch"), required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    from tricklab.data import DataLoader

    from .cases import CASES, build
    from .run import TorchTrain, TricklabTrain

    torch.set_num_threads(args.threads)
    case = next(c for c in CASES if c.name == args.case)
    rng = np.random.default_rng(0)
    n = args.steps * case.batch_size
    X = rng.standard_normal((n, 784), dtype=np.float32)
    if case.kind == "conv":
        from .cases import IMAGE

        X = X.reshape(n, *IMAGE)
    y = rng.integers(0, 10, size=n)
    model, loss, opt, twin, topt = build(case, rng)
    loader = DataLoader(X, y, case.batch_size, rng=1)
    side = TricklabTrain(model, loss, opt, loader) if args.side == "tricklab" else TorchTrain(twin, topt, loader)
    with threadpool_limits(limits=args.threads):
        built = _status_mib("VmRSS")
        side.loader = DataLoader(X[:2], y[:2], 2)
        for _ in side.steps():
            pass
        side.loader = loader
        before = _status_mib("VmRSS")
        exact = _reset_peak()
        for _ in side.steps():
            pass
        peak = _status_mib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"side": args.side, "case": case.name, "peak_mib": peak, "growth_mib": peak - before,
                      "warmup_mib": before - built, "peak_reset": exact}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
