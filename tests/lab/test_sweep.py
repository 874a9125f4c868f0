"""Sweeps select on validation only and score the test split once, for the chosen point."""

import json
from pathlib import Path

import pytest

from tricklab import config as config_
from tricklab.lab import grid
from tricklab.lab.sweep import run_sweep, select_best


def study_of(out):
    """The sweep's Optuna study, loaded as any Optuna user would."""
    import optuna

    return optuna.load_study(study_name=Path(out).name, storage=f"sqlite:///{Path(out) / 'sweep.db'}")


def runs_of(out):
    """Every run of every trial of the study in ``out``: (trial, run attributes)."""
    return [(t, r) for t in study_of(out).trials for r in t.user_attrs.get("runs", [])]

# Planted scores: lr=0.1 is the best on test but not on validation; lr=0.01 is best on validation.
VAL = {0.001: 0.80, 0.01: 0.90, 0.1: 0.85}
TEST = {0.001: 0.79, 0.01: 0.88, 0.1: 0.95}
TEST_CALLS: list[str] = []


class FakeTrainer:
    stop_training = False


def replay(history: list[dict], callbacks) -> list[dict]:
    """The epochs of ``history`` as a trainer would run them: each callback's on_epoch_end after
    each row, until one sets stop_training; returns the rows that ran."""
    trainer = FakeTrainer()
    for cb in callbacks:
        cb.set_trainer(trainer)
    ran = []
    for row in history:
        ran.append(row)
        for cb in callbacks:
            cb.on_epoch_end(row["epoch"] - 1, row)
        if trainer.stop_training:
            break
    return ran


def planted_trial(cfg, run_dir, score_test=False, callbacks=()):
    """Stands in for training: validation scores from VAL (or 0.5 + lr for another lr), reported
    to ``callbacks`` epoch by epoch; never a test score."""
    assert not score_test
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "config.toml").write_text(config_.dumps(cfg))
    lr, seed = cfg["optimizer"]["lr"], cfg["run"]["seed"]
    val = VAL.get(lr, 0.5 + lr) + 0.001 * seed
    history = replay([{"epoch": e, "val_accuracy": val - 0.1 / e, "val_loss": 1.0 / e} for e in (1, 2, 3)], callbacks)
    return {"history": history, "metrics": {"val_accuracy": history[-1]["val_accuracy"] + 0.1 / 3 * (len(history) == 3),
                                            "val_loss": 1 - val, "epochs_run": len(history)}}


def planted_test(run_dir):
    TEST_CALLS.append(str(run_dir))
    cfg = config_.load(Path(run_dir) / "config.toml")
    lr = cfg["optimizer"]["lr"]
    return {"val_accuracy": VAL.get(lr, 0.5 + lr) + 0.001 * cfg["run"]["seed"], "test_accuracy": TEST.get(lr, 0.5)}


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
    assert sorted(Path(p).name for p in TEST_CALLS) == sorted(Path(d).name for d in best["run_dirs"])
    assert [Path(d).name[5:7] for d in best["run_dirs"]] == ["s0", "s1"]
    # a second start finds everything done and does not score the test split again
    run_sweep(cfg, space, out=tmp_path / "sweep", seeds=2, workers=1,
              trial_fn=f"{__name__}:planted_trial", test_fn=f"{__name__}:planted_test", log=lambda m: None)
    assert len(TEST_CALLS) == 2
    trials = study_of(tmp_path / "sweep").trials
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)  # none ran twice
    runs = runs_of(tmp_path / "sweep")
    assert len(runs) == 6 and all("test_accuracy" not in r["metrics"] for _, r in runs)


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
    rows = [r for _, r in runs_of(out)]
    assert [len(r["history"]) for r in rows] == [3, 3, 3, 3]
    assert all(r["seconds"] > 0 and "val_accuracy" in r["metrics"] and "test_accuracy" not in r["metrics"]
               for r in rows)
    assert len({r["metrics"]["pid"] for r in rows}) >= 2  # ran in the pool's workers
    # every epoch's validation accuracy went into the study as the trial's intermediate values
    for t in study_of(out).trials:
        assert sorted(t.intermediate_values) == [1, 2, 3]
        assert t.intermediate_values[3] == pytest.approx(t.user_attrs["runs"][0]["history"][-1]["val_accuracy"])
    best_cfg = config_.load(out / "best.toml")
    assert best_cfg["optimizer"]["lr"] == summary["best"]["params"]["optimizer.lr"]
    assert (out / "results.csv").read_text().count("\n") == 5
    doc = json.loads((out / "summary.json").read_text())
    assert doc["best"]["label"] == summary["best"]["label"]


def dying_trial(cfg, run_dir, score_test=False, callbacks=()):
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
    status = {t.params["optimizer.lr"]: t.state.name for t in study_of(tmp_path / "sweep").trials}
    assert status[0.1] == "FAIL" and status[0.01] == "COMPLETE"
    failed = next(t for t in study_of(tmp_path / "sweep").trials if t.state.name == "FAIL")
    assert "a worker process died" in failed.user_attrs["error"]
    assert summary["failed"] >= 1


class TwoArgumentError(Exception):
    """Unpickling calls ``__init__`` with the message alone, so this one cannot cross processes as itself."""

    def __init__(self, what, why):
        super().__init__(f"{what}: {why}")


def raising_trial(cfg, run_dir, score_test=False, callbacks=()):
    if cfg["optimizer"]["lr"] == 0.1:
        raise TwoArgumentError("lr 0.1", "refused by the test")
    return planted_trial(cfg, run_dir, score_test)


def test_an_exception_pickling_cannot_carry_fails_its_trial_with_its_message(tmp_path):
    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    space = grid.make_space(["optimizer.lr=0.1,0.001,0.01"])
    summary = run_sweep(cfg, space, out=tmp_path / "sweep", seeds=1, workers=2, trial_fn=f"{__name__}:raising_trial",
                        test_fn=f"{__name__}:planted_test", log=lambda m: None)
    assert summary["best"]["params"] == {"optimizer.lr": 0.01} and summary["failed"] == 1
    failed = next(t for t in study_of(tmp_path / "sweep").trials if t.state.name == "FAIL")
    error = failed.user_attrs["error"]
    assert "TwoArgumentError: lr 0.1: refused by the test" in error and "worker process died" not in error


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
    assert sorted(t.params["optimizer.lr"] for t in study_of(tmp_path / "sweep").trials) == [0.01, 0.1]
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


# Planted regression scores, lr -> (val_rmse, val_r2): RMSE chooses 0.01, R² chooses 0.1.
REGRESSION = {0.001: (0.50, 0.60), 0.01: (0.20, 0.80), 0.1: (0.30, 0.95)}


def _planted_regression_scores(cfg, split):
    rmse, r2 = REGRESSION[cfg["optimizer"]["lr"]]
    rmse += 0.001 * cfg["run"]["seed"]
    if split == "test":
        rmse, r2 = rmse + 0.05, r2 - 0.05
    return {f"{split}_loss": rmse**2, f"{split}_rmse": rmse, f"{split}_r2": r2}


def planted_regression_trial(cfg, run_dir, score_test=False, callbacks=()):
    """Stands in for training a regression: scores from REGRESSION (and the test split for ablations)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "config.toml").write_text(config_.dumps(cfg))
    val = _planted_regression_scores(cfg, "val")
    history = replay([{"epoch": e, "val_loss": val["val_loss"] + 1 / e, "val_rmse": val["val_rmse"] + 0.1 * (3 - e),
                       "val_r2": val["val_r2"] - 0.1 * (3 - e)} for e in (1, 2, 3)], callbacks)
    test = _planted_regression_scores(cfg, "test") if score_test else {}
    return {"history": history, "metrics": {**val, **test, "epochs_run": 3}}


def planted_regression_test(run_dir):
    TEST_CALLS.append(str(run_dir))
    cfg = config_.load(Path(run_dir) / "config.toml")
    return {**_planted_regression_scores(cfg, "val"), **_planted_regression_scores(cfg, "test")}


def _regression_sweep(out, metric=None, seeds=2):
    cfg = config_.resolve({"data": {"name": "mnist1d"}, "loss": {"name": "mse"}})
    return run_sweep(cfg, grid.make_space(["optimizer.lr=0.001,0.01,0.1"]), out=out, seeds=seeds, workers=1,
                     metric=metric, trial_fn=f"{__name__}:planted_regression_trial",
                     test_fn=f"{__name__}:planted_regression_test", log=lambda m: None)


def test_a_regression_sweep_ranks_by_the_lowest_val_rmse(tmp_path):
    summary = _regression_sweep(tmp_path / "rmse")
    assert summary["metric"] == "val_rmse" and summary["maximize"] is False
    assert [e["params"]["optimizer.lr"] for e in summary["table"]] == [0.01, 0.1, 0.001]
    best = summary["best"]
    assert best["params"] == {"optimizer.lr": 0.01}
    assert best["val_rmse"] == pytest.approx(0.2005) and best["test_rmse"] == pytest.approx(0.2505)
    assert best["test_r2"] == pytest.approx(0.75) and best["val_rmse_std"] == pytest.approx(0.001 / 2**0.5)
    lines = (tmp_path / "rmse" / "results.csv").read_text().splitlines()
    assert lines[0] == ("rank,optimizer.lr,val_rmse,val_rmse_std,val_loss,val_r2,epochs_run,seeds_done,seconds,"
                        "trial,state")
    assert lines[1].endswith(",complete")
    assert lines[1].startswith("1,0.01,0.2005")


def test_the_metric_is_chosen_and_r2_is_maximized(tmp_path):
    summary = _regression_sweep(tmp_path / "r2", metric="val_r2")
    assert summary["metric"] == "val_r2" and summary["maximize"] is True
    assert [e["params"]["optimizer.lr"] for e in summary["table"]] == [0.1, 0.01, 0.001]
    assert summary["best"]["params"] == {"optimizer.lr": 0.1}
    assert summary["best"]["test_r2"] == pytest.approx(0.90)
    # a classification sweep ranked by its validation error (1 - accuracy), lowest first
    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    summary = run_sweep(cfg, grid.make_space(["optimizer.lr=0.001,0.01,0.1"]), out=tmp_path / "error", workers=1,
                        metric="val_error", trial_fn=f"{__name__}:planted_trial", test_fn=f"{__name__}:planted_test",
                        log=lambda m: None)
    assert [e["params"]["optimizer.lr"] for e in summary["table"]] == [0.01, 0.1, 0.001]
    assert summary["best"]["val_error"] == pytest.approx(0.10) and summary["best"]["test_error"] == pytest.approx(0.12)


def test_a_folder_ranked_by_one_metric_is_not_ranked_again_by_another(tmp_path):
    TEST_CALLS.clear()
    _regression_sweep(tmp_path / "s", seeds=1)
    with pytest.raises(config_.ConfigError, match=r"holds this sweep ranked by val_rmse; ranking it by val_r2 needs "
                                                  "another --out"):
        _regression_sweep(tmp_path / "s", metric="val_r2", seeds=1)
    assert len(TEST_CALLS) == 1  # the test split of the configuration R² would choose was never scored


@pytest.mark.parametrize("metric, message", [
    ("val_accuracy", r"^--metric val_accuracy is not reported with loss.name = 'mse'; choose one of "
                     r"\['val_rmse', 'val_loss', 'val_r2'\]$"),
    ("rmse", r"^--metric rmse is not reported .*; did you mean 'val_rmse'\?$"),
    ("test_rmse", r"^--metric test_rmse: configurations are chosen on the validation split only; "
                  r"use --metric val_rmse$"),
])
def test_a_metric_the_runs_do_not_report_is_refused_before_any_folder_exists(tmp_path, metric, message):
    with pytest.raises(config_.ConfigError, match=message):
        _regression_sweep(tmp_path / "s", metric=metric)
    assert not (tmp_path / "s").exists()


def test_a_real_sweep_over_a_layer_argument(layers_config, tmp_path, capsys):
    from tricklab.cli import main

    out = tmp_path / "sweep"
    assert main(["sweep", str(layers_config), "--grid", "model.layers.3.p=0.2,0.5", "--workers", "1",
                 "--set", "train.epochs=1", "--out", str(out), "--no-report"]) == 0
    assert "val accuracy" in capsys.readouterr().err
    trials = study_of(out).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert sorted(t.params["model.layers.3.p"] for t in trials) == [0.2, 0.5]
    for t in trials:
        run_cfg = config_.load(out / t.user_attrs["runs"][0]["run_dir"] / "config.toml")
        assert run_cfg["model"]["layers"][3] == {"type": "Dropout", "p": t.params["model.layers.3.p"]}
    assert (out / "results.csv").read_text().splitlines()[0].startswith("rank,model.layers.3.p,val_accuracy,")


def test_a_real_regression_sweep_scores_rmse_and_r2(regression_config, tmp_path, capsys):
    from tricklab.cli import main

    out = tmp_path / "sweep"
    assert main(["sweep", str(regression_config), "--grid", "optimizer.lr=1e-4,3e-2", "--workers", "1",
                 "--out", str(out), "--no-report"]) == 0
    assert "val rmse" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    rows = [r for _, r in runs_of(out)]
    assert len(rows) == 2
    for r in rows:
        assert {"val_loss", "val_rmse", "val_r2"} <= set(r["metrics"]) and "val_accuracy" not in r["metrics"]
        assert all({"val_rmse", "val_r2"} <= set(row) for row in r["history"])
        assert r["metrics"]["val_loss"] == pytest.approx(r["metrics"]["val_rmse"] ** 2, rel=1e-5)
    rmse = [e["val_rmse"] for e in summary["table"]]
    assert rmse == sorted(rmse) and summary["best"]["point"] == summary["table"][0]["point"]
    assert summary["best"]["test_rmse"] > 0 and summary["best"]["test_r2"] <= 1


def test_a_pruned_trial_stops_early_is_recorded_as_pruned_and_never_chosen(tmp_path):
    # lr -> validation accuracy 0.5 + lr unless planted in VAL; the median pruner (after 5 complete
    # trials) stops a trial whose accuracy at an epoch is below the median of the earlier trials'
    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    lrs = "0.01,0.1,0.001,0.3,0.35,0.02,0.03,0.04,0.05,0.25"
    out = tmp_path / "sweep"
    summary = run_sweep(cfg, grid.make_space([f"optimizer.lr={lrs}"]), out=out, workers=1, pruner="median",
                        trial_fn=f"{__name__}:planted_trial", test_fn=f"{__name__}:planted_test", log=lambda m: None)
    states = {e["params"]["optimizer.lr"]: e["state"] for e in summary["table"]}
    pruned = [lr for lr, s in states.items() if s == "pruned"]
    assert pruned and summary["pruned"] == len(pruned) and summary["complete"] == 10 - len(pruned)
    assert summary["best"]["params"] == {"optimizer.lr": 0.01} and summary["best"]["state"] == "complete"
    assert [e["state"] for e in summary["table"]] == sorted((e["state"] for e in summary["table"]),
                                                            key=["complete", "pruned"].index)
    study = study_of(out)
    for t in study.trials:
        if t.state.name == "PRUNED":  # below the median of the trials before it, at the step it stopped
            step = t.last_step
            earlier = sorted(u.intermediate_values[step] for u in study.trials if u.number < t.number
                             and u.state.name == "COMPLETE")
            assert len(earlier) >= 5 and t.intermediate_values[step] < earlier[len(earlier) // 2]
            assert len(t.user_attrs["runs"][0]["history"]) == step < 3  # training stopped there
            assert t.value == t.intermediate_values[step]
    page = __import__("tricklab.lab.report", fromlist=["write_report"]).write_report(out).read_text()
    assert "pruned at step" in page and "trials.png" in page


def test_the_study_holds_every_trial_with_its_configuration_and_score(tmp_path):
    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    out = tmp_path / "sweep"
    summary = run_sweep(cfg, grid.make_space(["optimizer.lr=0.001,0.01,0.1"]), out=out, seeds=2, workers=1,
                        trial_fn=f"{__name__}:planted_trial", test_fn=f"{__name__}:planted_test", log=lambda m: None)
    study = study_of(out)
    assert study.direction.name == "MAXIMIZE"
    assert {t.params["optimizer.lr"]: t.value for t in study.trials} == pytest.approx(
        {lr: VAL[lr] + 0.0005 for lr in VAL})  # the mean over seeds 0 and 1
    assert study.best_trial.params == summary["best"]["params"]
    assert study.user_attrs["final"]["run_dirs"] == summary["best"]["run_dirs"]
    assert json.loads((out / "study.json").read_text()) == {"storage": None, "study": "sweep"}


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes"])
def test_a_drawing_sampler_is_seeded(tmp_path, sampler):
    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    space = grid.make_space(["model.dropout=0.0,0.1"], ["optimizer.lr=1e-3:1e-1:log"])
    kw = dict(workers=1, sampler=sampler, trials=8, trial_fn=f"{__name__}:planted_trial",
              test_fn=f"{__name__}:planted_test", log=lambda m: None)
    a = run_sweep(cfg, space, out=tmp_path / "a", **kw)
    b = run_sweep(cfg, space, out=tmp_path / "b", **kw)
    assert a["trials"] == 8 and a["sampler"] == sampler
    assert [e["params"] for e in a["table"]] == [e["params"] for e in b["table"]]
    assert all(1e-3 <= e["params"]["optimizer.lr"] <= 1e-1 for e in a["table"])
    c = run_sweep(cfg, space, out=tmp_path / "c", sample_seed=1, **kw)
    assert [e["params"] for e in c["table"]] != [e["params"] for e in a["table"]]
