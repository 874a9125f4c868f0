import json
import math

import numpy as np
import pytest

from tricklab import nn, optim
from tricklab.data import DataLoader
from tricklab.train import EarlyStopping, Regression, Trainer
from tricklab.train.early_stopping import monitored_metric

# a scripted validation curve: best at epoch 4, then worse
VAL = [1.0, 0.8, 0.7, 0.65, 0.66, 0.67, 0.70, 0.72, 0.75, 0.80, 0.85, 0.9]
TRAIN = [1.0, 0.7, 0.5, 0.4, 0.35, 0.32, 0.30, 0.29, 0.28, 0.275, 0.27, 0.268]


def _first_stop(stopper):
    for epoch, (tr, va) in enumerate(zip(TRAIN, VAL), start=1):
        if stopper.update(epoch, tr, va):
            return epoch
    return None


def test_patience_stops_at_the_right_epoch():
    stopper = EarlyStopping(patience=3)
    assert _first_stop(stopper) == 7 and stopper.best_epoch == 4


def test_min_delta_counts_small_gains_as_no_improvement():
    stopper = EarlyStopping(patience=2, min_delta=0.06)
    # 0.8 (epoch 2) improves on 1.0 by 0.2; 0.7 only by 0.1 > 0.06 -> improves; 0.65 by 0.05 < 0.06 -> not
    assert _first_stop(stopper) == 5 and stopper.best_epoch == 3


def test_generalization_loss_criterion():
    # GL(t) = 100 (E_va / E_opt - 1): epoch 7 gives 100 (0.70 / 0.65 - 1) = 7.7 > 5 (epoch 6: 3.1)
    stopper = EarlyStopping("GL", alpha=5.0)
    assert _first_stop(stopper) == 7
    assert stopper.generalization_loss() == pytest.approx(100 * (0.70 / 0.65 - 1))


def test_pq_criterion_checks_at_strip_ends():
    stopper = EarlyStopping("PQ", alpha=0.5, strip=5)
    # epoch 5: GL = 1.54, P_5 = 1000 (2.25 / (5 * 0.35) - 1) = 285.7 -> 0.005; epoch 10: GL = 23.1,
    # P_5 = 1000 (1.465 / (5 * 0.275) - 1) = 65.5 -> 0.35; not yet. epoch 15 would be next.
    assert _first_stop(stopper) is None
    stopper = EarlyStopping("PQ", alpha=0.3, strip=5)
    assert _first_stop(stopper) == 10


def test_up_criterion_needs_successive_rising_strips():
    stopper = EarlyStopping("UP", strip=2, s=2)
    # strip ends at 2, 4, 6, 8: E_va rose 4->6 (0.65->0.67) and 6->8 (0.67->0.72)
    assert _first_stop(stopper) == 8


def stop_epoch(stopper, values, start=1):
    """The epoch (counted from ``start``) at which ``stopper`` stops on the validation ``values``,
    or None; the training loss of epoch t is 1 / t."""
    for epoch, value in enumerate(values, start=start):
        if stopper.update(epoch, 1.0 / epoch, value):
            return epoch
    return None


# Keras' early_stopping_test.py::test_early_stopping_patience: 0-based stopped_epoch max(p, 1) + 2
@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_patience_as_keras_including_zero(patience):
    stopper = EarlyStopping(patience=patience)
    assert stop_epoch(stopper, [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5]) == max(patience, 1) + 3
    assert stopper.best_epoch == 3 and "no improvement" in stopper.stop_reason


def test_patience_zero_stops_at_the_first_epoch_without_improvement():
    assert stop_epoch(EarlyStopping(patience=0), [1.0, 0.9, 0.8, 0.8, 0.7]) == 4
    assert stop_epoch(EarlyStopping(patience=0, min_delta=0.15), [1.0, 0.8, 0.7]) == 3


# Lightning's test_early_stopping.py::test_early_stopping_patience (0-based stop epochs 4, 3, 4)
@pytest.mark.parametrize("values, patience, expected", [
    ([6, 5, 5, 5, 5, 5], 3, 5), ([6, 5, 4, 4, 3, 3], 1, 4), ([6, 5, 6, 5, 5, 5], 3, 5)])
def test_patience_as_lightning(values, patience, expected):
    assert stop_epoch(EarlyStopping(patience=patience), values) == expected


def test_baseline_as_keras():
    # Keras' test_early_stopping_final_weights_when_restoring_model_weights: no epoch beats 0.5, so
    # training runs `patience` epochs (5) and the best of those (the third) is kept
    stopper = EarlyStopping(patience=5, baseline=0.5)
    assert stop_epoch(stopper, [0.9, 0.8, 0.7, 0.71, 0.72, 0.73]) == 5
    assert stopper.best_epoch == 3 and "baseline 0.5" in stopper.stop_reason
    # without the baseline the three improvements restart the count: stop at 3 + 2
    assert stop_epoch(EarlyStopping(patience=2), [0.9, 0.8, 0.7, 0.71, 0.72, 0.73]) == 5
    assert stop_epoch(EarlyStopping(patience=2, baseline=0.5), [0.9, 0.8, 0.7, 0.71, 0.72, 0.73]) == 4
    # beating the baseline restarts the count as usual
    assert stop_epoch(EarlyStopping(patience=2, baseline=0.75), [0.9, 0.8, 0.7, 0.71, 0.72, 0.73]) == 5
    # as in Keras, an epoch that improves on the best (not on the baseline) does not stop
    assert stop_epoch(EarlyStopping(patience=1, baseline=0.5), [0.9, 0.8, 0.7, 0.6]) is None


# Lightning's test_early_stopping.py::test_early_stopping_thresholds (default patience 3; 0-based 5, 8, 3)
@pytest.mark.parametrize("stopping_threshold, divergence_threshold, values, expected, why", [
    (None, None, [8, 4, 2, 3, 4, 5, 8, 10], 6, "no improvement"),
    (2.9, None, [9, 8, 7, 6, 5, 6, 4, 3, 2, 1], 9, "stopping_threshold 2.9"),
    (None, 15.9, [9, 4, 2, 16, 32, 64], 4, "divergence_threshold 15.9"),
])
def test_thresholds_as_lightning(stopping_threshold, divergence_threshold, values, expected, why):
    stopper = EarlyStopping(patience=3, stopping_threshold=stopping_threshold,
                            divergence_threshold=divergence_threshold)
    assert stop_epoch(stopper, values) == expected and stopper.stopped_epoch == expected
    assert why in stopper.stop_reason


def test_thresholds_apply_to_every_criterion():
    assert stop_epoch(EarlyStopping("GL", alpha=50, stopping_threshold=0.68), VAL) == 4
    assert stop_epoch(EarlyStopping("UP", strip=2, s=5), VAL + [1.2]) is None
    assert stop_epoch(EarlyStopping("UP", strip=2, s=5, divergence_threshold=1.0), VAL + [1.2]) == 13


# Lightning's test_early_stopping.py::test_early_stopping_on_non_finite_monitor (0-based epoch 2)
@pytest.mark.parametrize("bad", [math.inf, math.nan, -math.inf])
def test_check_finite_as_lightning(bad):
    stopper = EarlyStopping(patience=3)
    assert stop_epoch(stopper, [4, 3, bad, 2, 1]) == 3
    assert "not finite" in stopper.stop_reason and stopper.best_epoch == 2
    assert stop_epoch(EarlyStopping("GL", alpha=5.0), [4, 3, bad, 2, 1]) == 3
    assert stop_epoch(EarlyStopping(patience=3, check_finite=False), [4, 3, bad, 2, 1]) is None


def test_first_epoch_never_stops_on_patience_as_keras():
    assert stop_epoch(EarlyStopping(patience=0, check_finite=False), [math.nan, 1.0, 1.0]) == 3


def test_stop_reason_names_the_criterion():
    stopper = EarlyStopping("GL", alpha=5.0)
    assert stopper.stop_reason is None
    stop_epoch(stopper, VAL)
    assert stopper.stop_reason.startswith("GL")
    stopper = EarlyStopping(patience=3)
    stop_epoch(stopper, VAL)
    assert stopper.stop_reason == "patience: no improvement of the validation loss in 3 epochs (best 0.65 at epoch 4)"


RESUME_CASES = [
    dict(patience=0), dict(patience=3, min_delta=0.01), dict(patience=4, baseline=0.6),
    dict(criterion="GL", alpha=3.0), dict(criterion="PQ", alpha=0.1, strip=3), dict(criterion="UP", strip=2, s=2),
    dict(patience=20, stopping_threshold=0.655), dict(patience=20, divergence_threshold=0.79),
    dict(patience=20, check_finite=True), dict(patience=3, monitor="val_r2"), dict(criterion="GL", monitor="val_rmse"),
]
RESUME_VAL = [1.0, 0.8, 0.7, 0.65, 0.66, 0.67, 0.70, 0.72, 0.75, 0.80, math.inf, 0.9]


@pytest.mark.parametrize("kwargs", RESUME_CASES, ids=str)
def test_state_dict_resumes_bit_identically_through_json(kwargs):
    straight = EarlyStopping(**kwargs)
    expected = stop_epoch(straight, RESUME_VAL)
    assert expected is not None
    for cut in range(1, expected):
        first = EarlyStopping(**kwargs)
        assert stop_epoch(first, RESUME_VAL[:cut]) is None
        saved = first.state_dict()
        text = json.dumps(saved)
        first.update(cut + 1, 1.0, RESUME_VAL[cut])
        assert json.dumps(saved) == text, "state_dict must be a snapshot"
        resumed = EarlyStopping()
        resumed.load_state_dict(json.loads(text))
        assert stop_epoch(resumed, RESUME_VAL[cut:], start=cut + 1) == expected
        assert json.dumps(resumed.state_dict()) == json.dumps(straight.state_dict())


def test_bad_arguments():
    with pytest.raises(ValueError, match="criterion must be one of"):
        EarlyStopping("GLX")
    with pytest.raises(ValueError, match="patience must be an int >= 0, got -1"):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="baseline applies to criterion='patience' only"):
        EarlyStopping("GL", baseline=0.5)
    with pytest.raises(ValueError, match="stopping_threshold must be a number, got nan"):
        EarlyStopping(stopping_threshold=math.nan)
    with pytest.raises(ValueError, match="baseline must be a finite number, got inf"):
        EarlyStopping(baseline=math.inf)
    with pytest.raises(ValueError, match="stopping_threshold 1.0 must be below divergence_threshold 0.5"):
        EarlyStopping(stopping_threshold=1.0, divergence_threshold=0.5)
    with pytest.raises(ValueError, match="check_finite must be True or False"):
        EarlyStopping(check_finite="yes")


class ScriptedLoss(nn.CrossEntropyLoss):
    """Cross entropy in training; in evaluation, the scripted validation value of the epoch."""

    def __init__(self, trainer_ref):
        super().__init__()
        self.trainer_ref = trainer_ref

    def forward(self, pred, target):
        value = super().forward(pred, target)
        trainer = self.trainer_ref[0]
        return VAL[trainer.epoch] if not trainer.model.training else value


def test_trainer_stops_and_restores_the_best_weights(rng):
    X = rng.standard_normal((64, 3)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    model = nn.Sequential(nn.Linear(3, 2, rng=0))
    ref = []
    trainer = Trainer(model, ScriptedLoss(ref), optim.SGD(model.parameters(), lr=0.1),
                      early_stopping=EarlyStopping(patience=3), progress=False, log=lambda m: None)
    ref.append(trainer)
    weights = {}
    original_update = trainer.early_stopping.update

    def spy(epoch, tr, va):
        weights[epoch] = model[0].weight.data.copy()
        return original_update(epoch, tr, va)

    trainer.early_stopping.update = spy
    from tricklab.data import DataLoader

    history = trainer.fit(DataLoader(X, y, 16, rng=1), (X, y), epochs=12)
    assert len(history) == 7
    np.testing.assert_array_equal(model[0].weight.data, weights[4])


def test_monitor_error_follows_accuracy_not_loss(rng):
    """Validation loss rising while accuracy still improves: monitor='error' keeps training."""
    X = rng.standard_normal((64, 3)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    for monitor, expected_epochs in (("loss", 4), ("error", 6), ("val_loss", 4), ("val_error", 6), ("val_accuracy", 6)):
        model = nn.Sequential(nn.Linear(3, 2, rng=0))
        stopper = EarlyStopping(patience=2, monitor=monitor)
        trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1),
                          early_stopping=stopper, progress=False, log=lambda m: None)
        curve = iter([(0.5, 0.6), (0.4, 0.7), (0.45, 0.75), (0.5, 0.8), (0.55, 0.85), (0.6, 0.86)])
        trainer.evaluate = lambda data, batch_size=1024, c=curve: dict(zip(("loss", "accuracy"), next(c)))
        from tricklab.data import DataLoader

        history = trainer.fit(DataLoader(X, y, 16, rng=1), (X, y), epochs=6)
        assert len(history) == expected_epochs, monitor
    with pytest.raises(ValueError, match="monitor must be"):
        EarlyStopping(monitor="accuracy")


def test_monitor_names_the_metric_and_whether_a_score_is_flipped():
    assert monitored_metric("loss") == monitored_metric("val_loss") == ("loss", False)
    assert monitored_metric("error") == monitored_metric("val_error") == monitored_metric("val_accuracy") == ("accuracy", True)
    assert monitored_metric("val_r2") == ("r2", True)
    assert monitored_metric("val_rmse") == ("rmse", False)


@pytest.mark.parametrize("bad", ["accuracy", "rmse", "val_", "train_loss", "val_r 2", 3])
def test_monitor_must_be_loss_error_or_a_validation_metric(bad):
    with pytest.raises(ValueError, match=r"monitor must be 'loss', 'error' or 'val_<metric>' .*got " + repr(repr(bad))[1:-1]):
        EarlyStopping(monitor=bad)


@pytest.mark.parametrize("monitor, quantity", [("loss", "the validation loss"), ("error", "the validation error"),
                                               ("val_loss", "the val_loss"), ("val_rmse", "the val_rmse"),
                                               ("val_error", "the val_error"), ("val_accuracy", "the 1 - val_accuracy"),
                                               ("val_r2", "the 1 - val_r2")])
def test_messages_say_the_monitored_name(monitor, quantity):
    stopper = EarlyStopping(patience=3, monitor=monitor)
    stop_epoch(stopper, VAL)
    assert stopper.stop_reason == f"patience: no improvement of {quantity} in 3 epochs (best 0.65 at epoch 4)"
    stopper = EarlyStopping(patience=9, monitor=monitor, stopping_threshold=0.66)
    stop_epoch(stopper, VAL)
    assert stopper.stop_reason == f"stopping_threshold: {quantity} 0.65 is below stopping_threshold 0.66"


def _regression_trainer(rng, stopper, logged, curve):
    """A linear regression whose validation scores follow ``curve`` (rmse, r2), one pair per epoch."""
    X = rng.standard_normal((64, 3)).astype(np.float32)
    y = (X @ rng.standard_normal((3, 2))).astype(np.float32)
    model = nn.Sequential(nn.Linear(3, 2, rng=0))
    trainer = Trainer(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.05), metrics=Regression(),
                      early_stopping=stopper, progress=False, log=logged.append)
    scores = iter(curve)
    trainer.evaluate = lambda data, batch_size=1024: dict(zip(("loss", "rmse", "r2"), (0.1, *next(scores))))
    return trainer, DataLoader(X, y, 16, rng=1), (X, y)


# validation RMSE best at epoch 2 while R² still improves until epoch 5
CURVE = [(0.5, 0.70), (0.4, 0.80), (0.45, 0.85), (0.5, 0.90), (0.55, 0.95), (0.6, 0.94), (0.6, 0.93), (0.6, 0.92)]


@pytest.mark.parametrize("monitor, stops_at, best", [("val_rmse", 4, 2), ("val_r2", 7, 5)])
def test_trainer_stops_on_val_rmse_and_val_r2(rng, monitor, stops_at, best):
    logged = []
    stopper = EarlyStopping(patience=2, monitor=monitor)
    trainer, loader, val = _regression_trainer(rng, stopper, logged, CURVE)
    seen = []
    original = stopper.update
    stopper.update = lambda epoch, tr, va: seen.append((tr, va)) or original(epoch, tr, va)
    history = trainer.fit(loader, val, epochs=len(CURVE))
    assert len(history) == stops_at and stopper.best_epoch == best
    if monitor == "val_rmse":
        assert seen == [(row["train_rmse"], row["val_rmse"]) for row in history]
    else:  # the fraction of variance unexplained, lower is better, as Prechelt's criteria need
        assert seen == [(1.0 - row["train_r2"], 1.0 - row["val_r2"]) for row in history]
    assert f"early stopping at epoch {stops_at}: {stopper.stop_reason}" in logged
    assert stopper.stop_reason.startswith("patience: no improvement of the ")


@pytest.mark.parametrize("metrics, monitor, available", [
    (None, "val_rmse", "loss, val_loss, val_accuracy, error, val_error"),
    (Regression(), "error", "loss, val_loss, val_rmse, val_r2"),
    (Regression(), "val_accuracy", "loss, val_loss, val_rmse, val_r2"),
])
def test_a_monitor_the_run_does_not_report_is_refused_before_training(tmp_path, metrics, monitor, available):
    model = nn.Sequential(nn.Linear(3, 2, rng=0))
    trainer = Trainer(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.1), metrics=metrics, run_dir=tmp_path,
                      early_stopping=EarlyStopping(monitor=monitor), progress=False, log=lambda m: None)
    X = np.zeros((8, 3), np.float32)
    name = type(trainer.metrics).__name__
    with pytest.raises(ValueError, match=rf"^early stopping monitor '{monitor}' is not reported by this run \({name}\); "
                                         rf"available: {available}$"):
        trainer.fit(DataLoader(X, np.zeros((8, 2), np.float32), 4), (X, np.zeros((8, 2), np.float32)), epochs=2)
    assert trainer.epoch == 0 and trainer.history == [] and not (tmp_path / "checkpoints").exists()
