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
    with pytest.raises(config_.ConfigError, match=r"^--tricks dropout sets model\.dropout, a key of the hidden = "
                                                  r"\[\.\.\.\] shorthand, .*name the layer class to remove instead "
                                                  r"\(its layers: Linear, BatchNorm1d, ReLU, Dropout\)$"):
        variants(cfg, ["dropout"])
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
