"""Your own problem end to end: a model as a list of layers, your own npz/csv files, your choice of
loss and metrics, resume after kill -9, and predictions from a run (issue 10's tests).

The data are small synthetic arrays written to tmp_path; the shorthand comparison trains on MNIST-1D
(generated offline). Every run is a few epochs of a few hundred examples.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

import tricklab
from tests.nn.test_spec import ENTRIES
from tests.test_resume_cli import history_without_seconds, model_arrays, one_error_line
from tricklab import config
from tricklab.cli import main
from tricklab.experiment import build, train_run
from tricklab.nn.summary import parameter_count
from tricklab.train.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"progress": False, "log": lambda m: None, "plots": False}
MLP = [{"type": "Linear", "out_features": 8}, {"type": "ReLU"}, {"type": "Linear"}]


# ---------------------------------------------------------------------------- synthetic files
def classes_npz(path: Path, n: int = 120, features: int = 8, test: bool = True, seed: int = 0) -> Path:
    """Three classes from the signs of two features (learnable), float32 rows."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    split = n * 3 // 4
    arrays = {"x_train": x[:split], "y_train": y[:split], "x_test": x[split:], "y_test": y[split:]} if test \
        else {"x_train": x, "y_train": y}
    np.savez(path, **arrays)
    return path


def regression_csv(path: Path, n: int = 100, seed: int = 0, columns=("a", "b", "c", "y")) -> Path:
    """y = a - 2 b + c / 2 + noise, values written with 5 decimals."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.standard_normal(n)
    rows = [",".join(f"{v:.5f}" for v in [*r, t]) for r, t in zip(x, y)]
    path.write_text(",".join(columns) + "\n" + "\n".join(rows) + "\n")
    return path


def read_csv_floats(path: Path) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    return lines[0].split(","), np.array([[float(v) for v in line.split(",")] for line in lines[1:]])


def layers_toml(layers: list[dict]) -> str:
    return "".join("[[model.layers]]\n" + "".join(f"{k} = {config.toml_literal(v)}\n" for k, v in spec.items())
                   for spec in layers)


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def npz_config(data_path: Path, layers_text: str, epochs: int = 1, extra: str = "") -> str:
    return (f'[run]\nseed = 3\n[data]\nname = "npz"\npath = "{data_path}"\n'
            f"[train]\nepochs = {epochs}\nbatch_size = 16\n{extra}\n{layers_text}")


# ---------------------------------------------------------------------------- every layer class
def images_npz(path: Path, n: int = 120, shape=(2, 6, 6), seed: int = 0) -> Path:
    """Three classes from the mean brightness of (C, H, W) images."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape)).astype(np.float32)
    brightness = x.mean(axis=(1, 2, 3))
    y = (brightness > np.quantile(brightness, 1 / 3)).astype(np.int64) + (brightness > np.quantile(brightness, 2 / 3))
    np.savez(path, x_train=x, y_train=y)
    return path


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_layer_class_trains_from_a_toml_entry_through_the_config(tmp_path, name):
    """ENTRIES (tests/nn/test_spec.py) names every class of tricklab.nn; each goes through config.load.
    A 2-d layer reads (C, H, W) images and is followed by a Flatten; the others read rows of 8 features."""
    images = name.endswith("2d")
    data = images_npz(tmp_path / "d.npz") if images else classes_npz(tmp_path / "d.npz")
    rest = [{"type": "Flatten"}, {"type": "Linear"}] if images else [{"type": "Linear"}]
    text = npz_config(data, f"[[model.layers]]\n{ENTRIES[name]}\n" + layers_toml(rest))
    cfg = config.load(write_toml(tmp_path / "c.toml", text))
    assert cfg["model"]["layers"][0] == tomllib.loads(ENTRIES[name])
    metrics = train_run(cfg, tmp_path / "run", **QUIET)
    assert metrics["epochs_run"] == 1 and math.isfinite(metrics["val_loss"])
    model = tricklab.load_run(tmp_path / "run").model
    first = model[0].rnn if name in ("RNN", "LSTM") else model[0]
    assert type(first).__name__ == name
    assert model[-1].out_features == 3  # the read-out's width comes from the data's classes
    for key, value in tomllib.loads(ENTRIES[name]).items():
        stored = getattr(model[0], key, None)  # scalar arguments the layer keeps as attributes of that name
        if key != "type" and isinstance(stored, (bool, int, float, str)):
            assert stored == value, key


CONFIG_ERRORS = [  # (entries, what config.load already says)
    ([{"type": "Linear", "out_features": 8}, {"type": "Dropout", "pp": 0.3}, {"type": "Linear"}],
     "model.layers.1 (Dropout): unknown argument 'pp'; did you mean 'p'?"),
    ([{"type": "Linear", "out_features": 8, "bias": "no"}, {"type": "Linear"}],
     "model.layers.0 (Linear): bias must be of type bool, got str 'no'"),
    ([{"type": "Linear"}, {"type": "ReLU"}, {"type": "Linear", "out_features": 3}],
     "model.layers.0 (Linear): missing required argument 'out_features'"),
    ([{"type": "ReLU"}, {"type": "BatchNrm1d"}, {"type": "Linear"}],
     "model.layers.1: unknown layer type 'BatchNrm1d'; did you mean 'BatchNorm1d'?"),
]
BUILD_ERRORS = [  # (entries, what the build says once the data's shapes are known)
    ([{"type": "Linear", "out_features": 8}, {"type": "Linear", "in_features": 5}],
     "model.layers.1 (Linear): in_features = 5 disagrees with the input, which has 8"),
    ([{"type": "Dropout", "p": 1.5}, {"type": "Linear"}], "model.layers.0 (Dropout): Dropout: p"),
    ([{"type": "Linear", "out_features": 8}, {"type": "ReLU"}, {"type": "Linear", "out_features": 7}],
     "model.layers.2 (Linear): the network ends in examples of shape (7,), but the data needs 3 outputs"),
]


@pytest.mark.parametrize("entries, needle", CONFIG_ERRORS)
def test_a_wrong_argument_is_refused_by_config_load_naming_index_class_and_argument(tmp_path, entries, needle):
    path = write_toml(tmp_path / "c.toml", npz_config(tmp_path / "d.npz", layers_toml(entries)))
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("entries, needle", CONFIG_ERRORS + BUILD_ERRORS)
def test_a_wrong_argument_is_one_error_line_of_tricklab_train(tmp_path, capsys, entries, needle):
    data = classes_npz(tmp_path / "d.npz")
    path = write_toml(tmp_path / "c.toml", npz_config(data, layers_toml(entries)))
    line = one_error_line(capsys, ["train", str(path), "--out", str(tmp_path / "run")])
    assert needle in line
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


# ---------------------------------------------------------------------------- the shorthand is a layer list
SHORTHAND_RUNS = [  # (shorthand keys, their expansion as a user would write it)
    ({"hidden": [16, 8]},
     [{"type": "Linear", "out_features": 16}, {"type": "ReLU"}, {"type": "Linear", "out_features": 8},
      {"type": "ReLU"}, {"type": "Linear"}]),
    ({"hidden": [16, 8], "batchnorm": True, "dropout": 0.2},
     [{"type": "Linear", "out_features": 16}, {"type": "BatchNorm1d"}, {"type": "ReLU"}, {"type": "Dropout", "p": 0.2},
      {"type": "Linear", "out_features": 8}, {"type": "BatchNorm1d"}, {"type": "ReLU"}, {"type": "Dropout", "p": 0.2},
      {"type": "Linear"}]),
    ({"hidden": [12], "input_dropout": 0.1, "dropout": 0.3, "dropout_scaling": "test", "activation": "tanh",
      "noise_std": 0.1},
     [{"type": "Dropout", "p": 0.1, "scaling": "test"}, {"type": "Linear", "out_features": 12}, {"type": "Tanh"},
      {"type": "GaussianNoise", "std": 0.1, "mode": "additive"}, {"type": "Dropout", "p": 0.3, "scaling": "test"},
      {"type": "Linear"}]),
]


@pytest.mark.parametrize("shorthand, layers", SHORTHAND_RUNS)
def test_a_layer_list_mlp_equals_the_shorthand_bit_for_bit(tmp_path, shorthand, layers):
    base = {"run": {"seed": 5}, "data": {"name": "mnist1d", "train_subset": 240},
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "train": {"epochs": 2, "batch_size": 32}}
    a = train_run(config.resolve({**base, "model": shorthand}), tmp_path / "shorthand", **QUIET)
    b = train_run(config.resolve({**base, "model": {"layers": layers}}), tmp_path / "layers", **QUIET)
    weights_a, weights_b = model_arrays(tmp_path / "shorthand"), model_arrays(tmp_path / "layers")
    assert weights_a.keys() == weights_b.keys()
    for k in weights_a:
        np.testing.assert_array_equal(weights_a[k], weights_b[k], err_msg=k)
    assert history_without_seconds(tmp_path / "shorthand") == history_without_seconds(tmp_path / "layers")
    assert a["val_loss"] == b["val_loss"] and a["test_accuracy"] == b["test_accuracy"]
    written = tomllib.loads((tmp_path / "shorthand" / "config.toml").read_text())
    assert written["model"]["layers"] == layers  # the run folder shows the expanded list
    assert written["model"]["hidden"] == shorthand["hidden"]
    assert tomllib.loads((tmp_path / "layers" / "config.toml").read_text())["model"] == {"layers": layers}


# ---------------------------------------------------------------------------- own files: train, kill -9, resume, predict
def _train_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "tricklab.cli", "train", *map(str, args)]


def _killed_and_resumed(tmp_path: Path, cfg_path: Path) -> tuple[Path, Path]:
    """A run trained straight through, and the same run killed with SIGKILL after its first
    checkpoint and resumed (as tests/test_experiment.py does, in subprocesses with one BLAS thread)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_train_cmd(cfg_path, "--out", full), env=env, check=True, capture_output=True)
    proc = subprocess.Popen(_train_cmd(cfg_path, "--out", killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list_checkpoints(killed / "checkpoints") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.npz").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(_train_cmd("--resume", killed), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    return full, killed


def _same_run(a: Path, b: Path) -> None:
    weights_a, weights_b = model_arrays(a), model_arrays(b)
    assert weights_a.keys() == weights_b.keys()
    for k in weights_a:
        np.testing.assert_array_equal(weights_a[k], weights_b[k], err_msg=k)
    assert history_without_seconds(a) == history_without_seconds(b)


def _predict_cli(run: Path, inputs: Path, out: Path, *extra: str) -> None:
    assert main(["predict", str(run), str(inputs), "--out", str(out), *extra]) == 0


def test_npz_classification_run_trains_resumes_after_kill_9_and_predicts(tmp_path):
    data = classes_npz(tmp_path / "d.npz", n=240)
    layers = [{"type": "Linear", "out_features": 32, "bias": False}, {"type": "BatchNorm1d"}, {"type": "ReLU"},
              {"type": "Dropout", "p": 0.2}, {"type": "Linear"}]
    cfg_path = write_toml(tmp_path / "c.toml", npz_config(data, layers_toml(layers), epochs=60,
                                                          extra="[optimizer]\nname = \"sgd\"\nlr = 0.05\n"))
    full, killed = _killed_and_resumed(tmp_path, cfg_path)
    _same_run(full, killed)
    metrics = json.loads((killed / "metrics.json").read_text())
    assert {"val_accuracy", "test_accuracy"} <= metrics.keys() and "val_rmse" not in metrics
    assert metrics["n_test"] == 60  # the archive's own test split
    run = tricklab.load_run(killed)
    x = np.load(data)["x_test"]
    np.savez(tmp_path / "inputs.npz", x=x)
    _predict_cli(killed, tmp_path / "inputs.npz", tmp_path / "classes.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "classes.npy"), run.predict_classes(x))
    _predict_cli(killed, tmp_path / "inputs.npz", tmp_path / "logits.npy", "--output", "raw")
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), run.predict(x))
    _predict_cli(killed, tmp_path / "inputs.npz", tmp_path / "proba.csv", "--output", "proba")
    header, table = read_csv_floats(tmp_path / "proba.csv")
    assert header == ["probability_0", "probability_1", "probability_2"]
    np.testing.assert_array_equal(table, run.predict_proba(x))  # repr of a float64 reads back exactly
    accuracy = float(np.mean(run.predict_classes(x) == np.load(data)["y_test"]))
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-12)


def test_csv_regression_run_reports_rmse_and_r2_resumes_after_kill_9_and_predicts(tmp_path):
    train, test = regression_csv(tmp_path / "train.csv", n=200), regression_csv(tmp_path / "test.csv", n=40, seed=1)
    text = (f'[run]\nseed = 2\n[data]\nname = "csv"\npath = "{train}"\ntarget = "y"\ntest_path = "{test}"\n'
            '[loss]\nname = "mse"\n[optimizer]\nname = "adam"\nlr = 0.01\n[train]\nepochs = 60\nbatch_size = 16\n'
            + layers_toml([{"type": "Linear", "out_features": 32}, {"type": "Tanh"}, {"type": "Linear"}]))
    full, killed = _killed_and_resumed(tmp_path, write_toml(tmp_path / "c.toml", text))
    _same_run(full, killed)
    metrics = json.loads((killed / "metrics.json").read_text())
    assert {"val_rmse", "val_r2", "test_rmse", "test_r2"} <= metrics.keys() and "test_accuracy" not in metrics
    assert metrics["test_r2"] > 0.9  # y is nearly linear in the features: 60 epochs learn it
    run = tricklab.load_run(killed)
    assert run.columns == ["a", "b", "c"] and run.input_shape == (3,)
    header, table = read_csv_floats(test)
    x, y = table[:, :3].astype(np.float32), table[:, 3]
    predicted = run.predict(x)
    assert predicted.shape == (40, 1)
    # The trainer scored the same float32 outputs in batches of another size: equal up to float32 rounding.
    rmse = math.sqrt(np.mean((predicted[:, 0].astype(np.float64) - y) ** 2))
    r2 = 1 - np.sum((predicted[:, 0] - y) ** 2) / np.sum((y - y.mean()) ** 2)
    assert rmse == pytest.approx(metrics["test_rmse"], rel=1e-5)
    assert r2 == pytest.approx(metrics["test_r2"], rel=1e-5)
    # predict reads the run's columns by name, in any order, ignoring the target
    reordered = tmp_path / "inputs.csv"
    reordered.write_text("c,y,a,b\n" + "".join(f"{r[2]!r},0,{r[0]!r},{r[1]!r}\n" for r in table[:, :3].tolist()))
    _predict_cli(killed, reordered, tmp_path / "p.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), predicted)
    _predict_cli(killed, reordered, tmp_path / "p.csv")
    header, values = read_csv_floats(tmp_path / "p.csv")
    assert header == ["prediction"]
    np.testing.assert_array_equal(values, predicted)


def test_npz_images_without_a_test_split_flatten_and_say_a_test_split_was_held_out(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.random((100, 6, 5)).astype(np.float32)
    y = (x[:, :3].mean(axis=(1, 2)) > x[:, 3:].mean(axis=(1, 2))).astype(np.int64)
    np.savez(tmp_path / "images.npz", x_train=x, y_train=y)
    layers = [{"type": "Flatten"}, {"type": "Linear", "out_features": 8}, {"type": "ReLU"}, {"type": "Linear"}]
    cfg = config.load(write_toml(tmp_path / "c.toml", npz_config(tmp_path / "images.npz", layers_toml(layers),
                                                                  epochs=2, extra="[augmentation]\nrotation = 10.0\n")))
    logs = []
    metrics = train_run(cfg, tmp_path / "run", progress=False, log=logs.append, plots=False)
    notes = [m for m in logs if "has no test split" in m]
    assert notes == [f"{tmp_path / 'images.npz'} has no test split: held out 20 of its 100 training rows as the "
                     "test set (test_fraction=0.2, seed=0)"]
    assert metrics["n_test"] == 20 and metrics["n_train"] + metrics["n_val"] == 80
    run = tricklab.load_run(tmp_path / "run")
    assert run.input_shape == (6, 5) and run.model[1].in_features == 30 and run.model[-1].out_features == 2
    np.savez(tmp_path / "inputs.npz", x=x[:7])
    _predict_cli(tmp_path / "run", tmp_path / "inputs.npz", tmp_path / "p.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), run.predict_classes(x[:7]))
    np.testing.assert_array_equal(run.predict(x[:7]), run.predict(x[:7].reshape(7, 30)))  # rows or images


def test_bce_with_logits_trains_on_zero_one_targets(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((160, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    np.savez(tmp_path / "b.npz", x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])
    text = npz_config(tmp_path / "b.npz", layers_toml(MLP), epochs=3, extra='[loss]\nname = "bce_with_logits"\n')
    metrics = train_run(config.load(write_toml(tmp_path / "c.toml", text)), tmp_path / "run", **QUIET)
    assert {"val_accuracy", "test_accuracy"} <= metrics.keys()
    run = tricklab.load_run(tmp_path / "run")
    assert run.model[-1].out_features == 1  # one logit for one 0/1 target
    logits = run.predict(x[120:])
    assert logits.shape == (40, 1)
    np.testing.assert_array_equal(run.predict_classes(x[120:]), (logits > 0).astype(np.int64))
    np.testing.assert_allclose(run.predict_proba(x[120:]), 1 / (1 + np.exp(-logits.astype(np.float64))), rtol=1e-15)
    accuracy = float(np.mean((logits[:, 0] > 0) == y[120:]))
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-12)


# ---------------------------------------------------------------------------- --set on layers, summary
SHORTHAND_TOML = '[run]\nseed = 1\n[data]\nname = "mnist1d"\ntrain_subset = 120\n[model]\nhidden = [16, 8]\n' \
                 'dropout = 0.2\n[train]\nepochs = 1\nbatch_size = 30\n'
# hidden = [16, 8] with dropout: Linear, ReLU, Dropout, Linear, ReLU, Dropout (index 5), Linear
LIST_TOML = '[run]\nseed = 1\n[data]\nname = "mnist1d"\ntrain_subset = 120\n[train]\nepochs = 1\nbatch_size = 30\n' \
            + layers_toml([{"type": "Linear", "out_features": 16}, {"type": "ReLU"}, {"type": "Linear", "out_features": 8},
                           {"type": "Dropout", "p": 0.1}, {"type": "ReLU"}, {"type": "Linear"}])


def test_set_a_layer_argument_on_a_shorthand_config(tmp_path, capsys):
    path = write_toml(tmp_path / "c.toml", SHORTHAND_TOML)
    assert main(["train", str(path), "--set", "model.layers.5.p=0.5", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    written = tomllib.loads((tmp_path / "run" / "config.toml").read_text())["model"]
    assert "hidden" not in written  # the shorthand became its explicit list, one layer changed
    assert [s.get("p") for s in written["layers"]] == [None, None, 0.2, None, None, 0.5, None]
    model = tricklab.load_run(tmp_path / "run").model
    assert (model[2].p, model[5].p) == (0.2, 0.5)


def test_set_a_layer_argument_on_a_run_folders_shorthand_config(tmp_path):
    """config.toml of a shorthand run holds the shorthand keys and their expansion: the override applies once."""
    resolved = write_toml(tmp_path / "resolved.toml", config.dumps(config.load(write_toml(tmp_path / "c.toml",
                                                                                       SHORTHAND_TOML))))
    cfg = config.load(resolved, ["model.layers.5.p=0.5"])
    assert cfg["model"] == {"layers": config.load(tmp_path / "c.toml")["model"]["layers"][:5]
                            + [{"type": "Dropout", "p": 0.5}, {"type": "Linear"}]}


def test_set_a_layer_argument_on_a_layer_list_config(tmp_path, capsys):
    path = write_toml(tmp_path / "c.toml", LIST_TOML)
    assert main(["train", str(path), "--set", "model.layers.3.p=0.5", "--set", "model.layers.2.out_features=6",
                 "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    model = tricklab.load_run(tmp_path / "run").model
    assert model[3].p == 0.5 and model[2].out_features == 6 and model[5].in_features == 6


@pytest.mark.parametrize("item, needle", [
    ("model.dropout=0.5", "model.dropout is a key of the hidden = [...] shorthand, but this configuration lists "
                          "model.layers: set model.layers.N.<argument> instead"),
    ("model.layers.3.pp=0.5", "model.layers.3 (Dropout): unknown argument 'pp'; did you mean 'p'?"),
    ("model.layers.9.p=0.5", "model.layers.9.p: model.layers has no entry 9"),
])
def test_set_a_wrong_key_on_a_layer_list_config_is_refused_naming_it(tmp_path, capsys, item, needle):
    path = write_toml(tmp_path / "c.toml", LIST_TOML)
    with pytest.raises(config.ConfigError) as info:
        config.load(path, [item])
    assert needle in str(info.value)
    assert needle in one_error_line(capsys, ["train", str(path), "--set", item, "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("toml_text, overrides", [(SHORTHAND_TOML, []), (LIST_TOML, ["model.layers.0.out_features=12"])])
def test_summary_prints_the_layers_and_the_total_of_the_built_model(tmp_path, capsys, toml_text, overrides):
    path = write_toml(tmp_path / "c.toml", toml_text)
    assert main(["summary", str(path), *[a for item in overrides for a in ("--set", item)]]) == 0
    lines = capsys.readouterr().out.splitlines()
    cfg = config.load(path, overrides)
    model = build(cfg).model
    rows = [line for line in lines if line[:1].isdigit()]
    assert [row.split()[1].split("(")[0] for row in rows] == [type(layer).__name__ for layer in model]
    assert [int(row.split()[-1].replace(",", "")) for row in rows] == [parameter_count(layer) for layer in model]
    total = parameter_count(model)
    assert lines[-1] == f"total parameters: {total:,} (input (40,))"
    assert total == sum(p.data.size for p in model.parameters()) > 0


def test_summary_of_own_data_reads_the_file_for_its_shapes(tmp_path, capsys):
    data = classes_npz(tmp_path / "d.npz", features=5)
    path = write_toml(tmp_path / "c.toml", npz_config(data, layers_toml(MLP)))
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Linear(in_features=5, out_features=8, bias=True)" in out
    assert "Linear(in_features=8, out_features=3, bias=True)" in out
    assert out.splitlines()[-1] == f"total parameters: {5 * 8 + 8 + 8 * 3 + 3} (input (5,))"


# ---------------------------------------------------------------------------- targets against the loss
def _bad_targets_error(capsys, tmp_path: Path, data_text: str, loss: str) -> str:
    text = (f'[data]\n{data_text}\n[loss]\nname = "{loss}"\n[train]\nepochs = 1\nbatch_size = 16\n'
            + layers_toml(MLP))
    path = write_toml(tmp_path / "c.toml", text)
    line = one_error_line(capsys, ["train", str(path), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
    return line


def test_float_targets_with_cross_entropy_are_refused_naming_the_file_and_row(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.zeros(50)
    y[37] = 0.5
    np.savez(tmp_path / "d.npz", x_train=rng.standard_normal((50, 3)), y_train=y)  # no test split: one is held out
    line = _bad_targets_error(capsys, tmp_path, f'name = "npz"\npath = "{tmp_path / "d.npz"}"', "cross_entropy")
    assert f"{tmp_path / 'd.npz'}: y_train has the non-integer value 0.5 at row 37" in line  # the file's row
    assert "cross_entropy needs integer class labels" in line


def test_float_targets_in_a_csv_with_cross_entropy_name_the_file_line_and_column(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("a,label\n" + "".join(f"{i},{0.5 if i == 37 else i % 2}\n" for i in range(50)))
    line = _bad_targets_error(capsys, tmp_path, f'name = "csv"\npath = "{tmp_path / "d.csv"}"\ntarget = "label"',
                              "cross_entropy")
    assert f"{tmp_path / 'd.csv'}: column 'label' has the non-integer value 0.5 on line 39" in line  # header: line 1


def test_float_test_targets_name_the_test_file(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("a,b,c,label\n" + "".join(f"{i},1,2,{i % 3}\n" for i in range(30)))
    (tmp_path / "test.csv").write_text("a,b,c,label\n0,1,2,1\n0,1,2,2.5\n")
    data = f'name = "csv"\npath = "{tmp_path / "train.csv"}"\ntarget = "label"\ntest_path = "{tmp_path / "test.csv"}"'
    line = _bad_targets_error(capsys, tmp_path, data, "cross_entropy")
    assert f"{tmp_path / 'test.csv'}: column 'label' has the non-integer value 2.5 on line 3" in line


def test_bce_needs_zero_one_targets_naming_the_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2, 1] * 10)
    np.savez(tmp_path / "d.npz", x_train=rng.standard_normal((40, 3)), y_train=y, x_test=np.zeros((2, 3)),
             y_test=np.array([0, 1]))
    line = _bad_targets_error(capsys, tmp_path, f'name = "npz"\npath = "{tmp_path / "d.npz"}"', "bce_with_logits")
    assert f"{tmp_path / 'd.npz'}: y_train has the value 2 at row 2; bce_with_logits needs targets 0 or 1" in line


def test_integer_targets_with_mse_are_regression_targets(tmp_path):
    data = classes_npz(tmp_path / "d.npz")
    text = npz_config(data, layers_toml(MLP), extra='[loss]\nname = "mse"\n')
    metrics = train_run(config.load(write_toml(tmp_path / "c.toml", text)), tmp_path / "run", **QUIET)
    assert "val_rmse" in metrics
    assert tricklab.load_run(tmp_path / "run").model[-1].out_features == 1  # one target, not 3 classes


def test_a_class_found_only_in_the_validation_split_is_one_of_the_models_outputs(tmp_path):
    from tricklab.experiment import prepare_data

    rng = np.random.default_rng(0)
    x = np.column_stack([np.arange(60.0), rng.standard_normal(60)]).astype(np.float32)  # column 0: the row
    y = (x[:, 1] > 0).astype(np.int64)
    doc = {"data": {"name": "npz", "path": str(tmp_path / "d.npz")}, "model": {"layers": MLP},
           "train": {"epochs": 1, "batch_size": 8}}
    np.savez(tmp_path / "d.npz", x_train=x[:50], y_train=y[:50], x_test=x[50:], y_test=y[50:])
    cfg = config.resolve(doc)
    val_rows = prepare_data(cfg, np.random.SeedSequence(0).spawn(3)[0]).val[0][:, 0].astype(int)
    y[val_rows[0]] = 2  # class 2: one validation example, in neither the training nor the test split
    np.savez(tmp_path / "d.npz", x_train=x[:50], y_train=y[:50], x_test=x[50:], y_test=y[50:])
    metrics = train_run(cfg, tmp_path / "run", **QUIET)
    assert 0 <= metrics["val_accuracy"] <= 1
    assert tricklab.load_run(tmp_path / "run").model[-1].out_features == 3


# ---------------------------------------------------------------------------- early stopping by metric name
def test_early_stopping_on_val_rmse_restores_the_best_epoch(tmp_path):
    train = regression_csv(tmp_path / "train.csv", n=120)
    text = (f'[run]\nseed = 1\n[data]\nname = "csv"\npath = "{train}"\ntarget = "y"\n[loss]\nname = "mse"\n'
            '[optimizer]\nname = "sgd"\nlr = 0.3\n[early_stopping]\nenabled = true\nmonitor = "val_rmse"\npatience = 1\n'
            '[train]\nepochs = 30\nbatch_size = 8\n' + layers_toml(MLP))
    logs = []
    metrics = train_run(config.load(write_toml(tmp_path / "c.toml", text)), tmp_path / "run", progress=False,
                        log=logs.append, plots=False)
    history = history_without_seconds(tmp_path / "run")
    rmse = [row["val_rmse"] for row in history]
    best = int(np.argmin(rmse)) + 1
    assert metrics["best_epoch"] == best
    assert metrics["val_rmse"] == pytest.approx(min(rmse), rel=1e-12)  # the restored weights are the best epoch's
    assert metrics["stopped_early"] and best < len(history) < 30  # sgd's large steps overshoot: it stops
    assert any(f"best val_rmse {min(rmse):.4f}" in m for m in logs)


@pytest.mark.parametrize("loss, monitor", [("cross_entropy", "val_rmse"), ("bce_with_logits", "val_r2"),
                                           ("mse", "val_accuracy")])
def test_a_monitor_the_loss_does_not_report_is_refused_naming_the_key(loss, monitor):
    with pytest.raises(config.ConfigError) as info:
        config.resolve({"loss": {"name": loss}, "early_stopping": {"enabled": True, "monitor": monitor}})
    assert f"early_stopping.monitor = {monitor!r} is not reported with loss.name = {loss!r}" in str(info.value)


# ---------------------------------------------------------------------------- resuming checkpoints of other versions
def test_a_checkpoint_written_before_layer_lists_resumes(tmp_path):
    """A run started before model.layers and [loss] existed: its checkpoint's configuration lacks them."""
    from tricklab.train.checkpoint import _digest

    doc = {"run": {"seed": 2}, "data": {"name": "mnist1d", "train_subset": 200}, "model": {"hidden": [8]},
           "train": {"epochs": 3, "batch_size": 50}}
    cfg = config.resolve(doc)
    train_run(cfg, tmp_path / "full", **QUIET)
    train_run(config.set_key(cfg, "train.epochs", 2), tmp_path / "old", **QUIET)
    for path in list_checkpoints(tmp_path / "old" / "checkpoints"):
        ckpt = json.loads(path.read_text())
        saved = ckpt["state"]["extra"]["config"]
        del saved["model"]["layers"], saved["loss"]
        ckpt["state_sha256"] = _digest(ckpt["state"])
        path.write_text(json.dumps(ckpt))
    train_run(cfg, tmp_path / "old", resume=True, **QUIET)
    _same_run(tmp_path / "full", tmp_path / "old")
