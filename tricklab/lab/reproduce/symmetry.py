"""Identically initialized hidden units never become different (the lecture's "key point").

If every hidden unit of a layer starts with the same incoming weights and the same outgoing
weights, every unit computes the same output and receives the same gradient, so after any number
of gradient steps the units are still copies of one another: the layer is as good as one unit.
Random initialization breaks the symmetry; so does dropout (each unit sees its own masks).

Measured after every epoch, for each hidden layer: the spread of the units' incoming weight
vectors, max_i ||w_i - mean_j w_j|| / ||mean_j w_j||, and the number of distinct units (rows
differing by more than 1e-6 relative). Float64 keeps the identical computations bit-identical.

References:
    The lecture, "Other tricks": "neurons with identical connections that are identically
    initialized will never diverge". Goodfellow, Bengio and Courville, Deep Learning (2016),
    section 8.4 ("break symmetry").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ... import nn
from .callbacks import EvaluateEachEpoch, InitialWeights, Measure, set_linears
from .common import Reproduction, Timer, configure, figure, pyplot, splits, train

NAME = "symmetry"
TITLE = "Identically initialized units never become different"
REFERENCE = "The lecture (initialization: break symmetry); Goodfellow, Bengio & Courville, Deep Learning, 8.4"
SIZES = {"quick": {"epochs": 5, "hidden": [32, 32]}, "full": {"epochs": 60, "hidden": [128, 128]}}
LR, MOMENTUM, BATCH, CONSTANT = 0.05, 0.9, 32, 0.05
VARIANTS = {  # name: (identical start, dropout, one unit per layer)
    "identical": (True, 0.0, False),
    "identical + dropout": (True, 0.1, False),
    "random": (False, 0.0, False),
    "random, one unit per layer": (False, 0.0, True),
}


def constant_init(shape, rng=None, dtype=np.float64):
    """W = CONSTANT everywhere (``nn.init.constant``, whose value no configuration key sets)."""
    return nn.init.constant(shape, CONSTANT, dtype=dtype)


def config(variant: str, hidden, epochs: int) -> dict:
    """MNIST-1D (standardized per feature), a float64 tanh MLP (Xavier-uniform, [dropout]), SGD with momentum."""
    _, dropout, narrow = VARIANTS[variant]
    return {"data": {"name": "mnist1d"},
            "model": {"hidden": [1] * len(hidden) if narrow else list(hidden), "activation": "tanh",
                      "init": "xavier_uniform", "dropout": dropout},
            "optimizer": {"name": "sgd", "lr": LR, "momentum": MOMENTUM},
            "train": {"epochs": epochs, "batch_size": BATCH, "dtype": "float64"}}


def spread(model: nn.Sequential) -> list[tuple[float, int]]:
    """Per hidden layer: (relative spread of the units' incoming weights, number of distinct units)."""
    out = []
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]
    for lin in linears:
        W = np.concatenate([lin.weight.data, lin.bias.data[:, None]], axis=1)
        centre = W.mean(0)
        rel = np.linalg.norm(W - centre, axis=1).max() / max(np.linalg.norm(centre), 1e-300)
        distinct, reps = 0, []
        for w in W:
            if not any(np.linalg.norm(w - r) <= 1e-6 * max(np.linalg.norm(r), 1e-12) for r in reps):
                reps.append(w)
                distinct += 1
        out.append((float(rel), distinct))
    return out


def run(out: Path, size: str = "full", seed: int = 0, data_root: str | None = None, log=print) -> dict:
    s = SIZES[size]
    timer = Timer()
    Path(out).mkdir(parents=True, exist_ok=True)
    test = splits(configure(config("random", s["hidden"], s["epochs"]), seed))["test"]  # every variant's
    results = {}
    for variant in VARIANTS:
        track = Measure(spread, each_epoch=True)
        callbacks = [track, EvaluateEachEpoch({"test": test})]
        if VARIANTS[variant][0]:  # identical: constant weights, zero biases
            callbacks.insert(0, InitialWeights(lambda model: set_linears(model, constant_init, 0.0)))
        h = train(config(variant, s["hidden"], s["epochs"]), seed, callbacks=callbacks).history
        results[variant] = {**{k: [row[k] for row in h] for k in ("epoch", "train_loss", "val_accuracy",
                                                                  "test_accuracy")},
                            "spread": [track.records["init"], *track.records["epochs"]]}
        final = results[variant]["spread"][-1]
        log(f"{variant}: distinct units per layer {[d for _, d in final]}, "
            f"test accuracy {results[variant]['test_accuracy'][-1]:.3f}")
    plt = pyplot()
    fig, (ax_s, ax_a) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (variant, r) in enumerate(results.items()):
        rel = np.array([[max(sp, 1e-17) for sp, _ in row] for row in r["spread"]])
        for layer in range(rel.shape[1]):
            ax_s.plot(np.arange(len(rel)), rel[:, layer], color=f"C{i}", ls=("-", "--", ":")[layer % 3],
                      label=f"{variant}, layer {layer + 1}")
        ax_a.plot(r["epoch"], r["test_accuracy"], marker="o", ms=3, color=f"C{i}", label=variant)
    ax_s.set(xlabel="epoch", ylabel="relative spread of units' weights", yscale="log",
             title="how different the hidden units are (1e-17: identical)")
    ax_a.set(xlabel="epoch", ylabel="test accuracy", title="MNIST-1D test accuracy")
    for ax in (ax_s, ax_a):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    rep = Reproduction(NAME, TITLE, REFERENCE,
                       "units that start identical (same incoming and outgoing weights) stay identical under "
                       "gradient descent; random initialization or dropout breaks the symmetry",
                       size, {**s, "data": "mnist1d", "activation": "tanh", "lr": LR, "momentum": MOMENTUM,
                              "batch_size": BATCH, "constant": CONSTANT, "dtype": "float64", "seed": seed})
    rep.figures.append(figure(fig, Path(out) / "symmetry.png"))
    width = s["hidden"][0]
    expect = {"identical": ("1 per layer: the units never diverge", "0"),
              "identical + dropout": (f"up to {width}: dropout breaks the symmetry", "> 0"),
              "random": (f"{width} per layer", "> 0")}
    for variant, (units, spread_) in expect.items():
        final = results[variant]["spread"][-1]
        rep.row(f"{variant}: distinct units per hidden layer after {s['epochs']} epochs", units,
                " / ".join(str(d) for _, d in final))
        rep.row(f"{variant}: largest relative spread of the units' weights", spread_,
                f"{max(sp for sp, _ in final):.2g}")
    narrow = results["random, one unit per layer"]["test_accuracy"][-1]
    for variant, r in results.items():
        paper = (f"about what one unit per layer reaches ({narrow:.2%})" if variant == "identical"
                 else "as good as the width allows" if variant != "random, one unit per layer" else "—")
        rep.row(f"{variant}: MNIST-1D test accuracy", paper, f"{r['test_accuracy'][-1]:.2%}")
    same = all(d == 1 for _, d in results["identical"]["spread"][-1])
    rep.verdict = (f"The identically initialized units {'stayed identical' if same else 'DID diverge'} through "
                   f"{s['epochs']} epochs (a spread near 1e-16 is float64 rounding in the matrix products).")
    rep.extra = {"results": results}
    rep.wall_seconds = timer.seconds
    return rep.save(out)
