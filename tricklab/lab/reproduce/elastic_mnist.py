"""Elastic distortions of the training images (Simard, Steinkraus & Platt 2003).

The paper's claim: distorting every training image by a random smooth displacement field (a
uniform random field in [-1, 1] per pixel and axis, smoothed by a Gaussian of sigma 4 pixels and
scaled by alpha = 34) is the best augmentation for handwriting, for an MLP and for a CNN alike:
test errors 1.6% (MLP, 800 hidden units, no distortion) to 0.7% (elastic), and 0.4% for their
convolutional net with elastic distortions. Here the same two networks are trained with and
without ``augmentation.elastic`` (tricklab.data.ElasticDistortion, the paper's alpha and sigma) for
the budget a laptop CPU affords; the table states what that budget reaches beside the paper.

The networks: the paper's 2-layer MLP, 784-800-10; its CNN, two 5x5 convolutions with stride 2
(5 and 50 maps: 28x28 -> 12x12 -> 4x4, no padding), a hidden layer of 100 and the 10 outputs.
Departures from the paper, for speed and because they are the library's defaults: ReLU units
instead of the paper's sigmoid/tanh, Adam with a cosine schedule instead of its SGD schedule,
28x28 inputs instead of 29x29, far fewer epochs.

References:
    Simard, P. Y., Steinkraus, D. and Platt, J. C. "Best Practices for Convolutional Neural Networks
    Applied to Visual Document Analysis." ICDAR 2003, Table 1 and section 2.
"""

from __future__ import annotations

from pathlib import Path

from ...stats import mean_std, pm
from .common import Reproduction, Timer, figure, outcome, pyplot, train

NAME = "elastic-mnist"
TITLE = "Elastic distortions: an MLP and a CNN on MNIST with and without them (Simard et al. 2003)"
REFERENCE = "Simard, Steinkraus & Platt, Best Practices for CNNs Applied to Visual Document Analysis, ICDAR 2003"
SIZES = {
    "quick": {"epochs": 3, "train_subset": 6000, "test_subset": 1000, "seeds": 1},
    "full": {"epochs": 5, "train_subset": 0, "test_subset": 0, "seeds": 3},
}
ALPHA, SIGMA, BATCH, LR = 34.0, 4.0, 64, 1e-3
PAPER = {("mlp", False): "1.6%", ("mlp", True): "0.7%", ("cnn", False): "0.6% (affine distortions; none: not given)",
         ("cnn", True): "0.4%"}


def layers(net: str) -> list[dict]:
    """The paper's MLP (784-800-10) or its CNN (5x5/2 conv 5 maps, 5x5/2 conv 50 maps, 100, 10)."""
    if net == "mlp":
        return [{"type": "Flatten"}, {"type": "Linear", "out_features": 800, "init": "kaiming_uniform"},
                {"type": "ReLU"}, {"type": "Linear"}]
    conv = lambda c: {"type": "Conv2d", "out_channels": c, "kernel_size": 5, "stride": 2,  # noqa: E731
                      "init": "kaiming_uniform"}
    return [conv(5), {"type": "ReLU"}, conv(50), {"type": "ReLU"}, {"type": "Flatten"},
            {"type": "Linear", "out_features": 100, "init": "kaiming_uniform"}, {"type": "ReLU"}, {"type": "Linear"}]


def config(net: str, elastic: bool, s: dict, data_root: str | None = None) -> dict:
    return {"data": {"name": "mnist", "root": data_root or "", "normalize": "none", "val_fraction": 1 / 6,
                     "train_subset": s["train_subset"], "test_subset": s["test_subset"]},
            "model": {"layers": layers(net)},
            "augmentation": {"elastic": elastic, "elastic_alpha": ALPHA, "elastic_sigma": SIGMA},
            "optimizer": {"name": "adam", "lr": LR},
            "schedule": {"name": "cosine"},
            "train": {"epochs": s["epochs"], "batch_size": BATCH}}


VARIANTS = {("mlp", False): "MLP 800 HU", ("mlp", True): "MLP 800 HU, elastic",
            ("cnn", False): "CNN", ("cnn", True): "CNN, elastic"}


def run(out: Path, size: str = "full", seed: int = 0, data_root: str | None = None, log=print) -> dict:
    s = SIZES[size]
    timer = Timer()
    Path(out).mkdir(parents=True, exist_ok=True)
    results = {}
    for (net, elastic), name in VARIANTS.items():
        results[name] = [outcome(train(config(net, elastic, s, data_root), seed + k)) for k in range(s["seeds"])]
        log(f"{name}: test error {pm([1 - r['test_accuracy'] for r in results[name]])}")
    plt = pyplot()
    fig, (ax_curves, ax_bars) = plt.subplots(1, 2, figsize=(12, 4))
    for i, (name, rs) in enumerate(results.items()):
        h = rs[0]["history"]
        ax_curves.plot([row["epoch"] for row in h], [100 * (1 - row["val_accuracy"]) for row in h], color=f"C{i}",
                       marker="o", ms=3, label=name, ls="-" if "elastic" in name else "--")
    ax_curves.set(xlabel="epoch", ylabel="validation error (%)", title=f"validation error (seed {seed})",
                  yscale="log")
    names = list(results)
    stats = [mean_std([100 * (1 - r["test_accuracy"]) for r in results[n]]) for n in names]
    ax_bars.bar(range(len(names)), [m for m, _ in stats], yerr=[sd for _, sd in stats], capsize=4,
                color=[f"C{i}" for i in range(len(names))])
    paper = [float(PAPER[key].split("%")[0]) for key in VARIANTS]
    ax_bars.scatter(range(len(names)), paper, marker="_", s=400, color="black", zorder=3, label="paper")
    ax_bars.set_xticks(range(len(names)), names, rotation=15)
    ax_bars.set(ylabel="test error (%)", title="test error (mean ± std over seeds; black: the paper)")
    ax_bars.set_ylim(bottom=0)
    for ax in (ax_curves, ax_bars):
        ax.grid(alpha=0.3)
        ax.legend()
    rep = Reproduction(NAME, TITLE, REFERENCE,
                       "elastic distortions lower the test error of an MLP and of a CNN; the CNN with them is best",
                       size, {**s, "alpha": ALPHA, "sigma": SIGMA, "batch_size": BATCH,
                              "optimizer": f"Adam, lr {LR}, cosine", "seed": seed})
    rep.figures.append(figure(fig, Path(out) / "elastic_mnist.png"))
    for key, name in VARIANTS.items():
        rep.row(f"{name}: test error after {s['epochs']} epochs", f"{PAPER[key]} (many more epochs)",
                pm([1 - r["test_accuracy"] for r in results[name]]))
    err = {name: mean_std([1 - r["test_accuracy"] for r in results[name]])[0] for name in names}
    helps = [net for net, name in (("MLP", "MLP 800 HU"), ("CNN", "CNN")) if err[f"{name}, elastic"] < err[name]]
    best = min(err, key=err.get)
    rep.verdict = (f"Elastic distortions lower the test error of {' and '.join(helps) if helps else 'NEITHER net'} "
                   f"at this budget; the best is {best} ({err[best]:.2%} against the paper's 0.4%).")
    rep.extra = {"results": results}
    rep.wall_seconds = timer.seconds
    return rep.save(out)
