"""One trial: train a configuration in its run folder and score it on the validation split.

Its metrics are the trainer's scores as ``val_<name>`` (and ``test_<name>``): loss and accuracy
for classification, loss, rmse and r2 for regression (train/metrics.py).

A trial never looks at the test split unless asked (``score_test=True``, for ablations, which
measure rather than select). A sweep scores the test split once, at the end, for the chosen
configuration only.

The run folder is a normal ``tricklab train`` folder (config.toml, checkpoints/, history.csv,
model.npz, metrics.json), so a trial interrupted mid-way continues from its last checkpoint, and
one that finished just before its sweep was killed is read back instead of trained again.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from .. import config as config_
from ..experiment import build, save_model, write_json
from ..train.checkpoint import atomic_write_bytes


@contextmanager
def _exclusive(run_dir: Path):
    """Hold an exclusive lock on the run folder (a worker orphaned by a killed sweep may still hold it)."""
    with open(run_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _finished(run_dir: Path, cfg: dict, score_test: bool) -> dict | None:
    """The stored result if ``run_dir`` holds this very configuration, finished."""
    try:
        same = (run_dir / "config.toml").read_text() == config_.dumps(cfg)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line]
    except (OSError, ValueError):
        return None
    if not same or (score_test and not any(k.startswith("test_") for k in metrics)):
        return None
    return {"history": history, "metrics": metrics, "reused": True}


def run_trial(cfg: dict, run_dir: str | Path, score_test: bool = False) -> dict:
    """Train ``cfg`` in ``run_dir`` (resuming if it holds checkpoints); returns history and metrics."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(run_dir):
        done = _finished(run_dir, cfg, score_test)
        if done is not None:
            return done
        if (run_dir / "config.toml").exists() and (run_dir / "config.toml").read_text() != config_.dumps(cfg):
            raise FileExistsError(f"{run_dir} holds a run of another configuration")
        atomic_write_bytes(run_dir / "config.toml", config_.dumps(cfg).encode())
        start = time.perf_counter()
        exp = build(cfg, run_dir=run_dir, progress=False, log=lambda msg: None)
        exp.trainer.resume()
        exp.trainer.fit(exp.train_loader, exp.val, epochs=cfg["train"]["epochs"], bn_batches=exp.bn_loader)
        es = exp.trainer.early_stopping
        metrics = {
            **{f"val_{name}": value for name, value in exp.trainer.evaluate(exp.val).items()},
            "epochs_run": exp.trainer.epoch,
            "best_epoch": es.best_epoch if es is not None else exp.trainer.epoch,
            "stopped_early": bool(es is not None and es.stopped_epoch is not None),
            "seconds_training": float(sum(row["seconds"] for row in exp.trainer.history)),
            "seconds_this_session": time.perf_counter() - start,
            "pid": os.getpid(),
        }
        if score_test:
            metrics.update({f"test_{name}": value for name, value in exp.trainer.evaluate(exp.test).items()})
        save_model(run_dir / "model.npz", exp.model, exp.normalizer, exp.input_shape, exp.data.n_outputs,
                   exp.data.columns)
        write_json(run_dir / "metrics.json", metrics)
        return {"history": exp.trainer.history, "metrics": metrics, "reused": False}
