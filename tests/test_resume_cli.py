"""``tricklab train --resume``: refuse what cannot be resumed, one process per run folder, extend a finished run."""

from __future__ import annotations

import builtins
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tricklab import config
from tricklab.cli import main
from tricklab.experiment import train_run
from tricklab.train.checkpoint import CheckpointError, list_checkpoints
from tricklab.train.runlock import LOCK_NAME, hold_run_folder

ROOT = Path(__file__).resolve().parents[1]
TINY = {"run": {"seed": 2}, "data": {"name": "mnist1d", "train_subset": 300}, "model": {"hidden": [16]},
        "train": {"epochs": 2, "batch_size": 50}}
QUIET = {"progress": False, "log": lambda m: None, "plots": False}


def one_error_line(capsys, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tricklab: error: "), err
    return lines[0]


def write_config(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(config.dumps(config.resolve(doc)))
    return path


def model_arrays(run_dir: Path) -> dict:
    with np.load(run_dir / "model.npz") as z:
        return {k: z[k] for k in z.files}


def history_without_seconds(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def metrics_without_times(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in m.items() if not k.startswith("seconds")}


# ---------------------------------------------------------------------------- nothing to resume
def _folder_without_checkpoint(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(config.dumps(config.resolve(TINY)))  # a run killed before its first epoch ended
    return run


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    run = _folder_without_checkpoint(tmp_path)
    line = one_error_line(capsys, ["train", "--resume", str(run)])
    assert f"{run / 'checkpoints'} holds no usable checkpoint" in line and "--restart" in line
    assert not (run / "model.npz").exists() and not (run / "checkpoints").exists()


def test_resume_with_only_damaged_checkpoints_is_refused_saying_why(tmp_path, capsys):
    run = tmp_path / "run"
    train_run(config.resolve(TINY), run, **QUIET)
    for path in list_checkpoints(run / "checkpoints"):
        path.with_suffix(".npz").write_bytes(b"garbage")
    (run / "model.npz").unlink()
    line = one_error_line(capsys, ["train", "--resume", str(run)])
    assert "holds no usable checkpoint" in line and "ckpt-000002.npz is corrupted" in line
    assert not (run / "model.npz").exists()


def test_restart_starts_over_explicitly(tmp_path, capsys):
    run = _folder_without_checkpoint(tmp_path)
    assert main(["train", "--resume", str(run), "--restart"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs_run"] == TINY["train"]["epochs"]
    assert [row["epoch"] for row in history_without_seconds(run)] == [1, 2]


def test_restart_needs_resume(tmp_path, capsys):
    line = one_error_line(capsys, ["train", str(write_config(tmp_path, TINY)), "--restart"])
    assert "--restart" in line and "--resume" in line


# ---------------------------------------------------------------------------- one process per folder
def _train_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "tricklab.cli", "train", *map(str, args)]


def test_a_second_train_on_the_same_folder_is_refused_and_a_killed_ones_lock_is_stale(tmp_path):
    cfg = write_config(tmp_path, {**TINY, "train": {"epochs": 100_000, "batch_size": 50}})
    run = tmp_path / "run"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(_train_cmd(cfg, "--out", run), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list_checkpoints(run / "checkpoints") and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second could start"
        second = subprocess.run(_train_cmd("--resume", run), env=env, capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first run ended while the second ran"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert second.returncode != 0
    lines = second.stderr.splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0] == (f"tricklab: error: {run} is in use by another tricklab process (PID {first.pid}, lock file "
                        f"{run / LOCK_NAME}); wait for it to end or choose another --out folder")
    assert (run / LOCK_NAME).read_text() == f"{first.pid}\n"  # the killed process never released it
    with hold_run_folder(run):  # ... and yet it is free
        pass


def test_train_run_holds_the_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with hold_run_folder(run):
        with pytest.raises(FileExistsError, match="in use by another tricklab process"):
            train_run(config.resolve(TINY), run, **QUIET)
    assert not (run / "config.toml").exists()


# ---------------------------------------------------------------------------- extending a finished run
EXTEND = {"run": {"seed": 4}, "data": {"name": "mnist1d", "train_subset": 400},
          "model": {"hidden": [24, 24], "batchnorm": True, "dropout": 0.2},
          "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "schedule": {"name": "step", "step_size": 2},
          "augmentation": {"noise": 0.05}, "early_stopping": {"enabled": True, "patience": 50},
          "train": {"epochs": 5, "batch_size": 40}}


def _same_run(a: Path, b: Path) -> None:
    arrays_a, arrays_b = model_arrays(a), model_arrays(b)
    assert arrays_a.keys() == arrays_b.keys()
    for k in arrays_a:
        np.testing.assert_array_equal(arrays_a[k], arrays_b[k], err_msg=k)
    assert history_without_seconds(a) == history_without_seconds(b)
    assert metrics_without_times(a) == metrics_without_times(b)
    assert (a / "config.toml").read_text() == (b / "config.toml").read_text()


def test_a_finished_run_extended_equals_the_longer_run(tmp_path, capsys):
    cfg = write_config(tmp_path, EXTEND)
    assert main(["train", str(cfg), "--out", str(tmp_path / "scratch")]) == 0
    assert main(["train", str(cfg), "--set", "train.epochs=2", "--out", str(tmp_path / "extended")]) == 0
    assert main(["train", "--resume", str(tmp_path / "extended"), "--set", "train.epochs=5"]) == 0
    err = capsys.readouterr().err
    assert "resumed from" in err and "(epoch 2)" in err
    assert config.load(tmp_path / "extended" / "config.toml")["train"]["epochs"] == 5
    _same_run(tmp_path / "scratch", tmp_path / "extended")


def test_extending_keeps_the_early_stopping_state(tmp_path):
    doc = {**EXTEND, "model": {"hidden": [64]}, "optimizer": {"name": "adam", "lr": 1e-2}, "schedule": {},
           "augmentation": {}, "early_stopping": {"enabled": True, "patience": 2}, "train": {"epochs": 30, "batch_size": 40}}
    cfg = config.resolve(doc)
    stopped = train_run(cfg, tmp_path / "scratch", **QUIET)["epochs_run"]
    assert 3 <= stopped < 30, "the configuration must stop early, some epochs after the start"
    train_run(config.set_key(cfg, "train.epochs", stopped - 1), tmp_path / "extended", **QUIET)
    state = json.loads((tmp_path / "extended" / "checkpoints" / f"ckpt-{stopped - 1:06d}.json").read_text())
    assert state["state"]["callbacks"]["EarlyStopping"]["wait"] >= 1  # part-way into its patience when extended
    train_run(cfg, tmp_path / "extended", resume=True, **QUIET)
    _same_run(tmp_path / "scratch", tmp_path / "extended")


@pytest.mark.parametrize("item", ["optimizer.lr=0.5", "model.hidden=[8]", "train.batch_size=10"])
def test_resume_refuses_any_other_change(tmp_path, capsys, item):
    run = tmp_path / "run"
    train_run(config.resolve(TINY), run, **QUIET)
    before = (run / "config.toml").read_text()
    line = one_error_line(capsys, ["train", "--resume", str(run), "--set", "train.epochs=4", "--set", item])
    key = item.split("=")[0]
    assert f"--set {key}" in line and "only train.epochs" in line
    assert (run / "config.toml").read_text() == before


def test_resume_refuses_fewer_epochs_than_done(tmp_path, capsys):
    run = tmp_path / "run"
    train_run(config.set_key(config.resolve(TINY), "train.epochs", 3), run, **QUIET)
    before = (run / "config.toml").read_text()
    line = one_error_line(capsys, ["train", "--resume", str(run), "--set", "train.epochs=2"])
    assert "train.epochs = 2 is fewer than the 3 epochs" in line
    assert (run / "config.toml").read_text() == before


def test_resume_with_a_config_file_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    train_run(config.resolve(TINY), run, **QUIET)
    line = one_error_line(capsys, ["train", str(write_config(tmp_path, TINY)), "--resume", str(run)])
    assert "config.toml" in line and "CONFIG" in line


def test_a_checkpoint_of_another_configuration_names_the_keys(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = config.resolve(TINY)
    train_run(cfg, run, **QUIET)
    edited = config.dumps(config.set_key(config.set_key(cfg, "optimizer.lr", 0.5), "model.dropout", 0.1))
    (run / "config.toml").write_text(edited)
    line = one_error_line(capsys, ["train", "--resume", str(run)])
    assert "written with another configuration" in line
    assert "model.dropout: 0.0 in the checkpoint, 0.1 in config.toml" in line
    assert "optimizer.lr: 0.001 in the checkpoint, 0.5 in config.toml" in line
    assert (run / "config.toml").read_text() == edited
    with pytest.raises(CheckpointError, match="another configuration"):
        train_run(config.load(run / "config.toml"), run, resume=True, **QUIET)


# ---------------------------------------------------------------------------- folders that cannot be written
def _read_only(monkeypatch, folder: Path) -> None:
    """Every open for writing below ``folder`` fails as on a read-only file system."""
    real_open = builtins.open

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and Path(file).resolve().is_relative_to(folder.resolve()):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)


def test_out_on_a_read_only_folder_names_the_folder_and_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    _read_only(monkeypatch, out)
    with pytest.raises(OSError) as err:
        train_run(config.resolve(TINY), out, **QUIET)
    assert str(err.value).startswith(f"[Errno {errno.EROFS}] cannot write the run folder {out}: Read-only file system")
    assert list(out.iterdir()) == []


def test_a_write_failing_mid_training_names_the_folder_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    from tricklab.train import checkpoint

    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "ckpt-000002.npz":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    run = tmp_path / "run"
    with pytest.raises(OSError, match=rf"^\[Errno {errno.ENOSPC}\] cannot write the run folder {run}: No space left"):
        train_run(config.resolve(TINY), run, **QUIET)
    leftovers = [p.name for p in run.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["ckpt-000001.json"]
