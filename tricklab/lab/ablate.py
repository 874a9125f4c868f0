"""Ablations: which of the lecture's tricks matter, measured over seeds.

For the tricks asked for, the variants are::

    baseline       every listed trick off (other keys as in the configuration)
    + T            the baseline with trick T alone switched on
    full           every listed trick on
    full - T       everything but T

Each variant runs with several seeds; the table gives the mean and standard deviation of a
validation metric (``--metric``, see metric.py: accuracy for classification, RMSE for
regression), of the same metric on the test split (an ablation measures, it selects nothing, so
every trial is scored on the test split), and of the number of epochs for the validation metric
to reach a target (by default the best value that every baseline seed reaches).

Every (variant, seed) is one trial of an Optuna study, as a sweep's configurations are (by
default ``sqlite:///ABLATION/sweep.db``, under the folder's name): enqueued with its fixed
parameters ``variant`` (the label of its distinct configuration) and ``seed``, and run through the
same backends and coordinator (study.py), so an ablation killed at any moment (``kill -9``
included) and started again with the same command runs every trial to the end exactly once: the
trials a dead coordinator left RUNNING are retried in their own run folders, which resume from
their checkpoints, and failed trials are retried. A trial's value is its validation metric (a
diverged run's is the worst, +-inf), its user attributes its run folder, metrics and history.

What "on" means for each trick is set in ``TRICKS`` (the values below), unless the configuration
already switches that trick on (then its own values are used), or ``on`` overrides a key.

With a model written as a layer list (``[[model.layers]]``, a CNN for instance), the
shorthand's tricks batchnorm and dropout set keys such a configuration does not have; there they
act on the layers instead (``LAYER_TRICKS``): on is the list as written, off is the list without
its batch-norm (BatchNorm1d, BatchNorm2d) or dropout (Dropout, Dropout2d) layers. A trick may also
be any layer class of that list (``Dropout2d``, ``BatchNorm1d``, ...), removed in the same way, so
a new layer class is ablated with nothing added here; classes that set widths (Linear, Conv2d)
cannot be removed. The other tricks set configuration keys and work on every model. Where a batch
norm is removed, the layer right before it gets its bias back if the list turned it off (bias =
false, "batch norm's shift replaces the bias"): the network without batch norm is the one a
practitioner would write, not one that lost its shifts too.
"""

from __future__ import annotations

import inspect
import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .. import config as config_
from ..fileio import atomic_write_bytes
from .ablation_figures import ablation_figures
from ..stats import format_pm, mean_std
from . import grid as grid_
from .backends import Task, make_backend
from .metric import Metric, choose
from .study import Coordinator, check_folder, claim_study, default_storage, holds_study, lineages, open_storage
from .sweep import TRIAL_FN, check_options, default_out, mean_and_std

_AUG_OFF = {"augmentation.rotation": 0.0, "augmentation.stretch": 0.0, "augmentation.translation": 0.0,
            "augmentation.elastic": False, "augmentation.noise": 0.0}
# trick -> {key: (on value for image data, on value for MNIST-1D, off value)}
TRICKS: dict[str, dict[str, tuple]] = {
    "batchnorm": {"model.batchnorm": (True, True, False)},
    "dropout": {"model.dropout": (0.3, 0.3, 0.0), "model.input_dropout": (0.1, 0.0, 0.0)},
    "weight_decay": {"optimizer.weight_decay": (1e-4, 1e-4, 0.0)},
    "clipping": {"regularization.clip_norm": (5.0, 5.0, 0.0)},
    "augmentation": {"augmentation.rotation": (10.0, 0.0, 0.0), "augmentation.translation": (2.0, 0.0, 0.0),
                     "augmentation.noise": (0.0, 0.1, 0.0), "augmentation.stretch": (0.0, 0.0, 0.0),
                     "augmentation.elastic": (False, False, False)},
    "input_norm": {"data.normalize": ("global", "per_feature", "none")},
    "early_stopping": {"early_stopping.enabled": (True, True, False)},
}
# trick -> the layer classes it removes from a model written as a layer list, when off
LAYER_TRICKS: dict[str, tuple[str, ...]] = {"batchnorm": ("BatchNorm1d", "BatchNorm2d"),
                                            "dropout": ("Dropout", "Dropout2d")}
BATCHNORMS = LAYER_TRICKS["batchnorm"]


def _get(cfg: dict, dotted: str):
    section, key = dotted.split(".")
    return cfg[section][key]


def _acts_on_layers(cfg: dict, trick: str) -> bool:
    """Whether ``trick`` removes layers of this configuration's list rather than setting keys."""
    return not config_.uses_shorthand(cfg) and (trick in LAYER_TRICKS or trick not in TRICKS)


def removed_classes(trick: str) -> tuple[str, ...]:
    """The layer classes a layer-acting ``trick`` removes when off: its LAYER_TRICKS entry, or itself."""
    return LAYER_TRICKS.get(trick, (trick,))


def check_tricks(cfg: dict, tricks: list[str]) -> None:
    """Refuse no trick, an unknown or repeated one, a layer trick (batchnorm, dropout, a layer
    class) whose layers the configuration's list does not have, a layer class whose layers set
    widths, and two tricks that remove the same layers."""
    from ..nn.spec import WIDTHS, layer_classes

    listed = not config_.uses_shorthand(cfg)
    present = list(dict.fromkeys(spec["type"] for spec in cfg["model"]["layers"])) if listed else []
    known = list(TRICKS) + present
    if not tricks:
        raise config_.ConfigError(f"--tricks names no trick; give one or more of: {', '.join(known)}")
    for t in tricks:
        if t in LAYER_TRICKS and listed:
            if not set(LAYER_TRICKS[t]) & set(present):
                raise config_.ConfigError(f"--tricks {t}: on a layer list it removes the {' and '.join(LAYER_TRICKS[t])}"
                                          f" layers, but model.layers has none (its layers: {', '.join(present)})")
            continue
        if t in TRICKS:
            continue
        if t in layer_classes() and not listed:
            raise config_.ConfigError(f"--tricks {t}: a layer class is ablated by removing its layers from "
                                      "model.layers, but this configuration uses the hidden = [...] shorthand; write "
                                      f"the model as [[model.layers]], or ablate one of: {', '.join(TRICKS)}")
        if t not in present:
            raise config_.ConfigError(f"--tricks: unknown trick {t!r}{config_._suggest(t, known)} "
                                      f"(known: {', '.join(known)})")
        if any(w in inspect.signature(layer_classes()[t]).parameters for w in WIDTHS):
            raise config_.ConfigError(f"--tricks {t}: {t} layers set the widths of the network, so removing them "
                                      "is not an ablation; name layers that keep the shape (Dropout, BatchNorm1d, ...)")
    if len(set(tricks)) != len(tricks):
        raise config_.ConfigError(f"a trick is listed twice in {tricks}")
    owner: dict[str, str] = {}
    for t in (t for t in tricks if _acts_on_layers(cfg, t)):
        for cls in removed_classes(t):
            if cls in owner and cls in present:
                raise config_.ConfigError(f"--tricks {owner[cls]} and {t} both remove the {cls} layers; name one")
            owner[cls] = t


def trick_settings(cfg: dict, tricks: list[str], on: dict | None = None) -> dict[str, tuple[dict, dict]]:
    """trick -> (keys when on, keys when off) for this configuration, for the tricks of ``TRICKS``
    (a layer class has no keys: its layers are removed by ``variants``)."""
    check_tricks(cfg, tricks)
    tricks = [t for t in tricks if not _acts_on_layers(cfg, t)]
    image = cfg["data"]["name"] != "mnist1d"
    on = dict(on or {})
    owners = {k: t for t, keys in TRICKS.items() for k in keys}
    for key in on:
        if key in owners and not config_.uses_shorthand(cfg) and owners[key] in LAYER_TRICKS:
            raise config_.ConfigError(f"--on {key}: on a layer list the {owners[key]} trick removes its "
                                      f"{' and '.join(LAYER_TRICKS[owners[key]])} layers; set their arguments in "
                                      "model.layers instead")
        if key not in owners or owners[key] not in tricks:
            raise config_.ConfigError(f"--on {key}: not a key of the tricks being ablated "
                                      f"({', '.join(k for k, t in owners.items() if t in tricks)})")
    out = {}
    for t in tricks:
        keys = TRICKS[t]
        off = {k: v[2] for k, v in keys.items()}
        already_on = any(_get(cfg, k) != v[2] for k, v in keys.items())
        if already_on:  # the configuration's own strength of the trick
            on_vals = {k: _get(cfg, k) for k in keys}
        else:
            on_vals = {k: (v[0] if image else v[1]) for k, v in keys.items()}
        on_vals.update({k: v for k, v in on.items() if k in keys})
        out[t] = (on_vals, off)
    return out


def variants(cfg: dict, tricks: list[str], on: dict | None = None) -> dict[str, dict]:
    """Variant name -> the keys it sets (baseline, + each trick, full, full - each trick); with
    tricks that act on layers, ``model.layers``: the list without the layers of the tricks that are off."""
    settings = trick_settings(cfg, tricks, on)
    layered = [t for t in tricks if t not in settings]

    def variant(switched_on: set[str]) -> dict:
        keys = {k: v for t in settings for k, v in settings[t][0 if t in switched_on else 1].items()}
        if layered:
            off = {cls for t in layered if t not in switched_on for cls in removed_classes(t)}
            keys["model.layers"] = without_layers(cfg["model"]["layers"], off)
        return keys

    out = {"baseline": variant(set())}
    out.update({f"+ {t}": variant({t}) for t in tricks})
    out["full"] = variant(set(tricks))
    if len(tricks) > 1:
        out.update({f"full - {t}": variant(set(tricks) - {t}) for t in tricks})
    return out


def without_layers(specs: list[dict], classes: set[str]) -> list[dict]:
    """``specs`` without its (top-level) layers of ``classes``; the layer right before a removed
    batch norm gets its bias back (its ``bias = false`` dropped) when the list had turned it off."""
    out: list[dict] = []
    for spec in specs:
        if spec["type"] not in classes:
            out.append(spec)
        elif spec["type"] in BATCHNORMS and out and out[-1].get("bias") is False:
            out[-1] = {k: v for k, v in out[-1].items() if k != "bias"}
    return out


def epochs_to(history: list[dict], target: float | None, metric: Metric = Metric()) -> int | None:
    """The first epoch whose validation ``metric`` is at least as good as ``target``."""
    if target is None:
        return None
    return next((row["epoch"] for row in history if metric.reached(metric.value(row), target)), None)


def default_target(rows: list[dict], metric: Metric = Metric()) -> float | None:
    """The best value of ``metric`` that every one of ``rows`` (the baseline's seeds) reaches: the
    best epoch of the worst seed. None without a finished seed with a finite value."""
    bests = [min((metric.rank(metric.value(row)) for row in r["history"]), default=math.inf) for r in rows]
    if not bests or max(bests) == math.inf:
        return None
    return float(-max(bests) if metric.maximize else max(bests))


def distinct_points(named: dict[str, dict]) -> tuple[list[dict], dict[str, int]]:
    """The distinct configurations among the variants, and which one each variant is.

    With two tricks "full - A" is "+ B"; such variants share their trials instead of running twice.
    """
    points: list[dict] = []
    index = {}
    for name, keys in named.items():
        if keys not in points:
            points.append(keys)
        index[name] = points.index(keys)
    return points, index


def summarize(rows: list[dict], names: list[str], index: dict[str, int] | None = None,
              target: float | None = None, metric: Metric = Metric()) -> tuple[list[dict], float | None]:
    """Per variant: mean and std over seeds of the validation and test ``metric`` (and the other
    scores) and of the epochs to ``target``."""
    index = index or {name: p for p, name in enumerate(names)}
    by_point: dict[int, list[dict]] = {}
    for r in rows:
        if r["status"] == "done":
            by_point.setdefault(r["point"], []).append(r)
    if target is None:  # what every baseline seed reaches: do the tricks get there sooner?
        target = default_target(by_point.get(index[names[0]], []), metric)
    table = []
    for name in names:
        rs = by_point.get(index[name], [])
        entry = {"variant": name, "seeds": len(rs)}
        same = [n for n in names if index[n] == index[name] and n != name]
        if same:
            entry["same_as"] = same
        entry.update(mean_and_std([r["metrics"] for r in rs], metric))
        for key in (metric.key("val"), metric.key("test"), "epochs_run"):
            entry.setdefault(key, None)
            entry.setdefault(f"{key}_std", 0.0)
        reached = [e for e in (epochs_to(r["history"], target, metric) for r in rs) if e is not None]
        entry["epochs_to_target"], entry["epochs_to_target_std"] = mean_std(reached) if reached else (None, 0.0)
        entry["reached_target"] = len(reached)
        table.append(entry)
    return table, target


def epochs_text(mean: float | None, sd: float, n: int) -> str:
    """Epochs over n seeds with one decimal: '12.3 ± 1.5', '12.0 (n=1)', '—' for none."""
    return format_pm(mean, sd, n, scale=1.0, digits=1, unit="")


def markdown(table: list[dict], target: float | None, metric: Metric = Metric()) -> str:
    val, test = metric.key("val"), metric.key("test")
    lines = [f"| variant | {metric.header('validation')} | {metric.header('test')} | "
             f"epochs to {metric.target_text(target)} (reached) | epochs run |",
             "|---|---|---|---|---|"]
    for e in table:
        name = e["variant"] + (f" (= {', '.join(e['same_as'])})" if e.get("same_as") else "")
        n = e["seeds"]
        ep = epochs_text(e["epochs_to_target"], e["epochs_to_target_std"], e["reached_target"])
        lines.append(f"| {name} | {metric.format(e[val], e[val + '_std'], n)} | "
                     f"{metric.format(e[test], e[test + '_std'], n)} | {ep} ({e['reached_target']}/{n}) | "
                     f"{epochs_text(e['epochs_run'], e['epochs_run_std'], n)} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- the trials
@dataclass
class Trial:
    """One configuration at one seed: ``point`` is its distinct configuration, ``label`` its name."""

    id: str
    idx: int
    point: int
    label: str
    params: dict
    seed: int
    config: dict
    run_dir: str


def make_trials(cfg: dict, points: list[dict], seeds: list[int], labels: list[str] | None = None) -> list[Trial]:
    """One trial per (point, seed), with a validated configuration and a stable id (its hash)."""
    from ..experiment import check_model

    out = []
    for p, point in enumerate(points):
        label = labels[p] if labels else grid_.label(point)
        for k, seed in enumerate(seeds):
            trial_cfg = grid_.apply(cfg, point, seed)
            if k == 0:
                try:
                    check_model(trial_cfg)
                except config_.ConfigError as exc:
                    raise config_.ConfigError(f"configuration {label}: {exc}") from None
            tid = grid_.digest(trial_cfg)
            out.append(Trial(id=tid, idx=len(out), point=p, label=label, params=point, seed=seed, config=trial_cfg,
                             run_dir=f"runs/{p:04d}-s{seed}-{tid[:8]}"))
    ids = [t.id for t in out]
    if len(set(ids)) != len(ids):
        raise config_.ConfigError("two trials of this search have the same configuration; "
                                  "check for repeated grid values")
    return out


def fixed_params(trial) -> tuple:
    """(variant, seed) of a study's trial: its parameters, or (still waiting) those it was enqueued with."""
    params = {**getattr(trial, "system_attrs", {}).get("fixed_params", {}), **trial.params}
    return params.get("variant"), params.get("seed")


def distributions(trials: list[Trial]) -> dict:
    """The study's two parameters: the variant (its distinct configuration's label) and the seed."""
    labels = list(dict.fromkeys(t.label for t in trials))
    seeds = list(dict.fromkeys(t.seed for t in trials))
    return {"variant": optuna.distributions.CategoricalDistribution(labels),
            "seed": optuna.distributions.CategoricalDistribution(seeds)}


def enqueue(study: optuna.Study, trials: list[Trial]) -> int:
    """Enqueue each of ``trials`` the study has no trial for yet (fixed parameters variant and seed;
    point, label, id and run folder as user attributes); returns how many."""
    known = {fixed_params(t) for t in study.get_trials(deepcopy=False)}
    new = [t for t in trials if (t.label, t.seed) not in known]
    for t in new:
        study.enqueue_trial({"variant": t.label, "seed": t.seed},
                            user_attrs={"point": t.point, "label": t.label, "id": t.id, "run_dir": t.run_dir})
    return len(new)


class Ablation(Coordinator):
    """The coordinator of one ablation command (study.py): runs the enqueued trials, each through
    ``trial_fn`` with the test split scored, and records each run's metrics and history."""

    def __init__(self, study, storage, trials: list[Trial], metric: Metric, out: Path, trial_fn: str, log):
        super().__init__(study, storage, log)
        self.trials = {(t.label, t.seed): t for t in trials}
        self.space = distributions(trials)
        self.metric, self.out, self.trial_fn = metric, out, trial_fn
        self.todo = 0

    def ask(self, latest: dict) -> optuna.Trial:
        """The next enqueued trial (a retry first), its parameters set as enqueued."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeats outside Study.optimize: ours (study.py)
            return self.study.ask(self.space)

    def task(self, trial: optuna.Trial) -> Task | None:
        t = self.trials.get(fixed_params(trial))
        if t is None:  # claim_study keeps other searches out; a trial added by hand, say
            self.fail(trial, f"{fixed_params(trial)} is no trial of this ablation")
            return None
        self.running[str(trial.number)] = trial
        run_dir = str(self.out / trial.user_attrs.get("run_dir", t.run_dir))
        return Task(str(trial.number), self.trial_fn, {"cfg": t.config, "run_dir": run_dir, "score_test": True})

    def describe(self, trial: optuna.Trial) -> str:
        variant, seed = fixed_params(trial)
        return f"{variant} seed {seed}"

    def progress(self) -> str:
        return f"[{self.finished}/{self.todo}]"

    def on_done(self, task: Task, out: dict) -> None:
        trial = self.running.pop(task.key)
        res = out["result"]
        value = self.metric.value(res["metrics"])
        finite = value is not None and math.isfinite(value)
        try:
            trial.set_user_attr("metrics", {**res["metrics"], "worker": out["worker"]})
            trial.set_user_attr("history", res["history"])
            trial.set_user_attr("seconds", out["seconds"])
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # taken over by another coordinator: tell says so, and its retry records the result
        worst = -math.inf if self.metric.maximize else math.inf
        if self.tell(trial, float(value) if finite else worst):
            self.log(f"{self.progress()} {self.describe(trial)}: {self.metric.name.replace('_', ' ')} "
                     f"{f'{value:.4f}' if finite else '—'} ({out['seconds']:.1f}s)")


STATUS = {TrialState.COMPLETE: "done", TrialState.FAIL: "failed", TrialState.RUNNING: "running",
          TrialState.WAITING: "waiting"}


def trial_rows(study: optuna.Study) -> list[dict]:
    """Every trial of the ablation (its latest attempt), in the order it was enqueued, as
    ``{"point", "label", "seed", "status": done|failed|running|waiting, "history", "metrics", "run_dir"}``."""
    rows = []
    for t in lineages(study.get_trials(deepcopy=False)).values():
        variant, seed = fixed_params(t)
        rows.append({"point": t.user_attrs.get("point"), "label": variant, "seed": seed,
                     "status": STATUS.get(t.state, t.state.name.lower()),
                     "history": t.user_attrs.get("history"), "metrics": t.user_attrs.get("metrics"),
                     "run_dir": t.user_attrs.get("run_dir"), "error": t.user_attrs.get("error")})
    return rows


def load_ablation(out: str | Path) -> tuple[dict, list[dict]]:
    """(the study's user attributes: kind, command, tricks, variants, ...; ``trial_rows``) of the
    ablation folder ``out``. FileNotFoundError when ``out/sweep.db`` holds no ablation's study."""
    out = Path(out)
    if not holds_study(out / "sweep.db"):
        raise FileNotFoundError(f"{out / 'sweep.db'} holds a search of the results store from before Optuna; run "
                                "its command again into another --out")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=out.name, storage=open_storage(default_storage(out)))
    except KeyError:
        raise FileNotFoundError(f"{out / 'sweep.db'} holds no study named {out.name}") from None
    if study.user_attrs.get("kind") != "ablation":
        raise FileNotFoundError(f"{out / 'sweep.db'} holds a {study.user_attrs.get('kind', 'search')}, "
                                "not an ablation")
    return dict(study.user_attrs), trial_rows(study)


# ---------------------------------------------------------------------- the command
def open_study(out: Path, trials: list[Trial], metric: Metric, attrs: dict):
    """(the study of the ablation folder ``out``, its storage with heartbeats), created or resumed;
    refused when it holds another search. ``attrs`` become its user attributes."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(default_storage(out), heartbeat=True)
    study = optuna.create_study(study_name=out.name, storage=storage, load_if_exists=True,
                                direction="maximize" if metric.maximize else "minimize")
    identity = {"kind": "ablation", "trial_ids": [t.id for t in trials]}  # the same command again resumes
    claim_study(study, out, identity)
    for key, value in {"search": identity, "kind": "ablation", **attrs}.items():
        study.set_user_attr(key, value)
    return study, storage


def run_ablation(cfg: dict, tricks: list[str], seeds: int = 3, out: str | Path | None = None,
                 workers: int | None = None, backend: str = "local", address: str | None = None,
                 connect_timeout: float = 30.0, target: float | None = None, on: dict | None = None, trial_fn: str = TRIAL_FN,
                 command: str = "", metric: str | None = None, log=None) -> dict:
    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_options(seeds, workers, connect_timeout)
    measured = choose(metric, [cfg["loss"]["name"]])  # no trick changes the loss
    if target is not None:
        measured.check_target(target)
    named = variants(cfg, tricks, on)
    names = list(named)
    points, index = distinct_points(named)
    labels = [next(n for n in names if index[n] == p) for p in range(len(points))]
    seed_list = [cfg["run"]["seed"] + k for k in range(seeds)]
    trials = make_trials(cfg, points, seed_list, labels=labels)
    out = Path(out) if out else default_out("ablate", cfg, {"tricks": tricks, "on": on or {}, "seeds": seeds})
    check_folder(out, "ablation")
    out.mkdir(parents=True, exist_ok=True)
    log(f"ablation: {len(names)} variants ({len(points)} distinct) x {seeds} seeds = {len(trials)} trials -> {out}")
    study, storage = open_study(out, trials, measured, {
        "command": command, "base_config": config_.dumps(cfg), "tricks": tricks, "variants": named,
        "variant_points": index, "seeds": seed_list, "metric": measured.name})

    ablation = Ablation(study, storage, trials, measured, out, trial_fn, log)
    retried = ablation.reclaim() + ablation.retry_failed()
    enqueue(study, trials)
    done = sum(r["status"] == "done" for r in trial_rows(study))
    ablation.todo = len(trials) - done
    run = make_backend(backend, workers, address, connect_timeout)
    log(f"{done} of {len(trials)} trials already done" + (f" ({retried} to retry)" if retried else "")
        + f"; running {ablation.todo} on the {run.name} backend")
    with ablation:
        run.run(ablation.next_task, ablation.on_start, ablation.on_done, ablation.on_fail)

    rows = trial_rows(study)
    table, target = summarize(rows, names, index, target, measured)
    summary = {"kind": "ablation", "tricks": tricks, "variants": named, "metric": measured.name, "target": target,
               "table": table, "out": str(out)}
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    atomic_write_bytes(out / "ablation.md", markdown(table, target, measured).encode())
    ablation_figures(out, rows, names, target, index, measured)
    log("\n" + markdown(table, target, measured))
    failed = sum(r["status"] == "failed" for r in rows)
    if failed:
        log(f"warning: {failed} trial(s) failed (their error: the study's user attribute 'error'); "
            "run the same command again to retry them")
    return summary
