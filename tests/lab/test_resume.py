"""A sweep killed with SIGKILL mid-run and started again loses nothing and counts nothing twice."""

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

GRID = ["--grid", "optimizer.lr=0.003,0.01,0.03"]


def _sweep(cfg, out, env, **kw):
    cmd = [sys.executable, "-m", "tricklab.cli", "sweep", str(cfg), *GRID, "--seeds", "2", "--workers", "2",
           "--out", str(out), "--no-report"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def _rows(db):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        con.row_factory = sqlite3.Row
        return {r["id"]: dict(r) for r in con.execute("SELECT * FROM trials")}
    except sqlite3.OperationalError:  # not created yet
        return {}
    finally:
        con.close()


def test_kill_9_then_same_command_resumes(tiny_config, tmp_path, subprocess_env):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(tiny_config.read_text().replace("hidden = [32]", "hidden = [128, 128]")
                   .replace("epochs = 3", "epochs = 6"))
    out, db = tmp_path / "sweep", tmp_path / "sweep" / "sweep.db"
    proc = _sweep(cfg, out, subprocess_env)
    deadline = time.time() + 240
    while time.time() < deadline:
        rows = _rows(db) if db.exists() else {}
        done = [r for r in rows.values() if r["status"] == "done"]
        if len(done) >= 2 and any(r["status"] == "running" for r in rows.values()):
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    else:
        pytest.fail("the sweep did not get two trials done in time")
    proc.send_signal(signal.SIGKILL)  # kill -9 the coordinator only; its workers must notice
    proc.wait()
    before = _rows(db)
    finished = {i: r for i, r in before.items() if r["status"] == "done"}
    unfinished = [i for i, r in before.items() if r["status"] != "done"]
    assert len(before) == 6 and finished and unfinished

    again = _sweep(cfg, out, subprocess_env)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err.decode()
    assert f"{len(finished)} of 6 trials already done" in err.decode()
    after = _rows(db)
    assert len(after) == 6 and all(r["status"] == "done" for r in after.values())
    for i, r in finished.items():  # finished trials were not run again
        assert (after[i]["finished"], after[i]["attempts"], after[i]["history"]) == \
               (r["finished"], r["attempts"], r["history"])
    for r in after.values():
        epochs = [row["epoch"] for row in json.loads(r["history"])]
        assert epochs == [1, 2, 3, 4, 5, 6]  # a resumed trial has each epoch exactly once

    # the interrupted sweep ends with the results of one never interrupted (up to the last bits
    # of BLAS rounding: at most one validation example of the 400 may flip)
    clean = _sweep(cfg, tmp_path / "clean", subprocess_env)
    _, err = clean.communicate(timeout=300)
    assert clean.returncode == 0, err.decode()
    reference = _rows(tmp_path / "clean" / "sweep.db")
    for i, r in after.items():
        a, b = json.loads(r["metrics"]), json.loads(reference[i]["metrics"])
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=0.0026)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 6 and summary["failed"] == 0
