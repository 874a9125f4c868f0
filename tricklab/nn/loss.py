"""Divergences between outputs and targets, mean over the minibatch (the lecture's
Loss = (1/B) sum_t Div(Y_t, d_t)).

``loss = crit(pred, target)`` returns a Python float and caches what ``crit.backward()`` needs;
``crit.backward()`` returns dLoss/dpred with the shape of ``pred``.
"""

from __future__ import annotations

import numpy as np

from . import _kernels as K
from .activation import sigmoid
from .module import Module


def _check_finite(name: str, x: np.ndarray, loss: str) -> None:
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"{loss}: {name} contains NaN or infinity (first at index {tuple(bad.tolist())})")


class _Loss(Module):
    """A loss computes in its prediction's dtype (float32 or float64), as a torch loss does."""

    def _prediction(self, pred, ndim: int | None = None) -> np.ndarray:
        pred = np.asarray(pred)
        if pred.dtype in (np.dtype(np.float32), np.dtype(np.float64)):
            object.__setattr__(self, "dtype", pred.dtype)
        pred = self._cast_input(pred, name="prediction")
        _check_finite("prediction", pred, type(self).__name__)
        return pred

    def _same_shape_target(self, pred: np.ndarray, target) -> np.ndarray:
        target = np.asarray(target)
        if target.shape != pred.shape:
            raise ValueError(f"{type(self).__name__}: target has shape {target.shape}, expected {pred.shape} (as prediction)")
        target = target.astype(self.dtype, copy=False)
        _check_finite("target", target, type(self).__name__)
        return target


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax(z)_k = z_k - max(z) - log sum_j exp(z_j - max(z)): stable for any logits."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(z: np.ndarray, d: np.ndarray) -> tuple[float, np.ndarray]:
    """``(Loss, logp)`` for logits z (B, C) and classes d (B,): logp = log_softmax(z) and
    Loss = -(1/B) sum_t logp_t[d_t]. With the numba kernels the compiled twin of the same name
    (nn/_compiled.py) computes both in one pass per row."""
    logp = log_softmax(z)
    return float(-logp[np.arange(z.shape[0]), d].mean()), logp


class CrossEntropyLoss(_Loss):
    """Softmax cross entropy on logits z (batch, C) and integer classes d (batch,).

        Loss = -(1/B) sum_t log softmax(z_t)[d_t]
        dLoss/dz_t = (softmax(z_t) - onehot(d_t)) / B

    With ``label_smoothing`` eps (Szegedy et al. 2016, as torch's) the target is the mixture
    q_t = (1 - eps) onehot(d_t) + eps / C, so that

        Loss = -(1/B) sum_t sum_k q_tk log softmax(z_t)_k
             = (1 - eps) * (the loss above) - (eps / C) (1/B) sum_t sum_k log softmax(z_t)_k
        dLoss/dz_t = (softmax(z_t) - q_t) / B
    """

    def __init__(self, label_smoothing: float = 0.0, dtype=None):
        super().__init__(dtype=dtype)
        if isinstance(label_smoothing, bool) or not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, pred, target):
        z = self._prediction(pred)
        if z.ndim != 2:
            raise ValueError(f"CrossEntropyLoss: prediction must have shape (batch, classes), got {z.shape}")
        d = np.asarray(target)
        if not np.issubdtype(d.dtype, np.integer):
            raise TypeError(f"CrossEntropyLoss: target must hold integer class indices, got dtype {d.dtype}")
        if d.shape != (z.shape[0],):
            raise ValueError(f"CrossEntropyLoss: target has shape {d.shape}, expected ({z.shape[0]},)")
        if d.size and (d.min() < 0 or d.max() >= z.shape[1]):
            raise ValueError(f"CrossEntropyLoss: target classes must lie in [0, {z.shape[1]}), got range [{d.min()}, {d.max()}]")
        fast = K.compiled()
        loss, logp = (fast.cross_entropy if fast else cross_entropy)(z, d)
        self._logp, self._target = logp, d
        eps = self.label_smoothing
        if eps:
            uniform = -float(logp.sum(dtype=np.float64)) / (len(d) * z.shape[1])
            loss = (1.0 - eps) * loss + eps * uniform
        return loss

    def backward(self, grad=1.0):
        logp, d = self._saved("_logp"), self._target
        g = np.exp(logp)
        eps = self.label_smoothing
        if eps:
            g -= self.dtype.type(eps / g.shape[1])
        g[np.arange(len(d)), d] -= self.dtype.type(1.0 - eps) if eps else 1
        g *= self.dtype.type(grad / len(d))
        return g


class MSELoss(_Loss):
    """Loss = (1/n) sum (y - d)^2 over all n elements;  dLoss/dy = 2 (y - d) / n."""

    def forward(self, pred, target):
        y = self._prediction(pred)
        d = self._same_shape_target(y, target)
        self._diff = y - d
        return float(np.mean(self._diff * self._diff))

    def backward(self, grad=1.0):
        diff = self._saved("_diff")
        return diff * self.dtype.type(2.0 * grad / diff.size)


class BCEWithLogitsLoss(_Loss):
    """Binary cross entropy on logits z and targets d in [0, 1], mean over all n elements.

        Loss = (1/n) sum [ max(z, 0) - z d + log(1 + exp(-|z|)) ]   (stable form of
               -d log sigmoid(z) - (1 - d) log(1 - sigmoid(z)))
        dLoss/dz = (sigmoid(z) - d) / n
    """

    def forward(self, pred, target):
        z = self._prediction(pred)
        d = self._same_shape_target(z, target)
        self._z, self._d = z, d
        return float(np.mean(np.maximum(z, 0) - z * d + np.log1p(np.exp(-np.abs(z)))))

    def backward(self, grad=1.0):
        z, d = self._saved("_z"), self._d
        return (sigmoid(z) - d) * self.dtype.type(grad / z.size)
