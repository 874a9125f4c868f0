import numpy as np
import pytest

from tricklab import nn, optim
from tricklab.data import DataLoader
from tricklab.train import NonFiniteError, Regression, Trainer
from tricklab.train.checkpoint import list_checkpoints, load_latest


def _task(rng, n=600):
    X = rng.standard_normal((n, 10)).astype(np.float32)
    w = rng.standard_normal((10, 3))
    return X, (X @ w).argmax(1)


def _model():
    return nn.Sequential(nn.Linear(10, 32, rng=1), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2, rng=2),
                         nn.Linear(32, 3, rng=3))


def test_end_to_end_mlp_learns_with_tricks(rng):
    """Batch norm, dropout, Adam, weight decay and clipping learn a synthetic task to high accuracy."""
    X, y = _task(rng, 3000)
    model = _model()
    opt = optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, clip_norm=1.0, clip_value=5.0, progress=False,
                      log=lambda m: None)
    trainer.fit(DataLoader(X[:2500], y[:2500], 64, rng=4), (X[2500:], y[2500:]), epochs=15)
    assert trainer.evaluate((X[2500:], y[2500:]))["accuracy"] > 0.93
    assert trainer.history[-1]["train_loss"] < trainer.history[0]["train_loss"]


def test_step_order_is_backward_then_clip_then_step(rng):
    X, y = _task(rng, 64)
    model = nn.Sequential(nn.Linear(10, 3, rng=0))
    calls = []
    opt = optim.SGD(model.parameters(), lr=0.1)
    original_step, original_backward = opt.step, model.backward_parameters

    def backward(g):
        calls.append(("backward", model[0].weight.data.copy()))
        return original_backward(g)

    def step():
        calls.append(("step", np.abs(model[0].weight.grad).max()))
        return original_step()

    model.backward_parameters, opt.step = backward, step
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, clip_value=1e-3, progress=False, log=lambda m: None)
    w0 = model[0].weight.data.copy()
    trainer.train_step(X, y)
    assert [c[0] for c in calls] == ["backward", "step"]
    np.testing.assert_array_equal(calls[0][1], w0)  # backward saw the forward-pass weights
    assert calls[1][1] <= 1e-3  # gradients were clipped before the step


def test_non_finite_stops_with_step_and_last_checkpoint(tmp_path, rng):
    X, y = _task(rng, 256)
    X_bad = X.copy()
    model = _model()
    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), run_dir=tmp_path,
                      progress=False, log=lambda m: None)
    trainer.fit(DataLoader(X, y, 64, shuffle=False), (X, y), epochs=1)
    X_bad[70] = np.nan  # second batch of the next epoch
    with pytest.raises(NonFiniteError, match=r"non-finite model output at epoch 2, step 6.*ckpt-000001\.json"):
        trainer.fit(DataLoader(X_bad, y, 64, shuffle=False), (X, y), epochs=2)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["ckpt-000001.json"]
    state, _ = load_latest(tmp_path / "checkpoints")
    assert all(np.isfinite(v).all() for v in state["model"].values())


def test_exploding_gradients_are_caught(rng):
    X, y = _task(rng, 128)
    model = nn.Sequential(nn.Linear(10, 3, rng=0))
    trainer = Trainer(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=1e30), progress=False,
                      log=lambda m: None)
    target = np.eye(3, dtype=np.float32)[y]
    with pytest.raises(NonFiniteError, match="non-finite"):
        for _ in range(20):
            trainer.train_step(X * 1e10, target)


def test_inf_gradient_is_caught_before_clipping_could_hide_it(rng):
    X, y = _task(rng, 32)
    model = nn.Sequential(nn.Linear(10, 3, rng=0))
    original = model[0].backward_parameters

    def backward(g):
        out = original(g)
        model[0].weight.grad[0, 0] = np.inf
        return out

    model[0].backward_parameters = backward
    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), clip_value=5.0,
                      clip_norm=1.0, progress=False, log=lambda m: None)
    w0 = model[0].weight.data.copy()
    with pytest.raises(NonFiniteError, match="non-finite gradients at epoch 1, step 1"):
        trainer.train_step(X, y)
    np.testing.assert_array_equal(model[0].weight.data, w0)  # no step was taken


def test_state_dict_round_trip_resumes_identically(tmp_path, rng):
    X, y = _task(rng, 400)

    def make(run_dir):
        model = _model()
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        loader = DataLoader(X, y, 32, rng=7)
        return Trainer(model, nn.CrossEntropyLoss(), opt, scheduler=sched, run_dir=run_dir,
                       generators={"loader": loader.rng}, progress=False, log=lambda m: None), loader

    full, loader = make(tmp_path / "full")
    full.fit(loader, (X, y), epochs=5)
    part, loader = make(tmp_path / "part")
    part.fit(loader, (X, y), epochs=2)
    again, loader = make(tmp_path / "part")
    assert again.resume() and again.epoch == 2
    again.fit(loader, (X, y), epochs=5)
    for k, v in full.model.state_dict().items():
        np.testing.assert_array_equal(again.model.state_dict()[k], v, err_msg=k)
    assert [r["train_loss"] for r in again.history] == [r["train_loss"] for r in full.history]


def test_batchnorm_statistics_are_recomputed_after_training(rng):
    X, y = _task(rng, 300)
    model = _model()
    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), progress=False,
                      log=lambda m: None)
    batches = DataLoader(X, y, 50, shuffle=False)
    trainer.fit(DataLoader(X, y, 50, rng=0), None, epochs=2, bn_batches=batches)
    z = [model[0](xb) for xb, _ in batches]
    np.testing.assert_allclose(model[1].running_mean, np.mean([b.mean(0) for b in z], 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model[1].running_var, 50 / 49 * np.mean([b.var(0) for b in z], 0), rtol=1e-4)


def test_batchnorm2d_statistics_are_recomputed_after_training(rng):
    X = rng.standard_normal((120, 2, 4, 4)).astype(np.float32) * 3 + 1
    y = (X.mean(axis=(1, 2, 3)) > 1).astype(np.int64)
    model = nn.Sequential(nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 2, rng=0))
    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), progress=False,
                      log=lambda m: None)
    batches = DataLoader(X, y, 40, shuffle=False)
    trainer.fit(DataLoader(X, y, 40, rng=0), None, epochs=1, bn_batches=batches)
    B = 40 * 4 * 4  # values per channel in a batch
    np.testing.assert_allclose(model[0].running_mean, np.mean([xb.mean((0, 2, 3)) for xb, _ in batches], 0),
                               rtol=1e-5)
    np.testing.assert_allclose(model[0].running_var, B / (B - 1) * np.mean([xb.var((0, 2, 3)) for xb, _ in batches], 0),
                               rtol=1e-4)


U32 = 2.0**-24


def _linear_regression(rng, n=800):
    X = rng.standard_normal((n, 5)).astype(np.float32)
    W, b = rng.standard_normal((5, 2)), np.array([3.0, -1.0])
    return X, (X @ W + b + 0.05 * rng.standard_normal((n, 2))).astype(np.float32)


def test_regression_reports_rmse_and_r2_by_name(tmp_path, rng):
    X, y = _linear_regression(rng)
    model = nn.Sequential(nn.Linear(5, 2, rng=0))
    logged = []
    trainer = Trainer(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.05), metrics=Regression(),
                      run_dir=tmp_path, progress=False, log=logged.append)
    history = trainer.fit(DataLoader(X[:600], y[:600], 32, rng=1), (X[600:], y[600:]), epochs=8)
    assert list(history[0]) == ["epoch", "train_loss", "train_penalty", "train_rmse", "train_r2", "val_loss", "val_rmse",
                                "val_r2", "lr", "seconds"]
    header = (tmp_path / "history.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,train_penalty,train_rmse,train_r2,val_loss,val_rmse,val_r2,lr,seconds"
    rmse = [row["val_rmse"] for row in history]
    assert all(b < a for a, b in zip(rmse[:6], rmse[1:6])) and rmse[-1] < 1.1 * 0.05  # down to the noise
    assert history[-1]["val_r2"] > 0.998 > history[0]["val_r2"]
    for row in history:  # MSELoss in float32 (one rounding per element and per sum term) against float64
        assert row["val_rmse"] ** 2 == pytest.approx(row["val_loss"], rel=(2 * 2 * 200 + 4) * U32)
        assert row["train_rmse"] ** 2 == pytest.approx(row["train_loss"], rel=(2 * 2 * 32 + 4) * U32 + 600 * 2**-53)
    test = trainer.evaluate((X[600:], y[600:]))
    assert set(test) == {"loss", "rmse", "r2"} and test["rmse"] == history[-1]["val_rmse"]
    assert "train loss" in logged[-1] and " rmse " in logged[-1] and " r2 " in logged[-1]


def test_classification_history_keeps_its_columns_and_numbers(tmp_path, rng):
    """Default metrics: the history, history.csv and the log read as before metrics could be chosen."""
    X, y = _task(rng, 300)
    model = nn.Sequential(nn.Linear(10, 16, rng=0), nn.ReLU(), nn.Dropout(0.3, rng=1), nn.Linear(16, 3, rng=2))
    loss = nn.CrossEntropyLoss()
    seen = []
    original = loss.forward

    def spy(pred, target):
        if model.training:  # the training outputs, in train mode (dropout on), as the steps saw them
            seen.append(int((pred.argmax(1) == target).sum()))
        return original(pred, target)

    loss.forward = spy
    logged = []
    trainer = Trainer(model, loss, optim.SGD(model.parameters(), lr=0.1), run_dir=tmp_path, progress=False,
                      log=logged.append)
    history = trainer.fit(DataLoader(X[:200], y[:200], 32, rng=3), (X[200:], y[200:]), epochs=2)
    header = (tmp_path / "history.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,train_penalty,train_accuracy,val_loss,val_accuracy,lr,seconds"
    batches = len(seen) // 2
    assert history[1]["train_accuracy"] == sum(seen[batches:]) / 200
    model.eval()
    assert history[1]["val_accuracy"] == float(np.mean(model(X[200:]).argmax(1) == y[200:]))
    assert set(trainer.evaluate((X, y))) == {"loss", "accuracy"}
    assert logged[-1].startswith(f"epoch   2 | train loss {history[1]['train_loss']:.4f} accuracy "
                                 f"{history[1]['train_accuracy']:.4f} | val loss {history[1]['val_loss']:.4f} accuracy")


def test_classification_metric_refuses_regression_targets(rng):
    X, y = _linear_regression(rng, 64)
    model = nn.Sequential(nn.Linear(5, 2, rng=0))
    trainer = Trainer(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.01), progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match=r"Accuracy: outputs of shape \(64, 2\) need integer classes"):
        trainer.evaluate((X, y))


# ------------------------------------------------------------------ the step's own checks and backward
def _arrays_to_check():
    g = np.random.default_rng(0).standard_normal((1000, 1000)).astype(np.float32)
    cases = {"finite": (g, True), "float64": (g.astype(np.float64), True),
             "huge finite (sum of squares overflows)": (np.full_like(g, 3e38) * np.sign(g), True),
             "non-contiguous": (g[:, ::2], True)}
    for label, value in (("nan", np.nan), ("+inf", np.inf), ("-inf", -np.inf)):
        for where in (0, g.size - 1):
            bad = g.copy()
            bad.flat[where] = value
            cases[f"{label} at {where}"] = (bad, False)
    both = np.full_like(g, 3e38)
    both[0, 0], both[-1, -1] = np.inf, -np.inf  # a plain sum would give NaN; still caught
    cases["huge with +inf and -inf"] = (both, False)
    bad = g.copy()
    bad[5, 6] = np.nan
    cases["non-contiguous view with nan"] = (bad[:, ::2], False)
    return cases


@pytest.mark.parametrize("label", list(_arrays_to_check()))
def test_finiteness_check_is_exact_and_allocates_no_array_of_the_inputs_size(label):
    import tracemalloc

    from tricklab.train.trainer import all_finite

    a, expected = _arrays_to_check()[label]
    assert np.isfinite(a).all() == expected  # the reference this check must agree with
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        got = all_finite(a)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got is expected
    assert peak < a.nbytes / 64  # a boolean mask would be a.size bytes: a quarter of float32's nbytes


def _two_layer():
    return nn.Sequential(nn.Linear(10, 8, rng=0), nn.ReLU(), nn.Linear(8, 3, rng=1))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["model output", "loss", "0.weight", "0.bias", "2.weight", "2.bias"])
def test_every_non_finite_value_stops_the_step_before_clipping_and_the_optimizer(where, value, rng):
    X, y = _task(rng, 32)
    target = np.eye(3, dtype=np.float32)[y]
    model, loss = _two_layer(), nn.MSELoss()
    if where == "model output":
        X[7, 2] = value
    elif where == "loss":  # a loss that overflowed (the loss itself refuses non-finite targets)
        original_loss = loss.forward
        loss.forward = lambda pred, d: original_loss(pred, d) + float(value)
    else:
        layer, name = where.split(".")
        original = model[int(layer)].backward_parameters

        def poisoned(g):
            original(g)
            getattr(model[int(layer)], name).grad.flat[-1] = value

        model[int(layer)].backward_parameters = poisoned
    clipped = []
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = Trainer(model, loss, opt, clip_value=1.0, progress=False, log=lambda m: None)
    original_clip = optim.clip_grad_value_
    w0 = model.state_dict()
    try:
        optim.clip_grad_value_ = lambda *a: clipped.append(a)
        what = "gradients" if "." in where else where
        with pytest.raises(NonFiniteError, match=f"non-finite {what} at epoch 1, step 1; training stopped"):
            trainer.train_step(X, target)
    finally:
        optim.clip_grad_value_ = original_clip
    assert clipped == [] and trainer.step_count == 0
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, w0[k], err_msg=k)


def test_huge_finite_gradients_are_not_a_false_alarm(rng):
    """1e38 in every entry of a float32 gradient: its sum and its sum of squares overflow, it does not."""
    X, y = _task(rng, 16)
    model = nn.Sequential(nn.Linear(10, 3, rng=0))
    original = model[0].backward_parameters

    def huge(g):
        original(g)
        model[0].weight.grad[...] = np.float32(1e38)

    model[0].backward_parameters = huge
    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=1e-3), progress=False,
                      log=lambda m: None)
    w0 = model[0].weight.data.copy()
    trainer.train_step(X, y)
    assert trainer.step_count == 1
    np.testing.assert_array_equal(model[0].weight.data, w0 - np.float32(1e-3) * np.float32(1e38))


def test_trainer_computes_no_input_gradient_and_the_same_parameter_gradients(rng):
    """The Trainer's input is data: the first layer's dLoss/dx is never formed, the weights are bit for bit
    those of the loop ``model.backward(loss.backward())``, and the model's own ``input_grad`` is left as it was."""
    X, y = _task(rng, 256)

    def model():
        return nn.Sequential(nn.Dropout(0.1, rng=5), *_model())

    ours, bare = model(), model()
    first_backward = []
    original = ours[1].backward
    ours[1].backward = lambda g: first_backward.append(1) or original(g)
    opt_ours, opt_bare = (optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (ours, bare))
    trainer = Trainer(ours, nn.CrossEntropyLoss(), opt_ours, progress=False, log=lambda m: None)
    loss = nn.CrossEntropyLoss()
    bare.train()
    ours.train()
    for xb, yb in DataLoader(X, y, 64, rng=6):
        trainer.train_step(xb, yb)
        opt_bare.zero_grad()
        loss(bare(xb), yb)
        bare.backward(loss.backward())
        opt_bare.step()
    assert first_backward == []
    for k, v in bare.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k], v, err_msg=k)
    assert ours.input_grad is True
    loss(ours(X[:8]), y[:8])
    assert ours.backward(loss.backward()).shape == (8, 10)
