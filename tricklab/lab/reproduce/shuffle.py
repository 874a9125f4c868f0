"""SGD with and without reshuffling each epoch, on training data stored in class order.

Three ways to visit the same training set (stored sorted by class, as data often arrives):

    ordered     the stored order every epoch: long runs of one class
    once        one random permutation, then the same order every epoch
    reshuffle   a new random permutation every epoch (the DataLoader's default)

The order is the configuration's ``data.order`` ("sorted", "once", "reshuffle"); each run goes
through the one pipeline (``experiment.run``) with the same seed, so the same split and the same
initial weights; callbacks record the training loss of every step and the training and test
accuracy of every epoch. Same network, same initial weights, same step size. With ordered data each run of one class drags
the weights towards that class, so the training loss swings from step to step and the net ends
each epoch biased towards the last classes it saw.

References:
    LeCun, Y., Bottou, L., Orr, G. and Müller, K.-R. "Efficient BackProp." Neural Networks: Tricks
    of the Trade, 1998, section 4.2 ("shuffle the examples").
    Bottou, L. "Stochastic Gradient Descent Tricks." Neural Networks: Tricks of the Trade, 2nd ed.,
    2012 (reshuffle every epoch).
    Gürbüzbalaban, M., Ozdaglar, A. and Parrilo, P. "Why random reshuffling beats stochastic
    gradient descent." Mathematical Programming, 2021.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...stats import mean_std, pm
from .callbacks import EvaluateEachEpoch, StepLoss
from .common import Reproduction, Timer, configure, figure, pyplot, splits, train

NAME = "shuffle"
TITLE = "Shuffling: SGD on ordered data, shuffled once, and reshuffled every epoch"
REFERENCE = "LeCun et al., Efficient BackProp (1998), section 4.2; Bottou, SGD Tricks (2012)"
SIZES = {
    "quick": {"epochs": 3, "train_subset": 6000, "test_subset": 2000, "seeds": 1},
    "full": {"epochs": 15, "train_subset": 0, "test_subset": 0, "seeds": 3},
}
HIDDEN, LR, MOMENTUM, BATCH = [256], 0.05, 0.9, 64
ORDERS = {"ordered": "sorted", "shuffled once": "once", "reshuffled every epoch": "reshuffle"}


def config(order: str, s: dict, data_root: str | None = None) -> dict:
    """MNIST in [0, 1], one hidden layer of 256 ReLU (He-uniform), SGD with momentum, ``data.order``."""
    return {"data": {"name": "mnist", "root": data_root or "", "normalize": "none", "val_fraction": 1 / 6,
                     "train_subset": s["train_subset"], "test_subset": s["test_subset"], "order": order},
            "model": {"hidden": HIDDEN, "init": "kaiming_uniform"},
            "optimizer": {"name": "sgd", "lr": LR, "momentum": MOMENTUM},
            "train": {"epochs": s["epochs"], "batch_size": BATCH}}


def train_order(order: str, s: dict, data: dict, seed: int, data_root) -> dict:
    """One run: the history as lists (epoch, train_loss, *_accuracy) and every step's loss."""
    steps = StepLoss()
    result = train(config(order, s, data_root), seed,
                   callbacks=[steps, EvaluateEachEpoch({"train": data["train"], "test": data["test"]})])
    h = result.history
    keys = ("epoch", "train_loss", "train_accuracy", "val_accuracy", "test_accuracy")
    return {**{k: [row[k] for row in h] for k in keys}, "step_loss": steps.losses}


def run(out: Path, size: str = "full", seed: int = 0, data_root: str | None = None, log=print) -> dict:
    s = SIZES[size]
    timer = Timer()
    Path(out).mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {name: [] for name in ORDERS}
    for k in range(s["seeds"]):
        data = splits(configure(config("reshuffle", s, data_root), seed + k))  # the split every order sees
        for name, order in ORDERS.items():
            hist = train_order(order, s, data, seed + k, data_root)
            results[name].append(hist)
            log(f"seed {seed + k} {name}: test accuracy {hist['test_accuracy'][-1]:.4f}")
    plt = pyplot()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4))
    for i, (name, runs) in enumerate(results.items()):
        acc = np.array([r["test_accuracy"] for r in runs])
        epochs = runs[0]["epoch"]
        ax_acc.plot(epochs, acc.mean(0), marker="o", ms=3, color=f"C{i}", label=name)
        if len(runs) > 1:
            ax_acc.fill_between(epochs, acc.min(0), acc.max(0), color=f"C{i}", alpha=0.2)
        steps = np.maximum(np.asarray(runs[0]["step_loss"]), 1e-6)  # a run of one class drives the loss to 0
        window = max(1, len(steps) // (20 * len(epochs)))
        smooth = np.convolve(steps, np.ones(window) / window, mode="valid")
        ax_loss.plot(np.arange(len(smooth)) / (len(steps) / len(epochs)), smooth, color=f"C{i}", lw=0.8, label=name)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy (band: min-max over seeds)")
    ax_loss.set(xlabel="epoch", ylabel="minibatch loss", yscale="log", title="training loss of each step (first seed, floored at 1e-6)")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    rep = Reproduction(NAME, TITLE, REFERENCE,
                       "visiting ordered data in order makes SGD oscillate and end far worse; shuffling fixes "
                       "it, and reshuffling every epoch is at least as good as one fixed shuffle",
                       size, {**s, "hidden": HIDDEN, "lr": LR, "momentum": MOMENTUM, "batch_size": BATCH,
                              "seed": seed, "n_train": len(data["train"][1]),
                              "n_test": len(data["test"][1]),
                              "data": "MNIST; ordered: the training split sorted by class (data.order)"})
    rep.figures.append(figure(fig, Path(out) / "shuffle.png"))
    paper = {"ordered": "poor: successive examples of one class (LeCun et al. 4.2)",
             "shuffled once": "good", "reshuffled every epoch": "good, converges at least as fast (Bottou 2012)"}
    for name, runs in results.items():
        rep.row(f"{name}: test accuracy after {s['epochs']} epochs", paper[name],
                pm([r["test_accuracy"][-1] for r in runs]))
    for name, runs in results.items():
        rep.row(f"{name}: training loss in the last epoch", "lowest with reshuffling",
                pm([r["train_loss"][-1] for r in runs], scale=1, digits=4, unit=""))
    for name, runs in results.items():
        per_epoch = len(runs[0]["step_loss"]) // s["epochs"]
        swing = [float(np.std(np.log10(np.maximum(r["step_loss"][-per_epoch:], 1e-7)))) for r in runs]
        rep.row(f"{name}: std of log10 minibatch loss in the last epoch (floored at 1e-7)",
                "large when the data is ordered",
                pm(swing, scale=1, digits=3, unit=""))
    acc = {name: mean_std([r["test_accuracy"][-1] for r in runs])[0] for name, runs in results.items()}
    rep.verdict = (f"Ordered data ends {'far below' if acc['ordered'] < acc['shuffled once'] - 0.05 else 'NOT far below'} "
                   f"the shuffled runs; reshuffling every epoch ends "
                   f"{'at or above' if acc['reshuffled every epoch'] >= acc['shuffled once'] - 0.002 else 'below'} "
                   "one fixed shuffle.")
    rep.extra = {"results": {k: [{kk: vv for kk, vv in r.items() if kk != "step_loss"} for r in v]
                             for k, v in results.items()}}
    rep.wall_seconds = timer.seconds
    return rep.save(out)
