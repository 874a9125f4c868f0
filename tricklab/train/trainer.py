"""The training loop: full backward, then clipping, then the optimizer step; validation every epoch.

One step on a minibatch (x, d), in the order the lecture insists on::

    y = model(x);  L = Loss(y, d)             forward
    model.backward_parameters(dL/dy)          every parameter's gradient, weights untouched
    clip gradients (value or norm)            optional
    optimizer.step(); constraints(model)      only now do weights change (then e.g. max-norm)

After every epoch the model is scored on the validation data (the loss and the metrics of
:mod:`tricklab.train.metrics`), the history and logs grow, early stopping decides, and a checkpoint
with the whole training state is written atomically, so that a run killed at any moment resumes
from the last epoch and ends with the very same weights.
"""

from __future__ import annotations

import csv
import io
import json
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
from .checkpoint import atomic_write_bytes, load_latest, save_checkpoint
from .early_stopping import EarlyStopping, monitored_metric
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


def _progress(total: int, desc: str, enabled: bool | None):
    enabled = sys.stderr.isatty() if enabled is None else enabled
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


class Trainer:
    """Train ``model`` on minibatches with ``loss`` and ``optimizer``; evaluate; checkpoint; resume.

    Args:
        scheduler: a learning-rate scheduler or a list of them (chained, e.g. a warm-up and a decay),
            stepped once per epoch (``scheduler_interval="epoch"``,
            ``ReduceLROnPlateau`` gets the validation loss) or once per step (``"step"``).
        clip_value / clip_norm: gradient clipping by value (the lecture's ceiling theta) or by norm.
        constraints: callables ``c(model)`` applied after every optimizer step (max-norm).
        early_stopping: an :class:`EarlyStopping`, or None to train all epochs; its ``monitor``
            must be one this run reports (``monitor_names``), checked when ``fit`` starts.
        metrics: a streamed metric (:mod:`tricklab.train.metrics`, e.g. ``metrics_for("mse")``);
            None is :class:`Accuracy`. The history gets ``train_<name>`` and ``val_<name>`` for
            each of its ``names``; the training values are taken in train mode on the outputs of
            the training steps (dropout on, weights changing during the epoch), as Keras does.
        bn_statistics: "recompute" (default: the lecture's population statistics over the training
            minibatches with the final weights) or "running" (keep the running averages).
        run_dir: where checkpoints, history.csv and history.jsonl go (None: nothing is written).
        generators: further random generators to checkpoint (the data loader's, by name).
    """

    def __init__(self, model: Module, loss: Module, optimizer, scheduler=None, scheduler_interval: str = "epoch",
                 clip_value: float | None = None, clip_norm: float | None = None,
                 constraints: Iterable[Callable[[Module], None]] = (), early_stopping: EarlyStopping | None = None,
                 bn_statistics: str = "recompute", run_dir: str | Path | None = None,
                 generators: dict[str, np.random.Generator] | None = None, progress: bool | None = None,
                 extra_state: dict | None = None, log: Callable[[str], None] | None = None, metrics=None):
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
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
        self.progress, self.extra_state = progress, dict(extra_state or {})
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.history: list[dict] = []
        self.epoch = 0
        self.step_count = 0
        self.best_state: dict | None = None
        self.last_checkpoint: Path | None = None

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
        if self.scheduler_interval == "step":
            for scheduler in self.schedulers:
                scheduler.step()
        self.step_count += 1
        return value, penalty, out

    def _fail(self, what: str):
        where = f"epoch {self.epoch + 1}, step {self.step_count + 1}"
        last = f"last good checkpoint: {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written yet"
        raise NonFiniteError(f"non-finite {what} at {where}; training stopped ({last})")

    def train_epoch(self, loader) -> dict:
        self.model.train()
        self.metrics.reset()
        total = penalty_total = count = 0.0
        bar = _progress(len(loader), f"epoch {self.epoch + 1}", self.progress)
        for xb, yb in loader:
            value, penalty, out = self.train_step(xb, yb)
            self.metrics.update(out, yb)
            n = len(yb)
            total, penalty_total, count = total + value * n, penalty_total + penalty * n, count + n
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / count:.4f}")
        if bar is not None:
            bar.close()
        scores = {f"train_{k}": v for k, v in self.metrics.compute().items()}
        return {"train_loss": total / count, "train_penalty": penalty_total / count, **scores}

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, data, batch_size: int = 1024) -> dict:
        """Mean loss and the metrics of the model in eval mode on ``(X, y)`` or on a loader.

        Returns ``{"loss": ..., **metrics.compute()}``, e.g. loss and accuracy, or loss, rmse and r2.
        """
        self.model.eval()
        self.metrics.reset()
        batches = _batches(data, batch_size)
        total = count = 0.0
        for xb, yb in batches:
            out = self.model(xb)
            total += self.loss(out, yb) * len(yb)
            self.metrics.update(out, yb)
            count += len(yb)
        if count == 0:
            raise ValueError("evaluate: the data set is empty")
        return {"loss": total / count, **self.metrics.compute()}

    def monitor_names(self) -> tuple[str, ...]:
        """The early-stopping monitors this run reports: loss, val_loss, val_<metric>, error if accuracy."""
        names = ("loss", "val_loss", *(f"val_{name}" for name in self.metrics.names))
        return names + ("error", "val_error") if "accuracy" in self.metrics.names else names

    def _check_monitor(self) -> None:
        monitor = self.early_stopping.monitor
        if monitor not in self.monitor_names():
            raise ValueError(f"early stopping monitor {monitor!r} is not reported by this run "
                             f"({type(self.metrics).__name__}); available: {', '.join(self.monitor_names())}")

    def _monitored(self, row: dict) -> tuple[float, float]:
        """(E_tr, E_va) for early stopping: the monitored metric, as 1 - score for accuracy and r2."""
        metric, score = monitored_metric(self.early_stopping.monitor)
        train, val = row[f"train_{metric}"], row[f"val_{metric}"]
        return (1.0 - train, 1.0 - val) if score else (train, val)

    # ------------------------------------------------------------------ the loop
    def fit(self, train_loader, val=None, epochs: int = 10, bn_batches=None) -> list[dict]:
        """Train until ``epochs`` or early stopping; returns the history (one dict per epoch).

        ``bn_batches`` are the training minibatches (no augmentation) over which the batch-norm
        statistics are recomputed at the end; by default the training loader's own batches.
        """
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if self.early_stopping is not None:
            self._check_monitor()
        stopped = self.early_stopping is not None and self.early_stopping.stopped_epoch is not None
        while self.epoch < epochs and not stopped:
            start = time.perf_counter()
            row = {"epoch": self.epoch + 1, **self.train_epoch(train_loader)}
            if val is not None:
                row.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
            row["lr"] = float(self.optimizer.param_groups[0]["lr"])
            if self.scheduler_interval == "epoch":
                self._step_schedulers(row.get("val_loss", row["train_loss"]))
            if self.early_stopping is not None and val is not None:
                stopped = self.early_stopping.update(self.epoch + 1, *self._monitored(row))
                if self.early_stopping.best_epoch == self.epoch + 1:
                    self.best_state = self.model.state_dict()
            row["seconds"] = time.perf_counter() - start
            self.history.append(row)
            self.epoch += 1
            self._report(row)
            if stopped:
                self.log(f"early stopping at epoch {row['epoch']}: {self.early_stopping.stop_reason}")
            self.save()
        self.finish(train_loader if bn_batches is None else bn_batches)
        return self.history

    def _step_schedulers(self, metric: float) -> None:
        for scheduler in self.schedulers:
            if isinstance(scheduler, optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(metric)
            else:
                scheduler.step()

    def finish(self, bn_batches) -> None:
        """Restore the best weights if asked, then set the batch-norm inference statistics."""
        es = self.early_stopping
        if es is not None and es.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            self.log(f"restored the weights of epoch {es.best_epoch} (best {es.quantity} {es.best_loss:.4f})")
        has_bn = any(isinstance(m, _BatchNorm) for m in self.model.modules())
        if has_bn and self.bn_statistics == "recompute":
            state = {k: g.bit_generator.state for k, g in self.generators.items()}
            recompute_batchnorm_statistics(self.model, bn_batches)
            for k, g in self.generators.items():  # a loader's shuffle must not change the run
                g.bit_generator.state = state[k]

    def _report(self, row: dict) -> None:
        """``epoch   3 | train loss 0.3120 accuracy 0.9010 | val loss 0.3300 accuracy 0.8950 | 1.2s``."""
        parts = [f"epoch {row['epoch']:3d}"]
        for split in ("train", "val") if "val_loss" in row else ("train",):
            scores = " ".join(f"{name} {row[f'{split}_{name}']:.4f}" for name in ("loss", *self.metrics.names))
            parts.append(f"{split} {scores}")
        parts.append(f"{row['seconds']:.1f}s")
        self.log(" | ".join(parts))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "step_count": self.step_count,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedulers": [s.state_dict() for s in self.schedulers],
            "early_stopping": self.early_stopping.state_dict() if self.early_stopping is not None else None,
            "best_state": self.best_state,
            "generators": {k: g.bit_generator.state for k, g in self.generators.items()},
            "history": self.history,
            "extra": self.extra_state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step_count = int(state["epoch"]), int(state["step_count"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if len(state["schedulers"]) != len(self.schedulers):
            raise ValueError(f"checkpoint has {len(state['schedulers'])} schedulers, this run {len(self.schedulers)}")
        for scheduler, s in zip(self.schedulers, state["schedulers"]):
            scheduler.load_state_dict(s)
        if self.early_stopping is not None and state["early_stopping"] is not None:
            self.early_stopping.load_state_dict(state["early_stopping"])
        self.best_state = state["best_state"]
        for k, s in state["generators"].items():
            if k not in self.generators:
                raise KeyError(f"checkpoint has a random generator {k!r} that this run does not have")
            self.generators[k].bit_generator.state = s
        self.history = list(state["history"])
        self.extra_state = dict(state.get("extra") or {})

    def save(self) -> None:
        """Checkpoint and logs, each written atomically (no-op without ``run_dir``)."""
        if self.run_dir is None:
            return
        self.last_checkpoint = save_checkpoint(self.run_dir / "checkpoints", self.epoch, self.state_dict())
        write_history(self.run_dir, self.history)

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


def _batches(data, batch_size: int):
    if isinstance(data, tuple) and len(data) == 2:
        X, y = data
        return ((X[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(X), batch_size))
    return data


def write_history(run_dir: Path, history: list[dict]) -> None:
    """history.csv and history.jsonl, one row per epoch, rewritten atomically."""
    run_dir = Path(run_dir)
    buf = io.StringIO()
    fields = list(dict.fromkeys(key for row in history for key in row))  # every key, in the order rows have them
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(run_dir / "history.csv", buf.getvalue().encode())
    lines = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write_bytes(run_dir / "history.jsonl", lines.encode())
