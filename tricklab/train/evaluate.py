"""Scoring a model: its mean loss and metrics in eval mode, with no optimizer and no trainer."""

from __future__ import annotations

from .metrics import Accuracy


def batches(data, batch_size: int):
    """Minibatches of ``(X, y)`` in order, or the loader ``data`` itself."""
    if isinstance(data, tuple) and len(data) == 2:
        X, y = data
        return ((X[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(X), batch_size))
    return data


def evaluate(model, loss, data, metrics=None, batch_size: int = 1024) -> dict:
    """Mean loss and the metrics of ``model`` in eval mode on ``(X, y)`` or on a loader::

        loss = (1/N) sum_batches L(model(x_b), y_b) |b|        (L: the loss's batch mean)

    ``metrics`` is a streamed metric (:mod:`tricklab.train.metrics`); None is :class:`Accuracy`.
    Returns ``{"loss": ..., **metrics.compute()}``, e.g. loss and accuracy, or loss, rmse and r2.
    The model is left in eval mode.
    """
    metrics = Accuracy() if metrics is None else metrics
    model.eval()
    metrics.reset()
    total = count = 0.0
    for xb, yb in batches(data, batch_size):
        out = model(xb)
        total += loss(out, yb) * len(yb)
        metrics.update(out, yb)
        count += len(yb)
    if count == 0:
        raise ValueError("evaluate: the data set is empty")
    return {"loss": total / count, **metrics.compute()}
