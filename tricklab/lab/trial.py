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

import json
from pathlib import Path

from .. import config as config_
from ..experiment import run
from ..train.history import read_history
from ..train.runlock import hold_run_folder


def _finished(run_dir: Path, cfg: dict, score_test: bool) -> dict | None:
    """The stored result if ``run_dir`` holds this very configuration, finished."""
    try:
        same = (run_dir / "config.toml").read_text() == config_.dumps(cfg)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        history = read_history(run_dir)
    except (OSError, ValueError):
        return None
    if not same or (score_test and not any(k.startswith("test_") for k in metrics)):
        return None
    return {"history": history, "metrics": metrics, "reused": True}


def run_trial(cfg: dict, run_dir: str | Path, score_test: bool = False, callbacks=()) -> dict:
    """Train ``cfg`` in ``run_dir`` through :func:`tricklab.experiment.run` (resuming if it holds
    checkpoints); returns history and metrics. The folder is held, waiting for an orphaned worker
    of a killed sweep to let go of it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with hold_run_folder(run_dir, wait=True):
        done = _finished(run_dir, cfg, score_test)
        if done is not None:
            return done
        if (run_dir / "config.toml").exists() and (run_dir / "config.toml").read_text() != config_.dumps(cfg):
            raise FileExistsError(f"{run_dir} holds a run of another configuration")
        result = run(cfg, run_dir, resume="auto", callbacks=callbacks, score_test=score_test, progress=False,
                     log=lambda msg: None, plots=False, hold=False)
        return {"history": result.history, "metrics": result.metrics, "reused": False}
