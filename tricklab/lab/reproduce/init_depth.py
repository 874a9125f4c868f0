"""Initialization of a deep tanh / sigmoid net (Glorot & Bengio 2010).

Five hidden layers; four ways to draw the weights W (fan_in n_in, fan_out n_out):

    standard     U[-1/sqrt(n_in), 1/sqrt(n_in)]                  (the paper's eq. 1, "standard")
    normalized   U[-a, a], a = sqrt(6 / (n_in + n_out))           (the paper's eq. 16, "Xavier")
    kaiming      N(0, gain^2 / n_in), gain 5/3 for tanh, 1 for sigmoid  (He et al. 2015)
    orthogonal   the orthogonal matrix nearest a Gaussian one     (Saxe et al. 2014)

At initialization, on a batch of training images: the standard deviation of every hidden layer's
activations (forward) and of the back-propagated gradients dLoss/dz at every layer's
pre-activation (backward). The paper's Figures 6 and 7: with the standard scheme the activations
shrink going up and the back-propagated gradients shrink going down, with the normalized scheme
both keep their variance across layers. Then each net is trained with plain SGD and scored.

Each net trains through the one pipeline (``experiment.run``): standard, normalized and
orthogonal are the configuration's ``model.init`` names (default, xavier_uniform, orthogonal);
kaiming with the activation's gain is not (the configuration's kaiming_normal has the ReLU gain),
so an :class:`InitialWeights` callback draws it. The layer statistics are taken before the first
step and after the last by a :class:`~tricklab.train.probe.Probe` with the fixed batch ``(X, y)``
(``at_end=True``): ``act_std`` and ``act_mean`` of each activation layer's output, and
``grad_std`` of the Linear layer before it, the std of dLoss/dz at the pre-activation z (the
trainer's loss on ``y`` back through the net, parameter gradients put back after).

References:
    Glorot, X. and Bengio, Y. "Understanding the difficulty of training deep feedforward neural
    networks." AISTATS 2010, Figures 6-7 and Table 1.
    He, K., Zhang, X., Ren, S. and Sun, J. "Delving Deep into Rectifiers." ICCV 2015.
    Saxe, A., McClelland, J. and Ganguli, S. "Exact solutions to the nonlinear dynamics of
    learning in deep linear neural networks." ICLR 2014.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ...nn import init as init_
from ...train import Probe
from .callbacks import EvaluateEachEpoch, InitialWeights, set_linears
from .common import Reproduction, Timer, configure, figure, pyplot, splits, train

NAME = "init-depth"
TITLE = "Initialization of a deep tanh/sigmoid net (Glorot & Bengio 2010)"
REFERENCE = "Glorot & Bengio, Understanding the difficulty of training deep feedforward networks, AISTATS 2010"
SIZES = {
    "quick": {"width": 64, "epochs": 1, "train_subset": 6000, "test_subset": 2000, "probe": 500},
    "full": {"width": 256, "epochs": 10, "train_subset": 0, "test_subset": 0, "probe": 1000},
}
DEPTH, LR, BATCH = 5, 0.05, 32
ACTIVATIONS = ("tanh", "sigmoid")
SCHEMES = ("standard", "normalized", "kaiming", "orthogonal")
PAPER_MNIST_ERROR = {("tanh", "standard"): "1.76%", ("tanh", "normalized"): "1.64%",
                     ("sigmoid", "standard"): "2.21%"}


CONFIG_INIT = {"standard": "default", "normalized": "xavier_uniform", "orthogonal": "orthogonal"}


def config(activation: str, scheme: str, s: dict, data_root: str | None = None) -> dict:
    """MNIST in [0, 1], five hidden layers of ``width`` units, plain SGD; every Linear (the read-out
    too) drawn by the scheme (kaiming: drawn by a callback, see :func:`callbacks_for`)."""
    return {"data": {"name": "mnist", "root": data_root or "", "normalize": "none", "val_fraction": 1 / 6,
                     "train_subset": s["train_subset"], "test_subset": s["test_subset"]},
            "model": {"hidden": [s["width"]] * DEPTH, "activation": activation,
                      "init": CONFIG_INIT.get(scheme, "default")},
            "optimizer": {"name": "sgd", "lr": LR},
            "train": {"epochs": s["epochs"], "batch_size": BATCH}}


def callbacks_for(activation: str, scheme: str, seed: int) -> list:
    """Kaiming-normal weights with the activation's gain (5/3 tanh, 1 sigmoid) and Linear's default biases."""
    if scheme != "kaiming":
        return []
    kaiming = partial(init_.kaiming_normal, nonlinearity=activation)
    return [InitialWeights(lambda model: set_linears(model, kaiming, None, seed))]


def layer_statistics(probe: Probe, step: int) -> dict:
    """From ``probe``'s rows of ``step``: the std and mean of each hidden layer's activations (the
    output of each Tanh or Sigmoid) and the std of dLoss/dz at each hidden pre-activation z (the
    output gradient of the layer just before the activation), from layer 1 up."""
    rec = {k: np.asarray(v) for k, v in probe.records.items()}
    rows = np.flatnonzero(rec["step"] == step)
    acts = rows[np.isin(rec["kind"][rows], ("Tanh", "Sigmoid"))]
    return {"activation_std": rec["act_std"][acts].tolist(), "activation_mean": rec["act_mean"][acts].tolist(),
            "gradient_std": rec["grad_std"][acts - 1].tolist()}


def run(out: Path, size: str = "full", seed: int = 0, data_root: str | None = None, log=print) -> dict:
    s = SIZES[size]
    timer = Timer()
    Path(out).mkdir(parents=True, exist_ok=True)
    data = splits(configure(config("tanh", "standard", s, data_root), seed))  # every net's split
    X, y = data["train"][0][:s["probe"]], data["train"][1][:s["probe"]]
    steps = s["epochs"] * -(-len(data["train"][1]) // BATCH)  # at most; every=steps probes step 0 only
    results = {}
    for act in ACTIVATIONS:
        for scheme in SCHEMES:
            probe = Probe(every=steps, batch=(X, y), at_end=True)
            callbacks = [*callbacks_for(act, scheme, seed), probe, EvaluateEachEpoch({"test": data["test"]})]
            h = train(config(act, scheme, s, data_root), seed, callbacks=callbacks).history
            hist = {k: [row[k] for row in h] for k in ("epoch", "train_loss", "val_accuracy", "test_accuracy")}
            stats = layer_statistics(probe, 0)
            results[f"{act}/{scheme}"] = {"init": stats, "trained": layer_statistics(probe, max(probe.records["step"])),
                                          **hist}
            log(f"{act:7s} {scheme:10s} gradient std layer 1/{DEPTH}: "
                f"{stats['gradient_std'][0] / stats['gradient_std'][-1]:.2f}, test error "
                f"{1 - hist['test_accuracy'][-1]:.2%}")
    plt = pyplot()
    fig, axes = plt.subplots(len(ACTIVATIONS), 3, figsize=(15, 4 * len(ACTIVATIONS)))
    layers = np.arange(1, DEPTH + 1)
    for row, act in zip(axes, ACTIVATIONS):
        for i, scheme in enumerate(SCHEMES):
            r = results[f"{act}/{scheme}"]
            row[0].plot(layers, r["init"]["activation_std"], marker="o", color=f"C{i}", label=scheme)
            row[1].plot(layers, r["init"]["gradient_std"], marker="o", color=f"C{i}", label=scheme)
            row[2].plot(r["epoch"], 100 * (1 - np.asarray(r["test_accuracy"])), marker="o", ms=3, color=f"C{i}",
                        label=scheme)
        row[0].set(xlabel="hidden layer", ylabel="std of activations", title=f"{act}: activations at init")
        row[1].set(xlabel="hidden layer", ylabel="std of dLoss/dz", yscale="log",
                   title=f"{act}: back-propagated gradients at init")
        worst = max(1 - min(results[f"{act}/{k}"]["test_accuracy"]) for k in SCHEMES)
        row[2].set(xlabel="epoch", ylabel="test error (%)", yscale="log" if worst < 0.5 else "linear",
                   title=f"{act}: test error")
        for ax in row:
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        row[0].set_xticks(layers)
        row[1].set_xticks(layers)
    rep = Reproduction(NAME, TITLE, REFERENCE,
                       "with the standard initialization the activations and the back-propagated gradients "
                       "change their variance from layer to layer; normalized initialization keeps both steady "
                       "and trains to a lower error",
                       size, {**s, "depth": DEPTH, "lr": LR, "batch_size": BATCH, "optimizer": "SGD",
                              "seed": seed, "n_train": len(data["train"][1]), "n_test": len(data["test"][1])})
    rep.figures.append(figure(fig, Path(out) / "init_depth.png"))
    for act in ACTIVATIONS:
        for scheme in SCHEMES:
            st = results[f"{act}/{scheme}"]["init"]
            ratio = st["gradient_std"][0] / st["gradient_std"][-1]
            paper = {("tanh", "standard"): "< 1: gradients shrink toward the input (Fig. 7 top)",
                     ("tanh", "normalized"): "about 1 (Fig. 7 bottom)"}.get((act, scheme), "(not in the paper)")
            rep.row(f"{act}, {scheme}: gradient std at layer 1 / layer {DEPTH} at init", paper, f"{ratio:.3g}")
    for act in ACTIVATIONS:
        for scheme in SCHEMES:
            st = results[f"{act}/{scheme}"]["init"]
            ratio = st["activation_std"][-1] / st["activation_std"][0]
            paper = {("tanh", "standard"): "< 1: activations shrink going up (Fig. 6 top)",
                     ("tanh", "normalized"): "about 1 (Fig. 6 bottom)"}.get((act, scheme), "(not in the paper)")
            rep.row(f"{act}, {scheme}: activation std at layer {DEPTH} / layer 1 at init", paper, f"{ratio:.3g}")
    for act in ACTIVATIONS:
        for scheme in SCHEMES:
            err = 1 - results[f"{act}/{scheme}"]["test_accuracy"][-1]
            paper = PAPER_MNIST_ERROR.get((act, scheme), "(not in the paper)")
            rep.row(f"{act}, {scheme}: MNIST test error ({DEPTH}x{s['width']}, {s['epochs']} epoch{'s' * (s['epochs'] > 1)})",
                    f"{paper} (5x1000, trained to convergence)" if paper[0].isdigit() else paper, f"{err:.2%}")
    top = results["sigmoid/standard"]["trained"]
    rep.row("sigmoid, standard: mean activation of the top hidden layer after training",
            "driven towards 0 (saturated) early in training (Fig. 2)", f"{top['activation_mean'][-1]:.3f}")
    tanh = {k: results[f"tanh/{k}"]["init"] for k in ("standard", "normalized")}
    g_std = tanh["standard"]["gradient_std"][0] / tanh["standard"]["gradient_std"][-1]
    g_norm = tanh["normalized"]["gradient_std"][0] / tanh["normalized"]["gradient_std"][-1]
    rep.verdict = (f"tanh: the gradient ratio layer 1 / layer {DEPTH} is {g_std:.2f} with the standard scheme "
                   f"and {g_norm:.2f} with the normalized one: normalized is "
                   f"{'closer to 1, as in the paper' if abs(np.log(g_norm)) < abs(np.log(g_std)) else 'NOT closer to 1'}.")
    rep.extra = {"results": results}
    rep.wall_seconds = timer.seconds
    return rep.save(out)
