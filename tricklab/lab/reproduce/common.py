"""What every reproduction shares: training a configuration through the one pipeline, the splits its
callbacks score, and the paper-vs-ours record.

Each variant of a reproduction is a configuration document trained in memory by
:func:`tricklab.experiment.run` (:func:`train`); what it measures besides the final scores comes in
as callbacks (:mod:`.callbacks`). A reproduction folder holds::

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

from ... import config as config_
from ... import experiment
from ...fileio import atomic_write_bytes
from ...report.plots import pyplot, save_figure  # noqa: F401  (the reproductions' figures)


def configure(doc: dict, seed: int = 0) -> dict:
    """The resolved configuration of a partial document, ``run.seed`` set to ``seed``."""
    return config_.resolve({**doc, "run": {**doc.get("run", {}), "seed": seed}})


def train(doc: dict, seed: int = 0, callbacks=(), log=None) -> experiment.Result:
    """Train a configuration document in memory (nothing written) through :func:`experiment.run`;
    the test split is scored once, after training."""
    return experiment.run(configure(doc, seed), None, callbacks=callbacks, progress=False,
                          log=log or (lambda msg: None), plots=False)


def outcome(result: experiment.Result) -> dict:
    """What a reproduction keeps of a run: the history and the final validation and test scores."""
    m = result.metrics
    return {"history": result.history, "val_accuracy": m["val_accuracy"], "test_accuracy": m["test_accuracy"],
            "epochs_run": m["epochs_run"], "seconds": m["seconds_training"]}


def splits(cfg: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train", "val", "test"}: ``(X, y)`` as the model of ``cfg`` reads them, the very splits
    :func:`experiment.build` makes (same seed, subsets, validation split and input normalization),
    for callbacks that score them during training."""
    data = experiment.prepare_data(cfg, np.random.SeedSequence(cfg["run"]["seed"]).spawn(3)[0])
    normalizer = experiment.fit_normalizer(cfg, data.train[0])
    shape = experiment.model_input_shape(cfg, data)

    def prepare(X):
        X = normalizer.transform(X).astype(np.float32) if normalizer is not None else X
        return X.reshape(len(X), *shape)

    return {name: (prepare(X), y) for name, (X, y) in (("train", data.train), ("val", data.val), ("test", data.test))}


def figure(fig, path: Path) -> str:
    """Save a figure (PNG, atomically) and return its file name for ``Reproduction.figures``."""
    return save_figure(fig, path).name


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


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


# ---- legacy, removed once every reproduction trains through train() ----
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


from ... import nn as nn  # noqa: E402
from ...stats import mean_std, pm  # noqa: E402,F401
def train_config(doc, seed=0):
    r = train(doc, seed)
    return {'history': r.history, 'val_accuracy': r.metrics['val_accuracy'], 'test_accuracy': r.metrics['test_accuracy']}
