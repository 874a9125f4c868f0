import re

import pytest

from tricklab import config


def test_defaults_are_filled_and_overrides_apply(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[optimizer]\nname = "sgd"\nlr = 0.1\n[model]\nhidden = [32]\n')
    cfg = config.load(path, ["optimizer.momentum=0.9", "model.batchnorm=true", "train.epochs=3"])
    assert cfg["optimizer"] == {**cfg["optimizer"], "name": "sgd", "lr": 0.1, "momentum": 0.9}
    assert cfg["model"]["hidden"] == [32] and cfg["model"]["batchnorm"] is True
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["batch_size"] == 128


def test_round_trip_through_toml(tmp_path):
    cfg = config.resolve({"model": {"hidden": [8, 4]}, "data": {"root": 'a "quoted" path'}})
    path = tmp_path / "resolved.toml"
    path.write_text(config.dumps(cfg))
    assert config.load(path) == cfg


@pytest.mark.parametrize("doc,message", [
    ({"optimzer": {}}, r"unknown section \[optimzer\]; did you mean 'optimizer'\?"),
    ({"optimizer": {"learning_rate": 0.1}}, r"unknown key optimizer.learning_rate"),
    ({"optimizer": {"lr": "fast"}}, r"optimizer.lr must be of type float, got str"),
    ({"optimizer": {"lr": -1.0}}, r"optimizer.lr must be > 0.0"),
    ({"model": {"dropout": 1.0}}, r"model.dropout must be < 1.0"),
    ({"model": {"activation": "rleu"}}, r"model.activation must be one of .*did you mean 'relu'"),
    ({"model": {"hidden": [10, -1]}}, r"model.hidden must be a list of positive integers"),
    ({"train": {"epochs": True}}, r"train.epochs must be of type int"),
])
def test_errors_name_the_key(doc, message):
    with pytest.raises(config.ConfigError, match=message):
        config.resolve(doc)


def test_override_syntax_errors():
    with pytest.raises(config.ConfigError, match="must look like section.key=value"):
        config.apply_overrides({}, ["optimizer.lr"])
    with pytest.raises(config.ConfigError, match="must be section.key"):
        config.apply_overrides({}, ["lr=0.1"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(bad)


def test_parse_value():
    assert config.parse_value("1e-3") == 1e-3
    assert config.parse_value("[64, 64]") == [64, 64]
    assert config.parse_value("true") is True
    assert config.parse_value("adam") == "adam"


FLOAT_KEYS = [f"{s}.{n}" for s, keys in config.SCHEMA.items() for n, k in keys.items() if k.type is float]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("dotted", FLOAT_KEYS)
def test_every_float_key_refuses_nan_and_inf(dotted, value):
    with pytest.raises(config.ConfigError, match=rf"^{dotted} must be a finite number, got {value}$"):
        config.resolve(config.apply_overrides({}, [f"{dotted}={value}"]))


@pytest.mark.parametrize("item", ["optimizer.lr=nan", "regularization.clip_norm=nan", "regularization.max_norm=inf"])
def test_nan_and_inf_overrides_from_the_command_line_are_refused(tmp_path, item):
    path = tmp_path / "c.toml"
    path.write_text("")
    with pytest.raises(config.ConfigError, match=rf"^{item.split('=')[0]} must be a finite number"):
        config.load(path, [item])


def test_negative_seed_is_refused_naming_the_key():
    with pytest.raises(config.ConfigError, match=r"^run.seed must be >= 0, got -1$"):
        config.resolve({"run": {"seed": -1}})
    assert config.resolve({"run": {"seed": 0}})["run"]["seed"] == 0


@pytest.mark.parametrize("name", ["../../x", "..", ".", "/tmp/x", "a/b", "a\\b", "", "x\0y"])
def test_run_name_cannot_leave_the_runs_folder(name):
    with pytest.raises(config.ConfigError, match=r"^run.name must be a plain folder name"):
        config.resolve({"run": {"name": name}})


@pytest.mark.parametrize("name", ["run", "mnist-mlp", "a.b_c 1", "..x"])
def test_plain_run_names_are_accepted(name):
    assert config.resolve({"run": {"name": name}})["run"]["name"] == name


@pytest.mark.parametrize("doc,keys", [
    ({"optimizer": {"name": "sgd", "nesterov": True}}, ["optimizer.nesterov", "optimizer.momentum"]),
    ({"model": {"batchnorm": True}, "train": {"batch_size": 1}}, ["model.batchnorm", "train.batch_size"]),
    ({"optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": True, "damped": True}},
     ["optimizer.nesterov", "optimizer.damped"]),
    ({"optimizer": {"name": "sgd", "momentum": 0.5}, "schedule": {"momentum_end": 0.9}},
     ["schedule.momentum_end = 0.9", "schedule.momentum_epochs"]),
    ({"optimizer": {"name": "sgd", "momentum": 0.5}, "schedule": {"momentum_epochs": 5}},
     ["schedule.momentum_epochs = 5", "schedule.momentum_end"]),
])
def test_combinations_that_cannot_work_are_refused_naming_the_keys(doc, keys):
    with pytest.raises(config.ConfigError) as err:
        config.resolve(doc)
    assert all(k in str(err.value) for k in keys), str(err.value)


@pytest.mark.parametrize("doc,key,chosen", [
    *[({"model": {"hidden": [], name: value}}, f"model.{name}", "model.hidden = []")
      for name, value in [("batchnorm", True), ("dropout", 0.2), ("noise_std", 0.1), ("activity_l1", 1e-4),
                          ("layer", "dropconnect")]],
    *[({"model": {"kind": kind, "hidden": [16], name: value}}, f"model.{name}", f'model.kind = "{kind}"')
      for kind in ("rnn", "lstm")
      for name, value in [("batchnorm", True), ("layer", "shakeout"), ("noise_std", 0.1), ("activity_l1", 1e-4),
                          ("input_dropout", 0.1), ("init", "orthogonal"), ("activation", "tanh")]],
    ({"model": {"kind": "rnn", "hidden": [16], "zoneout_c": 0.2}}, "model.zoneout_c", 'model.kind = "rnn"'),
    ({"model": {"zoneout_h": 0.2}}, "model.zoneout_h", 'model.kind = "mlp"'),
    ({"model": {"zoneout_c": 0.2}}, "model.zoneout_c", 'model.kind = "mlp"'),
    *[({"optimizer": {"name": name, key: value}}, f"optimizer.{key}", f'optimizer.name = "{name}"')
      for name in ("adam", "adamw") for key, value in [("momentum", 0.9), ("nesterov", True), ("damped", True)]],
    *[({"optimizer": {"name": "adam"}, "schedule": {key: value}}, f"schedule.{key}", 'optimizer.name = "adam"')
      for key, value in [("momentum_end", 0.9), ("momentum_epochs", 5)]],
    ({"optimizer": {"name": "rmsprop", "momentum": 0.5, "damped": True}}, "optimizer.damped",
     'optimizer.name = "rmsprop"'),
    *[({"optimizer": {"name": name, key: 0.5}}, f"optimizer.{key}", f'optimizer.name = "{name}"')
      for name in ("sgd", "rmsprop") for key in ("beta1", "beta2")],
    ({"optimizer": {"name": "rmsprop", "momentum": 0.9, "nesterov": True}}, "optimizer.nesterov",
     'optimizer.name = "rmsprop"'),
])
def test_keys_that_do_not_apply_to_the_model_are_refused(doc, key, chosen):
    with pytest.raises(config.ConfigError, match=rf"^{key} = .* does not apply with {re.escape(chosen)}"):
        config.resolve(doc)


@pytest.mark.parametrize("doc", [
    {"model": {"hidden": [], "input_dropout": 0.2, "dropout_scaling": "test"}},
    {"model": {"kind": "lstm", "hidden": [16, 16], "zoneout_h": 0.1, "zoneout_c": 0.2, "dropout": 0.3}},
    {"model": {"kind": "rnn", "hidden": [16], "zoneout_h": 0.1}},
    {"model": {"layer": "shakeout", "batchnorm": True, "dropout": 0.1, "noise_std": 0.1}},
    {"optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": True}},
    {"optimizer": {"name": "rmsprop", "momentum": 0.9}},
    {"optimizer": {"name": "rmsprop", "momentum": 0.5}, "schedule": {"momentum_end": 0.9, "momentum_epochs": 3}},
    {"optimizer": {"name": "sgd", "momentum": 0.5, "damped": True}, "schedule": {"momentum_end": 0.9, "momentum_epochs": 3}},
    {"optimizer": {"name": "adamw", "beta1": 0.8, "beta2": 0.99}},
    {"model": {"batchnorm": True}, "train": {"batch_size": 2}},
    {"train": {"batch_size": 1}},
    {"model": {"dropout": 0.0, "dropout_scaling": "test"}},  # a trick switched off keeps its settings (ablations)
])
def test_keys_that_apply_are_accepted(doc):
    config.resolve(doc)


def test_early_stopping_extras_are_optional_floats_left_out_of_the_toml(tmp_path):
    cfg = config.resolve({})
    e = cfg["early_stopping"]
    assert (e["baseline"], e["stopping_threshold"], e["divergence_threshold"], e["check_finite"]) == (None, None, None, True)
    text = config.dumps(cfg)
    assert "baseline" not in text and "threshold" not in text  # TOML has no null: an unset key is absent
    path = tmp_path / "resolved.toml"
    path.write_text(text)
    assert config.load(path) == cfg
    set_ = config.load(path, ["early_stopping.baseline=0.5", "early_stopping.divergence_threshold=3",
                              "early_stopping.patience=0", "early_stopping.check_finite=false"])
    assert set_["early_stopping"]["divergence_threshold"] == 3.0 and set_["early_stopping"]["patience"] == 0
    path.write_text(config.dumps(set_))
    assert config.load(path) == set_
    assert config.resolve({"early_stopping": {"baseline": None}}) == cfg


@pytest.mark.parametrize("doc,message", [
    ({"early_stopping": {"criterion": "GL", "baseline": 0.5}},
     r'^early_stopping.baseline = 0.5 does not apply with early_stopping.criterion = "GL"'),
    ({"early_stopping": {"stopping_threshold": 0.5, "divergence_threshold": 0.5}},
     r"^early_stopping.stopping_threshold = 0.5 must be below early_stopping.divergence_threshold = 0.5"),
    ({"early_stopping": {"patience": -1}}, r"^early_stopping.patience must be >= 0"),
])
def test_early_stopping_extras_that_cannot_work(doc, message):
    with pytest.raises(config.ConfigError, match=message):
        config.resolve(doc)


def test_val_fraction_zero_means_no_validation_split_and_no_early_stopping():
    assert config.resolve({"data": {"val_fraction": 0}})["data"]["val_fraction"] == 0.0
    with pytest.raises(config.ConfigError, match=r"^data.val_fraction must be >= 0.0, got -0.1"):
        config.resolve({"data": {"val_fraction": -0.1}})
    with pytest.raises(config.ConfigError, match=r"^data.val_fraction must be < 1.0"):
        config.resolve({"data": {"val_fraction": 1.0}})
    with pytest.raises(config.ConfigError, match=r"^early_stopping.enabled = true needs a validation split.*"
                                                 r"data.val_fraction = 0.0"):
        config.resolve({"data": {"val_fraction": 0.0}, "early_stopping": {"enabled": True}})
    config.resolve({"data": {"val_fraction": 0.0}, "early_stopping": {"patience": 3}})  # off: its keys may stay
