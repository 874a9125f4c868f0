"""Reports: a self-contained page with every figure embedded, for sweeps, ablations and runs."""

import base64
import re

import pytest

from tricklab import config as config_
from tricklab.lab import grid
from tricklab.lab.report import kind_of, write_report
from tricklab.lab.sweep import run_sweep



def _embedded(page: str, folder) -> list[str]:
    names = []
    for png in sorted((folder / "report").glob("*.png")):
        assert base64.b64encode(png.read_bytes()).decode() in page, png.name
        names.append(png.name)
    return names


def _self_contained(page: str) -> None:
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<img" in page and 'src="data:image/png;base64,' in page


def test_sweep_report_has_table_curves_heatmap_and_parallel_coordinates(tmp_path):
    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    space = grid.make_space(["optimizer.lr=0.001,0.01,0.1", "model.dropout=0.0,0.2"])
    out = tmp_path / "sweep"
    run_sweep(cfg, space, out=out, seeds=2, workers=1, trial_fn="tests.lab.test_sweep:planted_trial",
              test_fn="tests.lab.test_sweep:planted_test", log=lambda m: None)
    page = write_report(out).read_text()
    _self_contained(page)
    assert _embedded(page, out) == ["curves.png", "heatmap.png", "parallel.png", "trials.png"]
    rows = re.findall(r'<tr[^>]*><td class="num">(\d+)</td><td class="num">([^<]+)</td>', page)
    assert [lr for _, lr in rows] == ["0.01", "0.01", "0.1", "0.1", "0.001", "0.001"]  # by validation score
    assert '<tr class="best"><td class="num">1</td>' in page
    assert "Chosen on validation accuracy alone" in page
    assert page.count("<td>complete</td>") == 6 and "optuna-dashboard sqlite:///" in page


def test_sweep_report_with_random_ranges_and_one_key(tmp_path):
    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    out = tmp_path / "one"
    run_sweep(cfg, grid.make_space(["optimizer.lr=0.001,0.01,0.1"]), out=out, workers=1,
              trial_fn="tests.lab.test_sweep:planted_trial", test_fn="tests.lab.test_sweep:planted_test",
              log=lambda m: None)
    assert _embedded(write_report(out).read_text(), out) == ["curves.png", "key.png", "trials.png"]


def test_run_report(tiny_config, tmp_path):
    from tricklab.experiment import train_run

    run = tmp_path / "run"
    train_run(config_.load(tiny_config), run, progress=False, log=lambda m: None, plots=False)
    assert kind_of(run) == "run"
    page = write_report(run).read_text()
    _self_contained(page)
    assert _embedded(page, run) == ["curves.png"]
    assert "test_accuracy" in page


def test_run_report_draws_the_probe_when_the_run_has_one(tiny_config, tmp_path):
    from tricklab.experiment import train_run

    run = tmp_path / "run"
    cfg = config_.set_key(config_.load(tiny_config), "logging.probe_every", 5)
    train_run(cfg, run, progress=False, log=lambda m: None, plots=False)
    page = write_report(run).read_text()
    _self_contained(page)
    assert _embedded(page, run) == ["curves.png", "probe.png"] and "Inside the network" in page


@pytest.mark.slow
def test_ablation_report(tiny_config, tmp_path):
    from tricklab.lab.ablate import run_ablation

    out = tmp_path / "ablation"
    run_ablation(config_.load(tiny_config), ["batchnorm", "dropout"], seeds=2, out=out, workers=1,
                 log=lambda m: None)
    page = write_report(out).read_text()
    _self_contained(page)
    assert _embedded(page, out) == ["bars.png", "curves.png"]
    for variant in ("baseline", "+ batchnorm (= full - dropout)", "full - dropout (= + batchnorm)"):
        assert f"<td>{variant}</td>" in page


def test_not_a_lab_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run, sweep"):
        write_report(tmp_path)


def _rows(tests: dict[int, list[float]], epochs: int = 3) -> list[dict]:
    """Finished trials of ablation points: point -> test accuracy of each seed, with short histories."""
    return [{"point": p, "status": "done", "metrics": {"test_accuracy": acc, "val_accuracy": acc, "epochs_run": epochs},
             "history": [{"epoch": e, "val_accuracy": acc - 0.01 * (epochs - e)} for e in range(1, epochs + 1)]}
            for p, accs in tests.items() for acc in accs]


def _integer_ticks(ax) -> bool:
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    return len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


def test_accuracy_bars_start_at_zero():
    from tricklab.lab.ablation_figures import ablation_bars

    # close accuracies, where a cut axis would make 0.4 points look like a factor of two
    fig = ablation_bars(_rows({0: [0.971, 0.973], 1: [0.975, 0.977]}), ["baseline", "+ dropout"])
    (ax,) = fig.axes
    assert ax.get_xlim()[0] == 0.0 and ax.get_xlim()[1] >= 97.7
    assert "cut" not in ax.get_xlabel()


def test_curve_plots_have_integer_epoch_ticks(tmp_path):
    from tricklab.lab.ablation_figures import ablation_curves
    from tricklab.lab.report import sweep_curves
    from tricklab.report.plots import history_figure

    rows = _rows({0: [0.9, 0.91], 1: [0.92]})
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_accuracy": 0.5 + 0.1 * e,
                "val_accuracy": 0.5 + 0.09 * e} for e in (1, 2, 3)]
    figures = {"run": history_figure(history), "ablation": ablation_curves(rows, ["baseline", "+ dropout"], 0.9),
               "sweep": sweep_curves({"table": [{"point": 0, "label": "a", "val_accuracy": 0.9},
                                                {"point": 1, "label": "b", "val_accuracy": 0.92}]}, rows)}
    for name, fig in figures.items():
        for ax in fig.axes:
            assert ax.get_xlabel() == "epoch" and _integer_ticks(ax), (name, list(ax.get_xticks()))


def test_one_seed_shows_the_value_alone_with_n_1(tmp_path):
    from tricklab.lab.ablate import markdown, summarize

    logged = []
    out = tmp_path / "sweep"
    run_sweep(config_.resolve({"data": {"name": "mnist1d"}}), grid.make_space(["optimizer.lr=0.001,0.01"]), out=out,
              seeds=1, workers=1, trial_fn="tests.lab.test_sweep:planted_trial",
              test_fn="tests.lab.test_sweep:planted_test", log=logged.append)
    page = write_report(out).read_text()
    assert "±" not in page and "±" not in "\n".join(logged)
    assert "90.00 (n=1)%" not in page and "validation accuracy 90.00% (n=1)" in page
    assert re.search(r'<td class="num">90\.00 \(n=1\)</td>', page)
    table, target = summarize(_rows({0: [0.9], 1: [0.95, 0.97]}), ["baseline", "+ dropout"])
    md = markdown(table, target)
    baseline = next(line for line in md.splitlines() if line.startswith("| baseline |"))
    assert baseline.startswith("| baseline | 90.00 (n=1) | 90.00 (n=1) |") and "±" not in baseline
    assert "| + dropout | 96.00 ± 1.41 | 96.00 ± 1.41 |" in md  # two seeds keep their spread


def test_a_regression_sweep_report_is_ranked_by_rmse(tmp_path):
    from tests.lab.test_sweep import _regression_sweep

    out = tmp_path / "sweep"
    _regression_sweep(out)
    page = write_report(out).read_text()
    _self_contained(page)
    assert _embedded(page, out) == ["curves.png", "key.png", "trials.png"]
    cell = r'<td class="num">([^<]+)</td>'
    rows = re.findall(r'<tr[^>]*><td class="num">(\d+)</td>' + cell + cell, page)
    assert [(lr, rmse) for _, lr, rmse in rows] == [("0.01", "0.2005 ± 0.0007"), ("0.1", "0.3005 ± 0.0007"),
                                                    ("0.001", "0.5005 ± 0.0007")]
    assert "<th>validation RMSE</th><th>validation loss</th><th>validation R²</th>" in page
    assert "Chosen on validation RMSE alone" in page and "test RMSE 0.2505 ± 0.0007" in page
    assert "accuracy" not in page


def test_a_regression_ablation_of_a_layer_class_report(regression_config, tmp_path):
    from tricklab.lab.ablate import run_ablation

    out = tmp_path / "ablation"
    run_ablation(config_.load(regression_config), ["Dropout", "weight_decay"], seeds=2, out=out, workers=1,
                 trial_fn="tests.lab.test_sweep:planted_regression_trial", log=lambda m: None)
    page = write_report(out).read_text()
    _self_contained(page)
    assert _embedded(page, out) == ["bars.png", "curves.png"]
    assert "<th>validation RMSE</th><th>test RMSE</th><th>epochs to RMSE &lt;= 0.201 (reached)</th>" in page
    layers = "model.layers=[Linear, BatchNorm1d, ReLU, Linear]"
    assert f"<td>baseline</td><td>optimizer.weight_decay=0.0, {layers}</td>" in page
    assert "accuracy" not in page
