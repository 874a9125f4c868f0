"""Callbacks: Keras' hooks in Keras' order, stop_training, checkpointed callback state, zero-cost hooks."""

import numpy as np
import pytest

from tricklab import nn, optim
from tricklab.data import DataLoader
from tricklab.train import Callback, EarlyStopping, LambdaCallback, Trainer, evaluate
from tricklab.train.callbacks import CallbackList, overrides

QUIET = {"progress": False, "log": lambda m: None}


def _problem(seed=0, n=60, batch=20):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = nn.Sequential(nn.Linear(5, 8, rng=rng), nn.ReLU(), nn.Linear(8, 2, rng=rng))
    loader = DataLoader(X, y, batch, shuffle=True, rng=np.random.default_rng(seed + 1))
    return model, loader, (X, y)


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, logs):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_begin(self, batch, logs):
        self.calls.append(("batch_begin", batch, self.trainer.step_count))

    def on_batch_end(self, batch, logs):
        self.calls.append(("batch_end", batch, self.trainer.step_count, logs["size"]))

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("epoch_end", epoch, logs is self.trainer.history[-1]))

    def on_train_end(self, logs):
        self.calls.append(("train_end", logs is self.trainer.history[-1]))


def test_hooks_run_in_keras_order_with_epoch_and_batch_indices():
    model, loader, data = _problem()
    rec = Recorder()
    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), **QUIET)
    trainer.fit(loader, data, epochs=2, callbacks=[rec])
    expected = [("train_begin",)]
    step = 0
    for epoch in range(2):
        expected.append(("epoch_begin", epoch))
        for batch in range(3):
            expected += [("batch_begin", batch, step), ("batch_end", batch, step + 1, 20)]
            step += 1
        expected.append(("epoch_end", epoch, True))  # the logs are the history row itself
    expected.append(("train_end", True))
    assert rec.calls == expected


def test_batch_logs_hold_the_step_loss_and_epoch_logs_its_mean():
    model, loader, data = _problem()
    losses = []
    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), **QUIET)
    history = trainer.fit(loader, data, epochs=1,
                          callbacks=[LambdaCallback(on_batch_end=lambda b, logs: losses.append(logs["loss"]))])
    assert len(losses) == 3 and history[0]["train_loss"] == pytest.approx(np.mean(losses), rel=1e-12)


def test_a_callback_value_added_to_the_logs_is_in_the_history():
    model, loader, data = _problem()
    add = LambdaCallback(on_epoch_end=lambda epoch, logs: logs.update(double=2 * logs["epoch"]))
    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), **QUIET)
    assert [row["double"] for row in trainer.fit(loader, data, epochs=2, callbacks=[add])] == [2, 4]


def test_stop_training_ends_after_the_current_batch():
    model, loader, data = _problem()

    class StopAtStep4(Callback):
        def on_batch_end(self, batch, logs):
            if self.trainer.step_count == 4:
                self.trainer.stop_training = True

    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), **QUIET)
    history = trainer.fit(loader, data, epochs=5, callbacks=[StopAtStep4()])
    assert trainer.step_count == 4 and len(history) == 2  # epoch 2 ended after its first batch


class BatchCounter(Callback):
    """Stateful: counts batches and sums their losses; its state goes into every checkpoint."""

    def __init__(self):
        self.batches, self.loss_sum = 0, 0.0

    def on_batch_end(self, batch, logs):
        self.batches += 1
        self.loss_sum += logs["loss"]

    def state_dict(self):
        return {"batches": self.batches, "loss_sum": self.loss_sum}

    def load_state_dict(self, state):
        self.batches, self.loss_sum = state["batches"], state["loss_sum"]


def _trainer(run_dir, **kw):
    model, loader, data = _problem()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    stopper = EarlyStopping(patience=10)
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, scheduler=sched, early_stopping=stopper, run_dir=run_dir,
                      generators={"loader": loader.rng}, **QUIET, **kw)
    return trainer, loader, data


def test_callback_state_is_checkpointed_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    straight, loader, data = _trainer(tmp_path / "straight")
    whole = BatchCounter()
    straight.fit(loader, data, epochs=4, callbacks=[whole])

    first, loader, data = _trainer(tmp_path / "resumed")
    first.fit(loader, data, epochs=2, callbacks=[BatchCounter()])
    again, loader, data = _trainer(tmp_path / "resumed")
    assert again.resume()
    counter = BatchCounter()  # fresh: its state comes from the checkpoint when fit brings it
    again.fit(loader, data, epochs=4, callbacks=[counter])
    assert (counter.batches, counter.loss_sum) == (whole.batches, whole.loss_sum) == (12, whole.loss_sum)
    timeless = lambda history: [{k: v for k, v in row.items() if k != "seconds"} for row in history]  # noqa: E731
    assert timeless(again.history) == timeless(straight.history)
    for k, v in straight.model.state_dict().items():
        np.testing.assert_array_equal(again.model.state_dict()[k], v)


def test_callbacks_given_to_the_trainer_are_checkpointed_too(tmp_path):
    first, loader, data = _trainer(tmp_path / "run", callbacks=[BatchCounter()])
    first.fit(loader, data, epochs=1)
    state = first.state_dict()["callbacks"]
    assert state["BatchCounter"]["batches"] == 3
    assert set(state) >= {"StepSchedulers", "EarlyStopping", "BatchCounter"}


def test_two_callbacks_of_one_class_keep_their_own_state():
    a, b = BatchCounter(), BatchCounter()
    assert list(CallbackList([a, b], trainer=None).keyed()) == ["BatchCounter", "BatchCounter#2"]


def test_hooks_nobody_uses_are_not_called_per_batch():
    model, loader, data = _problem()
    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), **QUIET)
    cbs = trainer._callbacks_for_fit([])
    assert not cbs.wants("on_batch_begin") and not cbs.wants("on_batch_end")  # no bar, epoch-wise schedules
    assert CallbackList([LambdaCallback(on_batch_end=print)], None).wants("on_batch_end")


def test_overrides_sees_class_hooks_and_lambda_hooks_only():
    assert overrides(BatchCounter(), "on_batch_end") and not overrides(BatchCounter(), "on_epoch_end")
    assert overrides(LambdaCallback(on_train_end=print), "on_train_end")


def test_unknown_lambda_hook_and_non_callbacks_are_refused():
    with pytest.raises(TypeError, match="on_epoch_ends"):
        LambdaCallback(on_epoch_ends=print)
    model, loader, data = _problem()
    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), **QUIET)
    with pytest.raises(TypeError, match="Callback instances, got function"):
        trainer.fit(loader, data, epochs=1, callbacks=[lambda: None])


def test_reduce_lr_on_plateau_gets_the_validation_loss_through_the_scheduler_callback():
    model, loader, data = _problem()
    opt = optim.SGD(model.parameters(), lr=0.1)
    seen = []

    class Spy(optim.lr_scheduler.ReduceLROnPlateau):
        def step(self, metrics=None):
            seen.append(metrics)
            super().step(metrics)

    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, scheduler=Spy(opt, patience=0), **QUIET)
    history = trainer.fit(loader, data, epochs=2)
    assert seen == [row["val_loss"] for row in history]


def test_free_evaluate_equals_the_trainers():
    model, loader, data = _problem()
    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), **QUIET)
    trainer.fit(loader, data, epochs=1)
    assert evaluate(model, nn.CrossEntropyLoss(), data, batch_size=7) == pytest.approx(trainer.evaluate(data))
    X, y = data
    assert evaluate(model, nn.CrossEntropyLoss(), data)["accuracy"] == np.mean(model(X).argmax(1) == y)
