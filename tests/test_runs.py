"""Using a trained run: tricklab.load_run and `tricklab predict` (tricklab/runs.py)."""

from __future__ import annotations

import numpy as np
import pytest

import tricklab
from tests.test_resume_cli import one_error_line
from tricklab import config
from tricklab.cli import main
from tricklab.experiment import train_run
from tricklab.runs import PredictError

QUIET = {"progress": False, "log": lambda m: None, "plots": False}
LAYERS = [{"type": "Linear", "out_features": 6}, {"type": "BatchNorm1d"}, {"type": "ReLU"},
          {"type": "Dropout", "p": 0.3}, {"type": "Linear"}]


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    """A finished classification run on a CSV table with columns a, b, c, label."""
    folder = tmp_path_factory.mktemp("csv_run")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, 3))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0)
    (folder / "d.csv").write_text("a,b,c,label\n" + "".join(f"{r[0]!r},{r[1]!r},{r[2]!r},{t}\n"
                                                             for r, t in zip(x.tolist(), y)))
    cfg = config.resolve({"data": {"name": "csv", "path": str(folder / "d.csv"), "target": "label"},
                          "model": {"layers": LAYERS}, "train": {"epochs": 2, "batch_size": 16}})
    train_run(cfg, folder / "run", **QUIET)
    return folder / "run", x.astype(np.float32)


def test_load_run_gives_the_model_in_eval_mode_the_normalizer_and_the_columns(csv_run):
    run_dir, x = csv_run
    run = tricklab.load_run(run_dir)
    assert run.columns == ["a", "b", "c"] and run.input_shape == (3,) and run.loss == "cross_entropy"
    assert not any(m.training for m in run.model.modules())
    assert run.config == config.load(run_dir / "config.toml")
    expected = run.model(((x - run.normalizer.mean) / run.normalizer.std).astype(np.float32))
    np.testing.assert_allclose(run.predict(x), expected, rtol=1e-6, atol=1e-6)  # normalized by the same float32 ops
    np.testing.assert_array_equal(run.predict_classes(x), run.predict(x).argmax(axis=1))
    assert not any(m.training for m in run.model.modules())  # predict leaves the modes as they were


def test_predict_writes_csv_rows_equal_to_load_run(csv_run, tmp_path, capsys):
    run_dir, x = csv_run
    run = tricklab.load_run(run_dir)
    assert main(["predict", str(run_dir), str(run_dir.parent / "d.csv"), "--out", str(tmp_path / "p.csv"),
                 "--output", "raw", "--batch-size", "7"]) == 0
    assert capsys.readouterr().err == f"90 predictions -> {tmp_path / 'p.csv'}\n"
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "prediction_0,prediction_1,prediction_2" and len(lines) == 91
    table = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    np.testing.assert_array_equal(table, run.predict(x, batch_size=7))


def test_predict_refuses_inputs_of_another_width(csv_run, tmp_path, capsys):
    run_dir, _ = csv_run
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 5)))
    line = one_error_line(capsys, ["predict", str(run_dir), str(tmp_path / "x.npz"), "--out", str(tmp_path / "p.npy")])
    assert line == ("tricklab: error: the run's model reads examples of shape (3,) (3 values); got inputs of shape "
                    "(4, 5)")
    assert not (tmp_path / "p.npy").exists()
    with pytest.raises(PredictError):
        tricklab.load_run(run_dir).predict(np.zeros((4, 5)))


def test_predict_refuses_a_csv_without_the_runs_columns(csv_run, tmp_path, capsys):
    run_dir, _ = csv_run
    (tmp_path / "x.csv").write_text("a,b,d\n1,2,3\n")
    line = one_error_line(capsys, ["predict", str(run_dir), str(tmp_path / "x.csv"), "--out", str(tmp_path / "p.npy")])
    assert f"{tmp_path / 'x.csv'}: no column 'c'" in line and "the model reads the columns a, b, c" in line


def test_predict_refuses_an_output_file_of_another_kind(csv_run, tmp_path, capsys):
    run_dir, _ = csv_run
    line = one_error_line(capsys, ["predict", str(run_dir), str(run_dir.parent / "d.csv"), "--out",
                                   str(tmp_path / "p.txt")])
    assert line == f"tricklab: error: --out {tmp_path / 'p.txt'}: write predictions to a .npy or a .csv file"


def test_regression_has_no_classes(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 2)).astype(np.float32)
    np.savez(tmp_path / "r.npz", x_train=x, y_train=x.sum(axis=1))
    cfg = config.resolve({"data": {"name": "npz", "path": str(tmp_path / "r.npz")}, "loss": {"name": "mse"},
                          "model": {"layers": [{"type": "Linear"}]}, "train": {"epochs": 1, "batch_size": 16}})
    train_run(cfg, tmp_path / "run", **QUIET)
    run = tricklab.load_run(tmp_path / "run")
    with pytest.raises(PredictError, match="has no classes"):
        run.predict_classes(x)
    np.savez(tmp_path / "inputs.npz", x=x)
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "inputs.npz"), "--out", str(tmp_path / "p.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), run.predict(x))  # the predicted values
