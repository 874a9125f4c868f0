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
