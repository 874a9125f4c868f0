"""Hyperparameter search on held-out data: the lecture's last step of setting up a problem.

Every trial trains on the training split and is scored on the validation split only. The
configurations (points) are ranked by a validation metric averaged over seeds (``--metric``; by
default val_accuracy for classification, val_rmse for regression: see metric.py); the best
one, and only it, is then scored once on the test split, and reported beside its validation
score. A sweep folder is ranked by one metric: choosing again by another would look at the test
split of a second configuration. Results go into ``sweep.db`` in the sweep folder as each trial
finishes, so a sweep killed at any moment and started again with the same command runs only what
is unfinished.

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

from .. import config as config_
from ..fileio import atomic_write_bytes
from ..stats import mean_std
from . import grid as grid_
from .backends import Task, make_backend
from .metric import DEFAULTS, Metric, choose
from .store import Store, Trial

TRIAL_FN = "tricklab.lab.trial:run_trial"
TEST_FN = "tricklab.experiment:evaluate_run"


def make_trials(cfg: dict, points: list[dict], seeds: list[int], labels: list[str] | None = None) -> list[Trial]:
    """One trial per (point, seed), with a validated configuration and a stable id."""
    from ..experiment import check_model

    out = []
    for p, point in enumerate(points):
        for k, seed in enumerate(seeds):
            trial_cfg = grid_.apply(cfg, point, seed)
            if k == 0:
                try:
                    check_model(trial_cfg)
                except config_.ConfigError as exc:
                    label = labels[p] if labels else grid_.label(point)
                    raise config_.ConfigError(f"configuration {label}: {exc}") from None
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


def claim_folder(store: Store, kind: str, trial_ids: list[str], metric: Metric | None = None) -> None:
    """Refuse a store that holds another search, whose trials and summary this one would mix with its own.

    A search is its kind and the ids of its trials, in order (base configuration, points and seeds);
    the same command again has the same ones, and resumes. A sweep is also its ranking ``metric``
    (a folder from before metrics were chosen ranked by val_accuracy).
    """
    meta = store.meta()
    if "trial_ids" in meta and (meta.get("kind"), meta["trial_ids"]) != (kind, trial_ids):
        raise config_.ConfigError(
            f"--out {store.path.parent} holds another {meta.get('kind', 'search')} "
            f"({meta.get('command') or 'started from Python'}); choose another --out for this {kind}, "
            "or run that command again to resume it")
    ranked = meta.get("metric", "val_accuracy")
    if metric is not None and "trial_ids" in meta and ranked != metric.name:
        raise config_.ConfigError(
            f"--out {store.path.parent} holds this sweep ranked by {ranked}; ranking it by {metric.name} needs "
            "another --out (the test split is scored once, for the configuration one metric chooses)")


def run_trials(store: Store, trials: list[Trial], backend, fn: str = TRIAL_FN, score_test: bool = False,
               log=print, metric: Metric = Metric()) -> dict:
    """Run every trial of ``trials`` that is not done yet; record each as it finishes (logging ``metric``)."""
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
        value = metric.value(res["metrics"])
        log(f"[{counts['done'] + counts['failed']}/{len(todo)}] {t.label} seed {t.seed}: "
            f"{metric.name.replace('_', ' ')} {'—' if value is None else f'{value:.4f}'} ({out['seconds']:.1f}s)")

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


def scored_keys(scores: list[dict], metric: Metric) -> list[str]:
    """The score keys to average: every val_/test_ score the runs report, in their order, with
    ``metric`` first (derived where it is: val_error from val_accuracy), then epochs_run."""
    keys = [metric.key("val"), metric.key("test")]
    for s in scores:
        keys += [k for k in s if k.startswith(("val_", "test_")) and isinstance(s[k], (int, float))]
    return list(dict.fromkeys(keys + ["epochs_run"]))


def mean_and_std(scores: list[dict], metric: Metric) -> dict:
    """``{key: mean, key_std: sample std (0 for one seed)}`` over ``scores`` for each of their keys."""
    out = {}
    for key in scored_keys(scores, metric):
        split = key.split("_", 1)[0]
        vals = [metric.value(s, split) if key == metric.key(split) else s.get(key) for s in scores]
        vals = [v for v in vals if v is not None]
        if vals:
            out[key], out[f"{key}_std"] = mean_std(vals)
    return out


def point_table(rows: list[dict], metric: Metric = Metric()) -> list[dict]:
    """One entry per point: its parameters and the mean and spread over its finished seeds,
    sorted by ``metric`` (best first; points without it last)."""
    points: dict[int, list[dict]] = {}
    for r in rows:
        points.setdefault(r["point"], []).append(r)
    table = []
    for p, rs in points.items():
        done = [r for r in rs if r["status"] == "done"]
        entry = {"point": p, "label": rs[0]["label"], "params": rs[0]["params"], "seeds": len(rs),
                 "done": len(done), "run_dirs": [r["run_dir"] for r in done]}
        entry.update(mean_and_std([r["metrics"] or {} for r in done], metric))
        entry["seconds"] = float(sum(r["seconds"] or 0.0 for r in done))
        table.append(entry)
    return sorted(table, key=lambda e: metric.rank(e.get(metric.name)))


def select_best(table: list[dict], metric: Metric = Metric()) -> dict:
    """The point with the best mean validation ``metric`` over all its seeds (ties: lower
    validation loss, then the earlier point). Test scores are never consulted."""
    complete = [e for e in table if e["done"] == e["seeds"] and metric.rank(e.get(metric.name)) < math.inf]
    if not complete:
        raise RuntimeError(f"no configuration finished all its seeds with a {metric.name}; nothing to select")
    return min(complete, key=lambda e: (metric.rank(e[metric.name]), e.get("val_loss", 0.0), e["point"]))


def default_out(kind: str, cfg: dict, what: dict) -> Path:
    """A folder named after the command's content, so the same command finds the same folder."""
    return Path("runs") / f"{kind}-{cfg['run']['name']}-{grid_.digest({'cfg': cfg, **what})[:8]}"


def trial_metric(name: str | None, cfg: dict, trials: list[Trial]) -> Metric:
    """The metric ``name`` (None: the default of ``cfg``'s loss), checked to be reported by every trial."""
    return choose(name, [cfg["loss"]["name"]] + [t.config["loss"]["name"] for t in trials])


def run_sweep(cfg: dict, space: grid_.Space, out: str | Path | None = None, seeds: int = 1, workers: int | None = None,
              backend: str = "local", address: str | None = None, connect_timeout: float = 30.0,
              trial_fn: str = TRIAL_FN, test_fn: str = TEST_FN, command: str = "", metric: str | None = None,
              log=None) -> dict:
    """Search ``space`` around ``cfg``; select on the validation ``metric``; score the best on test once."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_options(seeds, workers, connect_timeout)
    space = grid_.bind(space, cfg)
    points = space.points()
    seed_list = [cfg["run"]["seed"] + k for k in range(seeds)]
    trials = make_trials(cfg, points, seed_list)
    ranked = trial_metric(metric, cfg, trials)
    what = {"space": space.to_json(), "seeds": seeds}
    if ranked.name != DEFAULTS[cfg["loss"]["name"]]:  # the default keeps the folder name of earlier versions
        what["metric"] = ranked.name
    out = Path(out) if out else default_out("sweep", cfg, what)
    out.mkdir(parents=True, exist_ok=True)
    log(f"sweep: {len(points)} configurations x {seeds} seeds = {len(trials)} trials -> {out}")
    with Store(out / "sweep.db") as store:
        claim_folder(store, "sweep", [t.id for t in trials], ranked)
        store.set_meta(kind="sweep", base_config=config_.dumps(cfg), space=space.to_json(), seeds=seed_list,
                       command=command, trial_ids=[t.id for t in trials], metric=ranked.name)
        counts = run_trials(store, trials, make_backend(backend, workers, address, connect_timeout), fn=trial_fn,
                            log=log, metric=ranked)
        rows = store.rows(ids=[t.id for t in trials])
        table = point_table(rows, ranked)
        best = select_best(table, ranked)
        final = store.meta().get("final")
        if not final or final.get("point") != best["point"] or final.get("run_dirs") != best["run_dirs"]:
            final = final_test(out, best, test_fn, log)
            store.set_meta(final=final)
    failed = sum(e["seeds"] - e["done"] for e in table)
    best_cfg = trials[best["point"] * seeds].config
    final = {**final, **mean_and_std(final["per_seed"], ranked)}
    summary = {"kind": "sweep", "trials": len(trials), "failed": failed, "keys": space.keys, "metric": ranked.name,
               "maximize": ranked.maximize, "table": table, "best": {**best, **final}, "out": str(out)}
    write_outputs(out, summary, best_cfg)
    n = len(final["run_dirs"])
    val, test = ranked.key("val"), ranked.key("test")
    log(f"best: {best['label']}: {ranked.title('validation')} "
        f"{ranked.format(final[val], final[val + '_std'], n, True)}, "
        f"{ranked.title('test')} {ranked.format(final[test], final[test + '_std'], n, True)} "
        f"(test scored once, for this configuration only; {n} seed(s))")
    if counts["failed"] or failed:
        log(f"warning: {failed} trial(s) failed; see the error column of {out / 'sweep.db'}; "
            "run the same command again to retry them")
    return summary


def final_test(out: Path, best: dict, test_fn: str, log) -> dict:
    """Score the chosen point's runs on the test split (and their validation split again): the
    scores of each run; ``mean_and_std`` averages them."""
    from .backends import resolve

    evaluate = resolve(test_fn)
    scores = [evaluate(out / d) for d in best["run_dirs"]]
    log(f"scored the chosen configuration on the test split ({len(scores)} run(s))")
    return {"point": best["point"], "run_dirs": best["run_dirs"], "per_seed": scores}


def other_scores(table: list[dict], metric: Metric) -> list[str]:
    """The validation scores beside ``metric`` in a table (val_loss first): val_loss for
    classification ranked by accuracy; val_loss, val_r2 for regression ranked by RMSE."""
    keys = [k for e in table for k in e if k.startswith("val_") and not k.endswith("_std") and k != metric.name]
    return list(dict.fromkeys(["val_loss"] * (metric.name != "val_loss") + keys))


def write_outputs(out: Path, summary: dict, best_cfg: dict) -> None:
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2, default=str) + "\n").encode())
    atomic_write_bytes(out / "best.toml", config_.dumps(best_cfg).encode())
    keys, metric = summary["keys"], Metric(summary["metric"])
    others = other_scores(summary["table"], metric)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["rank", *keys, metric.name, f"{metric.name}_std", *others, "epochs_run", "seeds_done", "seconds"])
    for rank, e in enumerate(summary["table"], 1):
        w.writerow([rank, *[json.dumps(e["params"].get(k)) for k in keys], e.get(metric.name),
                    e.get(f"{metric.name}_std"), *[e.get(k) for k in others], e.get("epochs_run"), e["done"],
                    round(e["seconds"], 2)])
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
