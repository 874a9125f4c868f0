"""What reproductions measure besides the final scores, as callbacks of the one training pipeline.

Every reproduction trains through :func:`tricklab.experiment.run`; these callbacks (Keras' hooks,
:mod:`tricklab.train.callbacks`) record what its figures need or set what its configuration
cannot express (a paper's own initialization). What happens inside the network (activation
percentiles, means and standard deviations, per unit too; back-propagated gradients; weight
norms) comes from :class:`tricklab.train.probe.Probe`; :func:`probe_rows` and :func:`unit_table`
read its records.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ... import nn
from ...train import Callback
from ...train.probe import UNIT_FLOAT_COLUMNS


def accuracy(trainer, data) -> float:
    """Fraction correct of the model in eval mode on ``(X, y)``; the model's mode is put back after."""
    was_training = trainer.model.training
    value = trainer.evaluate(data)["accuracy"]
    trainer.model.train(was_training)
    return float(value)


class EvaluateEvery(Callback):
    """Accuracy on fixed splits at step 0 and after every ``n_steps`` optimizer steps (and the last).

    ``data`` maps a name to ``(X, y)``, inputs as the model reads them (``experiment.test``);
    ``records`` holds ``step`` and ``<name>_accuracy`` lists, one entry per evaluation.
    """

    def __init__(self, n_steps: int, data: dict):
        self.n_steps, self.data = int(n_steps), dict(data)
        self.records: dict[str, list] = {"step": [], **{f"{k}_accuracy": [] for k in self.data}}

    def record(self) -> None:
        self.records["step"].append(self.trainer.step_count)
        for name, split in self.data.items():
            self.records[f"{name}_accuracy"].append(accuracy(self.trainer, split))

    def on_train_begin(self, logs):
        self.record()

    def on_batch_end(self, batch, logs):
        if self.trainer.step_count % self.n_steps == 0:
            self.record()

    def on_train_end(self, logs):
        if self.records["step"][-1] != self.trainer.step_count:
            self.record()


class EvaluateEachEpoch(Callback):
    """Accuracy on extra splits after every epoch, written into the history row as ``<name>_accuracy``."""

    def __init__(self, data: dict):
        self.data = dict(data)

    def on_epoch_end(self, epoch, logs):
        for name, split in self.data.items():
            logs[f"{name}_accuracy"] = accuracy(self.trainer, split)


class StepLoss(Callback):
    """The training loss of every optimizer step, in ``losses``."""

    def __init__(self):
        self.losses: list[float] = []

    def on_batch_end(self, batch, logs):
        self.losses.append(float(logs["loss"]))


class InitialWeights(Callback):
    """``set_weights(model)`` once before the first step: a paper's initialization that the
    configuration's ``init`` names cannot express. A resumed run (step_count > 0) is left alone."""

    def __init__(self, set_weights: Callable[[nn.Module], None]):
        self.set_weights = set_weights

    def on_train_begin(self, logs):
        if self.trainer.step_count == 0:
            self.set_weights(self.trainer.model)


class Measure(Callback):
    """``measure(model)`` before the first step (``records["init"]``), after every epoch if
    ``each_epoch`` (``records["epochs"]``) and after the last step (``records["trained"]``)."""

    def __init__(self, measure: Callable[[nn.Module], object], each_epoch: bool = False):
        self.measure, self.each_epoch = measure, each_epoch
        self.records: dict = {"epochs": []}

    def on_train_begin(self, logs):
        if self.trainer.step_count == 0:
            self.records["init"] = self.measure(self.trainer.model)

    def on_epoch_end(self, epoch, logs):
        if self.each_epoch:
            self.records["epochs"].append(self.measure(self.trainer.model))

    def on_train_end(self, logs):
        self.records["trained"] = self.measure(self.trainer.model)


def linears(model: nn.Module) -> list[nn.Linear]:
    """The model's Linear layers in order."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def set_linears(model: nn.Module, weight: Callable, bias: float | None = 0.0, seed: int = 0) -> None:
    """Every Linear's weight from ``weight(shape, rng=, dtype=)``, its bias set to ``bias`` (None:
    Linear's own draw U[-1/sqrt(n_in), 1/sqrt(n_in)]).

    One generator from ``seed`` draws layer after layer as ``Linear(init=weight, rng=rng)`` does
    (the weight, then the bias), so the weights are those of such a net built with
    ``np.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    for lin in linears(model):
        w = lin.weight.data
        w[...] = weight(w.shape, rng=rng, dtype=w.dtype)
        bound = 1.0 / np.sqrt(lin.in_features)
        drawn = rng.uniform(-bound, bound, size=lin.out_features)
        lin.bias.data[...] = drawn if bias is None else bias


def probe_rows(probe, layer: str) -> dict[str, np.ndarray]:
    """One probed layer's records (:class:`~tricklab.train.probe.Probe`) as arrays, by column."""
    rec = probe.records
    keep = np.asarray(rec["layer"]) == layer
    return {k: np.asarray(v)[keep] for k, v in rec.items()}


def unit_table(probe, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """One probed layer's per-unit percentiles (``Probe(units=...)``) as (steps, P): P[r, k] holds
    the 15/50/85th percentiles of the k-th recorded unit at ``steps[r]`` (shape (records, units, 3))."""
    rec = {k: np.asarray(v) for k, v in probe.unit_records.items()}
    keep = rec["unit_layer"] == layer
    steps = np.asarray(list(dict.fromkeys(rec["unit_step"][keep].tolist())), dtype=np.int64)
    pct = np.stack([rec[c][keep] for c in UNIT_FLOAT_COLUMNS], axis=-1)
    return steps, pct.reshape(len(steps), -1, len(UNIT_FLOAT_COLUMNS))
