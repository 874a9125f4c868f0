import numpy as np
import pytest

from tricklab import nn, optim
from tricklab.train import EarlyStopping, Trainer

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


def test_bad_arguments():
    with pytest.raises(ValueError, match="criterion must be one of"):
        EarlyStopping("GLX")
    with pytest.raises(ValueError, match="patience must be >= 1"):
        EarlyStopping(patience=0)


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
    for monitor, expected_epochs in (("loss", 4), ("error", 6)):
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
