"""A sweep killed with SIGKILL mid-run and started again loses nothing and counts nothing twice."""

import json
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

GRID = ["--grid", "optimizer.lr=0.003,0.01,0.03"]
# epochs of each run: once numba's kernels are compiled a 6-epoch trial took 0.2 s, and the 0.2 s
# poll below missed the moment to kill (one trial complete, another under way) on an idle machine
EPOCHS = 24


def _sweep(cfg, out, env, **kw):
    cmd = [sys.executable, "-m", "tricklab.cli", "sweep", str(cfg), *GRID, "--seeds", "2", "--workers", "2",
           "--out", str(out), "--no-report"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def _trials(db):
    """The study's trials by state, read as any Optuna user would ({} before the study exists)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=db.parent.name, storage=f"sqlite:///{db}").trials
    except Exception:  # not created yet, or being created
        return []


def _histories(trial):
    return [[row["epoch"] for row in r["history"]] for r in trial.user_attrs["runs"]]


def test_kill_9_then_same_command_resumes(tiny_config, tmp_path, subprocess_env):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(tiny_config.read_text().replace("hidden = [32]", "hidden = [128, 128]")
                   .replace("epochs = 3", f"epochs = {EPOCHS}"))
    out, db = tmp_path / "sweep", tmp_path / "sweep" / "sweep.db"
    proc = _sweep(cfg, out, subprocess_env)
    deadline = time.time() + 240
    while time.time() < deadline:
        trials = _trials(db) if db.exists() else []
        states = [t.state.name for t in trials]
        # one trial (both seeds) complete, and the other one's first seed on its way
        if "COMPLETE" in states and any(t.state.name == "RUNNING" and t.intermediate_values for t in trials):
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    else:
        pytest.fail("the sweep did not get a trial done in time")
    proc.send_signal(signal.SIGKILL)  # kill -9 the coordinator only; its workers must notice
    proc.wait()
    before = _trials(db)
    finished = {t.params["optimizer.lr"]: t for t in before if t.state.name == "COMPLETE"}
    unfinished = [t for t in before if t.state.name != "COMPLETE"]
    assert finished and unfinished and all(t.state.name == "RUNNING" for t in unfinished)

    again = _sweep(cfg, out, subprocess_env)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err.decode()
    # a trial killed between the sampler's ask and its owner's record cannot be told from one another
    # coordinator is about to start: it is retried once it has gone GRACE seconds without a heartbeat
    owned = sum("owner" in t.user_attrs for t in unfinished)
    retried = f" ({owned} to retry)" if owned else ""
    assert f"{len(finished)} of 3 trials already done{retried}; running" in err.decode(), err.decode()
    after = _trials(db)
    complete = {t.params["optimizer.lr"]: t for t in after if t.state.name == "COMPLETE"}
    assert sorted(complete) == [0.003, 0.01, 0.03]  # every configuration complete, each once
    assert sum(t.state.name == "COMPLETE" for t in after) == 3
    for lr, t in finished.items():  # finished trials were not run again
        assert (complete[lr].number, complete[lr].datetime_complete, complete[lr].value) == \
               (t.number, t.datetime_complete, t.value)
    for t in unfinished:  # the killed trial failed, and its retry ran in the same run folders
        assert [u.state.name for u in after if u.number == t.number] == ["FAIL"]
        retry = complete[t.params["optimizer.lr"]]
        assert retry.system_attrs["failed_trial"] == t.number
        # a trial asked for just before the kill may not have recorded its folders yet (two workers)
        if "run_dirs" in t.user_attrs:
            assert retry.user_attrs["run_dirs"] == t.user_attrs["run_dirs"]
        assert retry.user_attrs["run_dirs"][0][:9] == f"runs/{t.number:04d}"
    for t in complete.values():
        assert _histories(t) == [list(range(1, EPOCHS + 1))] * 2  # a resumed run has each epoch exactly once
        assert sorted(t.intermediate_values) == list(range(1, 2 * EPOCHS + 1))  # seed k, epoch e: step EPOCHS k + e

    # the interrupted sweep ends with the results of one never interrupted (up to the last bits
    # of BLAS rounding: at most one validation example of the 400 may flip)
    clean = _sweep(cfg, tmp_path / "clean", subprocess_env)
    _, err = clean.communicate(timeout=300)
    assert clean.returncode == 0, err.decode()
    reference = {t.params["optimizer.lr"]: t for t in _trials(tmp_path / "clean" / "sweep.db")}
    for lr, t in complete.items():
        for a, b in zip(t.user_attrs["runs"], reference[lr].user_attrs["runs"]):
            assert a["metrics"]["val_accuracy"] == pytest.approx(b["metrics"]["val_accuracy"], abs=0.0026)
            assert a["metrics"]["val_loss"] == pytest.approx(b["metrics"]["val_loss"], rel=1e-3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 3 and summary["failed"] == 0 and summary["complete"] == 3


def _losing_the_creation_race(monkeypatch, failures: int):
    """study._rdb_storage raising the IntegrityError of a process that lost the race to create the
    tables (as Optuna raises it) ``failures`` times, then opening the database."""
    import sqlalchemy.exc

    from tricklab.lab import study

    real, calls = study._rdb_storage, []

    def flaky(url, heartbeat):
        calls.append(url)
        if len(calls) <= failures:
            raise sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))
        return real(url, heartbeat)

    monkeypatch.setattr(study, "_rdb_storage", flaky)
    monkeypatch.setattr(study.time, "sleep", lambda s: None)
    return study, calls


def test_opening_a_database_another_process_is_creating_tries_again(tmp_path, monkeypatch):
    study, calls = _losing_the_creation_race(monkeypatch, failures=2)
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    storage = study.open_storage(url)
    assert len(calls) == 3 and storage.get_all_studies() == []


def test_a_database_that_never_opens_raises_after_the_attempts(tmp_path, monkeypatch):
    import sqlalchemy.exc

    study, calls = _losing_the_creation_race(monkeypatch, failures=99)
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        study.open_storage(f"sqlite:///{tmp_path / 'sweep.db'}", attempts=4)
    assert len(calls) == 4
