"""Metrics streamed over minibatches: each batch updates sums, ``compute`` turns them into scores.

A metric object has ``names`` (the keys ``compute`` returns), ``reset()``, ``update(output, target)``
once per minibatch and ``compute() -> dict``. Nothing is kept but a few sums, so scoring a data set
takes one pass and the result does not depend on how it was cut into minibatches (up to float64
rounding). The trainer reports them as ``train_<name>`` and ``val_<name>``.

    loss              metric                  names
    cross_entropy     Accuracy()              accuracy
    bce_with_logits   Accuracy(binary=True)   accuracy
    mse               Regression()            rmse, r2
"""

from __future__ import annotations

import math

import numpy as np


class Accuracy:
    """Fraction of correct predictions: accuracy = (number correct) / (number of predictions).

    Multi-class (cross entropy): logits z of shape (batch, C), integer classes d of shape (batch,);
    z_t is correct when argmax_k z_tk = d_t, and every example counts once.

    ``binary=True`` (BCE with logits): logits z and targets d in {0, 1} of the same shape; an entry
    is correct when [z > 0] = d, i.e. sigmoid(z) > 0.5, and every entry counts (the micro average
    over labels, as Keras' ``BinaryAccuracy`` with threshold 0.5 and torchmetrics' binary accuracy).
    Soft targets (label smoothing) are refused rather than counted as always wrong, as Keras would.
    """

    names = ("accuracy",)

    def __init__(self, binary: bool = False):
        self.binary = binary
        self.reset()

    def reset(self) -> None:
        self.correct = self.count = 0

    def update(self, output: np.ndarray, target: np.ndarray) -> None:
        output, target = np.asarray(output), np.asarray(target)
        right = self._binary(output, target) if self.binary else self._multiclass(output, target)
        self.correct += int(right.sum())
        self.count += right.size

    def _multiclass(self, z: np.ndarray, d: np.ndarray) -> np.ndarray:
        if z.ndim != 2 or d.shape != (len(z),) or not np.issubdtype(d.dtype, np.integer):
            raise ValueError(f"Accuracy: outputs of shape {z.shape} need integer classes of shape ({len(z)},), "
                             f"got targets of shape {d.shape} and dtype {d.dtype}; for mse use Regression(), "
                             f"for bce_with_logits Accuracy(binary=True)")
        return z.argmax(axis=1) == d

    def _binary(self, z: np.ndarray, d: np.ndarray) -> np.ndarray:
        if d.shape != z.shape:
            raise ValueError(f"Accuracy(binary=True): targets have shape {d.shape}, expected {z.shape} (as outputs)")
        if not np.all((d == 0) | (d == 1)):
            raise ValueError("Accuracy(binary=True): targets must be 0 or 1")
        return (z > 0) == (d == 1)

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("Accuracy: no predictions were seen")
        return {"accuracy": self.correct / self.count}


class Regression:
    """RMSE and R² of outputs y_hat against targets y of the same shape, (n, k) or (n,) (k = 1).

        rmse = sqrt( (1 / (n k)) sum_{i,j} (y_hat_ij - y_ij)^2 )
        R²_j = 1 - SSE_j / SST_j,  SSE_j = sum_i (y_hat_ij - y_ij)^2,  SST_j = sum_i (y_ij - mean_j)^2
        r2   = (1 / k) sum_j R²_j

    r2 is scikit-learn's ``r2_score(y, y_hat, multioutput="uniform_average")``, its edge cases
    included: a constant column (SST_j = 0) scores 1 if predicted exactly, else 0, and fewer than
    two examples give NaN. So predicting the mean scores 0, a perfect fit 1, and worse than the
    mean is negative.

    SST is not taken from the sums of y and y² (whose difference loses every digit when the mean
    is large against the spread) but from sums of the targets shifted by K, the first target row
    seen ("computing shifted data", Chan, Golub and LeVeque), in float64::

        S1_j = sum_i (y_ij - K_j),   S2_j = sum_i (y_ij - K_j)^2,   SST_j = S2_j - S1_j^2 / n

    With K near the mean the subtraction cancels little: the relative error of SST_j is about
    n u (sqrt(1 + rho) + sqrt(rho))^2, rho = n (mean_j - K_j)^2 / SST_j, which for K one of the
    targets is of order 1 whatever the mean (and y - K is exact for targets within a factor 2 of K).
    A constant column gives S1 = S2 = 0, so SST_j = 0 exactly.

    References:
        Chan, Golub, LeVeque. "Algorithms for computing the sample variance: analysis and
        recommendations." The American Statistician 37(3), 1983.
    """

    names = ("rmse", "r2")

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.shift = self.s1 = self.s2 = self.sse = None  # per target column, float64, from the first batch on

    def update(self, output: np.ndarray, target: np.ndarray) -> None:
        output, target = np.asarray(output), np.asarray(target)
        if output.shape != target.shape:
            raise ValueError(f"Regression: targets have shape {target.shape}, expected {output.shape} (as outputs)")
        y_hat = output.reshape(len(output), -1).astype(np.float64)
        y = target.reshape(len(target), -1).astype(np.float64)
        if len(y) == 0:
            return
        if self.n == 0:
            self.shift = y[0].copy()
            self.s1 = self.s2 = self.sse = np.zeros(y.shape[1])
        elif y.shape[1] != len(self.shift):
            raise ValueError(f"Regression: targets have {y.shape[1]} columns, earlier batches {len(self.shift)}")
        centred = y - self.shift
        self.n += len(y)
        self.s1 = self.s1 + centred.sum(axis=0)
        self.s2 = self.s2 + (centred**2).sum(axis=0)
        self.sse = self.sse + ((y_hat - y) ** 2).sum(axis=0)

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("Regression: no examples were seen")
        rmse = math.sqrt(float(self.sse.sum()) / (self.n * self.sse.size))
        return {"rmse": rmse, "r2": self._r2()}

    def _r2(self) -> float:
        if self.n < 2:
            return math.nan
        sst = self.s2 - self.s1**2 / self.n
        constant = sst <= 0
        per_column = np.where(constant, (self.sse == 0).astype(np.float64),
                              1.0 - self.sse / np.where(constant, 1.0, sst))
        return float(per_column.mean())


METRICS = {"cross_entropy": Accuracy, "bce_with_logits": lambda: Accuracy(binary=True), "mse": Regression}


def metrics_for(loss_name: str):
    """A fresh metric object for the loss ``loss_name`` ([loss] name in the configuration)."""
    if loss_name not in METRICS:
        raise ValueError(f"no metrics for loss {loss_name!r}; expected one of {tuple(METRICS)}")
    return METRICS[loss_name]()
