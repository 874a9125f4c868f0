"""What every reproduction shares: data, a bare training step, and the paper-vs-ours record.

A reproduction folder holds::

    reproduction.json   name, reference, claim, size, settings, the paper-vs-ours table, figures
    table.md            the same table as Markdown
    *.png               the figures
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import nn
from ...train.checkpoint import atomic_write_bytes


def mnist(root: str | None = None, val_size: int = 10_000, seed: int = 0, train_subset: int = 0,
          test_subset: int = 0, flatten: bool = True):
    """MNIST scaled to [0, 1]: (train, val, test) pairs; validation held out from the training set."""
    from ...data import load_mnist, train_val_split

    X, y = load_mnist("train", root=root)
    Xte, yte = load_mnist("test", root=root)
    X = (X.reshape(len(X), -1) / np.float32(255)).astype(np.float32)
    Xte = (Xte.reshape(len(Xte), -1) / np.float32(255)).astype(np.float32)
    if train_subset:
        X, y = X[:train_subset], y[:train_subset]
        val_size = min(val_size, train_subset // 6)
    if test_subset:
        Xte, yte = Xte[:test_subset], yte[:test_subset]
    Xtr, ytr, Xva, yva = train_val_split(X, y, val_size=val_size, seed=seed)
    return (Xtr, ytr), (Xva, yva), (Xte, yte)


def mnist1d(val_fraction: float = 0.1, seed: int = 0):
    """MNIST-1D (4,000 train / 1,000 test), standardized per feature with training statistics."""
    from ...data import Standardizer, load_mnist1d, train_val_split

    X, y = load_mnist1d("train")
    Xte, yte = load_mnist1d("test")
    Xtr, ytr, Xva, yva = train_val_split(X, y, val_fraction=val_fraction, seed=seed)
    s = Standardizer().fit(Xtr)
    f = lambda A: s.transform(A).astype(np.float32)  # noqa: E731
    return (f(Xtr), ytr), (f(Xva), yva), (f(Xte), yte)


def accuracy(model: nn.Module, X: np.ndarray, y: np.ndarray, batch_size: int = 2000) -> float:
    """Fraction correct in eval mode (the model is put back in train mode afterwards)."""
    was_training = model.training
    model.eval()
    right = sum(int((model(X[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                for i in range(0, len(X), batch_size))
    model.train(was_training)
    return right / len(X)


def sgd_step(model: nn.Module, loss: nn.Module, optimizer, xb: np.ndarray, yb: np.ndarray,
             constraints=()) -> float:
    """Forward, full backward, then the optimizer step (and any constraint); returns the loss."""
    optimizer.zero_grad()
    value = loss(model(xb), yb)
    model.backward(loss.backward())
    optimizer.step()
    for c in constraints:
        c(model)
    return value


def mean_std(values) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def pm(values, scale: float = 100.0, digits: int = 2, unit: str = "%") -> str:
    """'97.12 ± 0.08%' (mean ± standard deviation over seeds; no spread for one value)."""
    m, s = mean_std(values)
    if len(values) == 1:
        return f"{m * scale:.{digits}f}{unit}"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}{unit}"


@dataclass
class Reproduction:
    """The record a reproduction writes: the paper's numbers beside ours, and the figures."""

    name: str
    title: str
    reference: str
    claim: str
    size: str
    settings: dict
    table: list[dict] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    verdict: str = ""
    extra: dict = field(default_factory=dict)
    wall_seconds: float = 0.0

    def row(self, quantity: str, paper: str, ours: str) -> None:
        self.table.append({"quantity": quantity, "paper": paper, "ours": ours})

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", f"*{self.reference}*", "", f"Claim: {self.claim}", "",
                 f"Size: `{self.size}`, wall time {self.wall_seconds:.0f} s", "",
                 "| quantity | paper | ours |", "|---|---|---|"]
        lines += [f"| {r['quantity']} | {r['paper']} | {r['ours']} |" for r in self.table]
        if self.verdict:
            lines += ["", self.verdict]
        return "\n".join(lines) + "\n"

    def save(self, out: Path) -> dict:
        out = Path(out)
        doc = {"kind": "reproduction", **self.__dict__}
        atomic_write_bytes(out / "reproduction.json", (json.dumps(doc, indent=2, default=_json) + "\n").encode())
        atomic_write_bytes(out / "table.md", self.markdown().encode())
        return doc


def _json(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def pyplot():
    from ...report.plots import _pyplot

    return _pyplot()


def save_figure(fig, path: Path) -> str:
    """Write a matplotlib figure as PNG (atomically) and close it; returns the file name."""
    import io

    plt = pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path).name


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def mlp(n_in: int, hidden, activation: str = "relu", init="default", seed: int = 0, batchnorm: bool = False,
        dropout: float = 0.0, input_dropout: float = 0.0, n_out: int = 10, dtype=np.float32) -> nn.Sequential:
    """Linear [BN] activation [dropout] per hidden width, then a Linear output layer.

    ``init`` is a name from :mod:`tricklab.nn.init` or a callable ``f(shape, rng, dtype)``; the
    output layer uses it too. Dropout layers draw from their own generators, so two nets built
    with the same seed start from the same weights whether or not they use dropout.
    """
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    rng = np.random.default_rng(seed)
    masks = np.random.SeedSequence(seed).spawn(len(hidden) + 1)
    layers: list[nn.Module] = [nn.Dropout(input_dropout, rng=np.random.default_rng(masks[-1]))] if input_dropout else []
    width = n_in
    for i, h in enumerate(hidden):
        layers.append(nn.Linear(width, h, init=init, rng=rng))
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(acts[activation]())
        if dropout:
            layers.append(nn.Dropout(dropout, rng=np.random.default_rng(masks[i])))
        width = h
    layers.append(nn.Linear(width, n_out, init=init, rng=rng))
    return nn.Sequential(*layers).to(dtype)


def fit(model: nn.Module, optimizer, train: tuple, epochs: int, batch_size: int, seed: int = 0,
        evals: dict | None = None, order: str = "reshuffle", constraints=(), schedule=None, log=None) -> dict:
    """Minibatch training with evaluation after every epoch; returns the history as lists.

    ``order``: "reshuffle" (a new permutation every epoch), "once" (one permutation, kept), or
    "fixed" (the order of ``train`` as given). ``evals`` maps a name to (X, y): the history gets
    ``<name>_accuracy`` per epoch. ``schedule(epoch, optimizer)`` runs before each epoch. The
    history also has ``step_loss``, the training loss of every step.
    """
    X, y = train
    rng = np.random.default_rng(seed)
    loss = nn.CrossEntropyLoss(dtype=model.dtype)
    hist: dict[str, list] = {"epoch": [], "train_loss": [], "step_loss": []}
    perm = rng.permutation(len(X)) if order == "once" else np.arange(len(X))
    for epoch in range(epochs):
        if schedule is not None:
            schedule(epoch, optimizer)
        if order == "reshuffle":
            perm = rng.permutation(len(X))
        model.train()
        losses = []
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            losses.append(sgd_step(model, loss, optimizer, X[idx], y[idx], constraints))
        hist["epoch"].append(epoch + 1)
        hist["train_loss"].append(float(np.mean(losses)))
        hist["step_loss"] += [float(v) for v in losses]
        for name, (Xe, ye) in (evals or {}).items():
            hist.setdefault(f"{name}_accuracy", []).append(accuracy(model, Xe, ye))
        if log is not None:
            log(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in hist.items()
                                                   if k not in ("epoch", "step_loss")))
    return hist


def train_config(doc: dict, seed: int = 0) -> dict:
    """Train a configuration (a partial TOML document) in memory with the experiment pipeline.

    Returns the per-epoch history and the final validation and test scores (test scored once,
    after training, as in ``tricklab train``).
    """
    from ... import config as config_
    from ...experiment import build

    doc = {**doc, "run": {**doc.get("run", {}), "seed": seed}}
    cfg = config_.resolve(doc)
    exp = build(cfg, run_dir=None, progress=False, log=lambda msg: None)
    t = Timer()
    exp.trainer.fit(exp.train_loader, exp.val, epochs=cfg["train"]["epochs"], bn_batches=exp.bn_loader)
    val, test = exp.trainer.evaluate(exp.val), exp.trainer.evaluate(exp.test)
    return {"history": exp.trainer.history, "val_accuracy": val["accuracy"], "test_accuracy": test["accuracy"],
            "epochs_run": exp.trainer.epoch, "seconds": t.seconds}
