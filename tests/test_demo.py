"""``tricklab demo``: what the two models are, who won, progress, runs/demo, the figure, the report."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tricklab import demo
from tricklab.cli import main


def _no_temporary_folders(*args, **kwargs):
    raise AssertionError("the demo must not write into a temporary folder")


def test_demo_writes_runs_figure_and_report_under_runs_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "mkdtemp", _no_temporary_folders)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: progress bars
    assert main(["demo", "--epochs", "2"]) == 0
    out, err = capsys.readouterr()
    root = tmp_path / "runs" / "demo"
    metrics = {}
    for name in ("plain", "tricks"):
        assert (root / name / "model.npz").is_file() and (root / name / "history.jsonl").is_file()
        metrics[name] = json.loads((root / name / "metrics.json").read_text())
        assert metrics[name]["epochs_run"] == 2
    assert "epoch 1" in err and "epoch 2" in err and "it/s" in err  # tqdm, one bar per epoch
    assert "plain: MLP 512-512-512 ReLU" in out and "SGD" in out
    for trick in ("batch norm", "dropout 0.3", "Adam", "early stopping", "inputs standardized"):
        assert trick in out.split("tricks:")[1].splitlines()[0]
    assert demo.winner_line(metrics["plain"]["test_accuracy"], metrics["tricks"]["test_accuracy"]) in out
    assert (root / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (root / "report.html").read_text()
    assert "comparison.png" in page and "data:image/png;base64," in page
    assert demo.winner_line(metrics["plain"]["test_accuracy"], metrics["tricks"]["test_accuracy"]) in page
    assert "report runs/demo/report.html" in out
    assert main(["report", str(root)]) == 0  # the folder is one `tricklab report` accepts


def test_demo_refuses_to_overwrite_an_earlier_demo(tmp_path, capsys):
    (tmp_path / "demo" / "plain" / "checkpoints").mkdir(parents=True)
    (tmp_path / "demo" / "plain" / "checkpoints" / "ckpt-000001.json").write_text("{}")
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tricklab: error: ") and str(tmp_path / "demo") in lines[0]


@pytest.mark.parametrize("plain, tricks, expected", [
    (0.653, 0.746, "winner: tricks, by 9.3 accuracy points on the test split (74.6% against 65.3%)"),
    (0.80, 0.75, "winner: plain, by 5.0 accuracy points on the test split (80.0% against 75.0%)"),
    (0.70, 0.70, "no winner: both reach 70.0% on the test split"),
    (0.9812, 0.9808, "winner: plain, by 0.04 accuracy points on the test split (98.12% against 98.08%)"),
])
def test_winner_line(plain, tricks, expected):
    assert demo.winner_line(plain, tricks) == expected


def test_describe_names_every_trick_of_the_configuration():
    configs = demo.demo_configs("mnist1d", 60)
    assert demo.describe(configs["plain"]) == ("MLP 512-512-512 ReLU, raw inputs, SGD (step size 0.1, no momentum), "
                                               "no regularization, 60 epochs")
    assert demo.describe(configs["tricks"]) == (
        "MLP 512-512-512 ReLU, inputs standardized per feature on the training split, batch norm before each "
        "activation (statistics recomputed after training), dropout 0.3, Kaiming-uniform init, Adam (step size "
        "0.003, weight decay 0.0001), cosine schedule, gradient clipping at norm 5.0, Gaussian input noise 0.1, "
        "early stopping (patience 20, best weights restored), at most 60 epochs")
    assert "Gaussian input noise" not in demo.describe(demo.demo_configs("mnist", 8)["tricks"])


def test_comparison_figure_puts_both_validation_curves_on_shared_axes():
    histories = {"plain": [{"epoch": e, "val_loss": 2.0 / e, "val_accuracy": 0.1 * e} for e in (1, 2, 3)],
                 "tricks": [{"epoch": e, "val_loss": 1.0 / e, "val_accuracy": 0.2 * e} for e in (1, 2)]}
    fig = demo.comparison_figure(histories, {"plain": 0.25, "tricks": 0.35})
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_shared_x_axes().joined(loss_ax, acc_ax)
    for ax, key in ((loss_ax, "val_loss"), (acc_ax, "val_accuracy")):
        lines = {line.get_label().split(" ")[0]: line for line in ax.get_lines()}
        assert set(lines) == {"plain", "tricks"}
        for name, line in lines.items():
            np.testing.assert_array_equal(line.get_xdata(), [r["epoch"] for r in histories[name]])
            np.testing.assert_array_equal(line.get_ydata(), [r[key] for r in histories[name]])
    assert "test 35.0%" in [line.get_label() for line in acc_ax.get_lines()][1]
    assert all(float(t).is_integer() for t in acc_ax.get_xticks())


def test_a_second_demo_without_out_goes_next_to_the_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert demo.default_root() == Path("runs") / "demo"
    (tmp_path / "runs" / "demo" / "tricks" / "checkpoints").mkdir(parents=True)
    assert demo.default_root() == Path("runs") / "demo-2"
    (tmp_path / "runs" / "demo-2" / "reproduction.json").parent.mkdir(parents=True)
    (tmp_path / "runs" / "demo-2" / "reproduction.json").write_text("{}")
    assert demo.default_root() == Path("runs") / "demo-3"
