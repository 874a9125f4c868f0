"""Early stopping: track validation error, stop when it degrades (patience or Prechelt's criteria).

Criteria, with E_va(t) the validation loss after epoch t, E_opt(t) = min_{t' <= t} E_va(t'),
E_tr the training loss and strips of k epochs (Prechelt 1998)::

    patience   stop when E_va has not improved by more than ``min_delta`` for ``patience`` epochs
    GL_alpha   generalization loss GL(t) = 100 (E_va(t) / E_opt(t) - 1);  stop when GL(t) > alpha
    PQ_alpha   training progress P_k(t) = 1000 (sum_{strip} E_tr / (k min_{strip} E_tr) - 1);
               stop when GL(t) / P_k(t) > alpha, checked at the end of each strip
    UP_s       stop when E_va rose at the end of each of s successive strips

Besides the criterion, each epoch checks, in this order (Lightning's ``EarlyStopping``)::

    check_finite           stop when E_va(t) is NaN or infinite
    stopping_threshold     stop as soon as E_va(t) < stopping_threshold (good enough)
    divergence_threshold   stop as soon as E_va(t) > divergence_threshold (diverged)

The patience criterion is Keras' (``keras.callbacks.EarlyStopping``), ``baseline`` and
``patience=0`` included. Every epoch adds 1 to the count ``wait``; an improvement sets the best
and resets ``wait`` to 0 only if it also beats the baseline (``E_va < baseline - min_delta``);
an epoch without improvement stops once ``wait >= patience``, except on the first epoch. So
``patience=0`` stops at the first epoch without improvement, and if no epoch beats the baseline,
training stops at the first epoch without improvement from epoch ``patience`` on. Like Keras
(whose docstring says "training will run for patience epochs"), an epoch that improves on the
best but not on the baseline never stops training itself. ``stop_reason`` says, after a stop,
which rule fired and with which values, for the log.

What E_va and E_tr are is ``monitor``, a name of the values the trainer reports. The criteria
need a value that is lower when better and has a training counterpart, so a score (accuracy,
R², at most 1) is watched as 1 - score: the error rate, the fraction of variance unexplained::

    monitor                           E_tr, E_va
    "loss", "val_loss"                train_loss, val_loss
    "error", "val_error",
    "val_accuracy"                    1 - train_accuracy, 1 - val_accuracy
    "val_r2"                          1 - train_r2, 1 - val_r2
    "val_<m>", e.g. "val_rmse"        train_<m>, val_<m>

The thresholds and ``baseline`` apply to these values (``monitor="val_accuracy"`` with
``stopping_threshold=0.02`` stops below 2 % error).

References:
    Prechelt, L. "Early Stopping - But When?" In Neural Networks: Tricks of the Trade, 1998.
"""

from __future__ import annotations

import math
import numbers

from .callbacks import Callback

CRITERIA = ("patience", "GL", "PQ", "UP")
SCORES = ("accuracy", "r2")  # higher is better, at most 1: watched as 1 - score


def monitored_metric(monitor: str) -> tuple[str, bool]:
    """The reported metric behind ``monitor`` and whether early stopping watches 1 - metric.

    "loss"/"val_loss" -> ("loss", False); "error"/"val_error"/"val_accuracy" -> ("accuracy", True);
    "val_r2" -> ("r2", True); "val_rmse" -> ("rmse", False).
    """
    name = monitor.removeprefix("val_")
    if name == "error":
        return "accuracy", True
    return name, name in SCORES


class EarlyStopping(Callback):
    """Decide after every epoch whether to stop; remember the best epoch (and its weights).

    As a callback of the :class:`~tricklab.train.Trainer` it reads its monitored value from the
    epoch's logs (``train_<m>`` and ``val_<m>``; epochs without validation data are not counted),
    keeps a copy of the best epoch's weights when ``restore_best``, sets ``trainer.stop_training``
    when a rule fires, and loads the best weights back when training ends. Its state, the best
    weights included, is in every checkpoint.

    ``update(epoch, train_loss, val_loss)`` returns True when training should stop; then
    ``stopped_epoch`` is that epoch and ``stop_reason`` says why. The best epoch is the one with
    the lowest validation loss (improvement by more than ``min_delta``); a non-finite value is
    never the best when ``check_finite``. Unlike Lightning, which leaves its best score alone
    when a threshold stops, an epoch that reaches ``stopping_threshold`` is recorded as the best
    if it improves on it, so ``restore_best`` keeps it. ``monitor`` names what the trainer
    passes (see the module docstring): ``"error"`` asks for error rates (1 - accuracy) instead of
    losses, since a validation loss can rise while the accuracy still improves (over-confident
    mistakes); ``"val_rmse"`` or ``"val_r2"`` for regression. Whether the run reports that metric
    is checked by the trainer, which knows its metrics.
    """

    def __init__(self, criterion: str = "patience", patience: int = 5, min_delta: float = 0.0,
                 alpha: float = 5.0, strip: int = 5, s: int = 3, restore_best: bool = True,
                 monitor: str = "loss", *, baseline: float | None = None, check_finite: bool = True,
                 stopping_threshold: float | None = None, divergence_threshold: float | None = None):
        named = isinstance(monitor, str) and monitor.startswith("val_") and monitor[4:].isidentifier()
        if monitor not in ("loss", "error") and not named:
            raise ValueError(f"early stopping monitor must be 'loss', 'error' or 'val_<metric>' ('val_loss', "
                             f"'val_accuracy', 'val_error', 'val_rmse', 'val_r2'), got {monitor!r}")
        self.monitor = monitor
        if criterion not in CRITERIA:
            raise ValueError(f"early stopping criterion must be one of {CRITERIA}, got {criterion!r}")
        if not isinstance(patience, numbers.Integral) or isinstance(patience, bool) or patience < 0:
            raise ValueError(f"early stopping patience must be an int >= 0, got {patience!r}")
        if min_delta < 0:
            raise ValueError(f"early stopping min_delta must be >= 0, got {min_delta}")
        if alpha <= 0 or strip < 1 or s < 1:
            raise ValueError(f"early stopping needs alpha > 0, strip >= 1, s >= 1; got {alpha}, {strip}, {s}")
        _check_thresholds(criterion, baseline, check_finite, stopping_threshold, divergence_threshold)
        self.criterion, self.patience, self.min_delta = criterion, int(patience), float(min_delta)
        self.alpha, self.strip, self.s, self.restore_best = float(alpha), int(strip), int(s), restore_best
        self.baseline = None if baseline is None else float(baseline)
        self.check_finite = check_finite
        self.stopping_threshold = None if stopping_threshold is None else float(stopping_threshold)
        self.divergence_threshold = None if divergence_threshold is None else float(divergence_threshold)
        self.best_loss, self.best_epoch, self.wait = math.inf, -1, 0
        self.train_losses: list[float] = []
        self.val_losses: list[float] = []
        self.ups = 0
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None
        self.best_weights: dict | None = None

    @property
    def quantity(self) -> str:
        """The monitored value in words, for the messages: "validation loss", "val_rmse", "1 - val_r2"."""
        if self.monitor in ("loss", "error"):
            return f"validation {self.monitor}"
        score = monitored_metric(self.monitor)[1] and self.monitor != "val_error"
        return f"1 - {self.monitor}" if score else self.monitor

    def improved(self, val_loss: float) -> bool:
        return val_loss < self.best_loss - self.min_delta

    def beats_baseline(self, val_loss: float) -> bool:
        return self.baseline is None or val_loss < self.baseline - self.min_delta

    def update(self, epoch: int, train_loss: float, val_loss: float) -> bool:
        val_loss = float(val_loss)
        self.train_losses.append(float(train_loss))
        self.val_losses.append(val_loss)
        if self.check_finite and not math.isfinite(val_loss):
            reason = f"check_finite: the {self.quantity} is {val_loss}, not finite"
        else:
            reason = self._count_and_check(epoch, val_loss)
        if reason is not None:
            self.stopped_epoch, self.stop_reason = epoch, reason
        return reason is not None

    def _count_and_check(self, epoch: int, val_loss: float) -> str | None:
        """Keras' count of epochs, then the thresholds, then the criterion: the reason to stop or None."""
        improved = self.improved(val_loss)
        self.wait += 1
        if improved:
            self.best_loss, self.best_epoch = val_loss, epoch
            if self.beats_baseline(val_loss):
                self.wait = 0
        name = f"the {self.quantity} {val_loss:.4g}"
        if self.stopping_threshold is not None and val_loss < self.stopping_threshold:
            return f"stopping_threshold: {name} is below stopping_threshold {self.stopping_threshold:g}"
        if self.divergence_threshold is not None and val_loss > self.divergence_threshold:
            return f"divergence_threshold: {name} is above divergence_threshold {self.divergence_threshold:g}"
        if self.criterion == "patience":
            return self._stop_patience(improved)
        return getattr(self, f"_stop_{self.criterion}")()

    def generalization_loss(self) -> float:
        """GL(t) = 100 (E_va(t) / E_opt(t) - 1)."""
        e_opt = min(self.val_losses)
        return 100.0 * (self.val_losses[-1] / e_opt - 1.0) if e_opt > 0 else 0.0

    def training_progress(self) -> float:
        """P_k(t) = 1000 (sum of the last k training losses / (k * their minimum) - 1)."""
        strip = self.train_losses[-self.strip:]
        low = min(strip)
        return 1000.0 * (sum(strip) / (len(strip) * low) - 1.0) if low > 0 else math.inf

    def _end_of_strip(self) -> bool:
        return len(self.val_losses) % self.strip == 0

    def _stop_patience(self, improved: bool) -> str | None:
        if improved or self.wait < self.patience or len(self.val_losses) == 1:
            return None
        best = f"best {self.best_loss:.4g} at epoch {self.best_epoch}"
        if not self.beats_baseline(self.best_loss):
            return (f"patience: the {self.quantity} did not beat the baseline {self.baseline:g} "
                    f"in {self.wait} epochs ({best})")
        return f"patience: no improvement of the {self.quantity} in {self.wait} epochs ({best})"

    def _stop_GL(self) -> str | None:
        gl = self.generalization_loss()
        return f"GL: generalization loss {gl:.4g} > alpha {self.alpha:g}" if gl > self.alpha else None

    def _stop_PQ(self) -> str | None:
        if not self._end_of_strip():
            return None
        progress = self.training_progress()
        if progress > 0 and self.generalization_loss() / progress > self.alpha:
            return f"PQ: GL / P_{self.strip} = {self.generalization_loss() / progress:.4g} > alpha {self.alpha:g}"
        return None

    def _stop_UP(self) -> str | None:
        if not self._end_of_strip() or len(self.val_losses) <= self.strip:
            return None
        rose = self.val_losses[-1] > self.val_losses[-1 - self.strip]
        self.ups = self.ups + 1 if rose else 0
        if self.ups >= self.s:
            return f"UP: the {self.quantity} rose in {self.ups} successive strips of {self.strip} epochs"
        return None

    # ------------------------------------------------------------------ as a callback
    def on_train_begin(self, logs):
        names = self.trainer.monitor_names()
        if self.monitor not in names:
            raise ValueError(f"early stopping monitor {self.monitor!r} is not reported by this run "
                             f"({type(self.trainer.metrics).__name__}); available: {', '.join(names)}")
        if self.stopped_epoch is not None:  # a resumed run that had stopped trains no further
            self.trainer.stop_training = True

    def monitored(self, logs: dict) -> tuple[float, float]:
        """(E_tr, E_va) of an epoch's logs: the monitored metric, as 1 - score for accuracy and r2."""
        metric, score = monitored_metric(self.monitor)
        train, val = logs[f"train_{metric}"], logs[f"val_{metric}"]
        return (1.0 - train, 1.0 - val) if score else (train, val)

    def on_epoch_end(self, epoch, logs):
        if "val_loss" not in logs:
            return
        stopped = self.update(epoch + 1, *self.monitored(logs))
        if self.restore_best and self.best_epoch == epoch + 1:
            self.best_weights = self.trainer.model.state_dict()
        if stopped:
            self.trainer.stop_training = True
            self.trainer.log(f"early stopping at epoch {epoch + 1}: {self.stop_reason}")

    def on_train_end(self, logs):
        if self.restore_best and self.best_weights is not None:
            self.trainer.model.load_state_dict(self.best_weights)
            self.trainer.log(f"restored the weights of epoch {self.best_epoch} "
                             f"(best {self.quantity} {self.best_loss:.4f})")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Every attribute (the best weights too), lists copied: a snapshot from which
        ``load_state_dict`` resumes exactly."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in vars(self).items() if k != "trainer"}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, list(v) if isinstance(v, list) else v)


def _check_thresholds(criterion, baseline, check_finite, stopping_threshold, divergence_threshold) -> None:
    """ValueError naming the argument among the Keras and Lightning extras that cannot work."""
    if not isinstance(check_finite, bool):
        raise ValueError(f"early stopping check_finite must be True or False, got {check_finite!r}")
    if baseline is not None:
        if not _is_number(baseline) or not math.isfinite(baseline):
            raise ValueError(f"early stopping baseline must be a finite number, got {baseline!r}")
        if criterion != "patience":
            raise ValueError(f"early stopping baseline applies to criterion='patience' only, got {criterion!r}")
    for name, value in (("stopping_threshold", stopping_threshold), ("divergence_threshold", divergence_threshold)):
        if value is not None and (not _is_number(value) or math.isnan(value)):
            raise ValueError(f"early stopping {name} must be a number, got {value!r}")
    both = stopping_threshold is not None and divergence_threshold is not None
    if both and stopping_threshold >= divergence_threshold:
        raise ValueError(f"early stopping stopping_threshold {stopping_threshold!r} must be below "
                         f"divergence_threshold {divergence_threshold!r}: otherwise every value stops training")


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)
