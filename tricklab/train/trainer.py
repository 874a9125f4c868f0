"""The training loop: full backward, then clipping, then the optimizer step; validation every epoch.

One step on a minibatch (x, d), in the order the lecture insists on::

    y = model(x);  L = Loss(y, d)             forward
    model.backward_parameters(dL/dy)          every parameter's gradient, weights untouched
    clip gradients (value or norm)            optional
    optimizer.step(); constraints(model)      only now do weights change (then e.g. max-norm)

After every epoch the model is scored on the validation data (the loss and the metrics of
:mod:`tricklab.train.metrics`) and the history grows by one row. Everything else is a callback
(:mod:`tricklab.train.callbacks`, Keras' hook names): the schedulers' steps, the progress bar and
the epoch's log line, early stopping with its best weights, the history files, and the checkpoint
with the whole training state, written atomically after every epoch, so that a run killed at any
moment resumes from the last epoch and ends with the very same weights.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .. import optim
from ..nn.activity import activity_penalty
from ..nn.module import Module
from ..nn.normalization import _BatchNorm, recompute_batchnorm_statistics
from .callbacks import Callback, CallbackList, Checkpoint, EpochLog, HistoryFiles, ProgressBar, StepSchedulers
from .checkpoint import load_latest
from .early_stopping import EarlyStopping
from .evaluate import evaluate
from .metrics import Accuracy


class NonFiniteError(RuntimeError):
    """Training produced NaN or infinity; nothing was written from that step on."""


def all_finite(a: np.ndarray) -> bool:
    """Whether every entry of ``a`` is finite, decided without a temporary array of a's size.

    The sum of squares s = sum_i a_i^2 (one BLAS dot product of the flat view with itself) is
    finite only if every a_i is: inf^2 = inf, NaN^2 = NaN, and no sum with an inf or NaN term is
    finite. So a finite s settles it in one pass. A non-finite s may also be an overflow of finite
    entries (|a_i| > 2^64 in float32), so then max_i a_i and min_i a_i decide: NaN and inf make them
    non-finite and they never overflow. Unlike a plain sum (finite entries near 1e38 overflow it,
    and +inf with -inf cancels to NaN), this never calls a finite array non-finite.
    """
    if a.size == 0:
        return True
    if a.flags.c_contiguous:  # a non-contiguous flat view would be a copy
        flat = a.reshape(-1)
        with np.errstate(over="ignore"):  # an overflow here is expected and decided below
            if math.isfinite(np.dot(flat, flat)):
                return True
    return math.isfinite(np.maximum.reduce(a, axis=None)) and math.isfinite(np.minimum.reduce(a, axis=None))


def model_generators(model: Module) -> dict[str, np.random.Generator]:
    """Every random generator held by the model's layers (dropout masks and the like), by name."""
    gens = {}
    for name, m in model.named_modules():
        for attr, value in vars(m).items():
            if isinstance(value, np.random.Generator):
                gens[f"{name or 'model'}.{attr}"] = value
    return gens


class Trainer:
    """Train ``model`` on minibatches with ``loss`` and ``optimizer``; evaluate; checkpoint; resume.

    Args:
        scheduler: a learning-rate scheduler or a list of them (chained, e.g. a warm-up and a decay),
            stepped once per epoch (``scheduler_interval="epoch"``, each gets ``step(metrics=val_loss)``)
            or once per step (``"step"``), by the :class:`StepSchedulers` callback.
        clip_value / clip_norm: gradient clipping by value (the lecture's ceiling theta) or by norm.
        constraints: callables ``c(model)`` applied after every optimizer step (max-norm).
        early_stopping: an :class:`EarlyStopping` (a callback), or None to train all epochs; its
            ``monitor`` must be one this run reports (``monitor_names``), checked when ``fit`` starts.
        metrics: a streamed metric (:mod:`tricklab.train.metrics`, e.g. ``metrics_for("mse")``);
            None is :class:`Accuracy`. The history gets ``train_<name>`` and ``val_<name>`` for
            each of its ``names``; the training values are taken in train mode on the outputs of
            the training steps (dropout on, weights changing during the epoch), as Keras does.
        bn_statistics: "recompute" (default: the lecture's population statistics over the training
            minibatches with the final weights) or "running" (keep the running averages).
        run_dir: where checkpoints, history.csv and history.jsonl go (None: nothing is written).
        generators: further random generators to checkpoint (the data loader's, by name).
        callbacks: further :class:`~tricklab.train.Callback` instances for every ``fit`` (``fit``
            takes more); their state is checkpointed.
    """

    def __init__(self, model: Module, loss: Module, optimizer, scheduler=None, scheduler_interval: str = "epoch",
                 clip_value: float | None = None, clip_norm: float | None = None,
                 constraints: Iterable[Callable[[Module], None]] = (), early_stopping: EarlyStopping | None = None,
                 bn_statistics: str = "recompute", run_dir: str | Path | None = None,
                 generators: dict[str, np.random.Generator] | None = None, progress: bool | None = None,
                 extra_state: dict | None = None, log: Callable[[str], None] | None = None, metrics=None,
                 callbacks: Iterable[Callback] = ()):
        if bn_statistics not in ("recompute", "running"):
            raise ValueError(f"bn_statistics must be 'recompute' or 'running', got {bn_statistics!r}")
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.schedulers = list(scheduler) if isinstance(scheduler, (list, tuple)) else [scheduler] * (scheduler is not None)
        self.scheduler_interval, self.clip_value, self.clip_norm = scheduler_interval, clip_value, clip_norm
        self.constraints, self.early_stopping = list(constraints), early_stopping
        self.metrics = Accuracy() if metrics is None else metrics
        self.bn_statistics = bn_statistics
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.generators = {**model_generators(model), **(generators or {})}
        self.extra_state = dict(extra_state or {})
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.history: list[dict] = []
        self.epoch = 0
        self.step_count = 0
        self.steps_per_epoch: int | None = None
        self.stop_training = False
        self.last_checkpoint: Path | None = None
        builtin = [StepSchedulers(self.schedulers, scheduler_interval), ProgressBar(progress),
                   EpochLog(self.log, self.metrics.names)]
        self.callbacks = CallbackList(builtin + [early_stopping] * (early_stopping is not None) + list(callbacks), self)
        self._pending_state: dict[str, dict] = {}  # checkpointed state of callbacks that fit() will bring

    # ------------------------------------------------------------------ one step
    def train_step(self, xb: np.ndarray, yb: np.ndarray) -> tuple[float, float, np.ndarray]:
        """Forward, the whole backward pass, clip, step. Returns (loss, penalty, model output).

        The minibatch is data, so the backward pass is ``model.backward_parameters`` (as
        ``Sequential(..., input_grad=False)``): every parameter's gradient, bit for bit those of
        ``model.backward``, without the first layer's dLoss/dx; the model's own ``input_grad`` is
        left as it is. Output, loss and every gradient are checked finite before clipping and the
        optimizer step (:func:`all_finite`, which allocates nothing of the arrays' size).
        """
        self.optimizer.zero_grad()
        try:
            out = self.model(xb)
        except FloatingPointError:  # batch norm refuses a NaN or inf before its statistics take it in
            self._fail("model output")
        if not all_finite(np.asarray(out)):
            self._fail("model output")
        value = self.loss(out, yb)
        penalty = activity_penalty(self.model)
        if not math.isfinite(value + penalty):
            self._fail("loss")
        self.model.backward_parameters(self.loss.backward())  # the input is data: no dLoss/dx
        params = list(self.model.parameters())
        if not all(all_finite(p.grad) for p in params):  # before clipping could hide an inf
            self._fail("gradients")
        if self.clip_value:
            optim.clip_grad_value_(params, self.clip_value)
        if self.clip_norm:
            optim.clip_grad_norm_(params, self.clip_norm)
        self.optimizer.step()
        for constraint in self.constraints:
            constraint(self.model)
        self.step_count += 1
        return value, penalty, out

    def _fail(self, what: str):
        where = f"epoch {self.epoch + 1}, step {self.step_count + 1}"
        last = f"last good checkpoint: {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written yet"
        raise NonFiniteError(f"non-finite {what} at {where}; training stopped ({last})")

    def train_epoch(self, loader, callbacks: CallbackList | None = None) -> dict:
        """One pass over ``loader``; returns the epoch's training loss, penalty and metrics.

        ``callbacks`` get ``on_batch_begin``/``on_batch_end`` around every step (only those that
        override them are called: none costs nothing); ``stop_training`` ends the epoch early.
        """
        cbs = self.callbacks if callbacks is None else callbacks
        self.model.train()
        self.metrics.reset()
        total = penalty_total = count = 0.0
        for batch, (xb, yb) in enumerate(loader):
            value, penalty = self.train_batch(batch, xb, yb, cbs)
            n = len(yb)
            total, penalty_total, count = total + value * n, penalty_total + penalty * n, count + n
            if self.stop_training:
                break
        scores = {f"train_{k}": v for k, v in self.metrics.compute().items()}
        return {"train_loss": total / count, "train_penalty": penalty_total / count, **scores}

    def train_batch(self, batch: int, xb: np.ndarray, yb: np.ndarray, callbacks: CallbackList) -> tuple[float, float]:
        """One minibatch of an epoch: ``on_batch_begin``, :meth:`train_step`, the metric's update,
        ``on_batch_end`` (hooks that no callback overrides are not called). Returns (loss, penalty)."""
        n = len(yb)
        if callbacks.wants("on_batch_begin"):
            callbacks.on_batch_begin(batch, {"batch": batch, "size": n})
        value, penalty, out = self.train_step(xb, yb)
        self.metrics.update(out, yb)
        if callbacks.wants("on_batch_end"):
            callbacks.on_batch_end(batch, {"batch": batch, "size": n, "loss": value, "penalty": penalty})
        return value, penalty

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, data, batch_size: int = 1024) -> dict:
        """Mean loss and the metrics of the model in eval mode on ``(X, y)`` or on a loader
        (:func:`tricklab.train.evaluate` with this run's loss and metrics)."""
        return evaluate(self.model, self.loss, data, self.metrics, batch_size)

    def monitor_names(self) -> tuple[str, ...]:
        """The early-stopping monitors this run reports: loss, val_loss, val_<metric>, error if accuracy."""
        names = ("loss", "val_loss", *(f"val_{name}" for name in self.metrics.names))
        return names + ("error", "val_error") if "accuracy" in self.metrics.names else names

    # ------------------------------------------------------------------ the loop
    def fit(self, train_loader, val=None, epochs: int = 10, bn_batches=None, callbacks: Iterable[Callback] = ()) -> list[dict]:
        """Train until ``epochs``, early stopping or a callback's ``stop_training``; returns the history
        (one dict per epoch).

        ``callbacks`` join the trainer's own for this fit (see :mod:`tricklab.train.callbacks` for
        the order); with a ``run_dir`` the checkpoint and the history files are written after every
        epoch, after every other callback. ``bn_batches`` are the training minibatches (no
        augmentation) over which the batch-norm statistics are recomputed at the end; by default
        the training loader's own batches.
        """
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        cbs = self._callbacks_for_fit(callbacks)
        self.stop_training = False
        self.steps_per_epoch = len(train_loader) if hasattr(train_loader, "__len__") else None
        cbs.on_train_begin({})
        while self.epoch < epochs and not self.stop_training:
            cbs.on_epoch_begin(self.epoch, {"epoch": self.epoch + 1})
            start = time.perf_counter()
            row = {"epoch": self.epoch + 1, **self.train_epoch(train_loader, cbs)}
            if val is not None:
                row.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
            row["lr"] = float(self.optimizer.param_groups[0]["lr"])
            row["seconds"] = time.perf_counter() - start
            self.history.append(row)
            self.epoch += 1
            cbs.on_epoch_end(self.epoch - 1, row)
        cbs.on_train_end(self.history[-1] if self.history else {})
        self.finish(train_loader if bn_batches is None else bn_batches)
        return self.history

    def _callbacks_for_fit(self, extra) -> CallbackList:
        """The trainer's callbacks, this fit's, then the writers (history files, checkpoint) last;
        checkpointed state waiting for a callback of this fit is loaded into it now."""
        writers = [Checkpoint(self.run_dir), HistoryFiles(self.run_dir)] if self.run_dir is not None else []
        every = self.callbacks.callbacks + list(extra) + writers
        last = lambda cb: isinstance(cb, Callback) and cb.last  # noqa: E731  (CallbackList names a non-callback)
        fit_list = CallbackList(sorted(every, key=last), self)  # stable: the writers after all others
        for key, cb in fit_list.keyed().items():
            if key in self._pending_state:
                cb.load_state_dict(self._pending_state.pop(key))
        self._fit_callbacks = fit_list
        return fit_list

    def finish(self, bn_batches) -> None:
        """Set the batch-norm inference statistics (after the callbacks' ``on_train_end``, which may
        have restored the best weights)."""
        has_bn = any(isinstance(m, _BatchNorm) for m in self.model.modules())
        if has_bn and self.bn_statistics == "recompute":
            state = {k: g.bit_generator.state for k, g in self.generators.items()}
            recompute_batchnorm_statistics(self.model, bn_batches)
            for k, g in self.generators.items():  # a loader's shuffle must not change the run
                g.bit_generator.state = state[k]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        cbs = getattr(self, "_fit_callbacks", None) or self.callbacks
        states = {key: cb.state_dict() for key, cb in cbs.keyed().items()}
        callbacks = {key: state for key, state in states.items() if state is not None}
        return {
            "epoch": self.epoch,
            "step_count": self.step_count,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "callbacks": {**self._pending_state, **callbacks},
            "generators": {k: g.bit_generator.state for k, g in self.generators.items()},
            "history": self.history,
            "extra": self.extra_state,
        }

    def load_state_dict(self, state: dict) -> None:
        """Take back :meth:`state_dict`. A callback's state whose callback is not registered yet is
        kept and loaded when ``fit`` brings it."""
        self.epoch, self.step_count = int(state["epoch"]), int(state["step_count"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        saved = dict(state.get("callbacks") or _callbacks_of_old_checkpoint(state))
        for key, cb in self.callbacks.keyed().items():
            if key in saved:  # StepSchedulers' is always there; it refuses another number of schedulers
                cb.load_state_dict(saved.pop(key))
        self._pending_state = saved  # a callback the checkpoint predates starts afresh
        for k, s in state["generators"].items():
            if k not in self.generators:
                raise KeyError(f"checkpoint has a random generator {k!r} that this run does not have")
            self.generators[k].bit_generator.state = s
        self.history = list(state["history"])
        self.extra_state = dict(state.get("extra") or {})

    def resume(self) -> bool:
        """Load the newest intact checkpoint from ``run_dir``; False if there is none."""
        if self.run_dir is None:
            return False
        found = load_latest(self.run_dir / "checkpoints", warn=self.log)
        if found is None:
            return False
        state, path = found
        self.load_state_dict(state)
        self.last_checkpoint = path
        self.log(f"resumed from {path} (epoch {self.epoch})")
        return True


def _callbacks_of_old_checkpoint(state: dict) -> dict:
    """The callbacks' state of a checkpoint written before callbacks held it (schedulers,
    early stopping and the best weights were the trainer's own keys)."""
    out = {"StepSchedulers": {"schedulers": state.get("schedulers") or []}}
    if state.get("early_stopping") is not None:
        out["EarlyStopping"] = {**state["early_stopping"], "best_weights": state.get("best_state")}
    return out
