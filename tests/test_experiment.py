import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tricklab import config
from tricklab.cli import main
from tricklab.experiment import build, evaluate_run, load_model, train_run
from tricklab.train.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"run": {"seed": 3}, "data": {"name": "mnist1d", "train_subset": 1000},
         "model": {"hidden": [32, 32], "batchnorm": True, "dropout": 0.2},
         "augmentation": {"noise": 0.05}, "early_stopping": {"enabled": True, "patience": 2},
         "train": {"epochs": 3, "batch_size": 50}}


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.toml")))
def test_shipped_configs_are_valid(path):
    cfg = config.load(path)
    assert cfg["train"]["epochs"] >= 1


def test_run_folder_holds_everything(tmp_path):
    cfg = config.resolve(SMALL)
    metrics = train_run(cfg, tmp_path / "run", progress=False, log=lambda m: None)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.toml", "checkpoints", "history.csv", "history.jsonl", "model.npz", "metrics.json",
            "curves.png"} <= files
    assert config.load(tmp_path / "run" / "config.toml") == cfg
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    assert metrics["bn_statistics"] == "recompute" and 0.0 <= metrics["test_accuracy"] <= 1.0
    lines = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss") and len(lines) == metrics["epochs_run"] + 1
    again = evaluate_run(tmp_path / "run")
    assert again["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert again["val_accuracy"] == pytest.approx(metrics["val_accuracy"])


def test_normalizer_is_fitted_on_the_training_split_only(tmp_path):
    cfg = config.resolve(SMALL)
    exp = build(cfg)
    Xtr = exp.data.train[0]
    np.testing.assert_allclose(exp.normalizer.mean, Xtr.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(exp.normalizer.mean, exp.data.test[0].mean(axis=0), atol=1e-3)
    train_run(cfg, tmp_path / "run", progress=False, log=lambda m: None, plots=False)
    _, normalizer, _ = load_model(tmp_path / "run")
    np.testing.assert_array_equal(normalizer.mean, exp.normalizer.mean)  # stored with the model


def test_refuses_to_overwrite_a_run(tmp_path):
    cfg = config.resolve({**SMALL, "train": {"epochs": 1}})
    train_run(cfg, tmp_path / "run", progress=False, log=lambda m: None, plots=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train_run(cfg, tmp_path / "run", progress=False, log=lambda m: None, plots=False)


def test_cli_train_evaluate_and_errors(tmp_path, capsys):
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(config.dumps(config.resolve(SMALL)))
    assert main(["train", str(cfg_path), "--set", "train.epochs=1", "--out", str(tmp_path / "run")]) == 0
    assert json.loads(capsys.readouterr().out)["epochs_run"] == 1
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    assert "test_accuracy" in json.loads(capsys.readouterr().out)
    assert main(["train", str(cfg_path), "--set", "optimizer.lr=-1", "--out", str(tmp_path / "x")]) == 2
    assert "optimizer.lr must be > 0.0" in capsys.readouterr().err
    assert main(["train", str(cfg_path), "--set", "model.hiden=[3]", "--out", str(tmp_path / "x")]) == 2
    assert "did you mean 'hidden'" in capsys.readouterr().err


def _train_cmd(cfg_path, out):
    return [sys.executable, "-m", "tricklab.cli", "train", str(cfg_path), "--out", str(out)]


def test_resume_after_kill_9_mid_epoch_is_bit_identical(tmp_path):
    doc = {**SMALL, "model": {**SMALL["model"], "hidden": [256, 256]}, "early_stopping": {"enabled": False},
           "schedule": {"name": "step", "step_size": 2}, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
           "train": {"epochs": 6, "batch_size": 20}}
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(config.dumps(config.resolve(doc)))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run(_train_cmd(cfg_path, tmp_path / "full"), env=env, check=True, capture_output=True)
    proc = subprocess.Popen(_train_cmd(cfg_path, tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    marker = tmp_path / "killed" / "checkpoints" / "ckpt-000002.json"
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # well inside epoch 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "model.npz").exists(), "the run finished before it could be killed"
    resumed = subprocess.run([sys.executable, "-m", "tricklab.cli", "train", "--resume", str(tmp_path / "killed")],
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    with np.load(tmp_path / "full" / "model.npz") as a, np.load(tmp_path / "killed" / "model.npz") as b:
        assert a.files == b.files
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    full = (tmp_path / "full" / "history.csv").read_text().splitlines()
    killed = (tmp_path / "killed" / "history.csv").read_text().splitlines()
    strip_seconds = lambda rows: [",".join(r.split(",")[:-1]) for r in rows]  # noqa: E731
    assert strip_seconds(full) == strip_seconds(killed)


@pytest.mark.parametrize("overrides", [
    {"model": {"layer": "dropconnect", "layer_p": 0.3}},
    {"model": {"layer": "shakeout", "shakeout_tau": 0.3, "shakeout_c": 0.05}},
    {"model": {"layer": "whiteout", "whiteout_sigma": 0.05}},
    {"model": {"noise_std": 0.1, "activity_l1": 1e-4}, "regularization": {"max_norm": 2.0}},
])
def test_every_regularizer_is_usable_from_the_config(tmp_path, overrides):
    from tricklab import nn

    doc = {**SMALL, "train": {"epochs": 1, "batch_size": 100}, "early_stopping": {"enabled": False}}
    for section, values in overrides.items():
        doc[section] = {**doc.get(section, {}), **values}
    cfg = config.resolve(doc)
    exp = build(cfg)
    kinds = {type(m).__name__ for m in exp.model.modules()}
    expected = {"dropconnect": "DropConnect", "shakeout": "Shakeout", "whiteout": "Whiteout"}.get(cfg["model"]["layer"])
    assert expected is None or expected in kinds
    metrics = train_run(cfg, tmp_path / "run", progress=False, log=lambda m: None, plots=False)
    assert np.isfinite(metrics["val_loss"])
    if cfg["regularization"]["max_norm"]:
        model, _, _ = load_model(tmp_path / "run")
        for m in model.modules():
            if isinstance(m, nn.Linear):
                assert np.linalg.norm(m.weight.data, axis=1).max() <= 2.0 + 1e-5
    if cfg["model"]["activity_l1"]:
        history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
        assert history[0]["train_penalty"] > 0


def test_batchnorm_run_survives_a_last_batch_of_one(tmp_path):
    doc = {**SMALL, "train": {"epochs": 1, "batch_size": 899}}  # 900 training examples: a tail of one
    cfg = config.resolve(doc)
    assert len(build(cfg).data.train[1]) % 899 == 1
    metrics = train_run(cfg, tmp_path / "run", progress=False, log=lambda m: None, plots=False)
    assert np.isfinite(metrics["val_loss"])


def test_warmup_then_decay_schedule(tmp_path):
    doc = {**SMALL, "early_stopping": {"enabled": False}, "optimizer": {"name": "sgd", "lr": 0.1},
           "schedule": {"name": "step", "step_size": 1, "gamma": 0.5, "warmup_epochs": 2}, "train": {"epochs": 4}}
    train_run(config.resolve(doc), tmp_path / "run", progress=False, log=lambda m: None, plots=False)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert lrs[0] == pytest.approx(0.1 / 3) and lrs[1] == pytest.approx(0.1 * 2 / 3 * 0.5)
    assert lrs[1] < lrs[0] * 2 and lrs[3] < lrs[2]


def test_momentum_ramp_through_the_configuration():
    """schedule.momentum_end / momentum_epochs ramp the momentum, damped with optimizer.damped."""
    doc = {**SMALL, "early_stopping": {"enabled": False}, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.5,
                                                                        "damped": True},
           "schedule": {"momentum_end": 0.9, "momentum_epochs": 2}, "train": {"epochs": 3}}
    exp = build(config.resolve(doc))
    group = exp.trainer.optimizer.param_groups[0]
    assert (group["momentum"], group["dampening"]) == (0.5, 0.5)
    seen = []

    class Record(Callback):
        def on_epoch_begin(self, epoch, logs):
            seen.append((group["momentum"], group["dampening"]))

    exp.trainer.fit(exp.train_loader, epochs=3, callbacks=[Record()])
    assert seen == [(0.5, 0.5), (0.5 + 0.4 * 0.5, 0.5 + 0.4 * 0.5), (0.9, 0.9)]


def test_translation_must_be_in_pixels():
    cfg = config.resolve({"data": {"name": "mnist"}, "augmentation": {"translation": 0.5}})
    from tricklab.experiment import build_augmentation
    with pytest.raises(config.ConfigError, match="augmentation.translation is in pixels"):
        build_augmentation(cfg, (28, 28), None)


def test_cli_reports_divergence_cleanly(tmp_path, capsys):
    cfg_path = tmp_path / "c.toml"
    doc = {**SMALL, "model": {"hidden": [32]}, "augmentation": {}, "optimizer": {"name": "sgd", "lr": 1e6},
           "data": {**SMALL["data"], "normalize": "none"}, "early_stopping": {"enabled": False}}
    cfg_path.write_text(config.dumps(config.resolve(doc)))
    assert main(["train", str(cfg_path), "--out", str(tmp_path / "run")]) == 2
    assert "non-finite" in capsys.readouterr().err


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path):
    cfg = config.resolve({**SMALL, "train": {"epochs": 2}})
    train_run(cfg, tmp_path / "run", progress=False, log=lambda m: None, plots=False)
    other = config.set_key(cfg, "optimizer.lr", 0.5)
    from tricklab.train import CheckpointError
    with pytest.raises(CheckpointError, match="another configuration"):
        train_run(other, tmp_path / "run", resume=True, progress=False, log=lambda m: None, plots=False)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_recurrent_models_with_zoneout_from_the_config(tmp_path, kind):
    from tricklab import nn
    from tricklab.check import gradcheck

    cell = {"zoneout_c": 0.3} if kind == "lstm" else {}  # an RNN has no cell state
    doc = {**SMALL, "model": {"kind": kind, "hidden": [16], "zoneout_h": 0.1, **cell, "dropout": 0.1},
           "augmentation": {}, "early_stopping": {"enabled": False}, "train": {"epochs": 1, "batch_size": 100}}
    cfg = config.resolve(doc)
    exp = build(cfg)
    encoder = exp.model[0]
    assert isinstance(encoder, nn.SequenceEncoder) and encoder.time_steps == 40
    assert gradcheck(exp.model, exp.val[0][:3]).ok
    metrics = train_run(cfg, tmp_path / "run", progress=False, log=lambda m: None, plots=False)
    assert np.isfinite(metrics["val_loss"])
    assert evaluate_run(tmp_path / "run")["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


@pytest.mark.parametrize("doc", [
    {"model": {"hidden": [32, 16], "batchnorm": True}},
    {"model": {"hidden": []}},
    {"model": {"hidden": [24], "layer": "dropconnect"}, "data": {"name": "mnist"}},
    {"model": {"hidden": [24], "layer": "shakeout"}},
    {"model": {"hidden": [24], "layer": "whiteout"}},
    {"model": {"kind": "rnn", "hidden": [12, 12]}, "data": {"name": "mnist"}},
    {"model": {"kind": "lstm", "hidden": [12, 12, 12]}},
])
def test_parameter_count_estimate_equals_the_built_model(doc):
    from tricklab.experiment import N_CLASSES, N_FEATURES, build_model, count_parameters

    cfg = config.resolve(doc)
    n_in = N_FEATURES[cfg["data"]["name"]]
    model = build_model(cfg, n_in, N_CLASSES, np.random.SeedSequence(0))
    assert count_parameters(cfg, n_in, N_CLASSES) == sum(p.data.size for p in model.parameters())


CONV = {"type": "Conv2d", "out_channels": 6, "kernel_size": 3}


@pytest.mark.parametrize("layers", [
    [CONV, {"type": "BatchNorm2d"}, {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Flatten"},
     {"type": "Linear"}],
    [{**CONV, "padding": "same", "bias": False}, {"type": "Dropout2d", "p": 0.1},
     {"type": "AvgPool2d", "kernel_size": 3, "stride": 2, "padding": 1},
     {"type": "Conv2d", "out_channels": 4, "kernel_size": [3, 2], "stride": 2, "dilation": 2, "padding": [1, 0]},
     {"type": "Flatten"}, {"type": "Linear", "out_features": 7}, {"type": "ReLU"}, {"type": "Linear"}],
    [{**CONV, "out_channels": 8}, {"type": "Conv2d", "out_channels": 8, "kernel_size": 3, "groups": 8,
                                   "padding": "valid"}, {"type": "AdaptiveAvgPool2d", "output_size": 1},
     {"type": "Flatten"}, {"type": "Linear"}],
])
def test_parameter_count_estimate_equals_the_built_convolutional_model(layers):
    from tricklab.experiment import N_CLASSES, SAMPLE_SHAPES, build_model, count_parameters

    cfg = config.resolve({"data": {"name": "mnist"}, "model": {"layers": layers}})
    shape = SAMPLE_SHAPES["mnist"]
    model = build_model(cfg, shape, N_CLASSES, np.random.SeedSequence(0))
    assert count_parameters(cfg, shape, N_CLASSES) == sum(p.data.size for p in model.parameters())


@pytest.mark.parametrize("optimizer,copies", [({"name": "sgd"}, 2), ({"name": "sgd", "momentum": 0.9}, 3),
                                              ({"name": "rmsprop"}, 3), ({"name": "rmsprop", "momentum": 0.9}, 4),
                                              ({"name": "adam"}, 4), ({"name": "adamw"}, 4)])
def test_training_memory_counts_weights_gradients_and_optimizer_state(optimizer, copies):
    from tricklab.experiment import N_CLASSES, count_parameters, training_bytes

    for dtype, size in (("float32", 4), ("float64", 8)):
        cfg = config.resolve({"model": {"hidden": [64]}, "optimizer": optimizer, "train": {"dtype": dtype}})
        assert training_bytes(cfg) == copies * size * count_parameters(cfg, 40, N_CLASSES)
    kept = config.resolve({"model": {"hidden": [64]}, "optimizer": optimizer, "early_stopping": {"enabled": True}})
    assert training_bytes(kept) == (copies + 1) * 4 * count_parameters(kept, 40, N_CLASSES)  # the best weights


def test_a_model_too_large_for_memory_is_refused_before_anything_is_allocated(tmp_path):
    cfg = config.resolve({"model": {"hidden": [1_000_000, 1_000_000]}})  # 1e12 weights: 16 TB with Adam
    with pytest.raises(config.ConfigError, match=r"^model.hidden = \[1000000, 1000000\] needs about 14[0-9]{3}\.[0-9] GiB "
                                                 r".*train.dtype = \"float32\".* GiB of memory"):
        build(cfg)
    with pytest.raises(config.ConfigError, match="GiB"):
        train_run(cfg, tmp_path / "run", progress=False, log=lambda m: None, plots=False)
    assert not (tmp_path / "run").exists()


def test_train_subset_larger_than_the_data_set_is_refused_naming_its_size():
    from tricklab.data import load_mnist1d

    n = len(load_mnist1d("train")[1])
    with pytest.raises(config.ConfigError, match=rf"^data.train_subset = {n + 1} is larger than the {n} training "
                                                 r"examples of mnist1d"):
        build(config.resolve({"data": {"train_subset": n + 1}}))
    assert len(build(config.resolve({"data": {"train_subset": n}, "model": {"hidden": [8]}})).data.train[1]) > 0


def test_early_stopping_extras_reach_the_stopper(tmp_path):
    extras = {"patience": 0, "baseline": 0.5, "check_finite": False, "stopping_threshold": 0.1,
              "divergence_threshold": 9.0}
    cfg = config.resolve({**SMALL, "early_stopping": {"enabled": True, **extras}})
    es = build(cfg).trainer.early_stopping
    assert {k: getattr(es, k) for k in extras} == extras
    diverged = config.resolve({**SMALL, "early_stopping": {"enabled": True, "divergence_threshold": 1e-3}})
    metrics = train_run(diverged, tmp_path / "run", progress=False, log=lambda m: None, plots=False)
    assert metrics["epochs_run"] == 1 and metrics["stopped_early"]


# ---------------------------------------------------------------------------- pipeline keys
def _mnist1d(**sections):
    from tricklab import config as config_

    doc = {"data": {"name": "mnist1d"}, "model": {"hidden": [16]}, "train": {"epochs": 1, "batch_size": 100}}
    for section, keys in sections.items():
        doc[section] = {**doc.get(section, {}), **keys}
    return config_.resolve(doc)


@pytest.mark.parametrize("order", ["once", "fixed", "sorted"])
def test_data_order_keeps_one_order_for_every_epoch(order):
    from tricklab.experiment import build

    exp = build(_mnist1d(data={"order": order}), log=lambda m: None)
    y = exp.train_loader.y
    assert not exp.train_loader.shuffle
    first = [yb.copy() for _, yb in exp.train_loader]
    second = [yb for _, yb in exp.train_loader]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    stored = exp.data.train[1]
    if order == "sorted":
        assert np.all(np.diff(y) >= 0) and sorted(stored.tolist()) == y.tolist()
    elif order == "fixed":
        assert np.array_equal(y, stored)
    else:
        assert not np.array_equal(y, stored) and sorted(stored.tolist()) == sorted(y.tolist())


def test_test_subset_and_max_steps():
    from tricklab.experiment import run

    result = run(_mnist1d(data={"test_subset": 123}, train={"epochs": 5, "max_steps": 40}), log=lambda m: None)
    steps_per_epoch = len(result.experiment.train_loader)
    assert result.metrics["n_test"] == 123
    assert result.experiment.trainer.step_count == 40
    assert result.metrics["epochs_run"] == -(-40 // steps_per_epoch) < 5


def test_logging_section_writes_the_probe_and_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboardX")
    from tricklab.experiment import run
    from tricklab.train.probe import read_probe

    run(_mnist1d(train={"epochs": 2}, logging={"probe_every": 10, "tensorboard": True}), tmp_path / "run",
        log=lambda m: None, plots=False)
    records = read_probe(tmp_path / "run" / "probe.npz")
    assert sorted(set(records["step"].tolist())) == list(range(0, 2 * 36, 10))  # 3,600 / 100 -> 36 steps an epoch
    assert any((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))


def test_auto_resume_starts_over_when_the_only_checkpoint_was_cut_short(tmp_path):
    """A lab trial killed while writing its first checkpoint leaves a folder with nothing usable in it."""
    from tricklab.experiment import run

    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "ckpt-000001.json").write_text('{"format": 1, "sha')  # truncated by the kill
    result = run(_mnist1d(train={"epochs": 2}), tmp_path / "run", resume="auto", log=lambda m: None, plots=False)
    assert [row["epoch"] for row in result.history] == [1, 2]
    with pytest.raises(Exception, match="no usable checkpoint"):  # an explicit resume still refuses
        (folder / "ckpt-000002.json").unlink()
        (folder / "ckpt-000002.npz").unlink()
        (folder / "ckpt-000001.json").write_text('{"format": 1, "sha')
        (folder / "ckpt-000001.npz").unlink(missing_ok=True)
        run(_mnist1d(train={"epochs": 2}), tmp_path / "run", resume="always", log=lambda m: None, plots=False)


def test_val_fraction_zero_trains_on_the_whole_training_split_and_reports_test_only(tmp_path):
    """The paper protocol (MNIST-1D's 4,000 training sequences, the test score at the end): no validation split."""
    from tricklab.data import load_mnist1d
    from tricklab.experiment import headline, run

    cfg = _mnist1d(data={"val_fraction": 0.0, "order": "fixed"}, train={"epochs": 2})
    result = run(cfg, tmp_path / "run", log=lambda m: None, plots=False)
    X, y = load_mnist1d("train")
    data = result.experiment.data
    assert data.val is None and result.experiment.val is None
    assert np.array_equal(data.train[0], X) and np.array_equal(data.train[1], y)  # all 4,000, stored order
    m = result.metrics
    assert (m["n_train"], m["n_val"], m["n_test"]) == (4000, 0, 1000)
    assert not any(k.startswith("val_") for k in m) and 0.0 <= m["test_accuracy"] <= 1.0
    assert all(not any(k.startswith("val_") for k in row) for row in result.history)
    assert result.experiment.trainer.step_count == 2 * 40
    assert headline(m) == f"test accuracy {m['test_accuracy']:.4f}"
    assert evaluate_run(tmp_path / "run") == {k: v for k, v in m.items() if k.startswith("test_")}


def test_the_lab_refuses_val_fraction_zero_before_any_folder_exists(tmp_path):
    """Sweeps rank and ablations measure on the validation split: none to rank on is refused up front."""
    from tricklab.experiment import check_model
    from tricklab.lab import grid
    from tricklab.lab.ablate import run_ablation
    from tricklab.lab.sweep import run_sweep

    cfg = _mnist1d(data={"val_fraction": 0.0})
    with pytest.raises(config.ConfigError, match=r"^data.val_fraction = 0.0 holds out no validation split"):
        check_model(cfg)
    with pytest.raises(config.ConfigError, match=r"data.val_fraction = 0.0 holds out no validation split"):
        run_sweep(cfg, grid.make_space(["optimizer.lr=0.1,0.01"]), out=tmp_path / "sweep", workers=1,
                  log=lambda m: None)
    with pytest.raises(config.ConfigError, match=r"data.val_fraction = 0.0 holds out no validation split"):
        run_ablation(cfg, ["dropout"], seeds=1, out=tmp_path / "ablation", workers=1, log=lambda m: None)
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "ablation").exists()
    check_model(_mnist1d())  # a validation split: accepted
