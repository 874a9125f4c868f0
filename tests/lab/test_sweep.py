"""Sweeps select on validation only and score the test split once, for the chosen point."""

import json
from pathlib import Path

import pytest

from tricklab import config as config_
from tricklab.lab import grid
from tricklab.lab.store import Store
from tricklab.lab.sweep import run_sweep, select_best

# Planted scores: lr=0.1 is the best on test but not on validation; lr=0.01 is best on validation.
VAL = {0.001: 0.80, 0.01: 0.90, 0.1: 0.85}
TEST = {0.001: 0.79, 0.01: 0.88, 0.1: 0.95}
TEST_CALLS: list[str] = []


def planted_trial(cfg, run_dir, score_test=False):
    """Stands in for training: validation scores from VAL; never a test score."""
    assert not score_test
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "config.toml").write_text(config_.dumps(cfg))
    lr, seed = cfg["optimizer"]["lr"], cfg["run"]["seed"]
    val = VAL[lr] + 0.001 * seed
    history = [{"epoch": e, "val_accuracy": val - 0.1 / e, "val_loss": 1.0 / e} for e in (1, 2, 3)]
    return {"history": history, "metrics": {"val_accuracy": val, "val_loss": 1 - val, "epochs_run": 3}}


def planted_test(run_dir):
    TEST_CALLS.append(str(run_dir))
    cfg = config_.load(Path(run_dir) / "config.toml")
    return {"val_accuracy": VAL[cfg["optimizer"]["lr"]] + 0.001 * cfg["run"]["seed"],
            "test_accuracy": TEST[cfg["optimizer"]["lr"]]}


def test_the_test_split_never_chooses(tmp_path):
    TEST_CALLS.clear()
    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    space = grid.make_space(["optimizer.lr=0.001,0.01,0.1"])
    summary = run_sweep(cfg, space, out=tmp_path / "sweep", seeds=2, workers=1,
                        trial_fn=f"{__name__}:planted_trial", test_fn=f"{__name__}:planted_test", log=lambda m: None)
    best = summary["best"]
    assert best["params"] == {"optimizer.lr": 0.01}  # not the planted 0.1, best on test
    assert best["val_accuracy"] == pytest.approx(0.9005)
    assert best["test_accuracy"] == pytest.approx(0.88)
    # the test split was scored for the chosen configuration's runs only, once each
    assert sorted(Path(p).name[:7] for p in TEST_CALLS) == ["0001-s0", "0001-s1"]
    # a second start finds everything done and does not score the test split again
    run_sweep(cfg, space, out=tmp_path / "sweep", seeds=2, workers=1,
              trial_fn=f"{__name__}:planted_trial", test_fn=f"{__name__}:planted_test", log=lambda m: None)
    assert len(TEST_CALLS) == 2
    with Store(tmp_path / "sweep" / "sweep.db") as store:
        rows = store.rows()
    assert len(rows) == 6 and all(r["status"] == "done" and r["attempts"] == 1 for r in rows)
    assert all("test_accuracy" not in r["metrics"] for r in rows)


def test_select_best_needs_every_seed_and_breaks_ties_on_loss():
    table = [
        {"point": 0, "seeds": 2, "done": 1, "val_accuracy": 0.99, "val_loss": 0.1},  # incomplete
        {"point": 1, "seeds": 2, "done": 2, "val_accuracy": 0.90, "val_loss": 0.5},
        {"point": 2, "seeds": 2, "done": 2, "val_accuracy": 0.90, "val_loss": 0.3, "test_accuracy": 0.1},
    ]
    assert select_best(table)["point"] == 2


def test_a_real_sweep_on_a_process_pool(tiny_config, tmp_path):
    cfg = config_.load(tiny_config)
    space = grid.make_space(["optimizer.lr=1e-3,1e-2", "model.hidden=[16],[32,32]"])
    out = tmp_path / "sweep"
    summary = run_sweep(cfg, space, out=out, seeds=1, workers=2, log=lambda m: None)
    assert summary["trials"] == 4 and summary["failed"] == 0
    vals = [e["val_accuracy"] for e in summary["table"]]
    assert vals == sorted(vals, reverse=True)
    assert summary["best"]["point"] == summary["table"][0]["point"]
    assert 0.0 <= summary["best"]["test_accuracy"] <= 1.0
    with Store(out / "sweep.db") as store:
        rows = store.rows()
    assert [len(r["history"]) for r in rows] == [3, 3, 3, 3]
    assert all(r["seconds"] > 0 and "val_accuracy" in r["metrics"] and "test_accuracy" not in r["metrics"]
               for r in rows)
    assert len({r["metrics"]["pid"] for r in rows}) >= 2  # ran in the pool's workers
    best_cfg = config_.load(out / "best.toml")
    assert best_cfg["optimizer"]["lr"] == summary["best"]["params"]["optimizer.lr"]
    assert (out / "results.csv").read_text().count("\n") == 5
    doc = json.loads((out / "summary.json").read_text())
    assert doc["best"]["label"] == summary["best"]["label"]


def dying_trial(cfg, run_dir, score_test=False):
    """A trial whose worker process is killed (as by the out-of-memory killer) when lr is 0.1."""
    import os
    import signal

    if cfg["optimizer"]["lr"] == 0.1:
        os.kill(os.getpid(), signal.SIGKILL)
    return planted_trial(cfg, run_dir, score_test)


def test_a_dead_worker_fails_its_trial_and_the_sweep_goes_on(tmp_path):
    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    space = grid.make_space(["optimizer.lr=0.1,0.001,0.01"])
    summary = run_sweep(cfg, space, out=tmp_path / "sweep", seeds=1, workers=2, trial_fn=f"{__name__}:dying_trial",
                        test_fn=f"{__name__}:planted_test", log=lambda m: None)
    assert summary["best"]["params"] == {"optimizer.lr": 0.01}
    with Store(tmp_path / "sweep" / "sweep.db") as store:
        status = {r["params"]["optimizer.lr"]: r["status"] for r in store.rows()}
    assert status[0.1] == "failed" and status[0.01] == "done"
    assert summary["failed"] >= 1


def test_a_second_search_in_the_same_folder_is_refused_and_the_first_kept(tmp_path):
    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    kw = dict(out=tmp_path / "sweep", workers=1, trial_fn=f"{__name__}:planted_trial",
              test_fn=f"{__name__}:planted_test", log=lambda m: None)
    run_sweep(cfg, grid.make_space(["optimizer.lr=0.1,0.01"]), **kw)
    summary = (tmp_path / "sweep" / "summary.json").read_text()
    for space, seeds in ((["optimizer.lr=0.01,0.001"], 1), (["optimizer.lr=0.1,0.01"], 2)):
        with pytest.raises(config_.ConfigError, match=r"^--out .*sweep holds another sweep \(.*choose another --out"):
            run_sweep(cfg, grid.make_space(space), seeds=seeds, **kw)
    with pytest.raises(config_.ConfigError, match="holds another sweep"):
        from tricklab.lab.ablate import run_ablation

        run_ablation(cfg, ["batchnorm"], seeds=1, out=kw["out"], workers=1, trial_fn=kw["trial_fn"], log=kw["log"])
    assert (tmp_path / "sweep" / "summary.json").read_text() == summary
    with Store(tmp_path / "sweep" / "sweep.db") as store:
        assert sorted(r["params"]["optimizer.lr"] for r in store.rows()) == [0.01, 0.1]
    # the same search again is a resume, not another search
    again = run_sweep(cfg, grid.make_space(["optimizer.lr=0.1,0.01"]), **kw)
    assert [e["params"]["optimizer.lr"] for e in again["table"]] == [0.01, 0.1]


@pytest.mark.parametrize("workers", [0, -2])
def test_workers_must_be_positive(tmp_path, workers):
    from tricklab.lab.ablate import run_ablation

    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    with pytest.raises(config_.ConfigError, match=f"^--workers must be >= 1 .*got {workers}$"):
        run_sweep(cfg, grid.make_space(["optimizer.lr=0.1,0.01"]), out=tmp_path / "s", workers=workers,
                  trial_fn=f"{__name__}:planted_trial", log=lambda m: None)
    with pytest.raises(config_.ConfigError, match=f"^--workers must be >= 1 .*got {workers}$"):
        run_ablation(cfg, ["batchnorm"], out=tmp_path / "a", workers=workers, trial_fn=f"{__name__}:planted_trial",
                     log=lambda m: None)
    assert not (tmp_path / "s").exists() and not (tmp_path / "a").exists()


def test_a_run_name_that_leaves_the_folder_is_refused_before_any_folder_exists(tiny_config, tmp_path, monkeypatch,
                                                                               capsys):
    from tricklab.cli import main

    monkeypatch.chdir(tmp_path)  # the default folder is runs/sweep-NAME-HASH under the working directory
    for argv in (["--set", "run.name=../../x"], ["--grid", 'run.name="ok","../../x"']):
        assert main(["sweep", str(tiny_config), *argv, "--workers", "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tricklab: error: run.name") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]
