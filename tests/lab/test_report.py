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
    assert _embedded(page, out) == ["curves.png", "heatmap.png", "parallel.png"]
    rows = re.findall(r'<tr[^>]*><td class="num">(\d+)</td><td class="num">([^<]+)</td>', page)
    assert [lr for _, lr in rows] == ["0.01", "0.01", "0.1", "0.1", "0.001", "0.001"]  # by validation score
    assert '<tr class="best"><td class="num">1</td>' in page
    assert "Chosen on validation accuracy alone" in page


def test_sweep_report_with_random_ranges_and_one_key(tmp_path):
    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    out = tmp_path / "one"
    run_sweep(cfg, grid.make_space(["optimizer.lr=0.001,0.01,0.1"]), out=out, workers=1,
              trial_fn="tests.lab.test_sweep:planted_trial", test_fn="tests.lab.test_sweep:planted_test",
              log=lambda m: None)
    assert _embedded(write_report(out).read_text(), out) == ["curves.png", "key.png"]


def test_run_report(tiny_config, tmp_path):
    from tricklab.experiment import train_run

    run = tmp_path / "run"
    train_run(config_.load(tiny_config), run, progress=False, log=lambda m: None, plots=False)
    assert kind_of(run) == "run"
    page = write_report(run).read_text()
    _self_contained(page)
    assert _embedded(page, run) == ["curves.png"]
    assert "test_accuracy" in page


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
