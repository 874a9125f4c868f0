"""Dropout on MNIST (Srivastava et al. 2014, Table 2) at a CPU budget.

The paper's networks: 784-1024-1024-1024-10 ReLU, trained with SGD, momentum rising to a final
0.95, inputs kept with probability 0.8 and hidden units with 0.5 (drop probabilities 0.2 and 0.5
here, PyTorch's spelling), and optionally a max-norm constraint ||w_i|| <= c on every unit's
incoming weights. The paper trains for thousands of epochs; here every network gets the same
small number of epochs (stated in the settings), a momentum ramp from 0.5 to 0.95 over the first
quarter of them and a learning rate decaying exponentially to a tenth. The three networks start
from the same weights and see the same minibatches.

References:
    Srivastava, N., Hinton, G., Krizhevsky, A., Sutskever, I. and Salakhutdinov, R. "Dropout: A
    Simple Way to Prevent Neural Networks from Overfitting." JMLR 15, 2014, Table 2 and
    Appendix B.1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ... import nn, optim
from ...nn.constraints import MaxNorm
from .common import Reproduction, Timer, accuracy, mnist, pyplot, save_figure, sgd_step

NAME = "dropout-mnist"
TITLE = "Dropout on MNIST: less overfitting, lower test error (Srivastava et al. 2014, Table 2)"
REFERENCE = "Srivastava et al., Dropout, JMLR 15 (2014), Table 2"
SIZES = {
    "quick": {"epochs": 3, "hidden": [256, 256, 256], "train_subset": 6000, "test_subset": 2000},
    "full": {"epochs": 40, "hidden": [1024, 1024, 1024], "train_subset": 0, "test_subset": 0},
}
LR, BATCH, P_INPUT, P_HIDDEN, MAX_NORM = 0.05, 100, 0.2, 0.5, 2.0
MOMENTUM_START, MOMENTUM_END = 0.5, 0.95
VARIANTS = {  # name: (dropout, max-norm), with the paper's error beside it
    "standard": (False, False),
    "dropout": (True, False),
    "dropout + max-norm": (True, True),
}
PAPER_ERROR = {
    "standard": "1.60% (Simard et al. 2003: 2x800 logistic, the paper's standard net)",
    "dropout": "1.25% (3x1024 ReLU)",
    "dropout + max-norm": "1.06% (3x1024 ReLU)",
}


def build(hidden, dropout: bool, seed: int) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    layers: list[nn.Module] = [nn.Dropout(P_INPUT, rng=np.random.default_rng(seed + 100))] if dropout else []
    width = 784
    for i, h in enumerate(hidden):
        layers += [nn.Linear(width, h, init="kaiming_uniform", rng=rng), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(P_HIDDEN, rng=np.random.default_rng(seed + 101 + i)))
        width = h
    layers.append(nn.Linear(width, 10, rng=rng))
    return nn.Sequential(*layers)


def schedule(epoch: int, epochs: int) -> tuple[float, float]:
    """(learning rate, momentum) for 0-based ``epoch``: lr decays to LR/10, momentum ramps up."""
    ramp = max(1, epochs // 4)
    momentum = MOMENTUM_START + (MOMENTUM_END - MOMENTUM_START) * min(1.0, epoch / ramp)
    return LR * 0.1 ** (epoch / max(1, epochs - 1)), momentum


def train(variant: str, data, hidden, epochs: int, seed: int, log) -> dict:
    use_dropout, use_max_norm = VARIANTS[variant]
    (Xtr, ytr), (Xva, yva), (Xte, yte) = data
    model = build(hidden, use_dropout, seed).train()
    loss = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM_START)
    constraints = [MaxNorm(MAX_NORM)] if use_max_norm else []
    rng = np.random.default_rng(seed + 1)
    hist = {"epoch": [], "train_error": [], "val_error": [], "test_error": []}
    for epoch in range(epochs):
        opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"] = schedule(epoch, epochs)
        order = rng.permutation(len(Xtr))
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]
            sgd_step(model, loss, opt, Xtr[idx], ytr[idx], constraints)
        hist["epoch"].append(epoch + 1)
        hist["train_error"].append(1 - accuracy(model, Xtr, ytr))
        hist["val_error"].append(1 - accuracy(model, Xva, yva))
        hist["test_error"].append(1 - accuracy(model, Xte, yte))
        log(f"{variant} epoch {epoch + 1}: train error {hist['train_error'][-1]:.4f}, "
            f"val {hist['val_error'][-1]:.4f}, test {hist['test_error'][-1]:.4f}")
    return hist


def run(out: Path, size: str = "full", seed: int = 0, data_root: str | None = None, log=print) -> dict:
    s = SIZES[size]
    timer = Timer()
    Path(out).mkdir(parents=True, exist_ok=True)
    data = mnist(data_root, seed=seed, train_subset=s["train_subset"], test_subset=s["test_subset"])
    runs = {v: train(v, data, s["hidden"], s["epochs"], seed, log) for v in VARIANTS}
    plt = pyplot()
    fig, (ax_test, ax_gap) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (v, h) in enumerate(runs.items()):
        ax_test.plot(h["epoch"], np.asarray(h["test_error"]) * 100, marker="o", ms=3, label=v, color=f"C{i}")
        ax_gap.plot(h["epoch"], np.asarray(h["train_error"]) * 100, ls="--", color=f"C{i}", label=f"{v}, training")
        ax_gap.plot(h["epoch"], np.asarray(h["test_error"]) * 100, color=f"C{i}", label=f"{v}, test")
    ax_test.set(xlabel="epoch", ylabel="test error (%)", title="test error", yscale="log")
    ax_gap.set(xlabel="epoch", ylabel="error (%)", title="training against test error", yscale="log")
    for ax in (ax_test, ax_gap):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    rep = Reproduction(NAME, TITLE, REFERENCE,
                       "dropout lowers the test error of a 3x1024 ReLU net, and max-norm lowers it further",
                       size, {**s, "lr": f"{LR}, decaying exponentially to {LR / 10}", "batch_size": BATCH,
                              "momentum": f"{MOMENTUM_START} rising to {MOMENTUM_END}",
                              "drop_probability": {"input": P_INPUT, "hidden": P_HIDDEN}, "max_norm_c": MAX_NORM,
                              "seed": seed, "n_train": len(data[0][1]), "n_val": len(data[1][1]),
                              "n_test": len(data[2][1])})
    rep.figures.append(save_figure(fig, Path(out) / "dropout_mnist.png"))
    arch = "x".join(str(h) for h in s["hidden"])
    for v, h in runs.items():
        rep.row(f"test error, {v} ({arch} ReLU, {s['epochs']} epochs)", PAPER_ERROR[v], f"{h['test_error'][-1]:.2%}")
    for v, h in runs.items():
        rep.row(f"test minus training error, {v}", "smaller with dropout",
                f"{h['test_error'][-1] - h['train_error'][-1]:.2%}")
    err = {v: h["test_error"][-1] for v, h in runs.items()}
    rep.verdict = ("Ordering as in the paper (standard > dropout > dropout + max-norm): "
                   f"{'yes' if err['standard'] > err['dropout'] > err['dropout + max-norm'] else 'no'}; "
                   f"dropout below standard: {'yes' if min(err['dropout'], err['dropout + max-norm']) < err['standard'] else 'no'}.")
    rep.extra = {"runs": runs}
    rep.wall_seconds = timer.seconds
    return rep.save(out)
