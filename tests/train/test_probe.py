import numpy as np
import pytest

from tricklab import nn, optim
from tricklab.data import DataLoader
from tricklab.report.probe_figure import plot_probe
from tricklab.train import Callback, LambdaCallback, Probe, Trainer, read_probe
from tricklab.train.checkpoint import list_checkpoints
from tricklab.train.probe import ADDED_COLUMNS, COLUMNS, UNIT_COLUMNS, batch_statistics, unit_percentiles

BATCH = 32


def _task(n=192):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 10)).astype(np.float32)
    return X, (X @ rng.standard_normal((10, 3))).argmax(1)


def _model():
    return nn.Sequential(nn.Linear(10, 16, rng=1), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2, rng=2),
                         nn.Linear(16, 3, rng=3))


def _trainer(model, run_dir=None, loader_rng=None, **kw):
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gens = {"loader": loader_rng} if loader_rng is not None else None
    return Trainer(model, nn.CrossEntropyLoss(), opt, run_dir=run_dir, generators=gens, progress=False,
                   log=lambda m: None, **kw)


class Recorder(Callback):
    """What an independent check needs of each probed step: the batch index, the weights and the
    dropout generator's state before the step, the gradients and the weights after it."""

    def __init__(self, every):
        self.every, self.steps = every, {}

    def on_batch_begin(self, batch, logs):
        t = self.trainer
        if t.step_count % self.every == 0:
            self.current = t.step_count
            self.steps[t.step_count] = {"batch": batch, "before": t.model.state_dict(),
                                        "rng": t.model[3].rng.bit_generator.state}

    def on_batch_end(self, batch, logs):
        s = self.steps.get(self.trainer.step_count - 1)
        if s is not None and "after" not in s:
            model = self.trainer.model
            s["grads"] = [[p.grad.copy() for p in layer.parameters()] for layer in model]
            s["after"] = model.state_dict()


def _layer_outputs(state, rng_state, x):
    """Every layer's output, computed one layer at a time in training mode from the saved state."""
    model = _model()
    model.load_state_dict(state)
    model[3].rng.bit_generator.state = rng_state
    outs = []
    for layer in model:
        x = layer(x)
        outs.append(x)
    return outs


def _output_gradients(state, rng_state, x, y):
    """dLoss/d(output) of every layer, by an independent forward and a layer-by-layer backward of
    the cross entropy on ``y`` (the layers' own backward, one at a time, from the saved state)."""
    model = _model()
    model.load_state_dict(state)
    model[3].rng.bit_generator.state = rng_state
    h = x
    for layer in model:
        h = layer(h)
    loss = nn.CrossEntropyLoss()
    loss(h, y)
    g, grads = loss.backward(), []
    for layer in reversed(list(model)):
        grads.append(g)
        g = layer.backward(g)
    return grads[::-1]


def _flat(arrays):
    return np.concatenate([np.zeros(0)] + [np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def _params(state, i):
    return [v for k, v in state.items() if k.startswith(f"{i}.") and k.split(".")[1] in ("weight", "bias")]


def test_records_equal_an_independent_computation_of_the_probed_steps():
    X, y = _task()
    model = _model()
    probe, recorder = Probe(every=2), Recorder(2)
    _trainer(model).fit(DataLoader(X, y, BATCH, shuffle=False), epochs=1, callbacks=[probe, recorder])
    rec = {k: np.asarray(v) for k, v in probe.records.items()}
    assert sorted(recorder.steps) == [0, 2, 4]
    assert rec["step"].tolist() == [s for s in (0, 2, 4) for _ in range(5)]
    assert rec["layer"].tolist() == ["0", "1", "2", "3", "4"] * 3
    assert rec["kind"].tolist() == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"] * 3
    assert set(rec["epoch"].tolist()) == {1}
    for step, s in recorder.steps.items():
        xb = X[s["batch"] * BATCH:(s["batch"] + 1) * BATCH]
        outs = _layer_outputs(s["before"], s["rng"], xb)
        for i, out in enumerate(outs):
            row = np.flatnonzero((rec["step"] == step) & (rec["layer"] == str(i)))[0]
            np.testing.assert_array_equal([rec["act_p15"][row], rec["act_p50"][row], rec["act_p85"][row]],
                                          np.percentile(out, [15, 50, 85]), err_msg=f"step {step} layer {i}")
            before, after = _flat(_params(s["before"], i)), _flat(_params(s["after"], i))
            if before.size:
                np.testing.assert_allclose(rec["grad_norm"][row], np.linalg.norm(_flat(s["grads"][i])), rtol=1e-12)
                np.testing.assert_allclose(rec["weight_norm"][row], np.linalg.norm(before), rtol=1e-12)
                np.testing.assert_allclose(rec["update_ratio"][row],
                                           np.linalg.norm(after - before) / np.linalg.norm(before), rtol=1e-12)
                assert rec["update_ratio"][row] > 0
            else:
                assert np.isnan([rec[k][row] for k in ("grad_norm", "weight_norm", "update_ratio")]).all()
        bn_in = outs[0].astype(np.float64)  # batch norm's input is the first layer's output
        row = np.flatnonzero((rec["step"] == step) & (rec["layer"] == "1"))[0]
        np.testing.assert_allclose(rec["bn_batch_mean"][row], bn_in.mean(0).mean(), rtol=1e-12)
        np.testing.assert_allclose(rec["bn_batch_var"][row], bn_in.var(0).mean(), rtol=1e-12)
        np.testing.assert_allclose(rec["bn_running_mean"][row], s["after"]["1.running_mean"].astype(np.float64).mean(),
                                   rtol=1e-12)
        np.testing.assert_allclose(rec["bn_running_var"][row], s["after"]["1.running_var"].astype(np.float64).mean(),
                                   rtol=1e-12)
        other = (rec["step"] == step) & (rec["layer"] != "1")
        assert np.isnan(rec["bn_batch_mean"][other]).all() and np.isnan(rec["bn_running_var"][other]).all()


def _final(trainer):
    return trainer.model.state_dict(), [r["train_loss"] for r in trainer.history]


@pytest.mark.parametrize("batch", [None, "fixed"])
def test_probing_leaves_the_run_unchanged(batch):
    X, y = _task()
    plain = _trainer(_model())
    plain.fit(DataLoader(X, y, BATCH, rng=5), epochs=2)
    probe = Probe(every=3, batch=None if batch is None else (X[:50], y[:50]))
    probed = _trainer(_model())
    probed.fit(DataLoader(X, y, BATCH, rng=5), epochs=2, callbacks=[probe])
    (w0, h0), (w1, h1) = _final(plain), _final(probed)
    assert h1 == h0
    for k, v in w0.items():
        np.testing.assert_array_equal(w1[k], v, err_msg=k)
    assert len(probe.records["step"]) == 4 * 5  # steps 0, 3, 6, 9 of 12
    assert not any(a in vars(m) for m in probed.model.modules()
                   for a in ("forward", "backward", "backward_parameters"))  # every wrapper removed


def test_a_fixed_probe_batch_is_run_before_the_step_with_the_weights_and_generator_of_then():
    X, y = _task()
    Xp = np.random.default_rng(9).standard_normal((40, 10)).astype(np.float32)
    probe, recorder = Probe(every=4, batch=(Xp, None)), Recorder(4)
    _trainer(_model()).fit(DataLoader(X, y, BATCH, shuffle=False), epochs=1, callbacks=[probe, recorder])
    rec = {k: np.asarray(v) for k, v in probe.records.items()}
    assert sorted(recorder.steps) == [0, 4]
    for step, s in recorder.steps.items():
        outs = _layer_outputs(s["before"], s["rng"], Xp)
        rows = rec["step"] == step
        got = np.stack([rec[k][rows] for k in ("act_p15", "act_p50", "act_p85")], axis=1)
        np.testing.assert_array_equal(got, [np.percentile(o, [15, 50, 85]) for o in outs])
        bn_in = outs[0].astype(np.float64)
        np.testing.assert_allclose(rec["bn_batch_mean"][rows][1], bn_in.mean(0).mean(), rtol=1e-12)


def test_steps_that_are_not_probed_do_nothing():
    X, y = _task()
    probe = Probe(every=4)
    calls = []
    for name in ("_begin", "_end"):
        original = getattr(probe, name)
        setattr(probe, name, lambda original=original, name=name: (calls.append((name, probe.trainer.step_count)),
                                                                    original()))
    wrapped_at = []
    watch = LambdaCallback(on_batch_begin=lambda b, logs: wrapped_at.append(
        (trainer.step_count, any("forward" in vars(m) for m in trainer.model.modules()))))
    trainer = _trainer(_model())
    trainer.fit(DataLoader(X, y, BATCH, shuffle=False), epochs=2, callbacks=[probe, watch])  # 12 steps
    assert calls == [("_begin", 0), ("_end", 1), ("_begin", 4), ("_end", 5), ("_begin", 8), ("_end", 9)]
    assert [s for s, wrapped in wrapped_at if wrapped] == [0, 4, 8]
    assert probe.records["step"] == [0] * 5 + [4] * 5 + [8] * 5
    assert probe.records["epoch"] == [1] * 10 + [2] * 5


def test_layers_by_index_and_name_and_bad_arguments():
    X, y = _task(64)
    probe = Probe(every=1, layers=[0, "1", -1])
    _trainer(_model()).fit(DataLoader(X, y, BATCH, shuffle=False), epochs=1, callbacks=[probe])
    assert probe.records["layer"] == ["0", "1", "4"] * 2
    assert probe.records["kind"] == ["Linear", "BatchNorm1d", "Linear"] * 2
    with pytest.raises(ValueError, match="every"):
        Probe(every=0)
    with pytest.raises(ValueError, match="layers has index 5"):
        _trainer(_model()).fit(DataLoader(X, y, BATCH), epochs=1, callbacks=[Probe(layers=[5])])
    with pytest.raises(ValueError, match="layers has 'head'"):
        _trainer(_model()).fit(DataLoader(X, y, BATCH), epochs=1, callbacks=[Probe(layers="head")])
    with pytest.raises(ValueError, match="batch"):
        Probe(batch=np.zeros((0, 10)))


def test_batch_statistics_of_batchnorm2d_are_over_examples_and_pixels():
    x = np.random.default_rng(1).standard_normal((4, 3, 5, 5)) * np.array([1.0, 2.0, 3.0])[None, :, None, None] + 1.0
    rows = np.moveaxis(x, 1, -1).reshape(-1, 3)
    mean, var = batch_statistics(nn.BatchNorm2d(3), x)
    np.testing.assert_allclose([mean, var], [rows.mean(0).mean(), rows.var(0).mean()], rtol=1e-12)


def _probed_run(run_dir, epochs, resume=False):
    X, y = _task()
    loader = DataLoader(X, y, BATCH, rng=7)
    trainer = _trainer(_model(), run_dir=run_dir, loader_rng=loader.rng)
    if resume:
        assert trainer.resume()
    probe = Probe(every=5)
    trainer.fit(loader, epochs=epochs, callbacks=[probe])
    return trainer, probe


def test_resumed_records_and_file_equal_an_uninterrupted_runs(tmp_path):
    _, full = _probed_run(tmp_path / "full", 4)
    _probed_run(tmp_path / "part", 3)
    (tmp_path / "part" / "checkpoints" / "ckpt-000003.json").unlink()  # killed after epoch 3's files, before its checkpoint
    assert [p.name for p in list_checkpoints(tmp_path / "part" / "checkpoints")] == ["ckpt-000002.json"]
    trainer, again = _probed_run(tmp_path / "part", 4, resume=True)
    assert trainer.step_count == 24
    for name in COLUMNS:
        np.testing.assert_array_equal(np.asarray(again.records[name]), np.asarray(full.records[name]), err_msg=name)
    on_disk, expected = read_probe(tmp_path / "part"), read_probe(tmp_path / "full" / "probe.npz")
    assert set(on_disk) == set(COLUMNS)
    for name in COLUMNS:
        np.testing.assert_array_equal(on_disk[name], expected[name], err_msg=name)
    assert on_disk["step"].tolist() == [s for s in range(0, 24, 5) for _ in range(5)]


def test_plot_probe_writes_a_png_of_the_records(tmp_path):
    _probed_run(tmp_path, 2)
    path = plot_probe(read_probe(tmp_path), tmp_path / "probe.png", title="probe")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    with pytest.raises(ValueError, match="records"):
        plot_probe({"layer": []}, tmp_path / "empty.png")


def _std(a):
    return np.asarray(a, dtype=np.float64).std()


def test_mean_std_and_output_gradient_std_of_the_training_step_equal_an_independent_backward():
    X, y = _task()
    probe, recorder = Probe(every=2, units=[0, 1, -1]), Recorder(2)
    _trainer(_model()).fit(DataLoader(X, y, BATCH, shuffle=False), epochs=1, callbacks=[probe, recorder])
    rec = {k: np.asarray(v) for k, v in probe.records.items()}
    units = {k: np.asarray(v) for k, v in probe.unit_records.items()}
    for step, s in recorder.steps.items():
        sl = slice(s["batch"] * BATCH, (s["batch"] + 1) * BATCH)
        outs = _layer_outputs(s["before"], s["rng"], X[sl])
        grads = _output_gradients(s["before"], s["rng"], X[sl], y[sl])
        for i, (out, g) in enumerate(zip(outs, grads)):
            row = np.flatnonzero((rec["step"] == step) & (rec["layer"] == str(i)))[0]
            assert rec["act_mean"][row] == out.astype(np.float64).mean()
            assert rec["act_std"][row] == _std(out)
            assert rec["grad_std"][row] == _std(g) and rec["grad_std"][row] > 0  # layer 0 too: backward_parameters
            mine = (units["unit_step"] == step) & (units["unit_layer"] == str(i))
            n = out.shape[1]
            assert units["unit"][mine].tolist() == [0, 1, n - 1]
            expected = np.percentile(out.astype(np.float64), [15, 50, 85], axis=0).T[[0, 1, n - 1]]
            got = np.stack([units[c][mine] for c in ("unit_p15", "unit_p50", "unit_p85")], axis=1)
            np.testing.assert_array_equal(got, expected, err_msg=f"step {step} layer {i}")
            assert set(units["unit_epoch"][mine].tolist()) == {1}
    assert len(units["unit_step"]) == 3 * 5 * 3  # 3 steps, 5 layers, 3 units


def test_a_leading_layer_the_training_backward_skips_has_no_output_gradient():
    X, y = _task(64)
    model = nn.Sequential(nn.Dropout(0.1, rng=4), nn.Linear(10, 3, rng=1))
    probe = Probe(every=1)
    _trainer(model).fit(DataLoader(X, y, BATCH, shuffle=False), epochs=1, callbacks=[probe])
    grad_std = np.asarray(probe.records["grad_std"]).reshape(2, 2)
    assert np.isnan(grad_std[:, 0]).all() and (grad_std[:, 1] > 0).all()


def test_a_probe_batch_with_targets_gives_output_gradients_and_leaves_the_run_and_gradients_unchanged():
    X, y = _task()
    Xp, yp = X[:40] + 0.5, y[::-1][:40].copy()
    plain = _trainer(_model())
    plain.fit(DataLoader(X, y, BATCH, rng=5), epochs=2)
    probe, recorder = Probe(every=4, batch=(Xp, yp), units="all", at_end=True), Recorder(4)
    probed = _trainer(_model())
    at_end = []  # the state on_train_end sees (the trainer recomputes batch-norm statistics after it)

    def leave_eval_mode(logs):  # as an evaluation after the last epoch may: the end probe is in training mode
        at_end.append((probed.model.state_dict(), probed.model[3].rng.bit_generator.state))
        probed.model.eval()
        probed.model[1].train()

    watch = LambdaCallback(on_train_end=leave_eval_mode)
    probed.fit(DataLoader(X, y, BATCH, rng=5), epochs=2, callbacks=[watch, probe, recorder])
    assert [m.training for m in probed.model] == [False, True, False, False, False]  # every mode put back
    (w0, h0), (w1, h1) = _final(plain), _final(probed)
    assert h1 == h0
    for k, v in w0.items():
        np.testing.assert_array_equal(w1[k], v, err_msg=k)
    for p0, p1 in zip(plain.model.parameters(), probed.model.parameters()):  # the last step's, put back
        np.testing.assert_array_equal(p1.grad, p0.grad)
    rec = {k: np.asarray(v) for k, v in probe.records.items()}
    units = {k: np.asarray(v) for k, v in probe.unit_records.items()}
    assert sorted(recorder.steps) == [0, 4, 8] and rec["step"].tolist() == [s for s in (0, 4, 8, 12) for _ in range(5)]
    states = {step: (s["before"], s["rng"]) for step, s in recorder.steps.items()}
    states[12] = at_end[0]  # at_end: the final state
    for step, (state, rng) in states.items():
        outs, grads = _layer_outputs(state, rng, Xp), _output_gradients(state, rng, Xp, yp)
        rows = rec["step"] == step
        np.testing.assert_array_equal(rec["act_std"][rows], [_std(o) for o in outs])
        np.testing.assert_array_equal(rec["grad_std"][rows], [_std(g) for g in grads])
        for i, out in enumerate(outs):
            mine = (units["unit_step"] == step) & (units["unit_layer"] == str(i))
            assert units["unit"][mine].tolist() == list(range(out.shape[1]))
            np.testing.assert_array_equal(units["unit_p50"][mine], np.percentile(out.astype(np.float64), 50, axis=0))
    end = rec["step"] == 12
    assert rec["epoch"][end].tolist() == [2] * 5
    assert np.isnan(rec["grad_norm"][end]).all() and np.isnan(rec["update_ratio"][end]).all()
    np.testing.assert_allclose(rec["weight_norm"][end][0], np.linalg.norm(_flat(_params(w1, 0))), rtol=1e-12)
    np.testing.assert_allclose(rec["bn_running_var"][end][1], at_end[0][0]["1.running_var"].astype(np.float64).mean(),
                               rtol=1e-12)


def test_at_end_rows_are_in_the_file_and_not_repeated_by_a_resumed_finished_run(tmp_path):
    X, y = _task()

    def run(resume):
        loader = DataLoader(X, y, BATCH, rng=7)
        trainer = _trainer(_model(), run_dir=tmp_path, loader_rng=loader.rng)
        if resume:
            assert trainer.resume()
        probe = Probe(every=5, batch=(X[:20], y[:20]), units=slice(0, 2), at_end=True)
        trainer.fit(loader, epochs=2, callbacks=[probe])
        return probe

    first = run(False)
    on_disk = read_probe(tmp_path)
    assert set(on_disk) == set(COLUMNS) | set(UNIT_COLUMNS)
    assert on_disk["step"].tolist() == [s for s in (0, 5, 10, 12) for _ in range(5)]
    assert on_disk["unit_step"].tolist() == [s for s in (0, 5, 10, 12) for _ in range(5 * 2)]
    again = run(True)  # already finished: no step, and the end state is recorded already
    for name in COLUMNS:
        np.testing.assert_array_equal(np.asarray(again.records[name]), np.asarray(first.records[name]), err_msg=name)
    for name in UNIT_COLUMNS:
        np.testing.assert_array_equal(np.asarray(again.unit_records[name]), np.asarray(first.unit_records[name]))


def test_unit_percentiles_of_a_convolutions_channels_pool_examples_and_pixels():
    a = np.random.default_rng(2).standard_normal((4, 3, 5, 5)).astype(np.float32) * np.array([1, 2, 3])[:, None, None]
    idx, pct = unit_percentiles(a, slice(1, None))
    rows = np.moveaxis(a, 1, -1).reshape(-1, 3).astype(np.float64)
    assert idx.tolist() == [1, 2]
    np.testing.assert_array_equal(pct, np.percentile(rows, [15, 50, 85], axis=0).T[1:])


def test_bad_units_at_end_and_targets_are_refused():
    X, y = _task(64)
    for units in ("some", [1.5], [], True):
        with pytest.raises(ValueError, match="units"):
            Probe(units=units)
    with pytest.raises(ValueError, match="at_end"):
        Probe(at_end=True)
    with pytest.raises(ValueError, match="targets"):
        Probe(batch=(X[:10], y[:9]))
    with pytest.raises(ValueError, match="units has \\[16\\]"):
        _trainer(_model()).fit(DataLoader(X, y, BATCH), epochs=1, callbacks=[Probe(layers=[1], units=[16])])


def test_a_checkpoint_from_before_the_new_columns_loads_with_nan():
    probe = Probe(every=1)
    old = {name: np.arange(2) if name in ("step", "epoch") else np.array(["0", "1"]) if name in ("layer", "kind")
           else np.ones(2) for name in COLUMNS if name not in ADDED_COLUMNS}
    probe.load_state_dict({"records": old})
    assert probe.records["step"] == [0, 1] and np.isnan(probe.records["grad_std"]).all()
    assert probe.unit_records == {name: [] for name in UNIT_COLUMNS}
