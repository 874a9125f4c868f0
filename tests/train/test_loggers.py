import csv
import sys

import numpy as np
import pytest

from tricklab import nn, optim
from tricklab.data import DataLoader
from tricklab.train import CSVLogger, LambdaCallback, TensorBoard, Trainer

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _task(n=160):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 6)).astype(np.float32)
    return X, (X @ rng.standard_normal((6, 3))).argmax(1)


def _run(run_dir, epochs, callbacks, resume=False, val=True):
    X, y = _task()
    loader = DataLoader(X, y, 32, rng=3)
    model = nn.Sequential(nn.Linear(6, 8, rng=1), nn.ReLU(), nn.Linear(8, 3, rng=2))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, scheduler=sched, run_dir=run_dir,
                      generators={"loader": loader.rng}, progress=False, log=lambda m: None)
    if resume:
        assert trainer.resume()
    trainer.fit(loader, (X[:64], y[:64]) if val else None, epochs=epochs, callbacks=callbacks)
    return trainer


def _events(folder):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def _scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _f32(values):
    return [float(np.float32(v)) for v in values]


def test_tensorboard_scalars_and_histograms_read_back_equal_the_history(tmp_path):
    weights = {}
    keep = LambdaCallback(on_epoch_end=lambda e, logs: weights.update(
        {e + 1: {k: p.data.copy() for k, p in keep.trainer.model.named_parameters()}}))
    trainer = _run(None, 3, [keep, TensorBoard(tmp_path / "tb", histograms_every=2)])
    h = trainer.history
    train, val = _events(tmp_path / "tb" / "train"), _events(tmp_path / "tb" / "validation")
    for tag, key in (("epoch_loss", "train_loss"), ("epoch_accuracy", "train_accuracy"), ("epoch_lr", "lr"),
                     ("epoch_penalty", "train_penalty"), ("epoch_seconds", "seconds")):
        assert _scalars(train, tag) == list(zip([1, 2, 3], _f32(r[key] for r in h))), tag
    for tag, key in (("epoch_loss", "val_loss"), ("epoch_accuracy", "val_accuracy")):
        assert _scalars(val, tag) == list(zip([1, 2, 3], _f32(r[key] for r in h))), tag
    assert [r["lr"] for r in h] == [0.1, 0.05, 0.025]  # the lr scalars do vary
    assert "epoch_epoch" not in train.Tags()["scalars"]
    assert sorted(train.Tags()["histograms"]) == ["weights/0.bias", "weights/0.weight", "weights/2.bias",
                                                  "weights/2.weight"]
    assert val.Tags()["histograms"] == []
    for name, w in weights[2].items():
        (event,) = train.Histograms(f"weights/{name}")
        assert event.step == 2
        hist = event.histogram_value
        assert (hist.num, hist.min, hist.max) == (w.size, float(w.min()), float(w.max()))
        np.testing.assert_allclose(hist.sum, w.astype(np.float64).sum(), rtol=1e-6)


def test_tensorboard_after_a_resume_shows_each_epoch_once(tmp_path):
    run = tmp_path / "run"
    _run(run, 3, [TensorBoard(run / "tb")])
    (run / "checkpoints" / "ckpt-000003.json").unlink()  # killed after epoch 3 was logged, before its checkpoint
    trainer = _run(run, 4, [TensorBoard(run / "tb")], resume=True)
    assert len(list((run / "tb" / "train").glob("events.out.tfevents.*"))) == 2
    train, val = _events(run / "tb" / "train"), _events(run / "tb" / "validation")
    assert _scalars(train, "epoch_loss") == list(zip([1, 2, 3, 4], _f32(r["train_loss"] for r in trainer.history)))
    assert _scalars(val, "epoch_loss") == list(zip([1, 2, 3, 4], _f32(r["val_loss"] for r in trainer.history)))


def test_tensorboard_without_its_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[tensorboard\]"'):
        _run(None, 1, [TensorBoard(tmp_path / "tb")])
    with pytest.raises(ValueError, match="histograms_every"):
        TensorBoard(tmp_path, histograms_every=-1)


def _read_csv(path, separator=","):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter=separator))


def test_csv_logger_rows_are_the_history(tmp_path):
    trainer = _run(None, 3, [CSVLogger(tmp_path / "logs" / "epochs.csv", separator=";")])
    rows = _read_csv(tmp_path / "logs" / "epochs.csv", ";")
    assert list(rows[0]) == list(trainer.history[0])
    assert [{k: float(v) for k, v in row.items()} for row in rows] == trainer.history  # numbers round-trip exactly
    with pytest.raises(ValueError, match="separator"):
        CSVLogger(tmp_path / "x.csv", separator=", ")


@pytest.mark.parametrize("append", [False, True])
def test_csv_logger_after_a_crash_and_resume_equals_an_uninterrupted_run(tmp_path, append):
    full = _run(tmp_path / "full", 4, [CSVLogger(tmp_path / "full.csv", append=append)])
    part = tmp_path / "part"
    _run(part, 3, [CSVLogger(tmp_path / "part.csv", append=append)])
    (part / "checkpoints" / "ckpt-000003.json").unlink()  # epoch 3's row is written, its checkpoint is not
    again = _run(part, 4, [CSVLogger(tmp_path / "part.csv", append=append)], resume=True)
    rows = _read_csv(tmp_path / "part.csv")
    assert [{k: float(v) for k, v in row.items()} for row in rows] == again.history
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]

    def without_time(table):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in table]

    assert without_time(rows) == without_time(_read_csv(tmp_path / "full.csv"))
    assert [r["train_loss"] for r in again.history] == [r["train_loss"] for r in full.history]


def test_csv_logger_append_keeps_the_rows_of_an_earlier_run(tmp_path):
    path = tmp_path / "runs.csv"
    first = _run(None, 2, [CSVLogger(path)])
    second = _run(None, 1, [CSVLogger(path, append=True)], val=False)
    rows = _read_csv(path)
    assert [row["epoch"] for row in rows] == ["1", "2", "1"]
    assert [float(row["train_loss"]) for row in rows] == [r["train_loss"] for r in first.history + second.history]
    assert rows[2]["val_loss"] == ""  # the second run had no validation data
    _run(None, 1, [CSVLogger(path)])
    assert len(_read_csv(path)) == 1  # append=False starts the file afresh
