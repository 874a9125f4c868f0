"""Batch norm in a convolutional net: faster, and it tolerates a higher learning rate.

The lecture (after Ioffe & Szegedy 2015): batch normalization lets a network train faster and
with higher learning rates. Here one small CNN (two 5x5 conv layers of 8 and 16 maps, each
followed by ReLU and 2x2 max pooling, a hidden Linear layer of 64 ReLU units, a Linear read-out)
is trained on MNIST with SGD and momentum, with and without batch norm (``BatchNorm2d`` after each
convolution, ``BatchNorm1d`` after the hidden Linear), at a base learning rate and at ten times it. Every variant of a seed starts from the same data order; the test accuracy is taken
every few hundred steps. A run whose loss becomes NaN or infinite stops there (the trainer refuses
non-finite values) and is reported as diverged.

Measured: the final test accuracy of each variant, and the steps the batch-norm nets need to reach
the final accuracy of the plain net at the base rate (the paper's Fig. 2 measure: steps to match
the baseline).

References:
    Ioffe, S. and Szegedy, C. "Batch Normalization: Accelerating Deep Network Training by Reducing
    Internal Covariate Shift." ICML 2015, section 4.2 (Inception: 14 times fewer steps to the
    baseline's accuracy; a 5x and a 30x learning rate).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...stats import mean_std, pm
from ...train import NonFiniteError
from .callbacks import EvaluateEvery
from .common import Reproduction, Timer, configure, figure, pyplot, splits, train

NAME = "batchnorm-cnn"
TITLE = "Batch norm in a CNN: faster, and it tolerates a 10x learning rate"
REFERENCE = "Ioffe & Szegedy, Batch Normalization, ICML 2015, section 4.2; the lecture"
SIZES = {
    "quick": {"epochs": 1, "train_subset": 6000, "test_subset": 1000, "eval_every": 20, "seeds": 1},
    "full": {"epochs": 1, "train_subset": 0, "test_subset": 0, "eval_every": 130, "seeds": 3},
}
BASE_LR, FACTOR, MOMENTUM, BATCH, CHANNELS, HIDDEN = 0.02, 10, 0.9, 64, (8, 16), 64
VARIANTS = {  # name: (batch norm, learning-rate factor)
    "plain": (False, 1), "batch norm": (True, 1), f"plain, {FACTOR}x lr": (False, FACTOR),
    f"batch norm, {FACTOR}x lr": (True, FACTOR),
}


def layers(batchnorm: bool) -> list[dict]:
    """conv 5x5 (8) [BN] ReLU pool, conv 5x5 (16) [BN] ReLU pool, Linear 64 [BN] ReLU, Linear; no bias
    before a batch norm (its beta is the bias)."""
    out = []
    for channels in CHANNELS:
        out.append({"type": "Conv2d", "out_channels": channels, "kernel_size": 5, "padding": 2,
                    "bias": not batchnorm, "init": "kaiming_uniform"})
        out += [{"type": "BatchNorm2d"}] * batchnorm + [{"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2}]
    out += [{"type": "Flatten"}, {"type": "Linear", "out_features": HIDDEN, "bias": not batchnorm}]
    return out + [{"type": "BatchNorm1d"}] * batchnorm + [{"type": "ReLU"}, {"type": "Linear"}]


def config(batchnorm: bool, factor: float, s: dict, data_root: str | None = None) -> dict:
    return {"data": {"name": "mnist", "root": data_root or "", "normalize": "global", "val_fraction": 1 / 6,
                     "train_subset": s["train_subset"], "test_subset": s["test_subset"]},
            "model": {"layers": layers(batchnorm)},
            "optimizer": {"name": "sgd", "lr": BASE_LR * factor, "momentum": MOMENTUM},
            "train": {"epochs": s["epochs"], "batch_size": BATCH}}


def train_variant(batchnorm: bool, factor: float, s: dict, test, seed: int, data_root, log) -> dict:
    evals = EvaluateEvery(s["eval_every"], {"test": test})
    diverged = None
    try:
        train(config(batchnorm, factor, s, data_root), seed, callbacks=[evals])
    except NonFiniteError as exc:
        diverged = evals.trainer.step_count + 1
        log(f"diverged: {exc}")
    acc = evals.records["test_accuracy"]
    return {"steps": evals.records["step"], "test_accuracy": acc, "diverged_at": diverged,
            "final": float("nan") if diverged else acc[-1]}


def steps_to(run: dict, target: float) -> int | None:
    """The first evaluated step at which ``run`` reached ``target`` test accuracy (None: never)."""
    return next((s for s, a in zip(run["steps"], run["test_accuracy"]) if a >= target), None)


def run(out: Path, size: str = "full", seed: int = 0, data_root: str | None = None, log=print) -> dict:
    s = SIZES[size]
    timer = Timer()
    Path(out).mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for k in range(s["seeds"]):
        test = splits(configure(config(False, 1, s, data_root), seed + k))["test"]
        for name, (bn, factor) in VARIANTS.items():
            r = train_variant(bn, factor, s, test, seed + k, data_root, log)
            runs[name].append(r)
            log(f"seed {seed + k} {name}: " + (f"diverged at step {r['diverged_at']}" if r["diverged_at"]
                                              else f"test accuracy {r['final']:.4f}"))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (name, rs) in enumerate(runs.items()):
        ax.plot(rs[0]["steps"], rs[0]["test_accuracy"], color=f"C{i}", label=name,
                ls="-" if VARIANTS[name][0] else "--")
    ax.set(xlabel="training step", ylabel="test accuracy", title=f"test accuracy during training (seed {seed})",
           ylim=(0.0, 1.0))
    ax.grid(alpha=0.3)
    ax.legend()
    rep = Reproduction(NAME, TITLE, REFERENCE,
                       "with batch norm the same CNN reaches the plain net's accuracy in fewer steps, and "
                       f"trains at {FACTOR}x the learning rate", size,
                       {**s, "channels": list(CHANNELS), "kernel": 5, "batch_size": BATCH, "optimizer": "SGD",
                        "momentum": MOMENTUM, "base_lr": BASE_LR, "factor": FACTOR, "seed": seed})
    rep.figures.append(figure(fig, Path(out) / "batchnorm_cnn.png"))

    def final(name):
        done = [r["final"] for r in runs[name] if not r["diverged_at"]]
        lost = len(runs[name]) - len(done)
        text = pm(done) if done else "diverged"
        return text + (f" ({lost} of {len(runs[name])} seeds diverged)" if done and lost else "")

    papers = {"plain": "the baseline", "batch norm": "higher, sooner", f"plain, {FACTOR}x lr": "fails or is slower",
              f"batch norm, {FACTOR}x lr": "trains, faster still (the paper's 5x and 30x)"}
    for name in VARIANTS:
        rep.row(f"{name}: final test accuracy", papers[name], final(name))
    targets = [r["final"] for r in runs["plain"] if not r["diverged_at"]]
    target = mean_std(targets)[0] if targets else float("nan")
    total = runs["plain"][0]["steps"][-1]
    reached = {}
    for name in (n for n in VARIANTS if VARIANTS[n][0]):
        steps = [steps_to(r, target) for r in runs[name]]
        reached[name] = steps
        got = [st for st in steps if st is not None]
        rep.row(f"{name}: steps to the plain net's final accuracy ({target:.4f})",
                "a fraction of the plain net's (14x fewer for Inception)",
                (f"{mean_std(got)[0]:,.0f} of {total:,}" + (f" (not reached in {len(steps) - len(got)} seeds)"
                                                            if len(got) < len(steps) else ""))
                if got else "not reached")
    bn_final = mean_std([r["final"] for r in runs["batch norm"]])[0]
    fast = [st for st in reached["batch norm"] if st is not None]
    faster = bool(fast) and np.mean(fast) < total
    high = [r for r in runs[f"batch norm, {FACTOR}x lr"] if not r["diverged_at"]]
    rep.verdict = (f"Batch norm {'reaches' if faster else 'does NOT reach'} the plain net's final accuracy "
                   f"before the plain net's last step and ends at {bn_final:.4f}; at {FACTOR}x the rate it "
                   f"{'trains' if high else 'DIVERGES'} ({final(f'batch norm, {FACTOR}x lr')}), the plain net "
                   f"{final(f'plain, {FACTOR}x lr')}.")
    rep.extra = {"runs": runs, "target": target}
    rep.wall_seconds = timer.seconds
    return rep.save(out)
