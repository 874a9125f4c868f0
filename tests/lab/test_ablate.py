import json
import tomllib
from pathlib import Path

import pytest

from tricklab import config as config_
from tricklab.lab.ablate import epochs_to, make_trials, run_ablation, summarize, trick_settings, variants

def study_of(out):
    """The ablation's Optuna study, loaded as any Optuna user would."""
    import optuna

    return optuna.load_study(study_name=Path(out).name, storage=f"sqlite:///{Path(out) / 'sweep.db'}")


def configs_of(out) -> dict[str, dict]:
    """Variant -> the configuration its trials trained (read from a run folder of each)."""
    return {t.params["variant"]: tomllib.loads((Path(out) / t.user_attrs["run_dir"] / "config.toml").read_text())
            for t in study_of(out).trials}


ALL = ["batchnorm", "dropout", "weight_decay", "clipping", "augmentation", "input_norm", "early_stopping"]


def test_variants_are_baseline_each_alone_full_and_each_removed():
    cfg = config_.resolve({"data": {"name": "mnist"}})
    v = variants(cfg, ALL)
    assert list(v) == ["baseline", *[f"+ {t}" for t in ALL], "full", *[f"full - {t}" for t in ALL]]
    assert v["baseline"]["model.batchnorm"] is False and v["baseline"]["data.normalize"] == "none"
    assert v["baseline"]["augmentation.rotation"] == 0.0 and v["baseline"]["early_stopping.enabled"] is False
    assert v["+ dropout"]["model.dropout"] == 0.3 and v["+ dropout"]["model.batchnorm"] is False
    assert v["full"]["regularization.clip_norm"] == 5.0 and v["full"]["augmentation.rotation"] == 10.0
    assert v["full - clipping"]["regularization.clip_norm"] == 0.0 and v["full - clipping"]["model.batchnorm"] is True
    for name, keys in v.items():  # every variant is a valid configuration
        cfg2 = cfg
        for k, val in keys.items():
            cfg2 = config_.set_key(cfg2, k, val)


def test_tricks_follow_the_data_and_the_configuration():
    m1d = config_.resolve({"data": {"name": "mnist1d"}, "model": {"dropout": 0.5}})
    s = trick_settings(m1d, ["augmentation", "dropout", "input_norm"])
    assert s["augmentation"][0]["augmentation.noise"] == 0.1 and s["augmentation"][0]["augmentation.rotation"] == 0.0
    assert s["dropout"][0]["model.dropout"] == 0.5  # the configuration's own strength
    assert s["input_norm"][0]["data.normalize"] == "per_feature"
    s = trick_settings(m1d, ["weight_decay"], on={"optimizer.weight_decay": 3e-3})
    assert s["weight_decay"] == ({"optimizer.weight_decay": 3e-3}, {"optimizer.weight_decay": 0.0})
    with pytest.raises(config_.ConfigError, match="unknown trick"):
        trick_settings(m1d, ["batchnorm", "mixup"])
    with pytest.raises(config_.ConfigError, match="--on model.dropout"):
        trick_settings(m1d, ["batchnorm"], on={"model.dropout": 0.2})


def test_empty_or_misspelt_tricks_are_refused():
    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    with pytest.raises(config_.ConfigError, match=r"^--tricks names no trick; give one or more of: batchnorm, "):
        trick_settings(cfg, [])
    with pytest.raises(config_.ConfigError, match=r"^--tricks: unknown trick 'batchnrom'; did you mean 'batchnorm'\?"):
        trick_settings(cfg, ["batchnrom", "dropout"])


def test_empty_tricks_through_the_command(tiny_config, tmp_path, capsys):
    from tricklab.cli import main

    for tricks in ("", " , "):
        assert main(["ablate", str(tiny_config), "--tricks", tricks, "--out", str(tmp_path / "a")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tricklab: error: --tricks names no trick") and err.count("\n") == 1
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("target", [1.5, -0.1, 97.0, float("nan")])
def test_target_must_be_an_accuracy(tmp_path, target):
    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    with pytest.raises(config_.ConfigError, match=r"^--target must be a validation accuracy in \[0, 1\]"):
        run_ablation(cfg, ["batchnorm"], seeds=1, out=tmp_path / "a", workers=1, target=target,
                     trial_fn="tests.lab.test_sweep:planted_trial", log=lambda m: None)
    assert not (tmp_path / "a").exists()


def test_epochs_to_target_and_default_target():
    h = [{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2, "val_accuracy": 0.7}, {"epoch": 3, "val_accuracy": 0.65}]
    assert epochs_to(h, 0.6) == 2 and epochs_to(h, 0.8) is None
    rows = [{"point": 0, "status": "done", "history": h, "metrics": {"val_accuracy": 0.65, "test_accuracy": 0.6,
                                                                    "epochs_run": 3}},
            {"point": 0, "status": "done", "history": h[:2], "metrics": {"val_accuracy": 0.7, "test_accuracy": 0.7,
                                                                        "epochs_run": 2}}]
    table, target = summarize(rows, ["baseline"])
    assert target == 0.7  # the best every baseline seed reaches
    assert table[0]["reached_target"] == 2 and table[0]["epochs_to_target"] == 2.0
    assert table[0]["test_accuracy"] == pytest.approx(0.65)


@pytest.mark.slow
def test_a_small_ablation_writes_its_table_and_curves(tiny_config, tmp_path):
    cfg = config_.load(tiny_config)
    out = tmp_path / "ablation"
    summary = run_ablation(cfg, ["batchnorm", "input_norm"], seeds=2, out=out, workers=2, log=lambda m: None)
    names = [e["variant"] for e in summary["table"]]
    assert names == ["baseline", "+ batchnorm", "+ input_norm", "full", "full - batchnorm", "full - input_norm"]
    for e in summary["table"]:
        assert e["seeds"] == 2 and 0 <= e["val_accuracy"] <= 1 and 0 <= e["test_accuracy"] <= 1
    assert summary["table"][0]["reached_target"] == 2
    assert summary["table"][1]["same_as"] == ["full - input_norm"]  # with two tricks, one config, run once
    trials = study_of(out).trials
    assert len(trials) == 8 and all(t.state.name == "COMPLETE" for t in trials)
    assert all("test_accuracy" in t.user_attrs["metrics"] for t in trials)
    for name in ("curves.png", "bars.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| full - input_norm (= + batchnorm) |" in (out / "ablation.md").read_text()
    assert json.loads((out / "summary.json").read_text())["tricks"] == ["batchnorm", "input_norm"]


def test_a_layer_class_is_ablated_by_removing_its_layers(layers_config):
    cfg = config_.load(layers_config)
    v = variants(cfg, ["Dropout", "BatchNorm1d", "weight_decay"])
    types = {name: [spec["type"] for spec in keys["model.layers"]] for name, keys in v.items()}
    assert types["baseline"] == ["Linear", "ReLU", "Linear"]
    assert types["+ Dropout"] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert types["+ BatchNorm1d"] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert types["+ weight_decay"] == types["baseline"] and v["+ weight_decay"]["optimizer.weight_decay"] == 1e-4
    assert types["full"] == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert types["full - Dropout"] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert v["full - weight_decay"]["optimizer.weight_decay"] == 0.0 and types["full - weight_decay"] == types["full"]
    assert v["+ Dropout"]["model.layers"][2] == {"type": "Dropout", "p": 0.1}  # the layer as the configuration has it
    trials = make_trials(cfg, list(v.values()), [0])  # every variant is a valid configuration
    assert trials[0].config["model"]["layers"] == v["baseline"]["model.layers"]
    assert trials[list(v).index("full")].config["model"] == cfg["model"]


def test_layer_class_tricks_that_do_not_apply_are_refused(layers_config):
    cfg = config_.load(layers_config)
    with pytest.raises(config_.ConfigError, match=r"^--tricks: unknown trick 'Dropuot'; did you mean 'Dropout'\?"):
        variants(cfg, ["Dropuot"])
    with pytest.raises(config_.ConfigError, match=r"^--tricks: unknown trick 'GaussianNoise'"):
        variants(cfg, ["GaussianNoise"])  # a layer class, but not in this list
    with pytest.raises(config_.ConfigError, match=r"^--tricks Linear: Linear layers set the widths"):
        variants(cfg, ["Linear"])
    shorthand = config_.resolve({"data": {"name": "mnist1d"}, "model": {"dropout": 0.3}})
    with pytest.raises(config_.ConfigError, match=r"^--tricks Dropout: a layer class is ablated by removing its layers "
                                                  r"from model\.layers, but this configuration uses the hidden"):
        variants(shorthand, ["Dropout"])


def test_epochs_to_target_follow_the_metric_s_direction():
    from tricklab.lab.metric import Metric

    rmse = Metric("val_rmse")
    h = [{"epoch": 1, "val_rmse": 0.9}, {"epoch": 2, "val_rmse": 0.5}, {"epoch": 3, "val_rmse": 0.6}]
    assert epochs_to(h, 0.7, rmse) == 2 and epochs_to(h, 0.4, rmse) is None
    rows = [{"point": 0, "status": "done", "history": h,
             "metrics": {"val_rmse": 0.6, "test_rmse": 0.7, "epochs_run": 3}},
            {"point": 0, "status": "done", "history": h[:1] + [{"epoch": 2, "val_rmse": 0.8}],
             "metrics": {"val_rmse": 0.8, "test_rmse": 0.9, "epochs_run": 2}}]
    table, target = summarize(rows, ["baseline"], metric=rmse)
    assert target == 0.8  # the lowest RMSE every baseline seed reaches
    assert table[0]["epochs_to_target"] == 2.0 and table[0]["test_rmse"] == pytest.approx(0.8)


def test_a_regression_target_is_an_rmse(tmp_path):
    cfg = config_.resolve({"data": {"name": "mnist1d"}, "loss": {"name": "mse"}})
    with pytest.raises(config_.ConfigError, match=r"^--target must be a validation RMSE >= 0, got -0.5$"):
        run_ablation(cfg, ["weight_decay"], seeds=1, out=tmp_path / "a", workers=1, target=-0.5,
                     trial_fn="tests.lab.test_sweep:planted_regression_trial", log=lambda m: None)
    assert not (tmp_path / "a").exists()
    summary = run_ablation(cfg, ["weight_decay"], seeds=1, out=tmp_path / "a", workers=1, target=0.6,
                           trial_fn="tests.lab.test_sweep:planted_regression_trial", log=lambda m: None)
    assert summary["metric"] == "val_rmse" and summary["target"] == 0.6
    # the planted RMSE of lr = 1e-3 falls 0.70, 0.60, 0.50: at or below 0.6 from epoch 2
    assert [(e["epochs_to_target"], e["reached_target"]) for e in summary["table"]] == [(2.0, 1)] * 3
    assert "| variant | validation RMSE | test RMSE | epochs to RMSE <= 0.6 (reached) |" in (
        tmp_path / "a" / "ablation.md").read_text()


def test_a_real_ablation_of_a_layer_class_on_a_regression(regression_config, tmp_path):
    out = tmp_path / "ablation"
    summary = run_ablation(config_.load(regression_config), ["Dropout"], seeds=1, out=out, workers=1,
                           log=lambda m: None)
    assert [e["variant"] for e in summary["table"]] == ["baseline", "+ Dropout", "full"]
    assert summary["metric"] == "val_rmse" and summary["target"] > 0  # the baseline's best RMSE
    for e in summary["table"]:
        assert e["val_rmse"] > 0 and e["test_rmse"] > 0 and e["test_r2"] <= 1
    assert summary["table"][2]["same_as"] == ["+ Dropout"]
    layers = {label: [s["type"] for s in c["model"]["layers"]] for label, c in configs_of(out).items()}
    assert layers == {"baseline": ["Linear", "BatchNorm1d", "ReLU", "Linear"],
                      "+ Dropout": ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]}
    assert "| baseline | " in (out / "ablation.md").read_text()


# --------------------------------------------------------------------------- CNN layer lists
CNN = """
[run]
name = "tiny-cnn"

[data]
name = "mnist"
root = "{root}"
train_subset = 300
test_subset = 200
normalize = "global"

[[model.layers]]
type = "Conv2d"
out_channels = 4
kernel_size = 3
stride = 2
bias = false

[[model.layers]]
type = "BatchNorm2d"

[[model.layers]]
type = "ReLU"

[[model.layers]]
type = "MaxPool2d"
kernel_size = 2

[[model.layers]]
type = "Dropout2d"
p = 0.1

[[model.layers]]
type = "Flatten"

[[model.layers]]
type = "Dropout"
p = 0.2

[[model.layers]]
type = "Linear"

[optimizer]
lr = 0.01

[train]
epochs = 2
batch_size = 50
"""


@pytest.fixture
def cnn_config(tmp_path, mnist_root):
    """A tiny MNIST CNN: 0 Conv2d (bias = false), 1 BatchNorm2d, 2 ReLU, 3 MaxPool2d, 4 Dropout2d,
    5 Flatten, 6 Dropout, 7 Linear; 300 training images, 2 epochs."""
    path = tmp_path / "cnn.toml"
    path.write_text(CNN.format(root=mnist_root))
    return path


def _types(keys: dict) -> list[str]:
    return [spec["type"] for spec in keys["model.layers"]]


def test_every_trick_of_the_shorthand_s_layers_acts_on_a_layer_list():
    from tricklab.lab.ablate import LAYER_TRICKS, TRICKS
    from tricklab.shorthand import SHORTHAND_KEYS

    shorthand = {t for t, keys in TRICKS.items() if any(k.split(".")[1] in SHORTHAND_KEYS for k in keys
                                                        if k.startswith("model."))}
    assert shorthand == set(LAYER_TRICKS) == {"batchnorm", "dropout"}


def test_every_trick_works_on_a_cnn_layer_list(cnn_config):
    from tricklab.experiment import build_model
    import numpy as np

    cfg = config_.load(cnn_config)
    tricks = ["batchnorm", "dropout", "augmentation", "weight_decay", "clipping"]
    v = variants(cfg, tricks)
    every = ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Dropout2d", "Flatten", "Dropout", "Linear"]
    assert _types(v["full"]) == every and v["full"]["model.layers"] == cfg["model"]["layers"]
    assert _types(v["baseline"]) == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear"]
    assert _types(v["+ batchnorm"]) == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Flatten", "Linear"]
    assert _types(v["+ dropout"]) == ["Conv2d", "ReLU", "MaxPool2d", "Dropout2d", "Flatten", "Dropout", "Linear"]
    assert _types(v["full - dropout"]) == _types(v["+ batchnorm"])
    assert _types(v["full - batchnorm"]) == ["Conv2d", "ReLU", "MaxPool2d", "Dropout2d", "Flatten", "Dropout",
                                             "Linear"]
    # without its batch norm the convolution gets its bias back; with it, bias = false as written
    assert "bias" not in v["baseline"]["model.layers"][0] and v["+ batchnorm"]["model.layers"][0]["bias"] is False
    assert v["+ augmentation"]["augmentation.rotation"] == 10.0 and v["+ augmentation"]["augmentation.translation"] == 2.0
    assert v["baseline"]["augmentation.rotation"] == 0.0 and _types(v["+ augmentation"]) == _types(v["baseline"])
    assert v["+ weight_decay"]["optimizer.weight_decay"] == 1e-4 and v["full - weight_decay"]["optimizer.weight_decay"] == 0
    assert v["+ clipping"]["regularization.clip_norm"] == 5.0 and v["baseline"]["regularization.clip_norm"] == 0.0
    trials = make_trials(cfg, list(v.values()), [0])  # every variant is a valid configuration, and builds
    for trial in trials:
        model = build_model(trial.config, (1, 28, 28), 10, np.random.SeedSequence(0))
        assert model(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
    baseline = build_model(trials[0].config, (1, 28, 28), 10, np.random.SeedSequence(0))
    assert baseline[0].bias is not None


def test_layer_tricks_a_cnn_list_cannot_take_are_refused(cnn_config):
    cfg = config_.load(cnn_config)
    with pytest.raises(config_.ConfigError, match=r"^--tricks batchnorm and BatchNorm2d both remove the BatchNorm2d "
                                                  r"layers; name one$"):
        variants(cfg, ["batchnorm", "BatchNorm2d"])
    with pytest.raises(config_.ConfigError, match=r"^--on model\.dropout: on a layer list the dropout trick removes "
                                                  r"its Dropout and Dropout2d layers; set their arguments in "
                                                  r"model\.layers instead$"):
        variants(cfg, ["dropout"], on={"model.dropout": 0.5})
    with pytest.raises(config_.ConfigError, match=r"^--tricks Conv2d: Conv2d layers set the widths"):
        variants(cfg, ["Conv2d"])
    plain = config_.set_key(cfg, "model.layers", [s for s in cfg["model"]["layers"]
                                                  if s["type"] not in ("BatchNorm2d", "Dropout", "Dropout2d")])
    for trick, classes in (("batchnorm", "BatchNorm1d and BatchNorm2d"), ("dropout", "Dropout and Dropout2d")):
        with pytest.raises(config_.ConfigError, match=rf"^--tricks {trick}: on a layer list it removes the {classes} "
                                                      r"layers, but model\.layers has none \(its layers: Conv2d, ReLU, "
                                                      r"MaxPool2d, Flatten, Linear\)$"):
            variants(plain, [trick])
    v = variants(cfg, ["Dropout2d", "batchnorm"])  # a class and a layer trick that remove different layers
    assert _types(v["baseline"]) == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Dropout", "Linear"]


def test_a_real_ablation_of_a_cnn(cnn_config, tmp_path):
    """Batch norm removed from a CNN trained on augmented images (the configuration's own rotation and
    shifts, in both variants): two trials of one epoch on 200 images."""
    out = tmp_path / "ablation"
    cfg = config_.load(cnn_config, ["train.epochs=1", "data.train_subset=200", "data.test_subset=100",
                                    "augmentation.rotation=10.0", "augmentation.translation=2.0"])
    summary = run_ablation(cfg, ["batchnorm"], seeds=1, out=out, workers=1, log=lambda m: None)
    assert [e["variant"] for e in summary["table"]] == ["baseline", "+ batchnorm", "full"]
    for e in summary["table"]:
        assert e["seeds"] == 1 and 0.1 < e["test_accuracy"] <= 1 and e["epochs_run"] == 1
    assert summary["table"][2]["same_as"] == ["+ batchnorm"]
    configs = configs_of(out)
    assert set(configs) == {"baseline", "+ batchnorm"}
    assert [s["type"] for s in configs["baseline"]["model"]["layers"]] == [
        "Conv2d", "ReLU", "MaxPool2d", "Dropout2d", "Flatten", "Dropout", "Linear"]
    assert "bias" not in configs["baseline"]["model"]["layers"][0]
    assert configs["+ batchnorm"]["model"]["layers"][:2] == [
        {"type": "Conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "bias": False}, {"type": "BatchNorm2d"}]
    assert all(c["augmentation"]["rotation"] == 10.0 for c in configs.values())


# --------------------------------------------------------------------------- the study and kill-safety
def failing_weight_decay_trial(cfg, run_dir, score_test=False, callbacks=()):
    """planted_regression_trial, except that a configuration with weight decay raises."""
    from tests.lab.test_sweep import planted_regression_trial

    if cfg["optimizer"]["weight_decay"] > 0:
        raise RuntimeError("boom")
    return planted_regression_trial(cfg, run_dir, score_test, callbacks)


def _planted_ablation(out, trial_fn="tests.lab.test_sweep:planted_regression_trial", log=None, **kw):
    cfg = config_.resolve({"data": {"name": "mnist1d"}, "loss": {"name": "mse"}})
    return run_ablation(cfg, ["weight_decay", "clipping"], seeds=2, out=out, workers=1, trial_fn=trial_fn,
                        log=log or (lambda m: None), **kw)


def test_an_ablation_is_a_study_of_its_variants_and_seeds_and_runs_each_once(tmp_path):
    out = tmp_path / "a"
    first = _planted_ablation(out, command="tricklab ablate x")
    study = study_of(out)
    assert study.direction.name == "MINIMIZE"  # val_rmse
    trials = study.trials
    # 6 variants, 4 distinct configurations ("full - A" is "+ B"), 2 seeds: 8 trials, enqueued in order
    assert [(t.params["variant"], t.params["seed"]) for t in trials] == [
        (v, s) for v in ("baseline", "+ weight_decay", "+ clipping", "full") for s in (0, 1)]
    assert all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:
        assert t.value == pytest.approx(t.user_attrs["metrics"]["val_rmse"]) == pytest.approx(0.5 + 0.001 * t.params["seed"])
        assert t.user_attrs["run_dir"].startswith(f"runs/{t.user_attrs['point']:04d}-s{t.params['seed']}-")
        assert "test_rmse" in t.user_attrs["metrics"] and [r["epoch"] for r in t.user_attrs["history"]] == [1, 2, 3]
        assert (out / t.user_attrs["run_dir"] / "config.toml").exists()
    attrs = study.user_attrs
    assert attrs["kind"] == "ablation" and attrs["tricks"] == ["weight_decay", "clipping"]
    assert attrs["seeds"] == [0, 1] and attrs["metric"] == "val_rmse" and attrs["command"] == "tricklab ablate x"
    assert attrs["variant_points"] == {"baseline": 0, "+ weight_decay": 1, "+ clipping": 2, "full": 3,
                                       "full - weight_decay": 2, "full - clipping": 1}
    assert tomllib.loads(attrs["base_config"])["loss"]["name"] == "mse"

    logged = []
    again = _planted_ablation(out, log=logged.append)  # the same command again: nothing runs twice
    assert "8 of 8 trials already done; running 0 on the local backend" in logged
    assert [(t.number, t.datetime_complete) for t in study_of(out).trials] == \
        [(t.number, t.datetime_complete) for t in trials]
    assert again["table"] == first["table"]


def test_a_failed_trial_is_retried_by_the_next_command_in_its_own_folder(tmp_path):
    out = tmp_path / "a"
    logged = []
    summary = _planted_ablation(out, trial_fn=f"{__name__}:failing_weight_decay_trial", log=logged.append)
    failed = [t for t in study_of(out).trials if t.state.name == "FAIL"]
    assert sorted((t.params["variant"], t.params["seed"]) for t in failed) == [
        ("+ weight_decay", 0), ("+ weight_decay", 1), ("full", 0), ("full", 1)]
    assert all("RuntimeError: boom" in t.user_attrs["error"] for t in failed)
    assert any(line.startswith("[3/8] + weight_decay seed 0: FAILED") for line in logged)
    assert logged[-1].startswith("warning: 4 trial(s) failed")
    assert [(e["variant"], e["seeds"]) for e in summary["table"]][:2] == [("baseline", 2), ("+ weight_decay", 0)]

    logged = []
    summary = _planted_ablation(out, log=logged.append)
    assert "4 of 8 trials already done (4 to retry); running 4 on the local backend" in logged
    trials = study_of(out).trials
    assert len(trials) == 12 and sum(t.state.name == "COMPLETE" for t in trials) == 8
    for t in failed:  # each failed trial failed once, and its retry ran in its run folder
        (retry,) = [u for u in trials if u.system_attrs.get("failed_trial") == t.number]
        assert retry.state.name == "COMPLETE" and retry.params == t.params
        assert retry.user_attrs["run_dir"] == t.user_attrs["run_dir"]
    assert all(e["seeds"] == 2 for e in summary["table"])


def test_a_folder_of_another_search_is_refused_and_kept(tmp_path):
    import sqlite3

    from tricklab.lab import grid
    from tricklab.lab.sweep import run_sweep

    out = tmp_path / "a"
    _planted_ablation(out)
    summary = (out / "summary.json").read_text()
    cfg = config_.resolve({"data": {"name": "mnist1d"}, "loss": {"name": "mse"}})
    with pytest.raises(config_.ConfigError, match=r"^--out .*a holds another ablation \(started from Python\); "
                                                  r"choose another --out for this ablation, or run that command"):
        run_ablation(cfg, ["weight_decay"], seeds=2, out=out, workers=1,
                     trial_fn="tests.lab.test_sweep:planted_regression_trial", log=lambda m: None)
    with pytest.raises(config_.ConfigError, match=r"^--out .*a holds an ablation; choose another --out for this sweep$"):
        run_sweep(cfg, grid.make_space(["optimizer.lr=0.01,0.1"]), out=out, workers=1, log=lambda m: None)
    assert (out / "summary.json").read_text() == summary and len(study_of(out).trials) == 8
    old = tmp_path / "old"  # a folder of the results store from before Optuna
    old.mkdir()
    sqlite3.connect(old / "sweep.db").executescript("CREATE TABLE trials (id TEXT PRIMARY KEY);").close()
    with pytest.raises(config_.ConfigError, match=r"^--out .*old holds a search of the results store from before "
                                                  r"Optuna; choose another --out for this ablation$"):
        _planted_ablation(old)
    assert sorted(p.name for p in old.iterdir()) == ["sweep.db"]


@pytest.mark.slow
def test_kill_9_then_same_command_resumes_every_trial_once(tiny_config, tmp_path, subprocess_env):
    import signal
    import subprocess
    import sys
    import time

    cfg = tmp_path / "cfg.toml"
    cfg.write_text(tiny_config.read_text().replace("hidden = [32]", "hidden = [256, 256]")
                   .replace("epochs = 3", "epochs = 20"))
    out = tmp_path / "ablation"
    cmd = [sys.executable, "-m", "tricklab.cli", "ablate", str(cfg), "--tricks", "weight_decay", "--seeds", "2",
           "--workers", "1", "--out", str(out), "--no-report"]
    proc = subprocess.Popen(cmd, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def checkpointed(t):  # a running trial with an epoch in its history, so with its checkpoint (written first)
        return t.state.name == "RUNNING" and (out / t.user_attrs["run_dir"] / "history.jsonl").exists()

    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            trials = study_of(out).trials
        except Exception:  # not created yet, or being created
            trials = []
        if any(t.state.name == "COMPLETE" for t in trials) and any(checkpointed(t) for t in trials):
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    else:
        pytest.fail("the ablation did not get a trial done in time")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = study_of(out).trials
    finished = {t.params["variant"] + str(t.params["seed"]): t for t in before if t.state.name == "COMPLETE"}
    (killed,) = [t for t in before if t.state.name == "RUNNING"]
    folder = out / killed.user_attrs["run_dir"]
    trained = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]

    again = subprocess.run(cmd, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    assert again.returncode == 0, again.stderr.decode()
    assert f"{len(finished)} of 4 trials already done (1 to retry)" in again.stderr.decode()
    after = study_of(out).trials
    complete = {t.params["variant"] + str(t.params["seed"]): t for t in after if t.state.name == "COMPLETE"}
    assert sorted(complete) == ["+ weight_decay0", "+ weight_decay1", "baseline0", "baseline1"]
    assert sum(t.state.name == "COMPLETE" for t in after) == 4  # every trial once
    for key, t in finished.items():  # finished trials were not run again
        assert (complete[key].number, complete[key].datetime_complete) == (t.number, t.datetime_complete)
    assert [t.state.name for t in after if t.number == killed.number] == ["FAIL"]
    retry = complete[killed.params["variant"] + str(killed.params["seed"])]
    assert retry.system_attrs["failed_trial"] == killed.number and retry.user_attrs["run_dir"] == killed.user_attrs["run_dir"]
    for t in complete.values():
        assert [row["epoch"] for row in t.user_attrs["history"]] == list(range(1, 21))  # each epoch once
    # the retry continued from its checkpoint: the epochs trained before the kill (their timings
    # included) are those it reports
    assert trained and retry.user_attrs["history"][:len(trained)] == trained
    assert all(e["seeds"] == 2 for e in json.loads((out / "summary.json").read_text())["table"])
