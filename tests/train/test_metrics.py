"""Streamed metrics against one-shot NumPy formulas over the whole set (no scikit-learn needed)."""

import math

import numpy as np
import pytest

from tricklab.train import Accuracy, Regression, metrics_for

EPS = np.finfo(np.float64).eps
SPLITS = [1, 7, 300, 2, 690]  # uneven minibatches, one of a single example


def _stream(metric, output, target, splits=SPLITS):
    metric.reset()
    edges = np.cumsum([0, *splits])
    assert edges[-1] == len(output)
    for a, b in zip(edges[:-1], edges[1:]):
        metric.update(output[a:b], target[a:b])
    return metric.compute()


def _r2_one_shot(y_hat, y):
    """scikit-learn's r2_score(multioutput="uniform_average"): two-pass SST per column, float64."""
    y_hat, y = y_hat.reshape(len(y), -1).astype(np.float64), y.reshape(len(y), -1).astype(np.float64)
    sse = ((y_hat - y) ** 2).sum(0)
    sst = ((y - y.mean(0)) ** 2).sum(0)
    return float(np.mean(1.0 - sse / sst))


def _r2_tolerance(y_hat, y):
    """Rounding bound of the streamed r2 against the one-shot one (u = eps / 2 in float64).

    SSE_j is a sum of n squares: relative error (n + 1) u. The streamed SST_j = S2 - S1^2 / n from
    targets shifted by K = y[0] has relative error (n + 1) u (sqrt(1 + rho) + sqrt(rho))^2 with
    rho = n (mean - K)^2 / SST (Regression's docstring); the two-pass reference (n + 2) u. R²_j =
    1 - SSE/SST moves by |SSE/SST| times the sum of the relative errors; twice that for safety.
    """
    y_hat, y = y_hat.reshape(len(y), -1), y.reshape(len(y), -1)
    n, u = len(y), EPS / 2
    sse = ((y_hat - y) ** 2).sum(0)
    sst = ((y - y.mean(0)) ** 2).sum(0)
    rho = n * (y.mean(0) - y[0]) ** 2 / sst
    relative = (n + 1) * u * (1 + (np.sqrt(1 + rho) + np.sqrt(rho)) ** 2) + (n + 2) * u
    return 2 * float(np.max(sse / sst * relative))


def test_accuracy_streamed_equals_one_shot_argmax(rng):
    z = rng.standard_normal((1000, 5)).astype(np.float32)
    d = rng.integers(0, 5, 1000)
    expected = float(np.mean(z.argmax(1) == d))
    assert _stream(Accuracy(), z, d) == {"accuracy": expected}
    assert Accuracy().names == ("accuracy",)


def test_binary_accuracy_counts_every_entry_with_logit_above_zero(rng):
    z = rng.standard_normal((1000, 3))
    d = rng.integers(0, 2, (1000, 3)).astype(np.float32)
    z[0, 0], d[0, 0] = 0.0, 0.0  # sigmoid(0) = 0.5 is not above the threshold: predicts 0, as Keras
    expected = float(np.mean((z > 0) == (d == 1)))
    assert _stream(Accuracy(binary=True), z, d) == {"accuracy": expected}
    assert _stream(Accuracy(binary=True), z[:, 0], d[:, 0]) == {"accuracy": float(np.mean((z[:, 0] > 0) == d[:, 0]))}


def test_accuracy_refuses_targets_it_cannot_score():
    with pytest.raises(ValueError, match=r"Accuracy: outputs of shape \(4, 3\) need integer classes of shape \(4,\), "
                                         r"got targets of shape \(4, 3\) and dtype float32; for mse use Regression"):
        Accuracy().update(np.zeros((4, 3)), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"targets have shape \(4,\), expected \(4, 1\)"):
        Accuracy(binary=True).update(np.zeros((4, 1)), np.zeros(4))
    with pytest.raises(ValueError, match="targets must be 0 or 1"):
        Accuracy(binary=True).update(np.zeros(4), np.full(4, 0.9))
    with pytest.raises(ValueError, match="no predictions were seen"):
        Accuracy().compute()


@pytest.mark.parametrize("offset", [0.0, 1e8], ids=["centred", "large mean"])
def test_regression_streamed_equals_one_shot(rng, offset):
    """Also where the mean is 1e8 times the spread: sum(y^2) - (sum y)^2 / n has no digits left there."""
    n = sum(SPLITS)
    y = offset + rng.standard_normal((n, 3))
    y_hat = y + 0.3 * rng.standard_normal((n, 3))
    scores = _stream(Regression(), y_hat, y)
    assert math.isclose(scores["rmse"], math.sqrt(np.mean((y_hat - y) ** 2)), rel_tol=(n + 4) * EPS)
    r2 = _r2_one_shot(y_hat, y)
    assert abs(scores["r2"] - r2) <= _r2_tolerance(y_hat, y)
    assert 0.8 < r2 < 0.95
    if offset:
        naive_sst = (y**2).sum(0) - y.sum(0) ** 2 / n  # what streaming sum y and sum y^2 would give
        assert np.all(np.abs(naive_sst - ((y - y.mean(0)) ** 2).sum(0)) > 0.1 * n)


def test_regression_of_one_column_accepts_flat_outputs(rng):
    y = rng.standard_normal(1000)
    y_hat = 0.5 * y
    assert _stream(Regression(), y_hat, y) == pytest.approx(_stream(Regression(), y_hat[:, None], y[:, None]), abs=0)
    assert math.isclose(_stream(Regression(), y_hat, y)["rmse"], math.sqrt(np.mean((0.5 * y) ** 2)), rel_tol=1004 * EPS)


def test_r2_is_one_for_a_perfect_fit_and_zero_for_the_mean(rng):
    n = sum(SPLITS)
    y = 5.0 + rng.standard_normal((n, 2))
    assert _stream(Regression(), y.copy(), y) == {"rmse": 0.0, "r2": 1.0}
    mean = np.broadcast_to(y.mean(0), y.shape)
    assert abs(_stream(Regression(), mean, y)["r2"]) <= _r2_tolerance(mean, y)
    worse = _stream(Regression(), mean + 1.0, y)["r2"]
    assert worse < -0.5  # worse than the mean is negative


def test_r2_edge_cases_as_scikit_learn():
    """A constant column scores 1 if predicted exactly, else 0; the average is over columns; n < 2 is NaN."""
    y = np.array([[1.0, 2.0], [1.0, 4.0], [1.0, 6.0]])
    exact_constant = np.array([[1.0, 2.0], [1.0, 4.0], [1.0, 5.0]])
    assert _stream(Regression(), exact_constant, y, [2, 1])["r2"] == pytest.approx((1.0 + (1 - 1 / 8)) / 2, abs=4 * EPS)
    missed_constant = exact_constant + np.array([0.5, 0.0])
    assert _stream(Regression(), missed_constant, y, [1, 2])["r2"] == pytest.approx((0.0 + (1 - 1 / 8)) / 2, abs=4 * EPS)
    assert math.isnan(_stream(Regression(), y[:1], y[:1] + 1, [1])["r2"])


def test_regression_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"Regression: targets have shape \(4, 2\), expected \(4, 1\)"):
        Regression().update(np.zeros((4, 1)), np.zeros((4, 2)))
    metric = Regression()
    metric.update(np.zeros((4, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="targets have 3 columns, earlier batches 2"):
        metric.update(np.zeros((4, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="no examples were seen"):
        Regression().compute()


def test_reset_forgets_earlier_batches(rng):
    metric = Regression()
    metric.update(rng.standard_normal((10, 2)), rng.standard_normal((10, 2)))
    y = rng.standard_normal((20, 2))
    assert _stream(metric, y, y, [20]) == {"rmse": 0.0, "r2": 1.0}


def test_metrics_for_each_loss():
    assert type(metrics_for("cross_entropy")) is Accuracy and not metrics_for("cross_entropy").binary
    assert type(metrics_for("bce_with_logits")) is Accuracy and metrics_for("bce_with_logits").binary
    assert metrics_for("mse").names == ("rmse", "r2")
    assert metrics_for("mse") is not metrics_for("mse")
    with pytest.raises(ValueError, match=r"no metrics for loss 'mae'; expected one of \('cross_entropy', "):
        metrics_for("mae")
