import json
import tomllib

import pytest

from tricklab import config as config_
from tricklab.lab.ablate import epochs_to, run_ablation, summarize, trick_settings, variants
from tricklab.lab.store import Store

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
    with Store(out / "sweep.db") as store:
        rows = store.rows()
    assert len(rows) == 8 and all("test_accuracy" in r["metrics"] for r in rows)
    for name in ("curves.png", "bars.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| full - input_norm (= + batchnorm) |" in (out / "ablation.md").read_text()
    assert json.loads((out / "summary.json").read_text())["tricks"] == ["batchnorm", "input_norm"]


def test_a_layer_class_is_ablated_by_removing_its_layers(layers_config):
    from tricklab.lab.sweep import make_trials

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
    with Store(out / "sweep.db") as store:
        layers = {r["label"]: [s["type"] for s in tomllib.loads(r["config"])["model"]["layers"]] for r in store.rows()}
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
    from tricklab.lab.sweep import make_trials
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
    with Store(out / "sweep.db") as store:
        configs = {r["label"]: tomllib.loads(r["config"]) for r in store.rows()}
    assert set(configs) == {"baseline", "+ batchnorm"}
    assert [s["type"] for s in configs["baseline"]["model"]["layers"]] == [
        "Conv2d", "ReLU", "MaxPool2d", "Dropout2d", "Flatten", "Dropout", "Linear"]
    assert "bias" not in configs["baseline"]["model"]["layers"][0]
    assert configs["+ batchnorm"]["model"]["layers"][:2] == [
        {"type": "Conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "bias": False}, {"type": "BatchNorm2d"}]
    assert all(c["augmentation"]["rotation"] == 10.0 for c in configs.values())
