"""Hyperparameter search on held-out data, on an Optuna study: the lecture's last step of setting up a problem.

Every trial is one configuration (a point of the space, chosen by the sampler: see grid.py),
trained once per seed on the training split and scored on the validation split only; its value
in the study is the validation metric averaged over its seeds (``--metric``; by default
val_accuracy for classification, val_rmse for regression: see metric.py). After every epoch a
trial reports that metric to the study (step ``k * epochs + epoch`` for its seed number k), so a
pruner (``--pruner median|hyperband``) can stop a hopeless trial early: it is recorded as PRUNED,
shown in the report, and never chosen. The best complete trial, and only it, is then scored once
on the test split, and reported beside its validation score. A sweep folder is ranked by one
metric: choosing again by another would look at the test split of a second configuration.

The study lives in ``--storage`` (default ``sqlite:///SWEEP/sweep.db``; any database URL Optuna
takes, PostgreSQL included, so that sweeps on many machines share one study), under the name of
the sweep folder. Results are written as each trial finishes, so a sweep killed at any moment
(``kill -9`` included) and started again with the same command runs only what is unfinished:
the coordinator (study.py) records a heartbeat for each of its running trials and its owner
(host:pid); a trial left RUNNING by a dead owner, or whose heartbeat is older than ``GRACE`` seconds, is
failed and retried (Optuna's ``RetryHeartbeatStaleTrialCallback``) with the same parameters, in the same
run folders, which resume from their last checkpoint. Trials that failed are retried when the
command is run again.

A sweep folder holds::

    sweep.db          the Optuna study (unless --storage names another database)
    study.json        where the study is: storage URL (null: sweep.db here) and study name
    runs/NNNN-sK-ID/  one run folder per trial and seed (trial NNNN, seed K, the run's configuration)
    summary.json      the table sorted by validation score, the best trial, its test score
    best.toml         the best configuration (seed of its first run)
    results.csv       one row per trial
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .. import config as config_
from ..fileio import atomic_write_bytes
from ..stats import mean_std
from ..train.callbacks import Callback
from . import grid as grid_
from .backends import Task, make_backend, resolve
from .metric import DEFAULTS, Metric, choose
from .study import STATES, Coordinator, check_folder, claim_study, default_storage, lineages, open_storage, root

TRIAL_FN = "tricklab.lab.trial:run_trial"
TEST_FN = "tricklab.experiment:evaluate_run"
STUDY_TRIAL_FN = "tricklab.lab.sweep:run_study_trial"
PRUNERS = ("none", "median", "hyperband")


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


def check_search(space: grid_.Space, sampler: str | None, trials: int | None, pruner: str) -> tuple[str, int]:
    """(sampler, number of trials): grid by default (every combination once), tpe with --trials N
    and no grid sampler named; a range needs a sampler that draws, and a drawing sampler a count."""
    if pruner not in PRUNERS:
        raise config_.ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    if sampler is not None and sampler not in grid_.SAMPLERS:
        raise config_.ConfigError(f"--sampler must be one of {', '.join(grid_.SAMPLERS)}, got {sampler!r}")
    if trials is not None and trials < 1:
        raise config_.ConfigError(f"--trials must be >= 1, got {trials}")
    sampler = sampler or ("tpe" if trials is not None or space.ranges else "grid")
    if sampler == "grid":
        if space.ranges:
            raise config_.ConfigError(f"--range {space.ranges[0].key} needs a sampler that draws: --random N, or "
                                      "--sampler tpe|cmaes|random with --trials N")
        if trials is not None and trials > space.size():
            raise config_.ConfigError(f"--trials {trials}: the grid has {space.size()} combinations")
        return sampler, trials or space.size()
    if trials is None:
        raise config_.ConfigError(f"--sampler {sampler} needs --trials N (how many configurations to try)")
    return sampler, trials


def default_out(kind: str, cfg: dict, what: dict) -> Path:
    """A folder named after the command's content, so the same command finds the same folder."""
    return Path("runs") / f"{kind}-{cfg['run']['name']}-{grid_.digest({'cfg': cfg, **what})[:8]}"


# ---------------------------------------------------------------------- scores over seeds
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


def select_best(table: list[dict], metric: Metric = Metric()) -> dict:
    """The complete trial with the best mean validation ``metric`` over all its seeds (ties: lower
    validation loss, then the earlier trial). Pruned and failed trials, and test scores, are never consulted."""
    complete = [e for e in table if e.get("state", "complete") == "complete" and e["done"] == e["seeds"]
                and metric.rank(e.get(metric.name)) < math.inf]
    if not complete:
        raise RuntimeError(f"no configuration finished all its seeds with a {metric.name}; nothing to select")
    return min(complete, key=lambda e: (metric.rank(e[metric.name]), e.get("val_loss", 0.0), e["point"]))


# ---------------------------------------------------------------------- the study
def make_pruner(name: str, max_steps: int) -> optuna.pruners.BasePruner:
    """none; median: stop a trial whose value at a step is worse than the median of the earlier
    trials' at that step (after 5 trials); hyperband: successive halving in brackets, from one
    epoch up to every epoch of every seed (``max_steps``), keeping a third at each rung."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_steps, 1), reduction_factor=3)
    raise config_.ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


class Search(Coordinator):
    """The coordinator of one sweep command (study.py): asks the sampler for trials as workers free
    up, and records each trial's mean validation metric over its seeds (or its pruning)."""

    def __init__(self, study, storage, space, cfg, seeds, sampler, sample_seed, n_trials, metric, pruner, out,
                 storage_url, trial_fn, log):
        super().__init__(study, storage, log)
        self.space, self.cfg, self.seeds = space, cfg, seeds
        self.sampler, self.sample_seed, self.n_trials, self.metric = sampler, sample_seed, n_trials, metric
        self.pruner, self.out, self.storage_url, self.trial_fn = pruner, out, storage_url, trial_fn

    def more(self, latest: dict) -> bool:
        return len(latest) < self.n_trials

    def ask(self, latest: dict) -> optuna.Trial:
        """A trial from the sampler, seeded by its place in the search (a WAITING retry first)."""
        self.study.sampler = grid_.make_sampler(self.sampler, self.space, self.sample_seed, len(latest))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GridSampler on an exhausted grid, CMA-ES on categorical keys
            return self.study.ask(self.space.distributions())

    def task(self, trial: optuna.Trial) -> Task | None:
        """The task of ``trial``: its configuration at every seed; None (and the trial failed) if
        the sampled configuration is refused."""
        frozen = self.storage.get_trial(trial._trial_id)
        point = self.space.decode(trial.params)
        label = grid_.label(point)
        trial.set_user_attr("label", label)
        try:
            cfgs = [grid_.apply(self.cfg, point, self.cfg["run"]["seed"] + k) for k in range(self.seeds)]
            from ..experiment import check_model

            check_model(cfgs[0])
        except config_.ConfigError as exc:
            self.fail(trial, f"configuration {label}: {exc}")
            return None
        number = root(frozen)
        run_dirs = [f"runs/{number:04d}-s{c['run']['seed']}-{grid_.digest(c)[:8]}" for c in cfgs]
        trial.set_user_attr("run_dirs", run_dirs)
        self.running[str(trial.number)] = trial
        report = {"storage": self.storage_url, "study": self.study.study_name, "trial_id": trial._trial_id,
                  "pruner": self.pruner, "metric": self.metric.name, "steps": self.cfg["train"]["epochs"],
                  "max_steps": self.seeds * self.cfg["train"]["epochs"]}
        runs = [{"cfg": c, "run_dir": str(self.out / d)} for c, d in zip(cfgs, run_dirs)]
        return Task(str(trial.number), STUDY_TRIAL_FN, {"trial_fn": self.trial_fn, "runs": runs, "report": report})

    def on_done(self, task: Task, out: dict) -> None:
        trial = self.running.pop(task.key)
        res = out["result"]
        runs = [{"run_dir": d, "metrics": {**r["metrics"], "worker": out["worker"]}, "history": r["history"],
                 "seconds": r["seconds"]} for d, r in zip(trial.user_attrs["run_dirs"], res["runs"])]
        trial.set_user_attr("runs", runs)
        values = [self.metric.value(r["metrics"]) for r in runs]
        label = f"trial {root(self.storage.get_trial(trial._trial_id))} ({trial.user_attrs.get('label', '')})"
        if res["pruned"]:
            told = self.tell(trial, state=TrialState.PRUNED, label=label)
            text = f"PRUNED after {len(runs[-1]['history'])} epoch(s) of seed {len(runs) - 1}"
        elif any(v is None or not math.isfinite(v) for v in values):
            self.fail(trial, f"no finite {self.metric.name} in its scores")
            return
        else:
            value = float(sum(values) / len(values))
            told = self.tell(trial, value, label=label)
            text = f"{self.metric.name.replace('_', ' ')} {value:.4f}"
        if told:
            self.log(f"{self.progress()} {label}: {text} ({out['seconds']:.1f}s)")


# ---------------------------------------------------------------------- the worker's side
class ReportEpochs(Callback):
    """Reports the validation metric to the Optuna trial after every epoch (step ``offset + epoch``)
    and stops training when the study's pruner says the trial is hopeless."""

    def __init__(self, trial: optuna.Trial, metric: Metric, offset: int = 0):
        self.trial, self.metric, self.offset = trial, metric, offset
        self.pruned = False

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        value = self.metric.value(logs)
        if value is None or not math.isfinite(value):
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a resumed run reports a step it reported before: ignored
            self.trial.report(float(value), self.offset + int(logs.get("epoch", epoch + 1)))
        if self.trial.should_prune():
            self.pruned = True
            self.trainer.stop_training = True


def run_study_trial(trial_fn: str, runs: list[dict], report: dict | None = None) -> dict:
    """Run one trial's seeds in turn through ``trial_fn`` (run_trial), reporting every epoch into
    the study; a pruned seed ends the trial. Returns each seed's history, metrics and seconds."""
    fn = resolve(trial_fn)
    trial = None
    if report:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=report["study"], storage=open_storage(report["storage"]),
                                  pruner=make_pruner(report["pruner"], report["max_steps"]))
        trial = optuna.Trial(study, report["trial_id"])
    out = []
    for k, run in enumerate(runs):
        callback = ReportEpochs(trial, Metric(report["metric"]), k * report["steps"]) if trial else None
        start = time.perf_counter()
        res = fn(run["cfg"], run["run_dir"], score_test=False, callbacks=[callback] if callback else [])
        out.append({"history": res["history"], "metrics": res["metrics"], "seconds": time.perf_counter() - start})
        if callback is not None and callback.pruned:
            return {"runs": out, "pruned": True}
    return {"runs": out, "pruned": False}


# ---------------------------------------------------------------------- the table
def trial_table(study: optuna.Study, space: grid_.Space, metric: Metric, seeds: int) -> list[dict]:
    """One entry per trial (its latest attempt): state, parameters, the mean and spread over its
    seeds, its run folders; complete trials first, by ``metric`` (best first), then pruned, then the rest."""
    table = []
    for number, t in lineages(study.get_trials(deepcopy=False)).items():
        runs = t.user_attrs.get("runs") or []
        point = space.decode(t.params) if set(space.keys) <= set(t.params) else dict(t.params)
        entry = {"point": number, "trial": t.number, "state": STATES.get(t.state, str(t.state)),
                 "label": t.user_attrs.get("label", grid_.label(point)), "params": point, "seeds": seeds,
                 "done": len(runs) if t.state in (TrialState.COMPLETE, TrialState.PRUNED) else 0,
                 "run_dirs": [r["run_dir"] for r in runs], "seconds": float(sum(r["seconds"] for r in runs))}
        if t.state == TrialState.PRUNED:
            entry["pruned_at"] = t.last_step
        if "error" in t.user_attrs:
            entry["error"] = t.user_attrs["error"]
        entry.update(mean_and_std([r["metrics"] for r in runs], metric))
        table.append(entry)
    order = {"complete": 0, "pruned": 1}
    return sorted(table, key=lambda e: (order.get(e["state"], 2), metric.rank(e.get(metric.name)), e["point"]))


def seed_rows(study: optuna.Study) -> list[dict]:
    """Every finished run of every trial: ``{"point", "status": "done", "history", "metrics"}``."""
    rows = []
    for number, t in lineages(study.get_trials(deepcopy=False)).items():
        if t.state == TrialState.COMPLETE:
            rows += [{"point": number, "status": "done", "history": r["history"], "metrics": r["metrics"]}
                     for r in t.user_attrs.get("runs", [])]
    return rows


def load(out: Path) -> optuna.Study:
    """The study of the sweep folder ``out`` (study.json says where it is)."""
    where = json.loads((out / "study.json").read_text())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=where["study"], storage=open_storage(where["storage"] or default_storage(out)))


# ---------------------------------------------------------------------- the command
def trial_metric(name: str | None, cfg: dict, space: grid_.Space) -> Metric:
    """The metric ``name`` (None: the default of ``cfg``'s loss), checked to be reported by every trial."""
    return choose(name, [cfg["loss"]["name"]] + list(space.grid.get("loss.name", [])))


def check_points(cfg: dict, space: grid_.Space) -> None:
    """Refuse, before any folder exists, a grid combination or range bound the configuration refuses."""
    from ..experiment import check_model

    for point in space.corners():
        point_cfg = grid_.apply(cfg, point, cfg["run"]["seed"])
        try:
            check_model(point_cfg)
        except config_.ConfigError as exc:
            raise config_.ConfigError(f"configuration {grid_.label(point)}: {exc}") from None


def run_sweep(cfg: dict, space: grid_.Space, out: str | Path | None = None, seeds: int = 1, workers: int | None = None,
              backend: str = "local", address: str | None = None, connect_timeout: float = 30.0,
              trial_fn: str = TRIAL_FN, test_fn: str = TEST_FN, command: str = "", metric: str | None = None,
              sampler: str | None = None, trials: int | None = None, pruner: str = "none", sample_seed: int = 0,
              storage: str | None = None, log=None) -> dict:
    """Search ``space`` around ``cfg``; select on the validation ``metric``; score the best on test once."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_options(seeds, workers, connect_timeout)
    sampler, n_trials = check_search(space, sampler, trials, pruner)
    space = grid_.bind(space, cfg)
    check_points(cfg, space)
    ranked = trial_metric(metric, cfg, space)
    seed_list = [cfg["run"]["seed"] + k for k in range(seeds)]
    identity = {"kind": "sweep", "base": grid_.digest(cfg), "space": space.to_json(), "seeds": seed_list,
                "sampler": sampler, "sample_seed": sample_seed, "pruner": pruner, "metric": ranked.name}
    what = {k: identity[k] for k in ("space", "seeds", "sampler", "sample_seed", "pruner")}
    if ranked.name != DEFAULTS[cfg["loss"]["name"]]:
        what["metric"] = ranked.name
    out = Path(out) if out else default_out("sweep", cfg, {**what, "trials": n_trials})
    if storage is None:
        check_folder(out, "sweep")
    out.mkdir(parents=True, exist_ok=True)
    url = storage or default_storage(out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(url, heartbeat=True)
    max_steps = seeds * cfg["train"]["epochs"]
    study = optuna.create_study(study_name=out.name, storage=store, load_if_exists=True,
                                direction="maximize" if ranked.maximize else "minimize",
                                pruner=make_pruner(pruner, max_steps))
    claim_study(study, out, identity)
    for key, value in {"search": identity, "kind": "sweep", "command": command, "keys": space.keys,
                       "base_config": config_.dumps(cfg)}.items():
        study.set_user_attr(key, value)
    atomic_write_bytes(out / "study.json", (json.dumps({"storage": storage, "study": out.name}) + "\n").encode())
    log(f"sweep: {sampler} sampler, {n_trials} trials x {seeds} seeds, pruner {pruner} -> {out} (study {out.name} "
        f"in {storage or out / 'sweep.db'})")

    search = Search(study, store, space, cfg, seeds, sampler, sample_seed, n_trials, ranked, pruner, out, url,
                    trial_fn, log)
    retried = search.reclaim() + search.retry_failed()
    latest = lineages(study.get_trials(deepcopy=False))
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in latest.values())
    run = make_backend(backend, workers, address, connect_timeout)
    log(f"{min(done, n_trials)} of {n_trials} trials already done"
        + (f" ({retried} to retry)" if retried else "") + f"; running the rest on the {run.name} backend")
    with search:
        run.run(search.next_task, search.on_start, search.on_done, search.on_fail)

    table = trial_table(study, space, ranked, seeds)
    best = select_best(table, ranked)
    final = study.user_attrs.get("final")
    if not final or final.get("point") != best["point"] or final.get("run_dirs") != best["run_dirs"]:
        final = final_test(out, best, test_fn, log)
        study.set_user_attr("final", final)
    failed = sum(e["state"] == "failed" for e in table)
    best_cfg = grid_.apply(cfg, best["params"], cfg["run"]["seed"])
    final = {**final, **mean_and_std(final["per_seed"], ranked)}
    summary = {"kind": "sweep", "trials": len(table), "complete": sum(e["state"] == "complete" for e in table),
               "pruned": sum(e["state"] == "pruned" for e in table), "failed": failed, "keys": space.keys,
               "space": space.to_json(), "sampler": sampler, "pruner": pruner, "seeds": seed_list,
               "metric": ranked.name, "maximize": ranked.maximize, "storage": storage or "sweep.db",
               "study": out.name, "table": table, "best": {**best, **final}, "out": str(out)}
    write_outputs(out, summary, best_cfg)
    n = len(final["run_dirs"])
    val, test = ranked.key("val"), ranked.key("test")
    log(f"best: trial {best['point']}, {best['label']}: {ranked.title('validation')} "
        f"{ranked.format(final[val], final[val + '_std'], n, True)}, "
        f"{ranked.title('test')} {ranked.format(final[test], final[test + '_std'], n, True)} "
        f"(test scored once, for this configuration only; {n} seed(s)); "
        f"{summary['complete']} complete, {summary['pruned']} pruned, {failed} failed")
    if failed:
        log(f"warning: {failed} trial(s) failed (their error: summary.json, or the study's user attribute 'error'); "
            "run the same command again to retry them")
    return summary


def final_test(out: Path, best: dict, test_fn: str, log) -> dict:
    """Score the chosen trial's runs on the test split (and their validation split again): the
    scores of each run; ``mean_and_std`` averages them."""
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
    w.writerow(["rank", *keys, metric.name, f"{metric.name}_std", *others, "epochs_run", "seeds_done", "seconds",
                "trial", "state"])
    for rank, e in enumerate(summary["table"], 1):
        w.writerow([rank, *[json.dumps(e["params"].get(k)) for k in keys], e.get(metric.name),
                    e.get(f"{metric.name}_std"), *[e.get(k) for k in others], e.get("epochs_run"), e["done"],
                    round(e["seconds"], 2), e["point"], e["state"]])
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
