"""Early stopping: track validation error, stop when it degrades (patience or Prechelt's criteria).

Criteria, with E_va(t) the validation loss after epoch t, E_opt(t) = min_{t' <= t} E_va(t'),
E_tr the training loss and strips of k epochs (Prechelt 1998)::

    patience   stop when E_va has not improved by more than ``min_delta`` for ``patience`` epochs
    GL_alpha   generalization loss GL(t) = 100 (E_va(t) / E_opt(t) - 1);  stop when GL(t) > alpha
    PQ_alpha   training progress P_k(t) = 1000 (sum_{strip} E_tr / (k min_{strip} E_tr) - 1);
               stop when GL(t) / P_k(t) > alpha, checked at the end of each strip
    UP_s       stop when E_va rose at the end of each of s successive strips

References:
    Prechelt, L. "Early Stopping - But When?" In Neural Networks: Tricks of the Trade, 1998.
"""

from __future__ import annotations

import math

CRITERIA = ("patience", "GL", "PQ", "UP")


class EarlyStopping:
    """Decide after every epoch whether to stop; remember the best epoch.

    ``update(epoch, train_loss, val_loss)`` returns True when training should stop. The best
    epoch is the one with the lowest validation loss (improvement by more than ``min_delta``).
    ``monitor="error"`` asks the trainer to pass error rates (1 - accuracy) instead of losses:
    a validation loss can rise while the accuracy still improves (over-confident mistakes).
    """

    def __init__(self, criterion: str = "patience", patience: int = 5, min_delta: float = 0.0,
                 alpha: float = 5.0, strip: int = 5, s: int = 3, restore_best: bool = True,
                 monitor: str = "loss"):
        if monitor not in ("loss", "error"):
            raise ValueError(f"early stopping monitor must be 'loss' or 'error', got {monitor!r}")
        self.monitor = monitor
        if criterion not in CRITERIA:
            raise ValueError(f"early stopping criterion must be one of {CRITERIA}, got {criterion!r}")
        if patience < 1:
            raise ValueError(f"early stopping patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise ValueError(f"early stopping min_delta must be >= 0, got {min_delta}")
        if alpha <= 0 or strip < 1 or s < 1:
            raise ValueError(f"early stopping needs alpha > 0, strip >= 1, s >= 1; got {alpha}, {strip}, {s}")
        self.criterion, self.patience, self.min_delta = criterion, int(patience), float(min_delta)
        self.alpha, self.strip, self.s, self.restore_best = float(alpha), int(strip), int(s), restore_best
        self.best_loss, self.best_epoch, self.wait = math.inf, -1, 0
        self.train_losses: list[float] = []
        self.val_losses: list[float] = []
        self.ups = 0
        self.stopped_epoch: int | None = None

    def improved(self, val_loss: float) -> bool:
        return val_loss < self.best_loss - self.min_delta

    def update(self, epoch: int, train_loss: float, val_loss: float) -> bool:
        self.train_losses.append(float(train_loss))
        self.val_losses.append(float(val_loss))
        if self.improved(val_loss):
            self.best_loss, self.best_epoch, self.wait = float(val_loss), epoch, 0
        else:
            self.wait += 1
        stop = getattr(self, f"_stop_{self.criterion}")()
        if stop:
            self.stopped_epoch = epoch
        return stop

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

    def _stop_patience(self) -> bool:
        return self.wait >= self.patience

    def _stop_GL(self) -> bool:
        return self.generalization_loss() > self.alpha

    def _stop_PQ(self) -> bool:
        if not self._end_of_strip():
            return False
        progress = self.training_progress()
        return progress > 0 and self.generalization_loss() / progress > self.alpha

    def _stop_UP(self) -> bool:
        if not self._end_of_strip() or len(self.val_losses) <= self.strip:
            return False
        rose = self.val_losses[-1] > self.val_losses[-1 - self.strip]
        self.ups = self.ups + 1 if rose else 0
        return self.ups >= self.s

    def state_dict(self) -> dict:
        return {k: v for k, v in vars(self).items()}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, list(v) if isinstance(v, list) else v)
