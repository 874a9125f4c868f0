"""Hyperparameter search on held-out data: the lecture's last step of setting up a problem.

Every trial trains on the training split and is scored on the validation split only. The
configurations (points) are ranked by their validation accuracy averaged over seeds; the best
one, and only it, is then scored once on the test split, and reported beside its validation
score. Results go into ``sweep.db`` in the sweep folder as each trial finishes, so a sweep killed
at any moment and started again with the same command runs only what is unfinished.

A sweep folder holds::

    sweep.db          the results store (see store.py)
    runs/NNNN-sK-ID/  one run folder per trial (point NNNN, seed K, the trial's id)
    summary.json      the table sorted by validation score, the best point, its test score
    best.toml         the best configuration (seed of its first run)
    results.csv       one row per point
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np

from .. import config as config_
from ..train.checkpoint import atomic_write_bytes
from . import grid as grid_
from .backends import Task, make_backend
from .report import mean_sd
from .store import Store, Trial

TRIAL_FN = "tricklab.lab.trial:run_trial"
TEST_FN = "tricklab.experiment:evaluate_run"


def make_trials(cfg: dict, points: list[dict], seeds: list[int], labels: list[str] | None = None) -> list[Trial]:
    """One trial per (point, seed), with a validated configuration and a stable id."""
    out = []
    for p, point in enumerate(points):
        for k, seed in enumerate(seeds):
            trial_cfg = grid_.apply(cfg, point, seed)
            tid = grid_.digest(trial_cfg)
            out.append(Trial(id=tid, idx=len(out), point=p, label=labels[p] if labels else grid_.label(point),
                             params=point, seed=seed, config=trial_cfg, run_dir=f"runs/{p:04d}-s{seed}-{tid[:8]}"))
    ids = [t.id for t in out]
    if len(set(ids)) != len(ids):
        raise config_.ConfigError("two trials of this search have the same configuration; "
                                  "check for repeated grid values")
    return out


def check_options(seeds: int, workers: int | None, connect_timeout: float) -> None:
    """Refuse seed and worker counts below one (``workers=None``: the machine's cores), and a
    connection timeout that is not a positive, finite number of seconds."""
    if not 0.0 < connect_timeout < math.inf:
        raise config_.ConfigError(f"--connect-timeout must be a positive number of seconds, got {connect_timeout}")
    if seeds < 1:
        raise config_.ConfigError(f"--seeds must be >= 1, got {seeds}")
    if workers is not None and workers < 1:
        raise config_.ConfigError(f"--workers must be >= 1 (trials at once; leave it out for one per core), "
                                  f"got {workers}")


def claim_folder(store: Store, kind: str, trial_ids: list[str]) -> None:
    """Refuse a store that holds another search, whose trials and summary this one would mix with its own.

    A search is its kind and the ids of its trials, in order (base configuration, points and seeds);
    the same command again has the same ones, and resumes.
    """
    meta = store.meta()
    if "trial_ids" in meta and (meta.get("kind"), meta["trial_ids"]) != (kind, trial_ids):
        raise config_.ConfigError(
            f"--out {store.path.parent} holds another {meta.get('kind', 'search')} "
            f"({meta.get('command') or 'started from Python'}); choose another --out for this {kind}, "
            "or run that command again to resume it")


def run_trials(store: Store, trials: list[Trial], backend, fn: str = TRIAL_FN, score_test: bool = False,
               log=print) -> dict:
    """Run every trial of ``trials`` that is not done yet; record each as it finishes."""
    store.add(trials)
    stored = {r["id"]: r for r in store.rows(ids=[t.id for t in trials])}
    todo = [t for t in trials if stored[t.id]["status"] != "done"]
    root = store.path.parent
    log(f"{len(trials) - len(todo)} of {len(trials)} trials already done; running {len(todo)} "
        f"on the {backend.name} backend")
    by_id = {t.id: t for t in trials}
    counts = {"done": 0, "failed": 0}

    def on_start(task: Task, worker: str):
        store.start(task.key, worker)

    def on_done(task: Task, out: dict):
        res = out["result"]
        store.finish(task.key, res["history"], {**res["metrics"], "worker": out["worker"]}, out["seconds"])
        counts["done"] += 1
        t = by_id[task.key]
        log(f"[{counts['done'] + counts['failed']}/{len(todo)}] {t.label} seed {t.seed}: "
            f"val accuracy {res['metrics']['val_accuracy']:.4f} ({out['seconds']:.1f}s)")

    def on_fail(task: Task, error: str):
        store.fail(task.key, error)
        counts["failed"] += 1
        t = by_id[task.key]
        log(f"[{counts['done'] + counts['failed']}/{len(todo)}] {t.label} seed {t.seed}: FAILED\n{error}")

    # an earlier command may have run this very trial under another point number: keep its folder
    tasks = [Task(t.id, fn, {"cfg": t.config, "run_dir": str(root / stored[t.id]["run_dir"]), "score_test": score_test})
             for t in todo]
    if tasks:  # nothing left: do not even start the workers (or a Ray cluster)
        backend.run(tasks, on_start, on_done, on_fail)
    return counts


def point_table(rows: list[dict]) -> list[dict]:
    """One entry per point: its parameters and the mean and spread over its finished seeds."""
    points: dict[int, list[dict]] = {}
    for r in rows:
        points.setdefault(r["point"], []).append(r)
    table = []
    for p, rs in points.items():
        done = [r for r in rs if r["status"] == "done"]
        entry = {"point": p, "label": rs[0]["label"], "params": rs[0]["params"], "seeds": len(rs),
                 "done": len(done), "run_dirs": [r["run_dir"] for r in done]}
        for key in ("val_accuracy", "val_loss", "test_accuracy", "epochs_run"):
            vals = [r["metrics"][key] for r in done if key in (r["metrics"] or {})]
            if vals:
                entry[key] = float(np.mean(vals))
                entry[f"{key}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        entry["seconds"] = float(sum(r["seconds"] or 0.0 for r in done))
        table.append(entry)
    return table


def select_best(table: list[dict]) -> dict:
    """The point with the highest mean validation accuracy over all its seeds (ties: lower
    validation loss, then the earlier point). Test scores are never consulted."""
    complete = [e for e in table if e["done"] == e["seeds"] and "val_accuracy" in e]
    if not complete:
        raise RuntimeError("no configuration finished all its seeds; nothing to select")
    return min(complete, key=lambda e: (-e["val_accuracy"], e.get("val_loss", 0.0), e["point"]))


def default_out(kind: str, cfg: dict, what: dict) -> Path:
    """A folder named after the command's content, so the same command finds the same folder."""
    return Path("runs") / f"{kind}-{cfg['run']['name']}-{grid_.digest({'cfg': cfg, **what})[:8]}"


def run_sweep(cfg: dict, space: grid_.Space, out: str | Path | None = None, seeds: int = 1, workers: int | None = None,
              backend: str = "local", address: str | None = None, connect_timeout: float = 30.0,
              trial_fn: str = TRIAL_FN, test_fn: str = TEST_FN, command: str = "", log=None) -> dict:
    """Search ``space`` around ``cfg``; select on validation; score the best on test once."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_options(seeds, workers, connect_timeout)
    points = space.points()
    seed_list = [cfg["run"]["seed"] + k for k in range(seeds)]
    trials = make_trials(cfg, points, seed_list)
    out = Path(out) if out else default_out("sweep", cfg, {"space": space.to_json(), "seeds": seeds})
    out.mkdir(parents=True, exist_ok=True)
    log(f"sweep: {len(points)} configurations x {seeds} seeds = {len(trials)} trials -> {out}")
    with Store(out / "sweep.db") as store:
        claim_folder(store, "sweep", [t.id for t in trials])
        store.set_meta(kind="sweep", base_config=config_.dumps(cfg), space=space.to_json(), seeds=seed_list,
                       command=command, trial_ids=[t.id for t in trials])
        counts = run_trials(store, trials, make_backend(backend, workers, address, connect_timeout), fn=trial_fn,
                            log=log)
        rows = store.rows(ids=[t.id for t in trials])
        table = sorted(point_table(rows), key=lambda e: -e.get("val_accuracy", -1.0))
        best = select_best(table)
        final = store.meta().get("final")
        if not final or final.get("point") != best["point"] or final.get("run_dirs") != best["run_dirs"]:
            final = final_test(out, best, test_fn, log)
            store.set_meta(final=final)
    failed = sum(e["seeds"] - e["done"] for e in table)
    best_cfg = trials[best["point"] * seeds].config
    summary = {"kind": "sweep", "trials": len(trials), "failed": failed, "keys": space.keys,
               "table": table, "best": {**best, **final}, "out": str(out)}
    write_outputs(out, summary, best_cfg)
    n = len(final["run_dirs"])
    log(f"best: {best['label']}: validation accuracy {mean_sd(final['val_accuracy'], final['val_accuracy_std'], n, unit='%')}, "
        f"test accuracy {mean_sd(final['test_accuracy'], final['test_accuracy_std'], n, unit='%')} "
        f"(test scored once, for this configuration only; {n} seed(s))")
    if counts["failed"] or failed:
        log(f"warning: {failed} trial(s) failed; see the error column of {out / 'sweep.db'}; "
            "run the same command again to retry them")
    return summary


def final_test(out: Path, best: dict, test_fn: str, log) -> dict:
    """Score the chosen point's runs on the test split (and their validation split again)."""
    from .backends import resolve

    evaluate = resolve(test_fn)
    scores = [evaluate(out / d) for d in best["run_dirs"]]
    final = {"point": best["point"], "run_dirs": best["run_dirs"], "per_seed": scores}
    for key in ("val_accuracy", "test_accuracy"):
        vals = [s[key] for s in scores]
        final[key] = float(np.mean(vals))
        final[f"{key}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    log(f"scored the chosen configuration on the test split ({len(scores)} run(s))")
    return final


def write_outputs(out: Path, summary: dict, best_cfg: dict) -> None:
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2, default=str) + "\n").encode())
    atomic_write_bytes(out / "best.toml", config_.dumps(best_cfg).encode())
    keys = summary["keys"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["rank", *keys, "val_accuracy", "val_accuracy_std", "val_loss", "epochs_run", "seeds_done", "seconds"])
    for rank, e in enumerate(summary["table"], 1):
        w.writerow([rank, *[json.dumps(e["params"].get(k)) for k in keys], e.get("val_accuracy"),
                    e.get("val_accuracy_std"), e.get("val_loss"), e.get("epochs_run"), e["done"], round(e["seconds"], 2)])
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
