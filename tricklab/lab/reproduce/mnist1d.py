"""MNIST-1D: the paper's baselines, then the lecture's tricks added one at a time.

Greydanus (2020) reports test accuracy on MNIST-1D (4,000 training and 1,000 test sequences of 40
points) of about 32% for logistic regression and 68% for an MLP (40-100-100-10 ReLU, Adam with
step size 1e-2, minibatches of 100, 6,000 steps). Here the same two models with the same
optimizer (on the 3,600 sequences left after holding out a tenth for validation), then a wider
and deeper MLP to which the tricks are added cumulatively: input normalization, batch norm,
dropout, weight decay with a cosine schedule and gradient clipping, noise augmentation, early
stopping on the validation split. Every variant runs with several seeds; the table gives the
mean and standard deviation of the test accuracy, scored once after training.

References:
    Greydanus, S. "Scaling down Deep Learning." arXiv:2011.14439, 2020 (Figure/Table of
    baselines: logistic 32%, MLP 68%, CNN 94%, GRU 91%).
"""

from __future__ import annotations

from pathlib import Path

from ...stats import mean_std, pm
from .common import Reproduction, Timer, figure, outcome, pyplot, train

NAME = "mnist1d"
TITLE = "MNIST-1D: the paper's baselines and what the tricks add"
REFERENCE = "Greydanus, Scaling down Deep Learning (MNIST-1D), arXiv:2011.14439, 2020"
SIZES = {"quick": {"epochs": 5, "paper_epochs": 15, "seeds": 1, "wide": [128, 128, 128]},
         "full": {"epochs": 100, "paper_epochs": 150, "seeds": 3, "wide": [512, 512, 512]}}
PAPER = {"logistic regression": "32%", "MLP 100-100 (the paper's)": "68%"}
_PAPER_OPT = {"name": "adam", "lr": 1e-2}


def variants(epochs: int, paper_epochs: int, wide: list[int]) -> dict[str, dict]:
    """Name -> partial configuration; each trick variant adds to the one before it."""
    base = {"data": {"name": "mnist1d", "normalize": "none"}, "optimizer": dict(_PAPER_OPT),
            "train": {"batch_size": 100, "epochs": paper_epochs}}
    out = {"logistic regression": {**base, "model": {"hidden": []}},
           "MLP 100-100 (the paper's)": {**base, "model": {"hidden": [100, 100]}}}
    steps = [
        (f"MLP {wide[0]}x{len(wide)}", {"model.hidden": wide, "model.init": "kaiming_uniform", "optimizer.lr": 3e-3,
                       "train.epochs": epochs}),
        ("+ input normalization", {"data.normalize": "per_feature"}),
        ("+ batch norm", {"model.batchnorm": True}),
        ("+ dropout 0.3", {"model.dropout": 0.3}),
        ("+ weight decay, cosine, clipping", {"optimizer.weight_decay": 1e-4, "schedule.name": "cosine",
                                              "regularization.clip_norm": 5.0}),
        ("+ noise augmentation", {"augmentation.noise": 0.1}),
        ("+ early stopping", {"early_stopping.enabled": True, "early_stopping.patience": 20}),
    ]
    doc = base
    for name, changes in steps:
        doc = {section: dict(table) for section, table in doc.items()}
        for dotted, value in changes.items():
            section, key = dotted.split(".")
            doc.setdefault(section, {})[key] = value
        out[name] = doc
    return out


def run(out: Path, size: str = "full", seed: int = 0, data_root: str | None = None, log=print) -> dict:
    s = SIZES[size]
    timer = Timer()
    Path(out).mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for name, doc in variants(s["epochs"], s["paper_epochs"], s["wide"]).items():
        results[name] = [outcome(train(doc, seed + k)) for k in range(s["seeds"])]
        log(f"{name}: test accuracy {pm([r['test_accuracy'] for r in results[name]])}")
    plt = pyplot()
    fig, (ax_bar, ax_curve) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1.1, 1]})
    names = list(results)
    means = [mean_std([r["test_accuracy"] for r in results[n]]) for n in names]
    ax_bar.barh(range(len(names)), [100 * m for m, _ in means], xerr=[100 * sd for _, sd in means],
                color=["C7", "C7"] + ["C0"] * (len(names) - 2))
    for i, name in enumerate(names):
        if name in PAPER:
            ax_bar.plot(float(PAPER[name].rstrip("%")), i, "r|", ms=18, mew=3)
    ax_bar.set_yticks(range(len(names)), names)
    ax_bar.invert_yaxis()
    ax_bar.set(xlabel="test accuracy (%)", title="test accuracy (mean ± std over seeds; red: the paper)")
    ax_bar.grid(alpha=0.3, axis="x")
    for i, name in enumerate(names):
        h = results[name][0]["history"]
        ax_curve.plot([row["epoch"] for row in h], [row["val_accuracy"] for row in h], lw=1, label=name,
                      color=f"C{i}")
    ax_curve.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy (first seed)")
    ax_curve.grid(alpha=0.3)
    ax_curve.legend(fontsize=7)
    rep = Reproduction(NAME, TITLE, REFERENCE,
                       "logistic regression reaches about 32% and an MLP about 68%; the lecture's tricks raise the MLP",
                       size, {**s, "seeds": s["seeds"], "seed": seed, "n_train": 3600, "n_val": 400, "n_test": 1000,
                              "batch_size": 100, "paper_optimizer": "Adam, lr 1e-2",
                              "variants": variants(s["epochs"], s["paper_epochs"], s["wide"])})
    rep.figures.append(figure(fig, Path(out) / "mnist1d.png"))
    for name in names:
        epochs = results[name][0]["history"][-1]["epoch"]
        rep.row(f"{name} ({'up to ' if 'early' in name else ''}{epochs} epochs)", PAPER.get(name, "—"),
                pm([r["test_accuracy"] for r in results[name]]))
    mlp = means[1][0]
    best = max(range(2, len(names)), key=lambda i: means[i][0])
    rep.verdict = (f"Logistic {means[0][0]:.1%} and MLP {mlp:.1%} against the paper's 32% and 68%; the best trick "
                   f"variant ({names[best]}) reaches {means[best][0]:.1%}, {100 * (means[best][0] - mlp):+.1f} points "
                   "over our run of the paper's MLP.")
    rep.extra = {"results": {n: [{k: v for k, v in r.items()} for r in rs] for n, rs in results.items()}}
    rep.wall_seconds = timer.seconds
    return rep.save(out)
