"""Deeper against shallower nets with the same number of hidden neurons.

The lecture: "deeper networks seem to learn better, for the same number of total neurons", and
"for a given number of parameters, deeper networks impose more smoothness than shallow ones".
Here 512 hidden ReLU units are arranged as 1x512, 2x256, 4x128 and 8x64 (batch norm before each
activation so that the deep nets train as easily as the shallow one), trained on MNIST-1D with
Adam for a fixed number of epochs, several seeds each. (No early stopping: on MNIST-1D the
validation loss turns up long before the validation accuracy stops improving, so stopping on
the loss would cut the nets short.) Deep nets here have *fewer*
parameters than the shallow one with the same neurons, which the table states.

References:
    The lecture, "But depth and training data help".
    Goodfellow, I., Bulatov, Y., Ibarz, J., Arnoud, S. and Shet, V. "Multi-digit Number Recognition
    from Street View Imagery using Deep Convolutional Neural Networks." ICLR 2014 (test accuracy
    rising with depth, 3 to 11 layers; Deep Learning book Figure 6.6).
"""

from __future__ import annotations

from pathlib import Path

from ...stats import mean_std, pm
from .common import Reproduction, Timer, figure, outcome, pyplot, train

NAME = "depth-width"
TITLE = "Depth against width with the same number of hidden neurons"
REFERENCE = "The lecture; Goodfellow et al., Multi-digit Number Recognition, ICLR 2014 (Deep Learning, Fig. 6.6)"
SIZES = {"quick": {"neurons": 128, "depths": [1, 2, 4], "epochs": 8, "seeds": 1},
         "full": {"neurons": 512, "depths": [1, 2, 4, 8], "epochs": 100, "seeds": 3}}


def config(neurons: int, depth: int, epochs: int) -> dict:
    return {"data": {"name": "mnist1d"},
            "model": {"hidden": [neurons // depth] * depth, "init": "kaiming_uniform", "batchnorm": True},
            "optimizer": {"name": "adam", "lr": 3e-3},
            "schedule": {"name": "cosine"},
            "train": {"epochs": epochs, "batch_size": 100}}


def parameters(n_in: int, hidden: list[int], n_out: int = 10) -> int:
    widths = [n_in, *hidden, n_out]
    return sum(a * b + b for a, b in zip(widths, widths[1:]))


def run(out: Path, size: str = "full", seed: int = 0, data_root: str | None = None, log=print) -> dict:
    s = SIZES[size]
    timer = Timer()
    Path(out).mkdir(parents=True, exist_ok=True)
    results = {}
    for depth in s["depths"]:
        doc = config(s["neurons"], depth, s["epochs"])
        results[depth] = [outcome(train(doc, seed + k)) for k in range(s["seeds"])]
        log(f"depth {depth}: test accuracy {pm([r['test_accuracy'] for r in results[depth]])}")
    plt = pyplot()
    fig, (ax_d, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    depths = list(results)
    for key, label, color in (("val_accuracy", "validation", "C0"), ("test_accuracy", "test", "C1")):
        ms = [mean_std([r[key] for r in results[d]]) for d in depths]
        ax_d.errorbar(depths, [m for m, _ in ms], yerr=[sd for _, sd in ms], marker="o", capsize=4, label=label,
                      color=color)
    ax_d.set(xscale="log", xlabel=f"hidden layers ({s['neurons']} neurons in all)", ylabel="accuracy",
             title="accuracy against depth (mean ± std over seeds)")
    ax_d.set_xticks(depths, [str(d) for d in depths])
    for i, d in enumerate(depths):
        h = results[d][0]["history"]
        ax_c.plot([row["epoch"] for row in h], [row["val_accuracy"] for row in h], color=f"C{i}",
                  label=f"{d} x {s['neurons'] // d}")
    ax_c.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy (first seed)")
    for ax in (ax_d, ax_c):
        ax.grid(alpha=0.3)
        ax.legend()
    rep = Reproduction(NAME, TITLE, REFERENCE,
                       "with the same number of hidden neurons, deeper nets generalize better",
                       size, {**s, "data": "mnist1d", "optimizer": "Adam, lr 3e-3, cosine schedule",
                              "batchnorm": True, "batch_size": 100, "seed": seed})
    rep.figures.append(figure(fig, Path(out) / "depth_width.png"))
    for d in depths:
        hidden = [s["neurons"] // d] * d
        rep.row(f"{d} x {s['neurons'] // d} ({parameters(40, hidden):,} parameters): test accuracy",
                "rises with depth" if d == depths[-1] else "—", pm([r["test_accuracy"] for r in results[d]]))
    acc = {d: mean_std([r["test_accuracy"] for r in results[d]])[0] for d in depths}
    best = max(acc, key=acc.get)
    rep.verdict = (f"Best depth: {best} ({acc[best]:.1%}); the deepest ({depths[-1]}) "
                   f"{'beats' if acc[depths[-1]] > acc[depths[0]] else 'does NOT beat'} the shallowest ({acc[depths[0]]:.1%}).")
    rep.extra = {"results": {str(d): rs for d, rs in results.items()}}
    rep.wall_seconds = timer.seconds
    return rep.save(out)
