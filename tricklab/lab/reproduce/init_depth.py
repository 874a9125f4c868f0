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
both keep their variance across layers. Then each net is trained with plain SGD and scored, over
``seeds`` seeds (mean ± standard deviation in the table; the figure shows the first seed).

Step sizes: tanh 0.05; sigmoid 2.0, chosen on the validation split of seed 0 (standard and
normalized nets, 3 epochs at 0.2, 0.5, 1 and 2, then 8 epochs at 2 and 4). At every rate up to
0.5 both sigmoid nets stay on the initial plateau (validation accuracy 10-12%: one class) for the
3 epochs; at 1 and at 2 the normalized net leaves it in the third epoch while the standard one
stays; at 2 the standard one follows in the fifth (best validation accuracy in 8 epochs: 92.6%
standard, 96.3% normalized); at 4 both stay. So the sigmoid result measured is the epoch at which
each net leaves the plateau (validation accuracy above 50%): the paper's "normalized trains where
the standard one stalls", at a budget where the standard net eventually trains too.

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
from ...stats import mean_std, pm
from ...train import Probe
from .callbacks import EvaluateEachEpoch, InitialWeights, set_linears
from .common import Reproduction, Timer, configure, figure, over_seeds, pyplot, seeds_of, splits, train

NAME = "init-depth"
TITLE = "Initialization of a deep tanh/sigmoid net (Glorot & Bengio 2010)"
REFERENCE = "Glorot & Bengio, Understanding the difficulty of training deep feedforward networks, AISTATS 2010"
SIZES = {
    "quick": {"width": 64, "epochs": 1, "train_subset": 6000, "test_subset": 2000, "probe": 500, "seeds": 1},
    "full": {"width": 256, "epochs": 10, "train_subset": 0, "test_subset": 0, "probe": 1000, "seeds": 3},
}
DEPTH, BATCH = 5, 32
LR = {"tanh": 0.05, "sigmoid": 2.0}  # plain SGD; sigmoid's chosen on validation (module docstring)
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
            "optimizer": {"name": "sgd", "lr": LR[activation]},
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


def train_net(act: str, scheme: str, s: dict, data: dict, seed: int, data_root) -> dict:
    """One net: its layer statistics at init and after training, and its history with test scores."""
    X, y = data["train"][0][:s["probe"]], data["train"][1][:s["probe"]]
    steps = s["epochs"] * -(-len(data["train"][1]) // BATCH)  # at most; every=steps probes step 0 only
    probe = Probe(every=steps, batch=(X, y), at_end=True)
    callbacks = [*callbacks_for(act, scheme, seed), probe, EvaluateEachEpoch({"test": data["test"]})]
    h = train(config(act, scheme, s, data_root), seed, callbacks=callbacks).history
    hist = {k: [row[k] for row in h] for k in ("epoch", "train_loss", "val_accuracy", "test_accuracy")}
    return {"init": layer_statistics(probe, 0), "trained": layer_statistics(probe, max(probe.records["step"])),
            **hist}


def gradient_ratio(run: dict) -> float:
    """std of dLoss/dz at layer 1 over that at the top hidden layer, at init (1: steady; < 1: shrinking downward)."""
    g = run["init"]["gradient_std"]
    return g[0] / g[-1]


def activation_ratio(run: dict) -> float:
    """std of the top hidden layer's activations over the first one's, at init."""
    a = run["init"]["activation_std"]
    return a[-1] / a[0]


def final_test_error(run: dict) -> float:
    """The test error after the last epoch."""
    return 1 - run["test_accuracy"][-1]


def run(out: Path, size: str = "full", seed: int = 0, data_root: str | None = None, log=print) -> dict:
    s = SIZES[size]
    timer = Timer()
    Path(out).mkdir(parents=True, exist_ok=True)
    seeds = seeds_of(seed, s)
    results = {f"{act}/{scheme}": [] for act in ACTIVATIONS for scheme in SCHEMES}
    for sd in seeds:
        data = splits(configure(config("tanh", "standard", s, data_root), sd))  # every net's split
        for act in ACTIVATIONS:
            for scheme in SCHEMES:
                r = train_net(act, scheme, s, data, sd, data_root)
                results[f"{act}/{scheme}"].append(r)
                log(f"seed {sd} {act:7s} {scheme:10s} gradient std layer 1/{DEPTH}: {gradient_ratio(r):.3g}, "
                    f"test error {final_test_error(r):.2%}")
    settings = {**s, "depth": DEPTH, "lr": LR, "batch_size": BATCH, "optimizer": "SGD", "seeds": seeds,
                "n_train": len(data["train"][1]), "n_test": len(data["test"][1])}
    return write(out, size, settings, results, timer.seconds)


def write(out: Path, size: str, settings: dict, results: dict, wall_seconds: float) -> dict:
    """The figure (the first seed's), the table (over the seeds) and the verdict of measured ``results``
    (also how a saved reproduction.json's ``extra`` is turned into its report again)."""
    s, seeds = settings, settings["seeds"]
    seed = seeds[0]
    first = {k: runs[0] for k, runs in results.items()}
    plt = pyplot()
    fig, axes = plt.subplots(len(ACTIVATIONS), 3, figsize=(15, 4 * len(ACTIVATIONS)))
    layers = np.arange(1, DEPTH + 1)
    for row, act in zip(axes, ACTIVATIONS):
        for i, scheme in enumerate(SCHEMES):
            r = first[f"{act}/{scheme}"]
            row[0].plot(layers, r["init"]["activation_std"], marker="o", color=f"C{i}", label=scheme)
            row[1].plot(layers, r["init"]["gradient_std"], marker="o", color=f"C{i}", label=scheme)
            row[2].plot(r["epoch"], 100 * (1 - np.asarray(r["test_accuracy"])), marker="o", ms=3, color=f"C{i}",
                        label=scheme)
        row[0].set(xlabel="hidden layer", ylabel="std of activations", title=f"{act}: activations at init (seed {seed})")
        row[1].set(xlabel="hidden layer", ylabel="std of dLoss/dz", yscale="log",
                   title=f"{act}: back-propagated gradients at init (seed {seed})")
        worst = max(1 - min(first[f"{act}/{k}"]["test_accuracy"]) for k in SCHEMES)
        row[2].set(xlabel="epoch", ylabel="test error (%)", yscale="log" if worst < 0.5 else "linear",
                   title=f"{act}: test error, SGD lr {LR[act]} (seed {seed})")
        for ax in row:
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        row[0].set_xticks(layers)
        row[1].set_xticks(layers)
    rep = Reproduction(NAME, TITLE, REFERENCE,
                       "with the standard initialization the activations and the back-propagated gradients "
                       "change their variance from layer to layer; normalized initialization keeps both steady "
                       "and trains to a lower error (for sigmoid nets: where the standard one stalls)",
                       size, settings)
    rep.figures.append(figure(fig, Path(out) / "init_depth.png"))
    over = f" ({over_seeds(seeds)})"
    for act in ACTIVATIONS:
        for scheme in SCHEMES:
            paper = {("tanh", "standard"): "< 1: gradients shrink toward the input (Fig. 7 top)",
                     ("tanh", "normalized"): "about 1 (Fig. 7 bottom)"}.get((act, scheme), "(not in the paper)")
            rep.row(f"{act}, {scheme}: gradient std at layer 1 / layer {DEPTH} at init{over}", paper,
                    pm_ratio([gradient_ratio(r) for r in results[f"{act}/{scheme}"]]))
    for act in ACTIVATIONS:
        for scheme in SCHEMES:
            paper = {("tanh", "standard"): "< 1: activations shrink going up (Fig. 6 top)",
                     ("tanh", "normalized"): "about 1 (Fig. 6 bottom)"}.get((act, scheme), "(not in the paper)")
            rep.row(f"{act}, {scheme}: activation std at layer {DEPTH} / layer 1 at init{over}", paper,
                    pm_ratio([activation_ratio(r) for r in results[f"{act}/{scheme}"]]))
    for act in ACTIVATIONS:
        for scheme in SCHEMES:
            paper = PAPER_MNIST_ERROR.get((act, scheme), "(not in the paper)")
            rep.row(f"{act}, {scheme}: MNIST test error ({DEPTH}x{s['width']}, SGD lr {LR[act]}, {s['epochs']} "
                    f"epoch{'s' * (s['epochs'] > 1)}){over}",
                    f"{paper} (5x1000, trained to convergence)" if paper[0].isdigit() else paper,
                    pm([final_test_error(r) for r in results[f"{act}/{scheme}"]]))
    for scheme in SCHEMES:
        rep.row(f"sigmoid, {scheme}: epochs until the validation accuracy passes {PLATEAU:.0%} (the initial "
                f"plateau left), per seed", "the standard scheme stalls; normalized trains (Table 1, Fig. 2)"
                if scheme in ("standard", "normalized") else "(not in the paper)",
                show_epochs([plateau_epochs(r) for r in results[f"sigmoid/{scheme}"]], s["epochs"]))
    rep.row("sigmoid, standard: mean activation of the top hidden layer after training" + over,
            "driven towards 0 (saturated) early in training (Fig. 2)",
            pm([r["trained"]["activation_mean"][-1] for r in results["sigmoid/standard"]], scale=1, digits=3, unit=""))
    rep.verdict = verdict(results)
    rep.extra = {"results": results}
    rep.wall_seconds = wall_seconds
    return rep.save(out)


def pm_ratio(values: list[float]) -> str:
    """'0.105 ± 0.012' (3 significant digits, for ratios that span powers of ten); one value: '0.105 (n=1)'."""
    mean, std = mean_std(values)
    return f"{mean:.3g} ± {std:.2g}" if len(values) > 1 else f"{mean:.3g} (n=1)"


PLATEAU = 0.5  # validation accuracy at or below this is the initial plateau (one class is 10-11%)


def plateau_epochs(run: dict) -> int | None:
    """The first epoch after which the validation accuracy is above PLATEAU (the net has left the
    initial plateau), or None if it never is."""
    return next((e for e, acc in zip(run["epoch"], run["val_accuracy"]) if acc > PLATEAU), None)


def show_epochs(epochs: list[int | None], budget: int) -> str:
    """'3, 3, 4' (one per seed; 'not in 10' for a net still on the plateau after a budget of 10 epochs)."""
    return ", ".join(str(e) if e is not None else f"not in {budget}" for e in epochs)


def verdict(results: dict) -> str:
    """tanh: is the normalized scheme's gradient ratio closer to 1 than the standard one's (means over
    seeds)? sigmoid: does the normalized net leave the plateau sooner than the standard one, seed by seed?"""
    mean = lambda values: float(np.mean(values))  # noqa: E731
    g_std = mean([gradient_ratio(r) for r in results["tanh/standard"]])
    g_norm = mean([gradient_ratio(r) for r in results["tanh/normalized"]])
    text = (f"tanh: the gradient ratio layer 1 / layer {DEPTH} is {g_std:.2f} with the standard scheme "
            f"and {g_norm:.2f} with the normalized one: normalized is "
            f"{'closer to 1, as in the paper' if abs(np.log(g_norm)) < abs(np.log(g_std)) else 'NOT closer to 1'}. ")
    never = float("inf")
    pairs = [(plateau_epochs(a), plateau_epochs(b))
             for a, b in zip(results["sigmoid/standard"], results["sigmoid/normalized"])]
    sooner = sum((b if b is not None else never) < (a if a is not None else never) for a, b in pairs)
    text += (f"sigmoid (lr {LR['sigmoid']}): the normalized net leaves the initial plateau sooner than the "
             f"standard one in {sooner} of {len(pairs)} seeds (epochs: standard "
             f"{', '.join(str(a) if a is not None else 'never' for a, _ in pairs)}; normalized "
             f"{', '.join(str(b) if b is not None else 'never' for _, b in pairs)})")
    return text + (": as in the paper." if sooner == len(pairs) else ": NOT in every seed, unlike the paper.")
